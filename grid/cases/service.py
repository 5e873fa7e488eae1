"""The case store: intake, officer actions and queries, over an explicit psycopg2 connection.

Every command is one transaction (``grid.store.db.transaction``): it locks the case row
(``SELECT ... FOR UPDATE``), checks the caller's ``expected_version`` (a stale write raises
:class:`StaleCase` and writes nothing), builds the next event with :func:`grid.cases.states.record`
(the same fold :func:`~grid.cases.states.replay` uses, so whatever is written replays), appends it
to the hash chain and updates the row, its queued escalation steps and the outbox together.

Lock order, shared with :mod:`grid.cases.sweep`: the case row first, then that case's steps,
events and outbox rows; intake takes its advisory dedupe locks (sorted) before any case row, and
locks the cases it may attach to in id order. Sweepers lock case rows with ``SKIP LOCKED`` and
never wait for one. No transaction here waits for a lock while holding one another can want, so
officers and sweepers cannot deadlock.

Ownership: ``chain_code`` is the code whose chain the case rides (its cell, or the division its
address reached); the owner is always the unit at the case's level on that chain
(:func:`owner_at`), passing upward over missing units with an alert. Escalation moves one level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import psycopg2.extensions

from geodata.codes import CodeError, Level, ancestor, division_level, is_cell_code, is_division_code, parent
from grid.cases.amounts import parse_yuan
from grid.cases.deadlines import Deadlines, deadlines_for, escalation_steps
from grid.cases.intake import CaseReport, dedupe_lock_keys
from grid.cases.kinds import CaseKind, Outcome, Severity
from grid.cases.outbox import Notice, copy_csv, enqueue, notice
from grid.cases.policy import ProvincePolicy, build_calendar, load_policy
from grid.cases.routing import RoutingError, route
from grid.cases.states import (
    Action,
    CaseState,
    EscalationError,
    Event,
    State,
    TransitionError,
    next_level,
    owner_rank,
    record,
    replay,
    transition,
)
from grid.store.db import transaction
from grid.workdays import WorkCalendar

Conn = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

OPEN_STATES: Final = frozenset({State.NEW, State.ACCEPTED, State.IN_PROGRESS, State.REOPENED, State.RETURNED})
DONE_STATES: Final = frozenset({State.RESOLVED, State.CLOSED})
SQL_OPEN: Final = "state NOT IN ('resolved', 'closed')"


# ----------------------------------------------------------------------------- errors


class CaseNotFound(LookupError):
    """No case with that id (or not within the caller's scope)."""

    def __init__(self, case_id: int) -> None:
        self.case_id = case_id
        super().__init__(f"case {case_id} does not exist or is outside your scope")


class StaleCase(RuntimeError):
    """The case changed since the caller read it; nothing was written. Reload and retry."""

    def __init__(self, case_id: int, expected: int, actual: int) -> None:
        self.case_id, self.expected, self.actual = case_id, expected, actual
        super().__init__(
            f"case {case_id} is at version {actual}, not {expected}: someone else changed it since you "
            "loaded it; nothing was written — reload the case and try again"
        )


class ScopeError(PermissionError):
    """An action outside the acting unit's scope (e.g. reassigning to another county's unit)."""


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class CaseRules:
    """The province policy and its working-day calendar, built once and shared."""

    policy: ProvincePolicy
    calendar: WorkCalendar

    @classmethod
    def load(cls, policy_file: str | Path) -> CaseRules:
        policy = load_policy(policy_file)
        return cls(policy, build_calendar(policy))

    @property
    def max_level(self) -> Level:
        return self.policy.routing.max_level


@lru_cache(maxsize=4)
def _rules_for(path: str) -> CaseRules:
    return CaseRules.load(path)


def rules_from_settings() -> CaseRules:
    """The rules of the configured policy file (``GRIDFLOW_POLICY_FILE``), cached per file."""
    from grid.settings import get_settings

    return _rules_for(str(get_settings().policy_file))


def _now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- rows


CASE_HEAD_COLUMNS: Final = (
    "id, kind, severity, workers_affected, level, owner_code, chain_code, chain_version_id, state, "
    "version, head_hash, respond_by, resolve_by, dual_report"
)


@dataclass(frozen=True, slots=True)
class CaseHead:
    """What the write path needs of a case row."""

    id: int
    kind: CaseKind
    severity: Severity
    workers_affected: int
    level: Level
    owner_code: str
    chain_code: str
    chain_version_id: int | None
    state: State
    version: int
    head_hash: str
    respond_by: datetime
    resolve_by: datetime
    dual_report: bool

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> CaseHead:
        return cls(
            id=int(row[0]),
            kind=CaseKind(row[1]),
            severity=Severity(row[2]),
            workers_affected=int(row[3]),
            level=Level(int(row[4])),
            owner_code=str(row[5]),
            chain_code=str(row[6]),
            chain_version_id=None if row[7] is None else int(row[7]),
            state=State(row[8]),
            version=int(row[9]),
            head_hash=str(row[10]),
            respond_by=row[11],
            resolve_by=row[12],
            dual_report=bool(row[13]),
        )

    def case_state(self) -> CaseState:
        return CaseState(str(self.id), self.state, self.level, self.owner_code, self.version, self.head_hash)


EVENT_COLUMNS: Final = (
    "case_id",
    "seq",
    "action",
    "from_state",
    "to_state",
    "actor",
    "at",
    "payload",
    "prev_hash",
    "hash",
    "owner_before",
    "owner_after",
    "level_after",
)

STEP_COLUMNS: Final = (
    "case_id",
    "kind",
    "due_at",
    "level",
    "owner_code",
    "escalate_to",
    "provisional",
    "case_version",
)


def event_row(event: Event, *, owner_before: str | None, after: CaseState) -> tuple[Any, ...]:
    """A ``case_event`` row (COPY order of :data:`EVENT_COLUMNS`)."""
    return (
        int(event.case_id),
        event.seq,
        event.action.value,
        None if event.from_state is None else event.from_state.value,
        event.to_state.value,
        event.actor,
        event.at,
        json.dumps(event.payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
        event.prev_hash,
        event.hash,
        owner_before,
        after.owner_code,
        int(after.level),
    )


def step_rows(
    case_id: int, *, level: Level, owner_code: str, resolve_by: datetime, version: int, rules: CaseRules
) -> list[tuple[Any, ...]]:
    """The reminder and criticism steps queued behind ``resolve_by`` (COPY order of STEP_COLUMNS)."""
    return [
        (
            case_id,
            s.kind,
            s.due_at,
            int(s.level),
            owner_code,
            None if s.escalate_to is None else int(s.escalate_to),
            s.provisional,
            version,
        )
        for s in escalation_steps(str(case_id), level, resolve_by, rules.policy, rules.calendar)
    ]


# ----------------------------------------------------------------------------- units and owners


def units_exist(cur: Cursor, codes: Iterable[str]) -> dict[str, bool]:
    """Which of ``codes`` name an active union unit (12 digits) or a cell with an active officer (15)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    cur.execute(
        """
        SELECT code FROM unit WHERE active AND code = ANY(%s)
        UNION
        SELECT cell_code FROM grid_officer WHERE active AND cell_code = ANY(%s)
        """,
        (wanted, wanted),
    )
    present = {str(r[0]) for r in cur.fetchall()}
    return {c: c in present for c in wanted}


def _rank(code: str) -> Level:
    return Level.CELL if is_cell_code(code) else division_level(code)


def owner_candidates(chain_code: str, level: Level, *, max_level: Level) -> list[str]:
    """Units that may own a case at ``level`` on ``chain_code``'s chain, most local first.

    At community level a cell's grid officer comes first, then the community union; above it the
    unit of the level, then each level up to ``max_level`` (the fallback order routing uses).
    """
    own = _rank(chain_code)
    out: list[str] = []
    if level is Level.COMMUNITY and own is Level.CELL:
        out.append(chain_code)
    for lv in range(min(int(level), int(own), int(Level.COMMUNITY)), int(max_level) - 1, -1):
        out.append(ancestor(chain_code, Level(lv)))
    return out


def owner_at(
    chain_code: str, level: Level, units: Mapping[str, bool], *, max_level: Level
) -> tuple[str, list[dict[str, Any]]]:
    """The owner at ``level`` on the chain: the first existing candidate, with an alert per skip."""
    alerts: list[dict[str, Any]] = []
    for code in owner_candidates(chain_code, level, max_level=max_level):
        if units.get(code, False):
            return code, alerts
        alerts.append({"code": "unit_missing", "unit_code": code})
    raise RoutingError(
        f"no unit exists on the chain of {chain_code} from {level.name.lower()} up to "
        f"{max_level.name.lower()} level; the case cannot be given an owner"
    )


def chain_owner_ok(chain_code: str, owner_code: str) -> bool:
    """The ownership invariant: the owner is the unit of its own level on the case's chain."""
    try:
        return ancestor(chain_code, owner_rank(owner_code)) == owner_code
    except CodeError:
        return False


def supervisor_of(owner_code: str) -> str | None:
    """The unit one level up from an owner (a grid officer's supervisor is the community union)."""
    return parent(owner_code)


def scope_prefix(scope: str) -> str:
    """The code prefix that selects a scope's subtree (``420502000000`` -> ``420502``)."""
    if is_cell_code(scope):
        return scope
    if not is_division_code(scope):
        raise ScopeError(f"a scope is a 12-digit division or 15-digit cell code, got {scope!r}")
    n = {Level.PROVINCE: 2, Level.CITY: 4, Level.COUNTY: 6, Level.TOWN: 9, Level.COMMUNITY: 12}
    return scope[: n[division_level(scope)]]


def in_scope(scope: str, code: str) -> bool:
    return code.startswith(scope_prefix(scope))


# ----------------------------------------------------------------------------- low-level writes


def write_events(cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> int:
    return copy_csv(cur, "case_event", EVENT_COLUMNS, rows)


def write_steps(cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> int:
    return copy_csv(cur, "escalation_step", STEP_COLUMNS, rows)


def _lock_case(cur: Cursor, case_id: int, expected_version: int | None) -> CaseHead:
    cur.execute(f"SELECT {CASE_HEAD_COLUMNS} FROM case_file WHERE id = %s FOR UPDATE", (case_id,))
    row = cur.fetchone()
    if row is None:
        raise CaseNotFound(case_id)
    head = CaseHead.from_row(row)
    if expected_version is not None and head.version != expected_version:
        raise StaleCase(case_id, expected_version, head.version)
    return head


def _close_steps(cur: Cursor, case_id: int, *, outcome: str, at: datetime) -> int:
    cur.execute(
        "UPDATE escalation_step SET done_at = %s, outcome = %s WHERE case_id = %s AND done_at IS NULL",
        (at, outcome, case_id),
    )
    return int(cur.rowcount)


def _deadlines(kind: CaseKind, level: Level, at: datetime, rules: CaseRules) -> Deadlines:
    return deadlines_for(kind, level, at, rules.policy, rules.calendar)


def _assigned_notices(
    head: CaseHead, event: Event, after: CaseState, *, resolve_by: datetime, chain_code: str
) -> list[Notice]:
    return [
        notice(
            topic="assigned",
            target="union",
            recipient_code=after.owner_code,
            case_id=head.id,
            event_seq=event.seq,
            at=event.at,
            kind=head.kind,
            severity=head.severity,
            level=after.level,
            state=after.state.value,
            owner_code=after.owner_code,
            extra={"resolve_by": resolve_by, "chain_code": chain_code},
        )
    ]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """Where a case stands after a command: its new version is the next ``expected_version``."""

    case_id: int
    version: int
    state: State
    level: Level
    owner_code: str
    event: Event


def _append(
    cur: Cursor,
    head: CaseHead,
    *,
    action: Action,
    actor: str,
    at: datetime,
    payload: Mapping[str, Any],
    rules: CaseRules,
    sets: Mapping[str, Any] | None = None,
    chain_code: str | None = None,
    chain_version_id: int | None = None,
    owner_changed_notice: bool = True,
) -> ActionResult:
    """Record one event on a locked case, update the row, and re-plan deadlines if the owner moved."""
    event, after = record(head.case_state(), action=action, actor=actor, at=at, payload=payload)
    columns: dict[str, Any] = dict(sets or {})
    columns.update(
        state=after.state.value,
        level=int(after.level),
        owner_code=after.owner_code,
        version=after.version,
        head_hash=after.last_hash,
    )
    new_chain = head.chain_code if chain_code is None else chain_code
    if chain_code is not None:
        columns.update(chain_code=chain_code, chain_version_id=chain_version_id)
    moved = after.owner_code != head.owner_code
    resolve_by = head.resolve_by
    if moved or action is Action.REOPEN:
        dl = _deadlines(head.kind, after.level, at, rules)
        resolve_by = dl.resolve_by
        columns.update(
            respond_by=dl.respond_by, resolve_by=dl.resolve_by, deadlines_provisional=dl.provisional
        )
    assignments = ", ".join(f"{name} = %({name})s" for name in columns)
    cur.execute(
        f"UPDATE case_file SET {assignments}, updated_at = now() "
        "WHERE id = %(__id)s AND version = %(__version)s",
        {**columns, "__id": head.id, "__version": head.version},
    )
    if cur.rowcount != 1:  # cannot happen under the row lock; refuse rather than fork the chain
        raise StaleCase(head.id, head.version, -1)
    write_events(cur, [event_row(event, owner_before=head.owner_code, after=after)])
    if after.state in DONE_STATES:
        _close_steps(cur, head.id, outcome="cancelled", at=at)
    elif moved or action is Action.REOPEN:
        _close_steps(cur, head.id, outcome="superseded", at=at)
        write_steps(
            cur,
            step_rows(
                head.id,
                level=after.level,
                owner_code=after.owner_code,
                resolve_by=resolve_by,
                version=after.version,
                rules=rules,
            ),
        )
        if moved and owner_changed_notice:
            enqueue(cur, _assigned_notices(head, event, after, resolve_by=resolve_by, chain_code=new_chain))
    return ActionResult(head.id, after.version, after.state, after.level, after.owner_code, event)


# ----------------------------------------------------------------------------- intake


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


def _find_open(cur: Cursor, report: CaseReport) -> int | None:
    uscc = report.enterprise_uscc if report.family.value == "dispute" else None
    if report.worker_hmac is None and uscc is None:
        return None
    cur.execute(
        f"""
        SELECT id FROM case_file
        WHERE kind = %s AND {SQL_OPEN} AND (worker_hmac = %s OR enterprise_uscc = %s)
        ORDER BY id LIMIT 1 FOR UPDATE
        """,
        (report.kind.value, report.worker_hmac, uscc),
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def _current_cell_version(cur: Cursor, cell_code: str) -> int | None:
    cur.execute("SELECT version_id FROM grid_cell WHERE code = %s AND valid_to IS NULL", (cell_code,))
    row = cur.fetchone()
    return None if row is None else int(row[0])


def _chain_codes(base: str) -> list[str]:
    own = _rank(base)
    return [ancestor(base, lv) for lv in Level if lv <= own]


def _open_one(cur: Cursor, report: CaseReport, *, rules: CaseRules, actor: str, at: datetime) -> OpenResult:
    if report.source_ref is not None:
        cur.execute("SELECT case_id, attached FROM case_intake WHERE source_ref = %s", (report.source_ref,))
        seen = cur.fetchone()
        if seen is not None:
            head = _lock_case(cur, int(seen[0]), None)
            return OpenResult(head.id, head.version, bool(seen[1]), True, head.owner_code, head.level, None)

    existing = _find_open(cur, report)
    if existing is not None:
        from grid.cases.collective import attach_report  # counts workers, re-checks Art. 7

        head = _lock_case(cur, existing, None)
        res = attach_report(cur, head, report, rules=rules, actor=actor, at=at)
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
        cell_version = _current_cell_version(cur, report.cell_code)
    base = report.cell_code or report.division_code
    assert base is not None  # CaseReport guarantees one of them
    units = units_exist(cur, _chain_codes(base))
    decision = route(
        facts, cell_code=report.cell_code, division_code=report.division_code, policy=policy, units=units
    )
    dl = _deadlines(report.kind, decision.level, at, rules)
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
    cur.execute(
        """
        INSERT INTO case_file (
            id, kind, family, severity, hardship_grade, workers_affected, amount, channel, source_ref,
            cell_code, cell_version_id, division_code, chain_code, chain_version_id, geom, level,
            owner_code, state, version, dual_report, routing, worker_hmac, enterprise_uscc, opened_at,
            respond_by, resolve_by, mediation_window_ends, deadlines_provisional, head_hash)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, ST_GeomFromEWKT(%s), %s, %s, %s,
                %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            case_id,
            report.kind.value,
            report.family.value,
            report.severity.value,
            None if report.hardship_grade is None else report.hardship_grade.value,
            report.workers_affected,
            report.amount,
            report.channel,
            report.source_ref,
            report.cell_code,
            cell_version,
            division,
            base,
            cell_version if is_cell_code(base) else None,
            geom,
            int(after.level),
            after.owner_code,
            after.state.value,
            after.version,
            decision.dual_report,
            json.dumps(explanation, ensure_ascii=False),
            None if report.worker_hmac is None else psycopg2.Binary(report.worker_hmac),
            report.enterprise_uscc,
            at,
            dl.respond_by,
            dl.resolve_by,
            dl.mediation_window_ends,
            dl.provisional,
            after.last_hash,
        ),
    )
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
    notices = _assigned_notices(head, event, after, resolve_by=dl.resolve_by, chain_code=base)
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
    when = at or _now()
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
                (kind, worker_hmac) IN (SELECT * FROM unnest(%s::text[], %s::bytea[]))
                OR (kind, enterprise_uscc) IN (SELECT * FROM unnest(%s::text[], %s::text[])))
            ORDER BY id FOR UPDATE
            """,
            ([k for k, _ in workers], [h for _, h in workers], [k for k, _ in firms], [u for _, u in firms]),
        )
    return [_open_one(cur, r, rules=rules, actor=actor, at=when) for r in reports]


def open_case(
    conn: Conn, *, report: CaseReport, rules: CaseRules, actor: str, at: datetime | None = None
) -> OpenResult:
    """Take in one report in its own transaction: attach to an open case or open, route and queue."""
    with transaction(conn) as cur:
        return intake_reports(cur, [report], rules=rules, actor=actor, at=at)[0]


# ----------------------------------------------------------------------------- officer actions


def _check_allowed(head: CaseHead, action: Action) -> None:
    transition(head.state, action)  # raises TransitionError with the allowed actions


def accept(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """The owner takes the case (受理); counts as responded, on time if before ``respond_by``."""
    when = at or _now()
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.ACCEPT)
        return _append(
            cur,
            head,
            action=Action.ACCEPT,
            actor=actor,
            at=when,
            payload={"on_time": when <= head.respond_by},
            rules=rules,
            sets={"responded_at": when},
        )


def note(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    text: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """A note on the case history (never sent in a notification)."""
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.NOTE)
        return _append(
            cur, head, action=Action.NOTE, actor=actor, at=at or _now(), payload={"text": text}, rules=rules
        )


def start(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """Mediation or assistance is under way (开始办理)."""
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.START)
        return _append(cur, head, action=Action.START, actor=actor, at=at or _now(), payload={}, rules=rules)


def resolve(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    outcome: Outcome,
    rules: CaseRules,
    amount_recovered: Decimal | None = None,
    assistance: str | None = None,
    at: datetime | None = None,
) -> ActionResult:
    """Resolve with an outcome (amount recovered, assistance given); cancels the queued steps. An
    amount that is no amount raises :class:`grid.cases.amounts.AmountError` before anything is written."""
    when = at or _now()
    oc = Outcome(outcome)
    amount_recovered = parse_yuan(amount_recovered)
    payload: dict[str, Any] = {"outcome": oc.value}
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.RESOLVE)
        payload["on_time"] = when <= head.resolve_by
        if amount_recovered is not None:
            payload["amount_recovered"] = Decimal(amount_recovered)
        if assistance:
            payload["assistance"] = assistance
        return _append(
            cur,
            head,
            action=Action.RESOLVE,
            actor=actor,
            at=when,
            payload=payload,
            rules=rules,
            sets={"outcome": oc.value, "amount_recovered": amount_recovered, "resolved_at": when},
        )


def close(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """Archive a resolved case (归档)."""
    when = at or _now()
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.CLOSE)
        return _append(
            cur,
            head,
            action=Action.CLOSE,
            actor=actor,
            at=when,
            payload={},
            rules=rules,
            sets={"closed_at": when},
        )


def escalation_target(
    cur: Cursor, head: CaseHead, *, rules: CaseRules
) -> tuple[Level, str, list[dict[str, Any]]]:
    """One level up the case's chain, and the unit there (passing upward over missing units)."""
    to_level = next_level(head.level, max_level=rules.max_level)
    codes = owner_candidates(head.chain_code, to_level, max_level=rules.max_level)
    owner, alerts = owner_at(head.chain_code, to_level, units_exist(cur, codes), max_level=rules.max_level)
    return to_level, owner, alerts


def escalate(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    reason: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """Escalate one level up the case's chain, with a reason; new owner, new deadlines, new steps."""
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.ESCALATE)
        to_level, owner, alerts = escalation_target(cur, head, rules=rules)
        payload: dict[str, Any] = {
            "reason": reason,
            "to_owner": owner,
            "from_level": int(head.level),
            "to_level": int(to_level),
        }
        if alerts:
            payload["alerts"] = alerts
        return _append(
            cur, head, action=Action.ESCALATE, actor=actor, at=at or _now(), payload=payload, rules=rules
        )


def return_to_parent(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    reason: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """Return a misrouted case to the unit above its owner (the nearest existing one) to re-dispatch."""
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.RETURN_TO_PARENT)
        rank = owner_rank(head.owner_code)
        if rank <= rules.max_level:
            raise TransitionError(
                f"A case owned at {rank.name.lower()} level has no parent to return to under this policy."
            )
        above = [
            ancestor(head.chain_code, Level(lv)) for lv in range(int(rank) - 1, int(rules.max_level) - 1, -1)
        ]
        units = units_exist(cur, above)
        target = next((c for c in above if units.get(c)), None)
        if target is None:
            raise RoutingError(f"no unit exists above {head.owner_code} to return the case to")
        skipped = [{"code": "unit_missing", "unit_code": c} for c in above[: above.index(target)]]
        payload: dict[str, Any] = {"reason": reason, "to_owner": target}
        if skipped:
            payload["alerts"] = skipped
        return _append(
            cur,
            head,
            action=Action.RETURN_TO_PARENT,
            actor=actor,
            at=at or _now(),
            payload=payload,
            rules=rules,
        )


def reopen(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    reason: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """Reopen a resolved or closed case with a reason; same owner, fresh deadlines and steps."""
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.REOPEN)
        return _append(
            cur,
            head,
            action=Action.REOPEN,
            actor=actor,
            at=at or _now(),
            payload={"reason": reason},
            rules=rules,
            sets={"resolved_at": None, "closed_at": None, "outcome": None, "amount_recovered": None},
        )


def _supervises(scope: str, head: CaseHead) -> bool:
    """``scope`` is a division on the case's chain at or above the owner's level."""
    if not is_division_code(scope):
        return False
    lv = division_level(scope)
    return lv <= head.level and _rank(head.chain_code) >= lv and ancestor(head.chain_code, lv) == scope


def reassign(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    scope: str,
    to_owner: str,
    reason: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """A supervising unit (``scope``) re-dispatches the case to an existing unit within its subtree.

    The case then rides the new owner's chain: a cell becomes the case's chain; a division off the
    current chain becomes it too.
    """
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.REASSIGN)
        if not _supervises(scope, head):
            raise ScopeError(f"unit {scope} does not supervise case {case_id} (owner {head.owner_code})")
        try:
            rank = owner_rank(to_owner)
        except CodeError as exc:
            raise TransitionError(str(exc)) from None
        if not in_scope(scope, to_owner):
            raise ScopeError(f"{to_owner} is outside the subtree of {scope}")
        if to_owner == head.owner_code:
            raise TransitionError(f"case {case_id} is already owned by {to_owner}")
        if min(rank, Level.COMMUNITY) < rules.max_level:
            raise TransitionError(f"{to_owner} is above the highest level this policy allows")
        if not units_exist(cur, [to_owner]).get(to_owner):
            raise RoutingError(f"{to_owner} is not an existing unit (or a cell without an active officer)")
        chain, chain_version = head.chain_code, head.chain_version_id
        if is_cell_code(to_owner):
            chain, chain_version = to_owner, _current_cell_version(cur, to_owner)
        elif not chain_owner_ok(head.chain_code, to_owner):
            chain, chain_version = to_owner, None
        payload: dict[str, Any] = {"to_owner": to_owner, "reason": reason, "by_unit": scope}
        if chain != head.chain_code:
            payload["chain_code"] = chain
        return _append(
            cur,
            head,
            action=Action.REASSIGN,
            actor=actor,
            at=at or _now(),
            payload=payload,
            rules=rules,
            chain_code=chain if chain != head.chain_code else None,
            chain_version_id=chain_version,
        )


def urge(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    scope: str,
    text: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """督办: a unit above the owner on the case's chain presses for a solution; the owner is notified."""
    when = at or _now()
    with transaction(conn) as cur:
        head = _lock_case(cur, case_id, expected_version)
        _check_allowed(head, Action.URGE)
        if not _supervises(scope, head) or scope == head.owner_code:
            raise ScopeError(f"unit {scope} is not above the owner of case {case_id}")
        res = _append(
            cur,
            head,
            action=Action.URGE,
            actor=actor,
            at=when,
            payload={"text": text, "by_unit": scope},
            rules=rules,
        )
        enqueue(
            cur,
            [
                notice(
                    topic="urge",
                    target="union",
                    recipient_code=head.owner_code,
                    case_id=head.id,
                    event_seq=res.event.seq,
                    at=when,
                    kind=head.kind,
                    severity=head.severity,
                    level=head.level,
                    state=res.state.value,
                    owner_code=head.owner_code,
                    extra={"resolve_by": head.resolve_by},
                )
            ],
        )
        return res


# ----------------------------------------------------------------------------- re-route on a cell import


@dataclass(frozen=True, slots=True)
class RerouteMove:
    """One open case whose chain cell changes with a new cell version (the dry-run diff)."""

    case_id: int
    from_chain: str
    to_chain: str
    how: str  # point | same_code | overlap | community


@dataclass
class RerouteReport:
    moved: int = 0
    reassigned: int = 0
    relabelled: int = 0  # same cell code in the new version: only the version id changes
    moves: list[RerouteMove] = field(default_factory=list)


def plan_reroute(cur: Cursor, *, old_version: int, new_version: int) -> list[RerouteMove]:
    """Where each open case riding a cell of ``old_version`` goes in ``new_version``; read-only.

    Every such case, staying ones included (set-based: :func:`grid.cases.reroute_plan.plan`).
    """
    from grid.cases import reroute_plan

    p = reroute_plan.plan(cur, old_version=old_version, new_version=new_version, list_untouched=True)
    return sorted((*p.planned, *p.untouched_cases), key=lambda m: m.case_id)


def reroute_for_cell_version(
    conn: Conn,
    *,
    old_version: int,
    new_version: int,
    reason: str,
    rules: CaseRules,
    actor: str = "system:cells-import",
    at: datetime | None = None,
) -> RerouteReport:
    """Move open cases onto a committed new cell version, recording why on each moved case.

    The only way open cases change cells (:mod:`grid.cases.reroute_plan`). A case whose cell keeps
    its code only has its version id updated (it does not move); a case that moves gets an event
    with ``reason`` and the move — a reassignment (back to NEW, fresh deadlines) if its owner at
    its level changes, else a note.
    """
    from grid.cases import reroute_plan

    if not reason.strip():
        raise ValueError("a re-route needs a reason")
    with transaction(conn) as cur:
        return reroute_plan.apply(
            cur,
            old_version=old_version,
            new_version=new_version,
            reason=reason,
            rules=rules,
            actor=actor,
            at=at or _now(),
        )


# ----------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class CaseSummary:
    id: int
    kind: CaseKind
    severity: Severity
    state: State
    level: Level
    owner_code: str
    chain_code: str
    version: int
    opened_at: datetime
    resolve_by: datetime
    overdue: bool


@dataclass(frozen=True, slots=True)
class CaseDetail:
    """A case for display: no raw personal data (the worker only as the masked ID, if known)."""

    id: int
    kind: CaseKind
    family: str
    severity: Severity
    hardship_grade: str | None
    workers_affected: int
    amount: Decimal | None
    channel: str
    cell_code: str | None
    cell_version_id: int | None
    division_code: str
    chain_code: str
    level: Level
    owner_code: str
    state: State
    version: int
    dual_report: bool
    routing: dict[str, Any]
    worker_masked: str | None
    has_worker: bool
    enterprise_uscc: str | None
    outcome: str | None
    opened_at: datetime
    respond_by: datetime
    resolve_by: datetime
    mediation_window_ends: datetime | None
    deadlines_provisional: bool
    head_hash: str


def get_case(conn: Conn, *, case_id: int, scope: str | None = None) -> CaseDetail:
    """One case; with ``scope`` a case outside it is reported as not found."""
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT c.id, c.kind, c.family, c.severity, c.hardship_grade, c.workers_affected, c.amount,
                   c.channel, c.cell_code, c.cell_version_id, c.division_code, c.chain_code, c.level,
                   c.owner_code, c.state, c.version, c.dual_report, c.routing,
                   (SELECT w.id_masked FROM worker w WHERE w.id_hmac = c.worker_hmac
                     ORDER BY w.updated_at DESC LIMIT 1),
                   c.worker_hmac IS NOT NULL, c.enterprise_uscc, c.outcome, c.opened_at, c.respond_by,
                   c.resolve_by, c.mediation_window_ends, c.deadlines_provisional, c.head_hash
            FROM case_file c WHERE c.id = %s
            """,
            (case_id,),
        )
        row = cur.fetchone()
    if row is None or (scope is not None and not in_scope(scope, str(row[11]))):
        raise CaseNotFound(case_id)
    return CaseDetail(
        id=int(row[0]),
        kind=CaseKind(row[1]),
        family=str(row[2]),
        severity=Severity(row[3]),
        hardship_grade=row[4],
        workers_affected=int(row[5]),
        amount=row[6],
        channel=str(row[7]),
        cell_code=row[8],
        cell_version_id=row[9],
        division_code=str(row[10]),
        chain_code=str(row[11]),
        level=Level(int(row[12])),
        owner_code=str(row[13]),
        state=State(row[14]),
        version=int(row[15]),
        dual_report=bool(row[16]),
        routing=dict(row[17]),
        worker_masked=row[18],
        has_worker=bool(row[19]),
        enterprise_uscc=row[20],
        outcome=row[21],
        opened_at=row[22],
        respond_by=row[23],
        resolve_by=row[24],
        mediation_window_ends=row[25],
        deadlines_provisional=bool(row[26]),
        head_hash=str(row[27]),
    )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with the replayed owner columns kept beside it."""

    event: Event
    owner_before: str | None
    owner_after: str
    level_after: Level


def events_of(conn_or_cur: Conn | Cursor, *, case_id: int) -> list[StoredEvent]:
    """A case's full history in order."""
    sql = (
        "SELECT case_id, seq, action, from_state, to_state, actor, at, payload, prev_hash, hash, "
        "owner_before, owner_after, level_after FROM case_event WHERE case_id = %s ORDER BY seq"
    )
    if isinstance(conn_or_cur, psycopg2.extensions.connection):
        with transaction(conn_or_cur) as cur:
            cur.execute(sql, (case_id,))
            rows = cur.fetchall()
    else:
        conn_or_cur.execute(sql, (case_id,))
        rows = conn_or_cur.fetchall()
    return [
        StoredEvent(
            Event(
                case_id=str(r[0]),
                seq=int(r[1]),
                action=Action(r[2]),
                from_state=None if r[3] is None else State(r[3]),
                to_state=State(r[4]),
                actor=str(r[5]),
                at=r[6],
                payload=dict(r[7]),
                prev_hash=str(r[8]),
                hash=str(r[9]),
            ),
            r[10],
            str(r[11]),
            Level(int(r[12])),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Replayed:
    """The row fields the events determine."""

    state: State
    level: Level
    owner_code: str
    version: int
    head_hash: str
    chain_code: str


def fold(events: Sequence[Event]) -> Replayed:
    """Replay a history (verifying every hash) into the row fields it determines."""
    st = replay(events, verify=True)
    chain = ""
    for ev in events:
        if "chain_code" in ev.payload and ev.payload["chain_code"] is not None:
            chain = str(ev.payload["chain_code"])
    return Replayed(st.state, st.level, st.owner_code, st.version, st.last_hash, chain)


def list_cases(
    conn: Conn,
    *,
    scope: str,
    states: Sequence[State] | None = None,
    now: datetime | None = None,
    limit: int = 100,
) -> list[CaseSummary]:
    """Cases on chains within ``scope`` (the scope filter is part of the query), newest first."""
    prefix = scope_prefix(scope)
    wanted = [s.value for s in (states or list(State))]
    when = now or _now()
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT id, kind, severity, state, level, owner_code, chain_code, version, opened_at, resolve_by
            FROM case_file
            WHERE chain_code LIKE %s AND state = ANY(%s)
            ORDER BY opened_at DESC, id DESC LIMIT %s
            """,
            (prefix + "%", wanted, limit),
        )
        rows = cur.fetchall()
    return [
        CaseSummary(
            id=int(r[0]),
            kind=CaseKind(r[1]),
            severity=Severity(r[2]),
            state=State(r[3]),
            level=Level(int(r[4])),
            owner_code=str(r[5]),
            chain_code=str(r[6]),
            version=int(r[7]),
            opened_at=r[8],
            resolve_by=r[9],
            overdue=State(r[3]) in OPEN_STATES and r[9] < when,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    unit_code: str
    period: str
    received: int
    responded: int
    resolved: int
    on_time: int
    escalated: int
    reminded: int
    criticised: int


def ledger(conn: Conn, *, scope: str, period: str | None = None) -> list[LedgerRow]:
    """The supervision ledger (received, responded, resolved, on time, escalated, reminded,
    criticised) per unit within ``scope`` and month ``YYYY-MM`` (local time)."""
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT unit_code, period, received, responded, resolved, on_time, escalated, reminded, criticised
            FROM supervision_ledger
            WHERE unit_code LIKE %s AND (%s::text IS NULL OR period = %s)
            ORDER BY unit_code, period
            """,
            (scope_prefix(scope) + "%", period, period),
        )
        rows = cur.fetchall()
    return [LedgerRow(str(r[0]), str(r[1]), *(int(x) for x in r[2:])) for r in rows]


def ensure_units(conn: Conn, *, scope: str) -> int:
    """Create an active union unit for every current division within ``scope`` that has none.

    For operators bringing a city online; grid officers come from the officer import.
    """
    with transaction(conn) as cur:
        cur.execute(
            """
            INSERT INTO unit (code, level, name)
            SELECT d.code::text, d.level, d.name || '工会' FROM division d
            WHERE d.valid_to IS NULL AND d.code::text LIKE %s
            ON CONFLICT (code) DO NOTHING
            """,
            (scope_prefix(scope) + "%",),
        )
        return int(cur.rowcount)


__all__ = [
    "ActionResult",
    "CaseDetail",
    "CaseHead",
    "CaseNotFound",
    "CaseRules",
    "CaseSummary",
    "EscalationError",
    "LedgerRow",
    "OpenResult",
    "Replayed",
    "RerouteMove",
    "RerouteReport",
    "ScopeError",
    "StaleCase",
    "StoredEvent",
    "accept",
    "close",
    "escalate",
    "events_of",
    "fold",
    "get_case",
    "intake_reports",
    "ledger",
    "list_cases",
    "note",
    "open_case",
    "owner_at",
    "plan_reroute",
    "reassign",
    "reopen",
    "reroute_for_cell_version",
    "resolve",
    "return_to_parent",
    "rules_from_settings",
    "start",
    "urge",
]
