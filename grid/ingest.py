"""Turn validated, placed records into COPY text for the store, personal fields protected.

Records are duck-typed (anything with the canonical attributes of
``connectors.records.WorkerRecord`` / ``EnterpriseRecord`` / ``Reject``) so that ``grid`` does not
depend on ``connectors``. Column order is ``grid.sync.store.*_COLUMNS``. This is the hot path of
the nightly sync, so lines are formatted per column type instead of through a generic encoder.

A worker's ID number, name, phone and home address are encrypted together in one AES-256-GCM
blob (``pii_enc``, purpose ``worker-pii``); the ID and phone also get a keyed HMAC for matching,
and masked forms for display. The row hash is a keyed BLAKE2b of the record's content (an
unkeyed hash of personal data could be reversed by brute force).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

import numpy as np
import orjson

from geodata.placement import PlacedBatch
from grid.people import CIPHERTEXT_VERSION, Vault, mask_id, mask_name, mask_phone
from grid.store.copy import NULL, ascii_field, escape

WORKER_PII = "worker-pii"
#: Vault purpose of a quarantined record's raw version (its keyed HMAC and its encryption).
RAW_PURPOSE = "raw"


class WorkerLike(Protocol):
    source_record_id: str
    source_updated_at: datetime
    source_updated_text: str | None  # the time as COPY text, when the validator kept it
    id_number: str
    name: str
    gender: str | None
    birth_date: date
    phone: str | None
    enterprise_uscc: str | None
    address: str | None


class EnterpriseLike(Protocol):
    source_record_id: str
    source_updated_at: datetime
    uscc: str
    name: str
    union_established: bool
    employee_count: int | None
    address: str | None
    legal_rep_phone: str | None


class ProblemLike(Protocol):
    field: str
    reason: Any
    detail: str
    raw: Mapping[str, Any]


class WithProblems(Protocol):
    source_record_id: str
    problems: Sequence[ProblemLike]


class RejectLike(Protocol):
    source_record_id: str | None
    reason: Any
    field: str | None
    detail: str
    raw: Mapping[str, Any]


def _t(value: str | None) -> str:
    return NULL if value is None else escape(value)


def _b(value: bytes | None) -> str:
    return NULL if value is None else "\\\\x" + value.hex()


def _coord(value: float) -> str:
    return NULL if math.isnan(value) else repr(round(float(value), 8))


def _rounded(values: Any) -> list[float | None]:
    """A column of coordinates as stored: rounded to 8 decimals (about a millimetre), NaN -> None."""
    return [None if v != v else round(v, 8) for v in values.tolist()]


#: EWKB of a 2-D point with SRID 4326, little-endian: byte order, type 0x20000001, SRID; x and y follow.
_EWKB_POINT_4326 = bytes.fromhex("0101000020e6100000")
_EWKB_DTYPE = np.dtype([("head", "V9"), ("x", "<f8"), ("y", "<f8")])  # packed: 25 bytes a point


def ewkb_points(lons: Sequence[float | None], lats: Sequence[float | None]) -> list[str]:
    """COPY text of a geometry column: each point as hex EWKB (SRID 4326), NULL where either
    coordinate is missing. PostGIS reads hex EWKB on input, so the database does no point
    construction; the whole column is packed and hex-encoded in one call each."""
    n = len(lons)
    if n == 0:
        return []
    points = np.zeros(n, dtype=_EWKB_DTYPE)
    points["head"] = np.void(_EWKB_POINT_4326)
    points["x"] = [math.nan if v is None else v for v in lons]
    points["y"] = [math.nan if v is None else v for v in lats]
    text = points.tobytes().hex()
    width = 2 * _EWKB_DTYPE.itemsize
    return [
        NULL if lons[i] is None or lats[i] is None else text[width * i : width * i + width] for i in range(n)
    ]


@functools.lru_cache(maxsize=1 << 16)
def ascii_name(masked: str) -> str:
    """A masked name as an ASCII COPY field (a few thousand surnames and last characters: cached)."""
    return ascii_field(masked)


def worker_lines(records: Sequence[WorkerLike], placed: PlacedBatch, vault: Vault) -> list[str]:
    """One COPY line per worker row (``WORKER_COLUMNS`` order, no line ends).

    The hot path of the sync: the vault's primitives are inlined (same keys, purposes and formats
    as :meth:`Vault.mac`, :meth:`Vault.encrypt`, :meth:`Vault.fingerprint`), nonces are drawn in
    one call, the point goes in as hex EWKB (:func:`ewkb_points`), and only free-text columns are
    escaped (the others were validated to digits, letters or our own constants). The row hash
    covers the coordinates as text rounded to 8 decimals, as it always has. Every line is ASCII
    (:func:`grid.store.copy.ascii_field`): the masked name's surname goes as UTF-8 byte escapes.
    """
    n = len(records)
    if n == 0:
        return []
    rounded_lon, rounded_lat = _rounded(placed.lon), _rounded(placed.lat)
    geoms = ewkb_points(rounded_lon, rounded_lat)
    lons = [NULL if v is None else repr(v) for v in rounded_lon]
    lats = [NULL if v is None else repr(v) for v in rounded_lat]
    cells, divisions, methods, reasons = placed.cell_code, placed.division_code, placed.method, placed.reason
    mac = vault.mac_bytes
    fingerprint = vault.fingerprint
    encrypt = vault.aead.encrypt
    aad = WORKER_PII.encode()
    nonces = os.urandom(12 * n)
    dumps = orjson.dumps
    lines: list[str] = []
    append = lines.append
    for i, r in enumerate(records):
        lon, lat = lons[i], lats[i]
        id_number, name, phone, address = r.id_number, r.name, r.phone, r.address
        birth = r.birth_date
        uscc = r.enterprise_uscc
        birth_iso = birth.isoformat() if birth else ""
        content = "\x1f".join(
            (id_number, name, r.gender or "", birth_iso, phone or "", uscc or "", address or "", lon, lat)
        )
        nonce = nonces[12 * i : 12 * i + 12]
        blob = CIPHERTEXT_VERSION + nonce + encrypt(nonce, dumps([id_number, name, phone, address]), aad)
        append(
            "\t".join(
                (
                    ascii_field(r.source_record_id),
                    r.source_updated_text or r.source_updated_at.isoformat(),
                    "\\\\x" + mac(("id\x1f" + id_number).encode()).hex(),
                    mask_id(id_number),
                    ascii_name(mask_name(name)),
                    r.gender or NULL,
                    str(birth.year) if birth else NULL,
                    "\\\\x" + mac(("phone\x1f" + phone).encode()).hex() if phone else NULL,
                    mask_phone(phone) if phone else NULL,
                    "\\\\x" + blob.hex(),
                    uscc or NULL,
                    geoms[i],
                    cells[i] or NULL,
                    divisions[i] or NULL,
                    methods[i],
                    reasons[i] or NULL,
                    "\\\\x" + fingerprint(content.encode()).hex(),
                )
            )
        )
    return lines


def decrypt_worker_pii(blob: bytes, vault: Vault) -> dict[str, str | None]:
    """The personal fields of a worker row (for an audited reveal, never for logs)."""
    id_number, name, phone, address = orjson.loads(vault.decrypt(blob, purpose=WORKER_PII))
    return {"id_number": id_number, "name": name, "phone": phone, "address": address}


def enterprise_copy(records: Sequence[EnterpriseLike], placed: PlacedBatch, vault: Vault) -> str:
    """COPY text of enterprise rows (``ENTERPRISE_COLUMNS`` order)."""
    lines: list[str] = []
    for i, r in enumerate(records):
        lon, lat = _coord(placed.lon[i]), _coord(placed.lat[i])
        phone = r.legal_rep_phone
        employees = "" if r.employee_count is None else str(r.employee_count)
        content = "\x1f".join(
            (
                r.uscc,
                r.name,
                "1" if r.union_established else "0",
                employees,
                r.address or "",
                phone or "",
                lon,
                lat,
            )
        )
        lines.append(
            "\t".join(
                (
                    _t(r.source_record_id),
                    r.source_updated_at.isoformat(),
                    _t(r.uscc),
                    _t(r.name),
                    "t" if r.union_established else "f",
                    employees or NULL,
                    _t(r.address),
                    _b(vault.mac(phone, purpose="phone")) if phone else NULL,
                    _b(vault.encrypt(phone, purpose="phone")) if phone else NULL,
                    mask_phone(phone) if phone else NULL,
                    lon,
                    lat,
                    placed.cell_code[i] or NULL,
                    placed.division_code[i] or NULL,
                    _t(placed.method[i]),
                    _t(placed.reason[i]),
                    _b(vault.fingerprint(content.encode())),
                )
            )
        )
    return "\n".join(lines) + "\n" if lines else ""


def reject_copy(rejects: Sequence[RejectLike], vault: Vault) -> str:
    """COPY text of quarantine rows: reason and safe detail in clear, the raw record encrypted."""
    lines: list[str] = []
    for rej in rejects:
        raw = json.dumps(dict(rej.raw), ensure_ascii=False, sort_keys=True, default=str)
        lines.append(
            "\t".join(
                (
                    _t(rej.source_record_id),
                    _t(str(rej.reason)),
                    _t(rej.field),
                    _t(rej.detail),
                    _b(vault.mac(raw, purpose=RAW_PURPOSE)),
                    _b(vault.encrypt(raw, purpose=RAW_PURPOSE)),
                )
            )
        )
    return "\n".join(lines) + "\n" if lines else ""


def field_problem_copy(records: Sequence[WithProblems], vault: Vault) -> str:
    """COPY text of the field problems of loaded records (``FIELD_PROBLEM_COLUMNS`` order): reason,
    field and safe detail in clear, the field's raw value encrypted (purpose ``raw``)."""
    lines: list[str] = []
    for r in records:
        for p in r.problems:
            raw = json.dumps(dict(p.raw), ensure_ascii=False, sort_keys=True, default=str)
            lines.append(
                "\t".join(
                    (
                        _t(r.source_record_id),
                        _t(p.field),
                        _t(str(p.reason)),
                        _t(p.detail),
                        _b(vault.encrypt(raw, purpose=RAW_PURPOSE)),
                    )
                )
            )
    return "\n".join(lines) + "\n" if lines else ""
