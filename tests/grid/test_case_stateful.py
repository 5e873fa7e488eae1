"""A Hypothesis state machine drives random officer actions (allowed or not, fresh or stale),
sweeps and clock moves against the real database, and checks every invariant after every step.

Invariants (checked by ``case_violations`` for every case after each step): only transitions
from the one table; escalation moves exactly one level; the owner is always the unit of the
case's level on its chain; replaying the events gives the row; the hash chain verifies against
the row's head; resolved or closed cases have no pending steps and never escalate. Each rule also
checks its own outcome against the transition table (a refused or stale write changes nothing).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timedelta

import psycopg2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from connectors.kinds import Outcome
from geodata.codes import Level, ancestor
from grid.cases.actions import (
    accept,
    close,
    escalate,
    note,
    reassign,
    reopen,
    resolve,
    return_to_parent,
    start,
    urge,
)
from grid.cases.intake import open_case
from grid.cases.queries import get_case
from grid.cases.routing import RoutingError
from grid.cases.states import TRANSITIONS, Action, State, TransitionError, owner_rank
from grid.cases.store import ScopeError, StaleCase
from grid.cases.sweep import sweep
from tests.grid.test_case_store import RULES, SH, case_violations, make_world, report, scalar, worker

pytestmark = [pytest.mark.db, pytest.mark.slow]

STATS: Counter[str] = Counter()  # what the examples did, printed at the end (pytest -s)

ACTIONS = [
    Action.ACCEPT,
    Action.NOTE,
    Action.START,
    Action.RESOLVE,
    Action.CLOSE,
    Action.ESCALATE,
    Action.RETURN_TO_PARENT,
    Action.REOPEN,
    Action.REASSIGN,
    Action.URGE,
]


class CaseMachine(RuleBasedStateMachine):
    """One world (a chain of units, three cells with officers and one without) per example."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg2.connect(os.environ["GRIDFLOW_DATABASE_URL"])
        self.world = make_world(self.conn)
        self.clock = datetime(2026, 9, 25, 9, 30, tzinfo=SH)  # before National Day
        self.cases: list[int] = []

    def teardown(self) -> None:
        self.conn.close()

    @initialize()
    def first_case(self) -> None:
        self.cases.append(
            open_case(self.conn, report=report(self.world), rules=RULES, actor="t", at=self.clock).case_id
        )

    @rule(
        cell=st.integers(0, 3),
        kind=st.sampled_from(["wage_arrears", "dismissal", "hardship"]),
        workers=st.sampled_from([1, 2, 12]),
        severity=st.sampled_from(["normal", "normal", "early_sign"]),
        party=st.sampled_from([None, "p1", "p2"]),
    )
    def open_a_case(self, cell: int, kind: str, workers: int, severity: str, party: str | None) -> None:
        cells = [*self.world.cells, self.world.bare_cell]
        rep = report(
            self.world,
            cell_code=cells[cell],
            kind=kind,
            workers_affected=workers,
            severity=severity,
            worker_hmac=None if party is None else worker(party + self.world.town),
        )
        res = open_case(self.conn, report=rep, rules=RULES, actor="t", at=self.clock)
        if res.attached:
            assert res.case_id in self.cases
        else:
            self.cases.append(res.case_id)

    @rule(hours=st.integers(1, 24 * 6))
    def the_clock_moves(self, hours: int) -> None:
        self.clock += timedelta(hours=hours)

    @rule()
    def the_sweep_runs(self) -> None:
        done_before = {
            cid: c.version
            for cid in self.cases
            if (c := get_case(self.conn, case_id=cid)).state in (State.RESOLVED, State.CLOSED)
        }
        rep = sweep(self.conn, now=self.clock, rules=RULES, scope=self.world.town, batch=3)
        STATS.update(
            {
                "sweep escalated": rep.escalated,
                "sweep reminded": rep.reminded,
                "sweep cancelled": rep.cancelled,
            }
        )
        for cid, version in done_before.items():
            assert get_case(self.conn, case_id=cid).version == version, f"sweep touched done case {cid}"
        again = sweep(self.conn, now=self.clock, rules=RULES, scope=self.world.town)
        assert again.events == 0, "a second sweep at the same time did something"

    @precondition(lambda self: bool(self.cases))
    @rule(
        data=st.data(),
        any_action=st.sampled_from(ACTIONS),
        follow_table=st.sampled_from([True, True, False]),
        stale=st.sampled_from([False, False, False, True]),
    )
    def an_officer_acts(
        self, data: st.DataObject, any_action: Action, follow_table: bool, stale: bool
    ) -> None:
        """Mostly an action the table allows from the case's state (so cases travel far), sometimes any."""
        cid = data.draw(st.sampled_from(self.cases))
        c = get_case(self.conn, case_id=cid)
        action = any_action
        if follow_table:
            action = data.draw(st.sampled_from([a for a in ACTIONS if (c.state, a) in TRANSITIONS]))
        stale = stale and c.version > 1
        expected = c.version - 1 if stale else c.version
        events_before = scalar(self.conn, "SELECT count(*) FROM case_event WHERE case_id = %s", cid)
        allowed = (c.state, action) in TRANSITIONS
        kw = {
            "case_id": cid,
            "expected_version": expected,
            "actor": "officer:h",
            "rules": RULES,
            "at": self.clock,
        }
        w = self.world
        try:
            match action:
                case Action.ACCEPT:
                    accept(self.conn, **kw)
                case Action.NOTE:
                    note(self.conn, text="走访", **kw)
                case Action.START:
                    start(self.conn, **kw)
                case Action.RESOLVE:
                    resolve(self.conn, outcome=Outcome.REMEDIED, **kw)
                case Action.CLOSE:
                    close(self.conn, **kw)
                case Action.ESCALATE:
                    escalate(self.conn, reason="需上级协调", **kw)
                case Action.RETURN_TO_PARENT:
                    return_to_parent(self.conn, reason="派错网格", **kw)
                case Action.REOPEN:
                    reopen(self.conn, reason="回访不满意", **kw)
                case Action.REASSIGN:
                    to = data.draw(st.sampled_from([*w.cells, w.community, w.town]))
                    reassign(self.conn, scope=w.town, to_owner=to, reason="改派", **kw)
                case Action.URGE:
                    scope = data.draw(st.sampled_from([w.town, w.county, w.city]))
                    urge(self.conn, scope=scope, text="督办", **kw)
        except StaleCase:
            assert stale, "StaleCase on a fresh version"
            refused = True
        except (TransitionError, ScopeError, RoutingError) as exc:
            assert not stale, f"a stale write was judged on its merits: {exc}"
            refused = True
            if not allowed:
                pass  # the table refuses it: right
            elif action is Action.ESCALATE:
                assert c.level == Level.PROVINCE, f"escalation refused below the top: {exc}"
            elif action is Action.RETURN_TO_PARENT:
                assert owner_rank(c.owner_code) == Level.PROVINCE, f"return refused below the top: {exc}"
            else:
                assert action in (Action.REASSIGN, Action.URGE), f"{action} refused although allowed: {exc}"
        else:
            refused = False
            assert not stale, "a stale write went through"
            assert allowed, f"{action} from {c.state} went through"
        STATS[f"{action.value}: {'stale' if stale else 'refused' if refused else 'done'}"] += 1
        after = get_case(self.conn, case_id=cid)
        events_after = scalar(self.conn, "SELECT count(*) FROM case_event WHERE case_id = %s", cid)
        if refused:
            assert (after.version, events_after) == (c.version, events_before), "a refused action wrote"
        else:
            assert after.state == TRANSITIONS[(c.state, action)]
            assert (after.version, events_after) == (c.version + 1, events_before + 1)
            if action is Action.ESCALATE:
                assert after.level == c.level - 1
                assert after.owner_code == ancestor(after.chain_code, after.level)

    @precondition(lambda self: bool(self.cases))
    @rule(data=st.data(), then=st.sampled_from(["stay", "close", "reopen", "close_and_reopen"]))
    def an_owner_resolves_a_case(self, data: st.DataObject, then: str) -> None:
        """The happy path, so that resolved, closed and reopened cases meet the sweep."""
        cid = data.draw(st.sampled_from(self.cases))
        c = get_case(self.conn, case_id=cid)
        kw = {"case_id": cid, "actor": "officer:h", "rules": RULES, "at": self.clock}
        if c.state not in (State.ACCEPTED, State.IN_PROGRESS, State.REOPENED, State.NEW, State.RETURNED):
            return
        v = c.version
        if c.state in (State.NEW, State.RETURNED):
            v = accept(self.conn, expected_version=v, **kw).version
        v = resolve(self.conn, expected_version=v, outcome=Outcome.AGREEMENT, **kw).version
        STATS["happy path: resolved"] += 1
        if then in ("close", "close_and_reopen"):
            v = close(self.conn, expected_version=v, **kw).version
        if then in ("reopen", "close_and_reopen"):
            reopen(self.conn, expected_version=v, reason="协议未履行", **kw)
            STATS["happy path: reopened"] += 1

    @invariant()
    def every_case_holds_its_invariants(self) -> None:
        problems = [
            p for cid in self.cases for p in case_violations(self.conn, cid, max_level=Level.PROVINCE)
        ]
        assert problems == []


def test_random_officer_actions_sweeps_and_clock_moves_keep_every_invariant(database_url: str) -> None:
    """The state machine rule, end to end: no sequence of actions, sweeps and clock moves breaks
    the transition table, the one-level escalation, the owner-on-chain rule, replay = row, the
    hash chain, or the rule that resolved and closed cases never escalate."""
    run_state_machine_as_test(
        CaseMachine,
        settings=settings(
            max_examples=int(os.environ.get("GRIDFLOW_STATEFUL_EXAMPLES", "40")),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print("stateful run:", dict(sorted(STATS.items())))
