"""The escalation sweep: fire due supervision steps, set-based, idempotent, safe to run twice at once.

One batch is one transaction:

1. lock the cases of the earliest due steps — ``SELECT ... FOR UPDATE OF c SKIP LOCKED`` over the
   step/case join, so a case an officer (or another sweeper) holds is skipped, never waited for;
2. re-read those cases' due steps under the lock (a fresh snapshot: a step another sweeper has
   just fired is gone), and decide each step in Python with the same pure functions the officer
   path uses (:func:`grid.cases.states.record`, :func:`grid.cases.deadlines.deadlines_for`);
3. write everything with a handful of statements: events and new steps and notices by COPY, the
   case rows by one version-guarded ``UPDATE ... FROM (VALUES ...)``, the steps by another.

Per due step:

* the case is resolved or closed → the step is **cancelled**; such a case never escalates;
* the step was queued for another owner than the case has now → **superseded** (stale);
* ``remind`` (催办) → an ``urge`` event naming the reminded unit, notices to the owner and its
  supervisor (the ledger counts it from the event);
* ``criticise_and_escalate`` → the written criticism (通报) is recorded against the failing unit
  (``criticised_unit`` in the event) and the case escalates exactly one level up its chain, with a
  new owner, new deadlines counted from now and new steps; at the policy's top level, or with
  ``criticise`` steps, the criticism is recorded without escalation.

Running the sweep again at the same ``now`` finds nothing due: every step it took is done.

Replays and drills: ``sweep(..., dry_run=True)`` does every batch in ONE transaction and rolls it
back, so "what would be reminded, criticised and escalated at T" is answered (``report.planned``
lists each step) and nothing is written. A sweep never writes events dated after the database clock
(``now`` later than ``SELECT now()`` by more than :data:`CLOCK_TOLERANCE`) unless asked with
``drill=True`` (``gridflow sweep --now T --commit``); those events carry ``"replayed": true`` in
their payload, so the ledger and the audit can tell a drill from a real reminder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg2.extensions
from psycopg2.extras import execute_values

from geodata.codes import Level
from grid.cases.deadlines import deadlines_for
from grid.cases.outbox import Notice, enqueue, notice
from grid.cases.owners import owner_at, owner_candidates, scope_prefix, supervisor_of, units_exist
from grid.cases.routing import RoutingError
from grid.cases.states import DONE_STATES, Action, CaseState, Event, next_level, record
from grid.cases.store import (
    CASE_HEAD_COLUMNS,
    CaseHead,
    CaseRules,
    event_row,
    step_rows,
    write_events,
    write_steps,
)
from grid.store.db import transaction

SWEEP_ACTOR: Final = "system:sweep"
CRITICISE_REASON: Final = "逾期未办结，书面通报并提级办理 / overdue: written criticism, escalated one level"


#: How far ``now`` may run ahead of the database clock before a sweep counts as future-dated.
CLOCK_TOLERANCE: Final = timedelta(minutes=1)


class FutureSweep(ValueError):
    """A sweep at a time after the database clock without ``drill=True``; nothing was written."""


class SweepConflict(RuntimeError):
    """A locked case changed under the sweep (cannot happen under the row lock); batch rolled back."""


@dataclass
class SweepReport:
    """What one sweep did; ``steps`` counts every due step it took (fired, cancelled or superseded)."""

    now: datetime
    batches: int = 0
    cases: int = 0
    steps: int = 0
    reminded: int = 0
    criticised: int = 0
    escalated: int = 0
    cancelled: int = 0
    superseded: int = 0
    notices: int = 0
    events: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    replayed: bool = False
    #: Dry runs only: one entry per step taken — case, step kind, what it did, the unit.
    planned: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "batches": self.batches,
            "cases": self.cases,
            "steps": self.steps,
            "reminded": self.reminded,
            "criticised": self.criticised,
            "escalated": self.escalated,
            "cancelled": self.cancelled,
            "superseded": self.superseded,
            "notices": self.notices,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "replayed": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class DueStep:
    id: int
    case_id: int
    kind: str
    due_at: datetime
    owner_code: str


@dataclass
class _Plan:
    """Everything one batch will write."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    case_updates: list[tuple[Any, ...]] = field(default_factory=list)
    step_done: list[tuple[int, str]] = field(default_factory=list)
    escalated_cases: list[int] = field(default_factory=list)
    new_steps: list[tuple[Any, ...]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def _notice(head: CaseHead, ev: Event, after: CaseState, topic: str, recipient: str, **extra: Any) -> Notice:
    return notice(
        topic=topic,
        target="union",
        recipient_code=recipient,
        case_id=head.id,
        event_seq=ev.seq,
        at=ev.at,
        kind=head.kind,
        severity=head.severity,
        level=after.level,
        state=after.state.value,
        owner_code=after.owner_code,
        extra=extra,
    )


def plan_case(
    head: CaseHead,
    steps: Sequence[DueStep],
    *,
    now: datetime,
    rules: CaseRules,
    units: dict[str, bool],
    report: SweepReport,
    plan: _Plan,
) -> None:
    """Decide one locked case's due steps (in due order) and add the writes to ``plan``."""
    current = head.case_state()
    respond_by, resolve_by, provisional = head.respond_by, head.resolve_by, None
    escalated = False
    mark: dict[str, Any] = {"replayed": True} if report.replayed else {}

    def planned(step: DueStep, did: str, unit: str, **more: Any) -> None:
        if report.dry_run:  # listed for previews only: a real sweep may take a million steps
            report.planned.append(
                {
                    "case_id": head.id,
                    "step": step.kind,
                    "due_at": step.due_at,
                    "did": did,
                    "unit": unit,
                    **more,
                }
            )

    for step in steps:
        report.steps += 1
        if current.state in DONE_STATES:
            plan.step_done.append((step.id, "cancelled"))
            report.cancelled += 1
            planned(step, "cancelled", current.owner_code)
            continue
        if step.owner_code != current.owner_code:
            plan.step_done.append((step.id, "superseded"))
            report.superseded += 1
            planned(step, "superseded", step.owner_code)
            continue
        failing = current.owner_code
        supervisor = supervisor_of(failing)
        if step.kind == "remind":
            ev, after = record(
                current,
                action=Action.URGE,
                actor=SWEEP_ACTOR,
                at=now,
                payload={
                    "kind": "remind",
                    "reminded_unit": failing,
                    "step_id": step.id,
                    "due_at": step.due_at,
                    **mark,
                },
            )
            planned(step, "remind", failing)
            plan.events.append(event_row(ev, owner_before=current.owner_code, after=after))
            recipients = [failing] + ([supervisor] if supervisor else [])
            plan.notices.extend(
                _notice(head, ev, after, "remind", r, resolve_by=resolve_by, due_at=step.due_at)
                for r in recipients
            )
            report.reminded += 1
            current = after
            plan.step_done.append((step.id, "fired"))
            continue

        # criticise (通报), with escalation when the step says so and a level above exists
        target: tuple[Level, str, list[dict[str, Any]]] | None = None
        if step.kind == "criticise_and_escalate" and current.level > rules.max_level:
            to_level = next_level(current.level, max_level=rules.max_level)
            try:
                owner, alerts = owner_at(head.chain_code, to_level, units, max_level=rules.max_level)
                target = (to_level, owner, alerts)
            except RoutingError:  # no unit above: criticise without escalating rather than drop it
                target = None
        if target is None:
            ev, after = record(
                current,
                action=Action.URGE,
                actor=SWEEP_ACTOR,
                at=now,
                payload={"kind": "criticise", "criticised_unit": failing, "step_id": step.id, **mark},
            )
            planned(step, "criticise", failing)
        else:
            to_level, owner, alerts = target
            payload: dict[str, Any] = {
                "reason": CRITICISE_REASON,
                "to_owner": owner,
                "from_level": int(current.level),
                "to_level": int(to_level),
                "criticised_unit": failing,
                "step_id": step.id,
                **mark,
            }
            planned(step, "criticise_and_escalate", failing, to_owner=owner, to_level=to_level.name.lower())
            if alerts:
                payload["alerts"] = alerts
            ev, after = record(current, action=Action.ESCALATE, actor=SWEEP_ACTOR, at=now, payload=payload)
        plan.events.append(event_row(ev, owner_before=current.owner_code, after=after))
        recipients = [failing] + ([supervisor] if supervisor else [])
        plan.notices.extend(
            _notice(head, ev, after, "criticise", r, criticised_unit=failing, due_at=step.due_at)
            for r in recipients
        )
        report.criticised += 1
        plan.step_done.append((step.id, "fired"))
        if target is not None:
            d = deadlines_for(head.kind, after.level, now, rules.policy, rules.calendar)
            respond_by, resolve_by, provisional = d.respond_by, d.resolve_by, d.provisional
            plan.notices.append(
                _notice(
                    head,
                    ev,
                    after,
                    "assigned",
                    after.owner_code,
                    resolve_by=resolve_by,
                    chain_code=head.chain_code,
                )
            )
            report.escalated += 1
            escalated = True
        current = after

    if current.version == head.version:
        return
    report.cases += 1
    plan.case_updates.append(
        (
            head.id,
            head.version,
            current.state.value,
            int(current.level),
            current.owner_code,
            current.version,
            current.last_hash,
            respond_by,
            resolve_by,
            provisional,
        )
    )
    if escalated:
        plan.escalated_cases.append(head.id)
        plan.new_steps.extend(
            step_rows(
                head.id,
                level=current.level,
                owner_code=current.owner_code,
                resolve_by=resolve_by,
                version=current.version,
                rules=rules,
            )
        )


def _lock_due_cases(
    cur: psycopg2.extensions.cursor, *, now: datetime, batch: int, scope: str | None
) -> list[int]:
    cur.execute(
        """
        SELECT c.id FROM escalation_step s JOIN case_file c ON c.id = s.case_id
        WHERE s.done_at IS NULL AND s.due_at <= %(now)s
          AND (%(prefix)s::text IS NULL OR c.chain_code LIKE %(prefix)s || '%%')
        ORDER BY s.due_at, s.id
        LIMIT %(batch)s
        FOR UPDATE OF c SKIP LOCKED
        """,
        {"now": now, "batch": batch, "prefix": None if scope is None else scope_prefix(scope)},
    )
    return sorted({int(r[0]) for r in cur.fetchall()})


def sweep_batch(
    cur: psycopg2.extensions.cursor,
    *,
    now: datetime,
    rules: CaseRules,
    batch: int,
    scope: str | None,
    report: SweepReport,
) -> int:
    """One batch inside the caller's transaction; returns how many due steps it took."""
    ids = _lock_due_cases(cur, now=now, batch=batch, scope=scope)
    if not ids:
        return 0
    cur.execute(f"SELECT {CASE_HEAD_COLUMNS} FROM case_file WHERE id = ANY(%s)", (ids,))
    heads = {h.id: h for h in (CaseHead.from_row(r) for r in cur.fetchall())}
    cur.execute(
        """
        SELECT id, case_id, kind, due_at, owner_code FROM escalation_step
        WHERE case_id = ANY(%s) AND done_at IS NULL AND due_at <= %s
        ORDER BY case_id, due_at, id
        """,
        (ids, now),
    )
    due: dict[int, list[DueStep]] = defaultdict(list)
    for r in cur.fetchall():
        due[int(r[1])].append(DueStep(int(r[0]), int(r[1]), str(r[2]), r[3], str(r[4])))

    # units one level up, for every case that may escalate (one query for the batch)
    wanted: set[str] = set()
    for cid, steps in due.items():
        h = heads[cid]
        if h.level > rules.max_level and any(s.kind == "criticise_and_escalate" for s in steps):
            to_level = Level(int(h.level) - 1)
            wanted.update(owner_candidates(h.chain_code, to_level, max_level=rules.max_level))
    units = units_exist(cur, wanted)

    plan = _Plan()
    taken = 0
    for cid in sorted(due):
        taken += len(due[cid])
        plan_case(heads[cid], due[cid], now=now, rules=rules, units=units, report=report, plan=plan)
    _write(cur, plan, now=now)
    report.notices += len(plan.notices)
    report.events += len(plan.events)
    return taken


def _write(cur: psycopg2.extensions.cursor, plan: _Plan, *, now: datetime) -> None:
    if plan.case_updates:
        execute_values(
            cur,
            """
            UPDATE case_file c SET state = v.state, level = v.level, owner_code = v.owner_code,
                version = v.version, head_hash = v.head_hash, respond_by = v.respond_by,
                resolve_by = v.resolve_by,
                deadlines_provisional = COALESCE(v.provisional, c.deadlines_provisional),
                updated_at = now()
            FROM (VALUES %s) AS v(id, old_version, state, level, owner_code, version, head_hash,
                                  respond_by, resolve_by, provisional)
            WHERE c.id = v.id AND c.version = v.old_version
            """,
            plan.case_updates,
            template=(
                "(%s::bigint, %s::int, %s::text, %s::smallint, %s::text, %s::int, %s::text, "
                "%s::timestamptz, %s::timestamptz, %s::boolean)"
            ),
            page_size=len(plan.case_updates),
        )
        if cur.rowcount != len(plan.case_updates):
            raise SweepConflict(
                f"{len(plan.case_updates) - cur.rowcount} locked case(s) changed version under the sweep"
            )
    write_events(cur, plan.events)
    if plan.step_done:
        execute_values(
            cur,
            """
            UPDATE escalation_step s SET done_at = v.done_at, outcome = v.outcome
            FROM (VALUES %s) AS v(id, outcome, done_at) WHERE s.id = v.id AND s.done_at IS NULL
            """,
            [(sid, outcome, now) for sid, outcome in plan.step_done],
            template="(%s::bigint, %s::text, %s::timestamptz)",
            page_size=len(plan.step_done),
        )
    if plan.escalated_cases:
        cur.execute(
            """
            UPDATE escalation_step SET done_at = %s, outcome = 'superseded'
            WHERE case_id = ANY(%s) AND done_at IS NULL
            """,
            (now, plan.escalated_cases),
        )
    write_steps(cur, plan.new_steps)
    enqueue(cur, plan.notices)


def sweep(
    conn: psycopg2.extensions.connection,
    *,
    now: datetime,
    rules: CaseRules,
    batch: int = 1000,
    scope: str | None = None,
    max_batches: int | None = None,
    dry_run: bool = False,
    drill: bool = False,
) -> SweepReport:
    """Fire every step due at ``now`` (optionally within ``scope``), one transaction per batch.

    Stops when a batch finds nothing it can take (what other sessions hold is left for the next run).
    ``dry_run``: every batch in one transaction, rolled back — the report says what would happen.
    A ``now`` after the database clock raises :class:`FutureSweep` unless ``dry_run`` or ``drill``;
    a drill's events are marked ``"replayed": true``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("sweep needs an aware 'now' (e.g. 2026-10-09T09:00:00+08:00)")
    report = SweepReport(now=now, dry_run=dry_run)
    with transaction(conn) as cur:
        cur.execute("SELECT now()")
        db_now = cur.fetchone()[0]  # type: ignore[index]
    if now > db_now + CLOCK_TOLERANCE:
        if not (dry_run or drill):
            raise FutureSweep(
                f"sweep time {now.isoformat()} is after the database clock ({db_now.isoformat()}): nothing "
                "written; preview it with --dry-run, or write a drill with --commit (events marked replayed)"
            )
        report.replayed = True
    t0 = time.perf_counter()
    if dry_run:
        try:
            with conn.cursor() as cur:
                while max_batches is None or report.batches < max_batches:
                    if sweep_batch(cur, now=now, rules=rules, batch=batch, scope=scope, report=report) == 0:
                        break
                    report.batches += 1
        finally:
            conn.rollback()
        report.seconds = time.perf_counter() - t0
        return report
    while max_batches is None or report.batches < max_batches:
        with transaction(conn) as cur:
            taken = sweep_batch(cur, now=now, rules=rules, batch=batch, scope=scope, report=report)
        if taken == 0:
            break
        report.batches += 1
    report.seconds = time.perf_counter() - t0
    return report
