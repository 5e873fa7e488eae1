"""Turn validated, placed records into store rows: personal fields encrypted, HMAC'd and masked.

Records are duck-typed (anything with the canonical attributes of
``connectors.records.WorkerRecord`` / ``EnterpriseRecord`` / ``Reject``) so that ``grid`` does
not depend on ``connectors``. Row layouts are ``grid.store.sync.*_COLUMNS``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

from geodata.placement import PlacedBatch
from grid.people import Vault, mask_id, mask_name, mask_phone


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


def _canon(values: Sequence[Any]) -> str:
    return json.dumps(
        [v.isoformat() if isinstance(v, date | datetime) else v for v in values], ensure_ascii=False
    )


def _num(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 8)


def worker_rows(records: Sequence[WorkerLike], placed: PlacedBatch, vault: Vault) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i, r in enumerate(records):
        content = _canon(
            [
                r.id_number,
                r.name,
                r.gender,
                r.birth_date,
                r.phone,
                r.enterprise_uscc,
                r.address,
                _num(placed.lon[i]),
                _num(placed.lat[i]),
            ]
        )
        rows.append(
            (
                r.source_record_id,
                r.source_updated_at,
                vault.mac(r.id_number, purpose="id"),
                vault.encrypt(r.id_number, purpose="id"),
                mask_id(r.id_number),
                vault.encrypt(r.name, purpose="name"),
                mask_name(r.name),
                r.gender,
                r.birth_date.year if r.birth_date else None,
                vault.mac(r.phone, purpose="phone") if r.phone else None,
                vault.encrypt(r.phone, purpose="phone") if r.phone else None,
                mask_phone(r.phone) if r.phone else None,
                vault.encrypt(r.address, purpose="address") if r.address else None,
                r.enterprise_uscc,
                _num(placed.lon[i]),
                _num(placed.lat[i]),
                placed.cell_code[i],
                placed.division_code[i],
                placed.method[i],
                placed.reason[i],
                vault.mac(content, purpose="row"),
            )
        )
    return rows


def enterprise_rows(
    records: Sequence[EnterpriseLike], placed: PlacedBatch, vault: Vault
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i, r in enumerate(records):
        content = _canon(
            [
                r.uscc,
                r.name,
                r.union_established,
                r.employee_count,
                r.address,
                r.legal_rep_phone,
                _num(placed.lon[i]),
                _num(placed.lat[i]),
            ]
        )
        phone = r.legal_rep_phone
        rows.append(
            (
                r.source_record_id,
                r.source_updated_at,
                r.uscc,
                r.name,
                r.union_established,
                r.employee_count,
                r.address,
                vault.mac(phone, purpose="phone") if phone else None,
                vault.encrypt(phone, purpose="phone") if phone else None,
                mask_phone(phone) if phone else None,
                _num(placed.lon[i]),
                _num(placed.lat[i]),
                placed.cell_code[i],
                placed.division_code[i],
                placed.method[i],
                placed.reason[i],
                vault.mac(content, purpose="row"),
            )
        )
    return rows


def reject_rows(rejects: Sequence[RejectLike], vault: Vault) -> list[tuple[Any, ...]]:
    """Quarantine rows: reason and safe detail in clear, the raw record encrypted."""
    rows: list[tuple[Any, ...]] = []
    for rej in rejects:
        raw = json.dumps(dict(rej.raw), ensure_ascii=False, sort_keys=True, default=str)
        rows.append(
            (
                rej.source_record_id,
                str(rej.reason),
                rej.field,
                rej.detail,
                vault.mac(raw, purpose="raw"),
                vault.encrypt(raw, purpose="raw"),
            )
        )
    return rows
