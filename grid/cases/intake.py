"""Case intake: one canonical report, whatever the channel (sync, officer, API).

A :class:`CaseReport` is what :func:`grid.cases.service.open_case` takes in. It carries no raw
personal data: the worker is named only by the keyed HMAC of the ID number (:func:`worker_key`,
the same key and purpose as the ``worker`` table), the enterprise by its unified social credit
code (a company identifier, not personal information).

Dedupe rule (architecture "A case's life"): a report about the same worker — or, for labour
disputes, the same enterprise — and the same kind as an open case attaches to that case instead of
opening a duplicate. Hardship is per household, so hardship reports match on the worker only (two
workers of one enterprise in hardship are two files). :func:`dedupe_lock_keys` gives the advisory
lock keys that serialise concurrent intakes of the same party.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from stdnum.cn import uscc as _uscc

from geodata.codes import is_cell_code, is_division_code
from grid.cases.amounts import AmountError, parse_yuan
from grid.cases.kinds import CaseFamily, CaseKind, HardshipGrade, Severity
from grid.cases.routing import CaseFacts
from grid.people import Vault

Channel = Literal["officer", "api", "sync"]
CHANNELS: tuple[Channel, ...] = ("officer", "api", "sync")

_USCC_SHAPE = re.compile(r"[0-9A-HJ-NPQRTUW-Y]{2}[0-9]{6}[0-9A-HJ-NPQRTUW-Y]{10}")
_SOURCE_REF_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")


class IntakeError(ValueError):
    """A report that cannot be taken in; the message names the field, never a person's data."""


def worker_key(vault: Vault, id_number: str) -> bytes:
    """The keyed HMAC that names a worker (same purpose as ``worker.id_hmac``)."""
    return vault.mac(id_number.strip().upper(), purpose="id")


def parse_amount(value: str | int | Decimal | None) -> Decimal | None:
    """Yuan as a Decimal with at most two decimals (:func:`grid.cases.amounts.parse_yuan`); floats
    are refused here (they do not hash stably)."""
    if isinstance(value, float):
        raise IntakeError("amount must be given as a decimal string or integer, not a float")
    try:
        return parse_yuan(value)
    except AmountError as exc:
        raise IntakeError(exc.detail) from None


@dataclass(frozen=True, slots=True)
class CaseReport:
    """One report of a case, already free of raw personal data."""

    kind: CaseKind
    channel: Channel
    severity: Severity = Severity.NORMAL
    workers_affected: int = 1
    amount: Decimal | None = None
    hardship_grade: HardshipGrade | None = None
    cell_code: str | None = None
    cell_version_id: int | None = None
    division_code: str | None = None
    lon: float | None = None  # WGS84, already normalised by geodata
    lat: float | None = None
    worker_hmac: bytes | None = None
    enterprise_uscc: str | None = None
    source_ref: str | None = None  # "<source>:<record id>" for sync reports; makes intake idempotent

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", CaseKind(self.kind))
            object.__setattr__(self, "severity", Severity(self.severity))
            if self.hardship_grade is not None:
                object.__setattr__(self, "hardship_grade", HardshipGrade(self.hardship_grade))
        except ValueError as exc:
            raise IntakeError(str(exc)) from None
        if self.channel not in CHANNELS:
            raise IntakeError(f"channel must be one of {', '.join(CHANNELS)}, got {self.channel!r}")
        if self.cell_code is None and self.division_code is None:
            raise IntakeError("a report needs a cell code or at least a division code")
        if self.cell_code is not None and not is_cell_code(self.cell_code):
            raise IntakeError("cell_code must be 15 digits")
        if self.division_code is not None and not is_division_code(self.division_code):
            raise IntakeError("division_code must be 12 digits")
        if self.cell_version_id is not None and self.cell_code is None:
            raise IntakeError("cell_version_id without a cell_code")
        if (self.lon is None) != (self.lat is None):
            raise IntakeError("give both lon and lat, or neither")
        if self.worker_hmac is not None and len(self.worker_hmac) != 32:
            raise IntakeError("worker_hmac must be a 32-byte keyed HMAC (see worker_key)")
        if self.enterprise_uscc is not None:
            code = _uscc.compact(self.enterprise_uscc)
            # GB 32100 shape and check character, as connectors.validate applies them: stdnum's
            # is_valid also refuses registration-authority letters (e.g. N, agricultural bodies)
            # that real codes carry.
            if not _USCC_SHAPE.fullmatch(code) or _uscc.calc_check_digit(code[:17]) != code[17]:
                raise IntakeError("enterprise_uscc is not a valid unified social credit code")
            object.__setattr__(self, "enterprise_uscc", code)
        if self.source_ref is not None and not _SOURCE_REF_RE.match(self.source_ref):
            raise IntakeError("source_ref must be 1-200 characters of letters, digits and _.:/-")
        if isinstance(self.amount, float):
            raise IntakeError("amount must be a Decimal, not a float")
        try:
            self.facts()
        except (TypeError, ValueError) as exc:
            raise IntakeError(str(exc)) from None

    def facts(self) -> CaseFacts:
        """What routing and deadlines see: nothing personal."""
        return CaseFacts(
            kind=self.kind,
            severity=self.severity,
            workers_affected=self.workers_affected,
            amount=self.amount,
            hardship_grade=self.hardship_grade,
        )

    @property
    def family(self) -> CaseFamily:
        return self.kind.family


def dedupe_lock_keys(report: CaseReport) -> list[int]:
    """Sorted advisory-lock keys for the parties a report may be deduplicated on (and its source ref).

    Every intake takes these (``pg_advisory_xact_lock``) in this order before looking for an open
    case, so two reports about the same party cannot both open a case.
    """
    names: list[str] = []
    if report.worker_hmac is not None:
        names.append(f"w:{report.kind.value}:{report.worker_hmac.hex()}")
    if report.enterprise_uscc is not None and report.family is CaseFamily.DISPUTE:
        names.append(f"e:{report.kind.value}:{report.enterprise_uscc}")
    if report.source_ref is not None:
        names.append(f"r:{report.source_ref}")
    return sorted({_key(n) for n in names})


def _key(name: str) -> int:
    return int.from_bytes(
        hashlib.sha256(b"gridflow-intake\x1f" + name.encode()).digest()[:8], "big", signed=True
    )


def attach_summary(report: CaseReport, *, reported_at: datetime) -> dict[str, object]:
    """What an attached repeat report adds to the case history: channel, reference, counts."""
    out: dict[str, object] = {
        "channel": report.channel,
        "severity": report.severity.value,
        "workers_affected": report.workers_affected,
        "reported_at": reported_at,
    }
    if report.source_ref is not None:
        out["source_ref"] = report.source_ref
    return out
