"""COPY text of worker rows: the hot path's inlined primitives produce what the vault defines."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
import shapely

from connectors.records import WorkerRecord
from geodata.placement import PlacedBatch
from grid.ingest import decrypt_worker_pii, worker_lines
from grid.people import Vault, mask_id, mask_name, mask_phone
from grid.store.copy import unescape_field
from grid.sync.store import WORKER_COLUMNS

CST = timezone(timedelta(hours=8))


def test_worker_lines_columns_are_the_vaults_macs_masks_and_ciphertexts() -> None:
    """Each column of a worker COPY line equals the vault primitive it stands for: ID/phone HMACs
    as Vault.mac, masks as grid.people, the PII blob decrypts to the four personal fields, the
    row hash is Vault.fingerprint of the content; free text with tabs/backslashes is escaped and
    nothing personal appears in clear."""
    vault = Vault(hmac_key=secrets.token_bytes(32), enc_key=secrets.token_bytes(32))
    updated = datetime(2026, 11, 20, 8, 30, tzinfo=CST)
    records = [
        WorkerRecord("w\t1\\x", updated, "11010519491231002X", "欧阳\t娜娜", "F", date(1949, 12, 31),
                     "13812345678", "91420500MA4F0B1X2K", "宜昌市西陵区\\某路1号", 111.3, 30.7, "gcj02"),
        WorkerRecord("w2", updated, "420502199001011234", "李四", "M", date(1990, 1, 1),
                     None, None, None, None, None, None),
    ]  # fmt: skip
    placed = PlacedBatch(
        lon=np.array([111.29, np.nan]),
        lat=np.array([30.69, np.nan]),
        cell_code=["420502001001001", None],
        division_code=["420502001001", None],
        method=["point_in_cell", "unmapped"],
        reason=[None, "no_location"],
    )
    text = "\n".join(worker_lines(records, placed, vault)) + "\n"
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 3
    for line, r, i in zip(lines[:2], records, range(2), strict=True):
        cols = dict(zip(WORKER_COLUMNS, map(unescape_field, line.split("\t")), strict=True))
        assert cols["source_record_id"] == r.source_record_id
        assert cols["source_updated_at"] == updated.isoformat()
        assert cols["id_hmac"] == "\\x" + vault.mac(r.id_number, purpose="id").hex()
        assert cols["id_masked"] == mask_id(r.id_number)
        assert cols["name_masked"] == mask_name(r.name)
        assert cols["phone_hmac"] == (
            None if r.phone is None else "\\x" + vault.mac(r.phone, purpose="phone").hex()
        )
        assert cols["phone_masked"] == (None if r.phone is None else mask_phone(r.phone))
        assert cols["birth_year"] == str(r.birth_date.year)
        blob = bytes.fromhex(str(cols["pii_enc"])[2:])
        assert decrypt_worker_pii(blob, vault) == {
            "id_number": r.id_number, "name": r.name, "phone": r.phone, "address": r.address,
        }  # fmt: skip
        lon = "\\N" if i else repr(round(111.29, 8))
        lat = "\\N" if i else repr(round(30.69, 8))
        content = "\x1f".join(
            (r.id_number, r.name, r.gender or "", r.birth_date.isoformat(), r.phone or "",
             r.enterprise_uscc or "", r.address or "", lon, lat)
        )  # fmt: skip
        assert cols["row_hash"] == "\\x" + vault.fingerprint(content.encode()).hex()
        assert cols["cell_code"] == placed.cell_code[i]
        if i:  # no point: NULL, so the store holds no geometry
            assert cols["geom"] is None
        else:  # hex EWKB of the rounded point in WGS84 (SRID 4326), what PostGIS reads on COPY
            point = shapely.from_wkb(bytes.fromhex(str(cols["geom"])))
            assert (point.x, point.y, shapely.get_srid(point)) == (round(111.29, 8), round(30.69, 8), 4326)
    assert "11010519491231002X" not in text and "13812345678" not in text and "娜娜" not in text
    assert text.isascii()  # the masked names go as UTF-8 byte escapes (grid.store.copy.ascii_field)


def _valid_row(when: str) -> dict[str, object]:
    from connectors.sandbox.data import YICHANG_MAPPING

    m = YICHANG_MAPPING["workers"]
    return {
        m["source_record_id"]: f"w-{when}", m["source_updated_at"]: when, m["id_number"]: "420502199001011238",
        m["name"]: "张三", m["gender"]: "男", m["birth_date"]: "1990-01-01", m["phone"]: "13812345678",
        m["enterprise_uscc"]: None, m["address"]: None, m["lon"]: 111.29, m["lat"]: 30.69, m["crs"]: "gcj02",
    }  # fmt: skip


@pytest.mark.db
def test_a_source_time_goes_to_the_store_as_the_same_instant_in_every_form(conn) -> None:  # type: ignore[no-untyped-def]
    """Rule: the update time a worker line carries is the record's own instant. The validator's fast
    path keeps a Beijing wall time from 1992 on as the source's text with +08 (no formatting);
    an earlier time (summer time 1986-1991), or a form PostgreSQL would not read the same (an ISO
    week date, another separator), is formatted from the datetime. PostgreSQL reads each line's
    text back as exactly the validated instant."""
    from connectors.sandbox.data import YICHANG_MAPPING
    from connectors.validate import validate_workers
    from grid.store.db import transaction

    forms = {
        "2026-11-20 08:00:00": "2026-11-20 08:00:00+08",
        "2026-11-20T08:00:00": "2026-11-20T08:00:00+08",
        "1992-01-01 00:00:00": "1992-01-01 00:00:00+08",
        "1991-09-14 23:30:00": None,  # summer time: +09 that day
        "1988-09-11 01:30:00": None,  # the hour that happened twice
        "2026-W47-5T08:00:00": None,  # an ISO week date fromisoformat reads
        "2026-11-20_08:00:00": None,  # any separator character fromisoformat reads
    }
    rows, vault = [_valid_row(when) for when in forms], Vault(hmac_key=b"h" * 32, enc_key=b"e" * 32)
    records, rejects = validate_workers(
        rows, mapping=YICHANG_MAPPING["workers"], default_crs="gcj02", today=date(2026, 12, 1)
    )
    assert not rejects and len(records) == len(forms)
    n = len(records)
    cells = ["420502001001001"] * n
    placed = PlacedBatch(
        lon=np.full(n, 111.29),
        lat=np.full(n, 30.69),
        cell_code=cells,
        division_code=[c[:12] for c in cells],
        method=["point_in_cell"] * n,
        reason=[None] * n,
    )
    lines = worker_lines(records, placed, vault)
    with transaction(conn) as cur:
        for r, (when, text), line in zip(records, forms.items(), lines, strict=True):
            assert r.source_updated_text == text, when
            column = line.split("\t")[WORKER_COLUMNS.index("source_updated_at")]
            assert column == (text or r.source_updated_at.isoformat())
            cur.execute("SELECT %s::timestamptz = %s", (column, r.source_updated_at))
            assert cur.fetchone() == (True,), when


def test_a_copied_record_never_carries_a_stale_time_text() -> None:
    """Rule: the kept time text is not an __init__ field: dataclasses.replace (or any constructor)
    gives None, so a record whose time changed is formatted from its datetime; it is not compared."""
    import dataclasses

    from connectors.sandbox.data import YICHANG_MAPPING
    from connectors.validate import validate_workers

    (r,), _ = validate_workers([_valid_row("2026-11-20 08:00:00")], mapping=YICHANG_MAPPING["workers"],
                               default_crs="gcj02", today=date(2026, 12, 1))  # fmt: skip
    assert r.source_updated_text == "2026-11-20 08:00:00+08"
    moved = dataclasses.replace(r, source_updated_at=r.source_updated_at + timedelta(hours=1))
    assert moved.source_updated_text is None
    same = dataclasses.replace(r)
    assert same == r and same.source_updated_text is None
