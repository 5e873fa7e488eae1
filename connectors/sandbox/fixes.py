"""What a city does after it hears about a quarantined record: it fixes the record at the source.

:func:`fixed_row` builds the corrected, newer version of one of the sandbox's deliberately bad
worker or enterprise rows (by its ground-truth label), and :func:`connectors.sandbox.app.correct_record`
makes a running sandbox serve it. Tests use the pair to prove that reprocessing moves fixed
records out of quarantine.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from connectors.reasons import Reason
from connectors.sandbox.data import DatasetLike, id_check_char, uscc_check_char

__all__ = ["FIXABLE", "fixed_row"]

#: Labels (reason codes) of bad worker/enterprise rows that :func:`fixed_row` can correct.
FIXABLE: frozenset[str] = frozenset(
    {
        Reason.BAD_ID_CHECKSUM.value,
        Reason.BAD_USCC_CHECKSUM.value,
        Reason.MISSING_COORDINATES.value,
        Reason.OUT_OF_CHINA.value,
        Reason.UNKNOWN_CRS.value,
        Reason.BAD_PHONE.value,
        Reason.BAD_DATE.value,
    }
)


def fixed_row(dataset: DatasetLike, entity: str, record_id: str, *, updated_at: datetime) -> dict[str, Any]:
    """A corrected copy of bad row ``record_id`` of ``entity`` (city field names), updated at
    ``updated_at``, to hand to :func:`~connectors.sandbox.app.correct_record` with its record id.

    Fixes are what a city clerk would do: recompute a check character, blank a phone that is no
    number, put a missing point back (taken from a good row of the same city), clear an unknown
    coordinate system, re-read a birth date from the ID. Raises ``ValueError`` for a good row or a
    label it cannot fix.
    """
    if entity not in ("workers", "enterprises"):
        raise ValueError(f"only workers and enterprises can be fixed, not {entity!r}")
    rows = dataset.rows(entity)
    found = next((r for r in rows if r.record_id == record_id), None)
    if found is None:
        raise ValueError(f"no {entity} record {record_id!r} in the sandbox")
    if found.label not in FIXABLE:
        raise ValueError(f"record {record_id!r} is labelled {found.label!r}: nothing to fix")
    m = dataset.mapping[entity]
    row = dict(found.row)
    reason = Reason(found.label)
    if reason is Reason.BAD_ID_CHECKSUM:
        f = m["id_number"]
        body = str(row[f])[:17]
        row[f] = body + id_check_char(body)
    elif reason is Reason.BAD_USCC_CHECKSUM:
        f = m["uscc"] if entity == "enterprises" else m["enterprise_uscc"]
        body = str(row[f])[:17]
        row[f] = body + uscc_check_char(body)
    elif reason in (Reason.MISSING_COORDINATES, Reason.OUT_OF_CHINA):
        good = next(r for r in rows if r.label == "ok")
        for key in ("lon", "lat", "crs", "address"):
            row[m[key]] = good.row[m[key]]
    elif reason is Reason.UNKNOWN_CRS:
        row[m["crs"]] = ""
    elif reason is Reason.BAD_PHONE:
        row[m["phone"] if entity == "workers" else m["legal_rep_phone"]] = ""
    elif reason is Reason.BAD_DATE:
        digits = unicodedata.normalize("NFKC", str(row[m["id_number"]])).strip()
        if len(digits) == 15:  # legacy ID: YYMMDD of the 1900s
            digits = digits[:6] + "19" + digits[6:]
        row[m["birth_date"]] = f"{digits[6:10]}-{digits[10:12]}-{digits[12:14]}"
    row[m["source_updated_at"]] = updated_at.strftime("%Y-%m-%d %H:%M:%S")
    return row
