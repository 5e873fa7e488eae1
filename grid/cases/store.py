"""The case store: the case row (head) and its hash-chained events, over an explicit connection.

Every command is one transaction (``grid.store.db.transaction``): it locks the case row
(``SELECT ... FOR UPDATE``, :func:`lock_case`), checks the caller's ``expected_version`` (a stale
write raises :class:`StaleCase` and writes nothing), builds the next event with
:func:`grid.cases.states.record` (the same fold :func:`~grid.cases.states.replay` uses, so whatever
is written replays), appends it to the hash chain and updates the row, its queued escalation steps
and the outbox together (:func:`append_event`).

Lock order, shared with :mod:`grid.cases.sweep`: the case row first, then that case's steps,
events and outbox rows; intake takes its advisory dedupe locks (sorted) before any case row, and
locks the cases it may attach to in id order. Sweepers lock case rows with ``SKIP LOCKED`` and
never wait for one. No transaction here waits for a lock while holding one another can want, so
officers and sweepers cannot deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import psycopg2.extensions

from connectors.kinds import CaseKind, Severity
from geodata.codes import (
    Level,
)
from grid.cases.deadlines import Deadlines, deadlines_for, escalation_steps
from grid.cases.outbox import Notice, copy_csv, enqueue, notice
from grid.cases.policy import ProvincePolicy, build_calendar, load_policy
from grid.cases.states import (
    DONE_STATES,
    Action,
    CaseState,
    Event,
    State,
    record,
)
from grid.workdays import WorkCalendar

Conn = psycopg2.extensions.connection


Cursor = psycopg2.extensions.cursor


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


def utc_now() -> datetime:
    return datetime.now(UTC)


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


def write_events(cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> int:
    return copy_csv(cur, "case_event", EVENT_COLUMNS, rows)


def write_steps(cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> int:
    return copy_csv(cur, "escalation_step", STEP_COLUMNS, rows)


def lock_case(cur: Cursor, case_id: int, expected_version: int | None) -> CaseHead:
    cur.execute(f"SELECT {CASE_HEAD_COLUMNS} FROM case_file WHERE id = %s FOR UPDATE", (case_id,))
    row = cur.fetchone()
    if row is None:
        raise CaseNotFound(case_id)
    head = CaseHead.from_row(row)
    if expected_version is not None and head.version != expected_version:
        raise StaleCase(case_id, expected_version, head.version)
    return head


def close_steps(cur: Cursor, case_id: int, *, outcome: str, at: datetime) -> int:
    cur.execute(
        "UPDATE escalation_step SET done_at = %s, outcome = %s WHERE case_id = %s AND done_at IS NULL",
        (at, outcome, case_id),
    )
    return int(cur.rowcount)


def deadlines_at(kind: CaseKind, level: Level, at: datetime, rules: CaseRules) -> Deadlines:
    return deadlines_for(kind, level, at, rules.policy, rules.calendar)


def assigned_notices(
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


def append_event(
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
        dl = deadlines_at(head.kind, after.level, at, rules)
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
        close_steps(cur, head.id, outcome="cancelled", at=at)
    elif moved or action is Action.REOPEN:
        close_steps(cur, head.id, outcome="superseded", at=at)
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
            enqueue(cur, assigned_notices(head, event, after, resolve_by=resolve_by, chain_code=new_chain))
    return ActionResult(head.id, after.version, after.state, after.level, after.owner_code, event)


def current_cell_version(cur: Cursor, cell_code: str) -> int | None:
    cur.execute("SELECT version_id FROM grid_cell WHERE code = %s AND valid_to IS NULL", (cell_code,))
    row = cur.fetchone()
    return None if row is None else int(row[0])
