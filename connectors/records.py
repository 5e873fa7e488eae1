"""Canonical records: what every source's rows become after validation, whatever the city calls
its fields (workers, enterprises and case reports).

Plain frozen slotted dataclasses (no per-row pydantic: validation must run at tens of thousands of
rows per second). Personal fields are excluded from ``repr`` so that a record or a reject that ends
up in a log line or an assertion message does not carry an ID number, phone, name or address.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connectors.kinds import CaseKind, HardshipGrade, Severity
from connectors.problems import FieldProblem
from connectors.reasons import Reason

#: Canonical field names per entity, split into required and optional. A source's mapping
#: (canonical -> city field) must name every required field; optional ones may be left out.
WORKER_REQUIRED = ("source_record_id", "source_updated_at", "id_number", "name")
WORKER_OPTIONAL = (
    "gender",
    "birth_date",
    "phone",
    "enterprise_uscc",
    "address",
    "lon",
    "lat",
    "crs",
)
ENTERPRISE_REQUIRED = ("source_record_id", "source_updated_at", "uscc", "name", "union_established")
ENTERPRISE_OPTIONAL = ("employee_count", "address", "lon", "lat", "crs", "legal_rep_phone")

CASE_REQUIRED = ("source_record_id", "source_updated_at", "kind", "reported_at")
CASE_OPTIONAL = (
    "severity",
    "hardship_grade",
    "worker_id_number",
    "enterprise_uscc",
    "workers_affected",
    "amount",
    "description",
    "address",
    "lon",
    "lat",
    "crs",
)

#: The roster (网格员花名册): who serves which cells. ``cells`` is a list of 15-digit cell codes
#: (a JSON list, or text separated by commas, semicolons, 、 or spaces); ``active`` defaults to yes.
OFFICER_REQUIRED = ("source_record_id", "source_updated_at", "name", "cells")
OFFICER_OPTIONAL = ("phone", "active")

CANONICAL_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enterprises": (ENTERPRISE_REQUIRED, ENTERPRISE_OPTIONAL),
    "workers": (WORKER_REQUIRED, WORKER_OPTIONAL),
    "grid_officers": (OFFICER_REQUIRED, OFFICER_OPTIONAL),
    "cases": (CASE_REQUIRED, CASE_OPTIONAL),
}
#: Entities in load order: workers reference enterprises by credit code; the roster comes before
#: case reports so that a report's cell finds its officer; case reports reference all, so they
#: come last.
ENTITIES = ("enterprises", "workers", "grid_officers", "cases")


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker (职工) as one source knows them.

    ``id_number`` is the normalised 18-character resident ID (legacy 15-digit IDs upgraded);
    ``gender`` is ``"M"``/``"F"``; ``lon``/``lat`` are in the declared ``crs`` (not yet WGS84) and
    are both None for an address-only record, which geodata places by address.
    """

    source_record_id: str
    source_updated_at: datetime
    id_number: str = dc_field(repr=False)
    name: str = dc_field(repr=False)
    gender: str | None
    birth_date: date = dc_field(repr=False)
    phone: str | None = dc_field(repr=False)
    enterprise_uscc: str | None
    address: str | None = dc_field(repr=False)
    lon: float | None = dc_field(repr=False)
    lat: float | None = dc_field(repr=False)
    crs: str | None
    #: Fields that failed their rule and are empty above (:mod:`connectors.problems`).
    problems: tuple[FieldProblem, ...] = dc_field(default=(), repr=False)
    #: ``source_updated_at`` as COPY text, when the validator's fast path read it as a Beijing wall
    #: time from 1992 on (UTC+8 all year): the source's own text and ``+08``, which spares the
    #: sync formatting ~1,000,000 datetimes a night. Not an ``__init__`` field, so a record made or
    #: copied (``dataclasses.replace``) any other way has None and never a stale text; not compared.
    source_updated_text: str | None = dc_field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class EnterpriseRecord:
    """An enterprise (企业) identified by its unified social credit code.

    Enterprise data is not personal, except the legal representative's phone.
    """

    source_record_id: str
    source_updated_at: datetime
    uscc: str
    name: str
    union_established: bool
    employee_count: int | None
    address: str | None
    lon: float | None
    lat: float | None
    crs: str | None
    legal_rep_phone: str | None = dc_field(repr=False)
    #: Fields that failed their rule and are empty above (:mod:`connectors.problems`).
    problems: tuple[FieldProblem, ...] = dc_field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class CaseReportRecord:
    """A case report (案件上报) raised in the city's grid system: a labour dispute or a hardship report.

    ``kind``/``severity``/``hardship_grade`` are the closed vocabularies of :mod:`connectors.kinds`.
    ``worker_id_number`` is the normalised 18-character resident ID of the worker concerned, if
    the report names one: downstream only its keyed HMAC is ever stored. ``amount`` (yuan claimed
    or needed) is financial information and ``description`` is free text written by an officer
    or a worker that may name people, illnesses or phone numbers: both are sensitive, excluded
    from ``repr`` and never logged. ``lon``/``lat`` are in the declared ``crs``.
    """

    source_record_id: str
    source_updated_at: datetime
    kind: CaseKind
    severity: Severity
    hardship_grade: HardshipGrade | None
    reported_at: datetime
    worker_id_number: str | None = dc_field(repr=False)
    enterprise_uscc: str | None
    workers_affected: int
    amount: Decimal | None = dc_field(repr=False)
    description: str | None = dc_field(repr=False)
    address: str | None = dc_field(repr=False)
    lon: float | None = dc_field(repr=False)
    lat: float | None = dc_field(repr=False)
    crs: str | None


@dataclass(frozen=True, slots=True)
class OfficerRecord:
    """A grid officer (网格员) of the city's roster.

    ``name`` is a staff name (shown to the officer's supervisors), ``phone`` personal (stored as a
    keyed HMAC, masked and encrypted), both kept out of ``repr``. ``cells`` are 15-digit codes in
    the source's order without repeats; an inactive officer may serve none.
    """

    source_record_id: str
    source_updated_at: datetime
    name: str = dc_field(repr=False)
    phone: str | None = dc_field(repr=False)
    cells: tuple[str, ...]
    active: bool


#: Key of a file row that is damage, not data (value: a ``Reason`` code; ``connectors.file``).
DAMAGE_KEY = "\x00damage"
#: Key of the damage's one-line explanation (names the physical line, never its content).
DAMAGE_DETAIL_KEY = "\x00damage_detail"


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not loaded, with the reason from the closed list.

    ``detail`` is safe to log: it names the rule that failed, never the offending value.
    ``raw`` is the row exactly as the source sent it, kept only so quarantine can store it
    encrypted for reprocessing; it is excluded from ``repr``.
    """

    source_record_id: str | None
    reason: Reason
    field: str | None
    detail: str
    raw: dict[str, Any] = dc_field(repr=False)
