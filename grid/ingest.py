"""Turn validated, placed records into COPY text for the store, personal fields protected.

Records are duck-typed (anything with the canonical attributes of
``connectors.records.WorkerRecord`` / ``EnterpriseRecord`` / ``Reject``) so that ``grid`` does not
depend on ``connectors``. Column order is ``grid.store.sync.*_COLUMNS``. This is the hot path of
the nightly sync, so lines are formatted per column type instead of through a generic encoder.

A worker's ID number, name, phone and home address are encrypted together in one AES-256-GCM
blob (``pii_enc``, purpose ``worker-pii``); the ID and phone also get a keyed HMAC for matching,
and masked forms for display. The row hash is a keyed BLAKE2b of the record's content (an
unkeyed hash of personal data could be reversed by brute force).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

from geodata.placement import PlacedBatch
from grid.people import Vault, mask_id, mask_name, mask_phone

_ESC = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"
WORKER_PII = "worker-pii"


class WorkerLike(Protocol):
    source_record_id: str
    source_updated_at: datetime
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


class RejectLike(Protocol):
    source_record_id: str | None
    reason: Any
    field: str | None
    detail: str
    raw: Mapping[str, Any]


def _t(value: str | None) -> str:
    return NULL if value is None else value.translate(_ESC)


def _b(value: bytes | None) -> str:
    return NULL if value is None else "\\\\x" + value.hex()


def _coord(value: float) -> str:
    return NULL if math.isnan(value) else repr(round(float(value), 8))


def worker_copy(records: Sequence[WorkerLike], placed: PlacedBatch, vault: Vault) -> str:
    """COPY text of worker rows (``WORKER_COLUMNS`` order)."""
    lines: list[str] = []
    for i, r in enumerate(records):
        lon, lat = _coord(placed.lon[i]), _coord(placed.lat[i])
        updated = r.source_updated_at.isoformat()
        birth = r.birth_date.isoformat() if r.birth_date else ""
        phone = r.phone
        content = "\x1f".join(
            (
                r.id_number,
                r.name,
                r.gender or "",
                birth,
                phone or "",
                r.enterprise_uscc or "",
                r.address or "",
                lon,
                lat,
            )
        )
        pii = json.dumps([r.id_number, r.name, phone, r.address], ensure_ascii=False)
        lines.append(
            "\t".join(
                (
                    _t(r.source_record_id),
                    updated,
                    _b(vault.mac(r.id_number, purpose="id")),
                    _t(mask_id(r.id_number)),
                    _t(mask_name(r.name)),
                    r.gender or NULL,
                    str(r.birth_date.year) if r.birth_date else NULL,
                    _b(vault.mac(phone, purpose="phone")) if phone else NULL,
                    mask_phone(phone) if phone else NULL,
                    _b(vault.encrypt(pii, purpose=WORKER_PII)),
                    _t(r.enterprise_uscc),
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


def decrypt_worker_pii(blob: bytes, vault: Vault) -> dict[str, str | None]:
    """The personal fields of a worker row (for an audited reveal, never for logs)."""
    id_number, name, phone, address = json.loads(vault.decrypt(blob, purpose=WORKER_PII))
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
                    _b(vault.mac(raw, purpose="raw")),
                    _b(vault.encrypt(raw, purpose="raw")),
                )
            )
        )
    return "\n".join(lines) + "\n" if lines else ""
