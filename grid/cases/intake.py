"""Case intake: one canonical report, whatever the channel (sync, officer, API).

A :class:`CaseReport` is what :func:`open_case` (officer, CLI, API) and :func:`intake_reports`
(the sync, in its page's transaction) take in; both open through one path (:func:`open_one`).
It carries no raw personal data: the worker is named only by the keyed HMAC of the ID number (:func:`worker_key`,
the same key and purpose as the ``worker`` table), the enterprise by its unified social credit
code (a company identifier, not personal information).

Dedupe rule (architecture "A case's life"): a report about the same worker — or, for labour
disputes, the same enterprise — and the same kind as an open case attaches to that case instead of
opening a duplicate. The worker is matched as the case's first worker or an attached one, and a
case of the worker is preferred to one matched on the enterprise only (a worker with jobs in two
cities, reported by both, lands in one case whatever the order). Hardship is per household, so
hardship reports match on the worker only (two workers of one enterprise in hardship are two
files). :func:`dedupe_lock_keys` gives the advisory lock keys that serialise concurrent intakes of the same party.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg2.extensions
from stdnum.cn import uscc as _uscc

from connectors.kinds import CaseFamily, CaseKind, HardshipGrade, Severity
from geodata.codes import (
    Level,
    ancestor,
    chain_codes,
    is_cell_code,
    is_division_code,
)
from grid.cases.amounts import AmountError, parse_yuan
from grid.cases.outbox import enqueue, notice
from grid.cases.owners import supervisor_of, units_exist
from grid.cases.routing import CaseFacts, route
from grid.cases.states import (
    SQL_OPEN,
    Action,
    record,
)
from grid.cases.store import (
    CaseHead,
    CaseRules,
    Conn,
    Cursor,
    assigned_notices,
    current_cell_version,
    deadlines_at,
    event_row,
    lock_case,
    rules_from_settings,
    step_rows,
    utc_now,
    write_events,
    write_steps,
)
from grid.people import Vault
from grid.store.db import transaction

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
    #: The description, amount claimed and address, sealed (``grid.cases.details.seal``), and the
    #: address masked for display: personal data only ever encrypted or masked here.
    details_enc: bytes | None = field(default=None, repr=False)
    address_masked: str | None = None

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
        if self.address_masked is not None and len(self.address_masked) > 200:
            raise IntakeError("address_masked must be at most 200 characters")
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


@dataclass(frozen=True, slots=True)
class OpenResult:
    """``attached`` when the report joined an open case; ``already_taken`` for a replayed report."""

    case_id: int
    version: int
    attached: bool
    already_taken: bool
    owner_code: str
    level: Level
    rule: str | None


def find_open(cur: Cursor, report: CaseReport) -> int | None:
    uscc = report.enterprise_uscc if report.family.value == "dispute" else None
    if report.worker_hmac is None and uscc is None:
        return None
    # The worker is matched as the case's first worker or as one of its attached ones (case_worker),
    # and a case of the worker comes before a case matched on the enterprise only: a worker
    # employed in two cities reported from both (two employers) lands in ONE case whichever city's
    # report comes first - the first may join its employer's open case; the second then finds the
    # worker there rather than its own employer's case.
    cur.execute(
        f"""
        SELECT id FROM case_file
        WHERE kind = %(kind)s AND {SQL_OPEN} AND (
            worker_hmac = %(mac)s OR enterprise_uscc = %(uscc)s
            OR id IN (SELECT case_id FROM case_worker WHERE worker_hmac = %(mac)s))
        ORDER BY (worker_hmac = %(mac)s
                  OR id IN (SELECT case_id FROM case_worker WHERE worker_hmac = %(mac)s)) IS TRUE DESC, id
        LIMIT 1 FOR UPDATE
        """,
        {"kind": report.kind.value, "mac": report.worker_hmac, "uscc": uscc},
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def open_one(cur: Cursor, report: CaseReport, *, rules: CaseRules, actor: str, at: datetime) -> OpenResult:
    if report.source_ref is not None:
        cur.execute("SELECT case_id, attached FROM case_intake WHERE source_ref = %s", (report.source_ref,))
        seen = cur.fetchone()
        if seen is not None:
            head = lock_case(cur, int(seen[0]), None)
            return OpenResult(head.id, head.version, bool(seen[1]), True, head.owner_code, head.level, None)

    existing = find_open(cur, report)
    if existing is not None:
        from grid.cases.collective import attach_report  # counts workers, re-checks Art. 7

        head = lock_case(cur, existing, None)
        res = attach_report(cur, head, report, rules=rules, actor=actor, at=at)
        if report.details_enc is not None:
            # the first report's words stay; a case opened without any takes the repeat's
            cur.execute(
                "UPDATE case_file SET details_enc = %s, address_masked = %s WHERE id = %s AND details_enc IS NULL",
                (psycopg2.Binary(report.details_enc), report.address_masked, head.id),
            )
        if report.source_ref is not None:
            cur.execute(
                "INSERT INTO case_intake (source_ref, case_id, attached) VALUES (%s, %s, true)",
                (report.source_ref, head.id),
            )
        return OpenResult(head.id, res.version, True, False, res.owner_code, res.level, None)

    policy = rules.policy
    facts = report.facts()
    cell_version = report.cell_version_id
    if report.cell_code is not None and cell_version is None:
        cell_version = current_cell_version(cur, report.cell_code)
    base = report.cell_code or report.division_code
    assert base is not None  # CaseReport guarantees one of them
    units = units_exist(cur, chain_codes(base))
    decision = route(
        facts, cell_code=report.cell_code, division_code=report.division_code, policy=policy, units=units
    )
    dl = deadlines_at(report.kind, decision.level, at, rules)
    cur.execute("SELECT nextval(pg_get_serial_sequence('case_file', 'id'))")
    row = cur.fetchone()
    assert row is not None
    case_id = int(row[0])
    division = report.division_code if report.cell_code is None else report.cell_code[:12]
    assert division is not None
    alerts = [
        {
            "code": a.code,
            "level": a.level.name.lower(),
            "unit_code": a.unit_code,
            "message_zh": a.message_zh,
            "message_en": a.message_en,
        }
        for a in decision.alerts
    ]
    if report.cell_code is not None and cell_version is None:
        alerts.append(
            {
                "code": "cell_not_loaded",
                "level": "cell",
                "unit_code": report.cell_code,
                "message_zh": f"网格{report.cell_code}不在已导入的网格版本中，按编码派单",
                "message_en": f"cell {report.cell_code} is not in a committed cell version; routed by its code",
            }
        )
    explanation = {
        "cell_code": report.cell_code,
        "cell_version_id": cell_version,
        "division_code": division,
        "chain_code": base,
        "rule": decision.rule,
        "rule_level": decision.rule_level.name.lower(),
        "level": decision.level.name.lower(),
        "owner_code": decision.owner_code,
        "text_zh": decision.explanation_zh,
        "text_en": decision.explanation_en,
        "dual_report": decision.dual_report,
        "fallback_used": decision.fallback_used,
        "alerts": alerts,
        "deadline_sources": {
            "respond": dl.limits.respond_source,
            "resolve": dl.limits.resolve_source,
        },
    }
    event, after = record(
        None,
        action=Action.OPEN,
        actor=actor,
        at=at,
        case_id=str(case_id),
        payload={
            "owner_code": decision.owner_code,
            "level": int(decision.level),
            "rule": decision.rule,
            "chain_code": base,
            "cell_code": report.cell_code,
            "cell_version_id": cell_version,
            "kind": report.kind.value,
            "severity": report.severity.value,
            "workers_affected": report.workers_affected,
            "channel": report.channel,
            "dual_report": decision.dual_report,
            "alerts": [a["code"] for a in alerts],
        },
    )
    geom = None
    if report.lon is not None and report.lat is not None:
        geom = f"SRID=4326;POINT({float(report.lon)!r} {float(report.lat)!r})"
    columns: dict[str, Any] = {
        "id": case_id,
        "kind": report.kind.value,
        "family": report.family.value,
        "severity": report.severity.value,
        "hardship_grade": None if report.hardship_grade is None else report.hardship_grade.value,
        "workers_affected": report.workers_affected,
        "amount": report.amount,
        "channel": report.channel,
        "source_ref": report.source_ref,
        "cell_code": report.cell_code,
        "cell_version_id": cell_version,
        "division_code": division,
        "chain_code": base,
        "chain_version_id": cell_version if is_cell_code(base) else None,
        "geom": geom,
        "level": int(after.level),
        "owner_code": after.owner_code,
        "state": after.state.value,
        "version": after.version,
        "dual_report": decision.dual_report,
        "routing": json.dumps(explanation, ensure_ascii=False),
        "worker_hmac": None if report.worker_hmac is None else psycopg2.Binary(report.worker_hmac),
        "enterprise_uscc": report.enterprise_uscc,
        "opened_at": at,
        "respond_by": dl.respond_by,
        "resolve_by": dl.resolve_by,
        "mediation_window_ends": dl.mediation_window_ends,
        "deadlines_provisional": dl.provisional,
        "head_hash": after.last_hash,
        "details_enc": None if report.details_enc is None else psycopg2.Binary(report.details_enc),
        "address_masked": report.address_masked,
    }
    if report.enterprise_uscc is not None:
        # the registered name, for the case page (the web may not read ``enterprise`` itself)
        cur.execute(
            "SELECT name FROM enterprise WHERE uscc = %s ORDER BY updated_at DESC LIMIT 1",
            (report.enterprise_uscc,),
        )
        found = cur.fetchone()
        columns["enterprise_name"] = None if found is None else found[0]
    values = ", ".join("ST_GeomFromEWKT(%(geom)s)" if k == "geom" else f"%({k})s" for k in columns)
    cur.execute(f"INSERT INTO case_file ({', '.join(columns)}) VALUES ({values})", columns)
    write_events(cur, [event_row(event, owner_before=None, after=after)])
    write_steps(
        cur,
        step_rows(
            case_id,
            level=after.level,
            owner_code=after.owner_code,
            resolve_by=dl.resolve_by,
            version=after.version,
            rules=rules,
        ),
    )
    head = CaseHead(
        case_id,
        report.kind,
        report.severity,
        report.workers_affected,
        after.level,
        after.owner_code,
        base,
        None,
        after.state,
        after.version,
        after.last_hash,
        dl.respond_by,
        dl.resolve_by,
        decision.dual_report,
    )
    notices = assigned_notices(head, event, after, resolve_by=dl.resolve_by, chain_code=base)
    if decision.dual_report:
        extra = {"workers_affected": report.workers_affected, "dual_report": True, "chain_code": base}
        upper = supervisor_of(after.owner_code) if after.level > Level.PROVINCE else None
        same_level_gov = ancestor(base, after.level)
        recipients = [("government", same_level_gov)] + ([("union", upper)] if upper else [])
        for target, code in recipients:
            notices.append(
                notice(
                    topic="dual_report",
                    target=target,
                    recipient_code=code,
                    case_id=case_id,
                    event_seq=event.seq,
                    at=at,
                    kind=report.kind,
                    severity=report.severity,
                    level=after.level,
                    state=after.state.value,
                    owner_code=after.owner_code,
                    extra=extra,
                )
            )
    enqueue(cur, notices)
    if report.source_ref is not None:
        cur.execute(
            "INSERT INTO case_intake (source_ref, case_id, attached) VALUES (%s, %s, false)",
            (report.source_ref, case_id),
        )
    return OpenResult(case_id, after.version, False, False, after.owner_code, after.level, decision.rule)


def intake_reports(
    cur: Cursor,
    reports: Sequence[CaseReport],
    *,
    rules: CaseRules,
    actor: str,
    at: datetime | None = None,
) -> list[OpenResult]:
    """Take reports in inside the caller's transaction (a sync page's): open, attach or skip each.

    Takes every report's advisory dedupe locks first (sorted), then locks the open cases they may
    attach to in id order, so concurrent intakes neither duplicate nor deadlock.
    """
    when = at or utc_now()
    keys = sorted({k for r in reports for k in dedupe_lock_keys(r)})
    for k in keys:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (k,))
    workers = [(r.kind.value, psycopg2.Binary(r.worker_hmac)) for r in reports if r.worker_hmac is not None]
    firms = [
        (r.kind.value, r.enterprise_uscc)
        for r in reports
        if r.enterprise_uscc is not None and r.family.value == "dispute"
    ]
    if workers or firms:
        cur.execute(
            f"""
            SELECT id FROM case_file
            WHERE {SQL_OPEN} AND (
                (kind, worker_hmac) IN (SELECT * FROM unnest(%(wk)s::text[], %(wh)s::bytea[]))
                OR (kind, enterprise_uscc) IN (SELECT * FROM unnest(%(fk)s::text[], %(fu)s::text[]))
                OR id IN (
                    SELECT w.case_id FROM case_worker w JOIN case_file c ON c.id = w.case_id
                    WHERE (c.kind, w.worker_hmac) IN (SELECT * FROM unnest(%(wk)s::text[], %(wh)s::bytea[]))))
            ORDER BY id FOR UPDATE
            """,
            {
                "wk": [k for k, _ in workers],
                "wh": [h for _, h in workers],
                "fk": [k for k, _ in firms],
                "fu": [u for _, u in firms],
            },
        )
    return [open_one(cur, r, rules=rules, actor=actor, at=when) for r in reports]


def page_intake(
    source: str, rules: CaseRules | None = None, *, at: datetime | None = None
) -> Callable[[Cursor, list[CaseReport]], int]:
    """The sync's ``on_reports`` for a page of case reports from ``source`` (nightly sync and
    reprocessing alike): reports open, or attach to, cases in the page's own transaction; returns
    how many were new to the store. ``at`` is the time cases are taken in at (default: now)."""
    the_rules = rules or rules_from_settings()

    def take(cur: Cursor, reports: list[CaseReport]) -> int:
        results = intake_reports(cur, reports, rules=the_rules, actor=f"sync:{source}", at=at)
        return sum(1 for r in results if not r.already_taken)

    return take


def open_case(
    conn: Conn, *, report: CaseReport, rules: CaseRules, actor: str, at: datetime | None = None
) -> OpenResult:
    """Take in one report in its own transaction: attach to an open case or open, route and queue."""
    with transaction(conn) as cur:
        return intake_reports(cur, [report], rules=rules, actor=actor, at=at)[0]
