"""COPY text of worker rows: the hot path's inlined primitives produce what the vault defines."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta, timezone

import numpy as np
import shapely

from connectors.records import WorkerRecord
from geodata.placement import PlacedBatch
from grid.ingest import decrypt_worker_pii, worker_lines
from grid.people import Vault, mask_id, mask_name, mask_phone
from grid.sync.store import WORKER_COLUMNS

CST = timezone(timedelta(hours=8))


def _unescape(field: str) -> str | None:
    if field == "\\N":
        return None
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\":
            nxt = field[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


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
        cols = dict(zip(WORKER_COLUMNS, map(_unescape, line.split("\t")), strict=True))
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
