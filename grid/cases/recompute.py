"""Recompute provisional deadlines when an official holiday list is published.

A deadline that ran into a year without the official list was counted on the derived calendar
(statutory days off only; :mod:`grid.workdays`) and stored with ``deadlines_provisional``; its
queued supervision steps carry ``provisional`` too. When the State Council's schedule for that year
arrives (``gridflow calendar load FILE``, or a ``calendar.holiday_files`` entry in the policy),
:func:`recompute_provisional` counts every open case's deadlines again on the new calendar:

* the anchor is the time the current deadlines were set: the latest event that gave the case its
  current owner (open, escalation, reassignment, return) or reopened it, exactly the moments the
  write path and the sweep compute deadlines at;
* ``respond_by`` / ``resolve_by`` / ``deadlines_provisional`` (and the mediation window, which
  counts from opening and moves only with ``roll_forward_if_last_day_holiday``) are updated;
* each pending step keeps its kind and gets the due time the new calendar gives it;
* one ``note`` event by ``system:calendar`` per changed case records old and new values, appended to
  the hash chain like every other event (a note is allowed in every open state).

Everything happens in ONE transaction; the dry run (the default of the CLI) computes the same list
of moves inside a transaction that is rolled back, so it writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg2.extensions
from psycopg2.extras import execute_values

from grid.cases.deadlines import Step, deadlines_for, escalation_steps
from grid.cases.states import SQL_OPEN, Action, record
from grid.cases.store import CASE_HEAD_COLUMNS, CaseHead, CaseRules, event_row, write_events

Conn = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

CALENDAR_ACTOR: Final = "system:calendar"
NOTE_TEXT: Final = (
    "官方放假安排公布，按新日历重算期限 / deadlines recomputed on the published official holiday schedule"
)


@dataclass(frozen=True, slots=True)
class StepMove:
    step_id: int
    kind: str
    old_due: datetime
    new_due: datetime
    old_provisional: bool
    new_provisional: bool


@dataclass(frozen=True, slots=True)
class DeadlineMove:
    """What recomputing one case changes (``changed`` False: nothing to write for it)."""

    case_id: int
    anchor: datetime
    old_respond_by: datetime
    new_respond_by: datetime
    old_resolve_by: datetime
    new_resolve_by: datetime
    old_provisional: bool
    new_provisional: bool
    old_window: datetime | None
    new_window: datetime | None
    steps: tuple[StepMove, ...] = field(default_factory=tuple)

    @property
    def deadline_moved(self) -> bool:
        return (self.old_respond_by, self.old_resolve_by, self.old_window) != (
            self.new_respond_by,
            self.new_resolve_by,
            self.new_window,
        )

    @property
    def changed(self) -> bool:
        return (
            self.deadline_moved
            or self.old_provisional != self.new_provisional
            or any(s.old_due != s.new_due or s.old_provisional != s.new_provisional for s in self.steps)
        )

    def payload(self) -> dict[str, Any]:
        """The event payload: old and new of every value that was recomputed."""
        return {
            "text": NOTE_TEXT,
            "kind": "deadlines_recomputed",
            "anchor": self.anchor,
            "respond_by": {"old": self.old_respond_by, "new": self.new_respond_by},
            "resolve_by": {"old": self.old_resolve_by, "new": self.new_resolve_by},
            "mediation_window_ends": {"old": self.old_window, "new": self.new_window},
            "provisional": {"old": self.old_provisional, "new": self.new_provisional},
            "steps": [
                {"step_id": s.step_id, "kind": s.kind, "old_due": s.old_due, "new_due": s.new_due}
                for s in self.steps
                if s.old_due != s.new_due or s.old_provisional != s.new_provisional
            ],
        }


@dataclass
class RecomputeReport:
    examined: int = 0
    moves: list[DeadlineMove] = field(default_factory=list)
    committed: bool = False

    @property
    def changed(self) -> list[DeadlineMove]:
        return [m for m in self.moves if m.changed]


def _candidates(cur: Cursor, scope_prefix: str | None) -> list[int]:
    """Open cases whose deadlines or pending steps rest on a provisional calendar, locked in id order."""
    cur.execute(
        f"""
        SELECT c.id FROM case_file c
        WHERE {SQL_OPEN.replace("state", "c.state")}
          AND (c.deadlines_provisional OR EXISTS (
                SELECT 1 FROM escalation_step s
                WHERE s.case_id = c.id AND s.done_at IS NULL AND s.provisional))
          AND (%(prefix)s::text IS NULL OR c.chain_code LIKE %(prefix)s || '%%')
        ORDER BY c.id
        FOR UPDATE OF c
        """,
        {"prefix": scope_prefix},
    )
    return [int(r[0]) for r in cur.fetchall()]


def plan_recompute(cur: Cursor, *, rules: CaseRules, scope_prefix: str | None = None) -> list[DeadlineMove]:
    """Lock the provisional open cases and compute what the current calendar makes of them."""
    ids = _candidates(cur, scope_prefix)
    if not ids:
        return []
    cur.execute(
        f"SELECT {CASE_HEAD_COLUMNS}, opened_at, mediation_window_ends, deadlines_provisional "
        "FROM case_file WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    )
    rows = cur.fetchall()
    cur.execute(
        """
        SELECT DISTINCT ON (case_id) case_id, at FROM case_event
        WHERE case_id = ANY(%s) AND (action = 'reopen' OR owner_before IS DISTINCT FROM owner_after)
        ORDER BY case_id, seq DESC
        """,
        (ids,),
    )
    anchors = {int(r[0]): r[1] for r in cur.fetchall()}
    cur.execute(
        """
        SELECT id, case_id, kind, due_at, provisional FROM escalation_step
        WHERE case_id = ANY(%s) AND done_at IS NULL ORDER BY case_id, due_at, id
        """,
        (ids,),
    )
    pending: dict[int, list[tuple[Any, ...]]] = {}
    for r in cur.fetchall():
        pending.setdefault(int(r[1]), []).append(r)

    policy, calendar = rules.policy, rules.calendar
    moves: list[DeadlineMove] = []
    for row in rows:
        head = CaseHead.from_row(row)
        opened_at, old_window, old_prov = row[14], row[15], bool(row[16])
        anchor = anchors.get(head.id, opened_at)
        dl = deadlines_for(head.kind, head.level, anchor, policy, calendar)
        window = old_window
        prov = dl.provisional
        if old_window is not None:
            at_open = deadlines_for(head.kind, head.level, opened_at, policy, calendar)
            window = at_open.mediation_window_ends
            if policy.mediation.roll_forward_if_last_day_holiday:
                prov = prov or at_open.provisional
        planned: dict[str, Step] = {
            s.kind: s for s in escalation_steps(str(head.id), head.level, dl.resolve_by, policy, calendar)
        }
        steps: list[StepMove] = []
        for sid, _cid, kind, due, sprov in pending.get(head.id, []):
            new = planned.get(str(kind))
            if new is None:  # a step of a kind the policy no longer plans: leave it as queued
                continue
            steps.append(StepMove(int(sid), str(kind), due, new.due_at, bool(sprov), new.provisional))
        moves.append(
            DeadlineMove(
                case_id=head.id,
                anchor=anchor,
                old_respond_by=head.respond_by,
                new_respond_by=dl.respond_by,
                old_resolve_by=head.resolve_by,
                new_resolve_by=dl.resolve_by,
                old_provisional=old_prov,
                new_provisional=prov,
                old_window=old_window,
                new_window=window,
                steps=tuple(steps),
            )
        )
    return moves


def apply_recompute(
    cur: Cursor, moves: list[DeadlineMove], *, at: datetime, actor: str = CALENDAR_ACTOR
) -> int:
    """Write the changed moves on their (already locked) cases: rows, steps and one event each."""
    changed = [m for m in moves if m.changed]
    if not changed:
        return 0
    cur.execute(
        f"SELECT {CASE_HEAD_COLUMNS} FROM case_file WHERE id = ANY(%s) ORDER BY id",
        ([m.case_id for m in changed],),
    )
    heads = {h.id: h for h in (CaseHead.from_row(r) for r in cur.fetchall())}
    events: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    step_updates: list[tuple[Any, ...]] = []
    for m in changed:
        head = heads[m.case_id]
        ev, after = record(head.case_state(), action=Action.NOTE, actor=actor, at=at, payload=m.payload())
        events.append(event_row(ev, owner_before=head.owner_code, after=after))
        updates.append(
            (
                head.id,
                head.version,
                after.version,
                after.last_hash,
                m.new_respond_by,
                m.new_resolve_by,
                m.new_window,
                m.new_provisional,
            )
        )
        step_updates.extend((s.step_id, s.new_due, s.new_provisional, after.version) for s in m.steps)
    execute_values(
        cur,
        """
        UPDATE case_file c SET version = v.version, head_hash = v.head_hash, respond_by = v.respond_by,
            resolve_by = v.resolve_by, mediation_window_ends = v.window_ends,
            deadlines_provisional = v.provisional, updated_at = now()
        FROM (VALUES %s) AS v(id, old_version, version, head_hash, respond_by, resolve_by, window_ends,
                              provisional)
        WHERE c.id = v.id AND c.version = v.old_version
        """,
        updates,
        template=(
            "(%s::bigint, %s::int, %s::int, %s::text, %s::timestamptz, %s::timestamptz, "
            "%s::timestamptz, %s::boolean)"
        ),
        page_size=max(len(updates), 1),
    )
    if cur.rowcount != len(updates):  # cannot happen under the row locks; refuse rather than fork
        raise RuntimeError(f"{len(updates) - cur.rowcount} case(s) changed version during the recompute")
    write_events(cur, events)
    if step_updates:
        execute_values(
            cur,
            """
            UPDATE escalation_step s SET due_at = v.due_at, provisional = v.provisional,
                case_version = v.case_version
            FROM (VALUES %s) AS v(id, due_at, provisional, case_version)
            WHERE s.id = v.id AND s.done_at IS NULL
            """,
            step_updates,
            template="(%s::bigint, %s::timestamptz, %s::boolean, %s::int)",
            page_size=len(step_updates),
        )
    return len(changed)


def recompute_provisional(
    conn: Conn,
    *,
    rules: CaseRules,
    at: datetime,
    commit: bool,
    scope_prefix: str | None = None,
) -> RecomputeReport:
    """Recompute every open provisional case in ONE transaction; ``commit=False`` rolls it back."""
    report = RecomputeReport()
    try:
        with conn.cursor() as cur:
            moves = plan_recompute(cur, rules=rules, scope_prefix=scope_prefix)
            report.examined = len(moves)
            report.moves = moves
            if commit:
                apply_recompute(cur, moves, at=at)
        if commit:
            conn.commit()
            report.committed = True
        else:
            conn.rollback()
    except BaseException:
        conn.rollback()
        raise
    return report
