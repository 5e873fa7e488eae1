"""Record problems and field problems: which failed rule keeps a record out, and which only
empties one field of it.

A rule of :mod:`connectors.validate` fails for one canonical field with one reason code of
:class:`connectors.reasons.Reason`. Whether the record is still loaded is decided per field, in
ONE table (:data:`FIELD_KINDS`), never per reason code: ``bad_date`` on the update time keeps a
record out, ``bad_date`` on a birth date does not.

* **record problem** - the field identifies the record or is what a metric counts: the record is
  quarantined whole, as before (raw row encrypted, reason code, reprocessable).
* **field problem** - any other field: the record is loaded with that field empty, and a
  ``field_problem`` row keeps the same reason code, the field and the field's raw value
  (encrypted), reprocessable like quarantine. A worker is known by their resident ID and name
  even when their phone is wrong; an enterprise by its credit code, name and union flag.

====================  =====================  ==========  ========================================
entity                canonical field        kind        why
====================  =====================  ==========  ========================================
every entity          ``source_record_id``   record      the upsert key: without it nothing can be
                                                         stored, traced or reprocessed
every entity          ``source_updated_at``  record      the version guard and the sync watermark
workers               ``id_number``          record      identifies the worker (keyed HMAC)
workers               ``name``               record      identifies the worker
workers               ``gender``             field       (never fails: read from the ID instead)
workers               ``birth_date``         field       the ID's birth date is authoritative
workers               ``phone``              field       contact only
workers               ``enterprise_uscc``    field       the employer reference, not the worker's
                                                         identity; stored empty
workers / enterprises ``address``            field       placement falls back to the point
workers / enterprises ``lon`` ``lat`` ``crs``  field     no usable point: placed by address, or
                                                         stored unmapped with the reason code
enterprises           ``uscc``               record      identifies the enterprise
enterprises           ``name``               record      identifies the enterprise
enterprises           ``union_established``  record      what 工会组织覆盖率 counts
enterprises           ``employee_count``     field       an optional count
enterprises           ``legal_rep_phone``    field       contact only
cases                 every field            record      a case report is taken in whole or not at
                                                         all (intake routes on kind, parties, time)
====================  =====================  ==========  ========================================

A field not in the table is a record problem (fail closed: a new rule on a new field quarantines
until someone decides otherwise here). Duplicate versions in a page (``duplicate_in_page``) are
always record problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum
from typing import Any, Final

from connectors.reasons import Reason

__all__ = ["FIELD_KINDS", "FieldProblem", "ProblemKind", "kind_of"]


class ProblemKind(StrEnum):
    RECORD = "record"
    FIELD = "field"


_LOCATION = ("address", "lon", "lat", "crs")

#: (entity, canonical field) -> what a failed rule on that field does. See the module table.
FIELD_KINDS: Final[dict[tuple[str, str], ProblemKind]] = {
    ("workers", "source_record_id"): ProblemKind.RECORD,
    ("workers", "source_updated_at"): ProblemKind.RECORD,
    ("workers", "id_number"): ProblemKind.RECORD,
    ("workers", "name"): ProblemKind.RECORD,
    ("workers", "gender"): ProblemKind.FIELD,
    ("workers", "birth_date"): ProblemKind.FIELD,
    ("workers", "phone"): ProblemKind.FIELD,
    ("workers", "enterprise_uscc"): ProblemKind.FIELD,
    **{("workers", f): ProblemKind.FIELD for f in _LOCATION},
    ("enterprises", "source_record_id"): ProblemKind.RECORD,
    ("enterprises", "source_updated_at"): ProblemKind.RECORD,
    ("enterprises", "uscc"): ProblemKind.RECORD,
    ("enterprises", "name"): ProblemKind.RECORD,
    ("enterprises", "union_established"): ProblemKind.RECORD,
    ("enterprises", "employee_count"): ProblemKind.FIELD,
    ("enterprises", "legal_rep_phone"): ProblemKind.FIELD,
    **{("enterprises", f): ProblemKind.FIELD for f in _LOCATION},
}


def kind_of(entity: str, field: str | None) -> ProblemKind:
    """What a failed rule on ``field`` of an ``entity`` record does (unknown = record problem)."""
    if field is None:
        return ProblemKind.RECORD
    return FIELD_KINDS.get((entity, field), ProblemKind.RECORD)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field of a loaded record that failed its rule and was stored empty.

    ``field`` is the canonical field the rule named (``phone``, ``lon``, ``crs`` ...), ``detail``
    names the rule and the city's field, never the value. ``raw`` holds the city's raw values of
    the fields involved (city field name -> value), kept only to be stored encrypted; it is
    excluded from ``repr`` and from comparison (two spellings of one bad value, e.g. an empty
    cell read as ``None`` from XLSX and ``""`` from CSV, are the same problem).
    """

    field: str
    reason: Reason
    detail: str
    raw: dict[str, Any] = dc_field(repr=False, compare=False)
