"""The case state machine, escalation levels and the hash-chained event log."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kinds import Outcome
from geodata.codes import Level, ancestor
from grid.cases.states import (
    TRANSITIONS,
    Action,
    CaseState,
    EscalationError,
    Event,
    State,
    TransitionError,
    allowed_actions,
    apply,
    chain_hash,
    next_level,
    record,
    replay,
    transition,
    verify_chain,
)

S, A = State, Action
CELL = "420502003004001"
T0 = datetime(2026, 9, 29, 9, 0, tzinfo=UTC)

# The specification, written out independently of grid/cases/states.py.
SPEC: list[tuple[State | None, Action, State, str]] = [
    (None, A.OPEN, S.NEW, "a routed case opens as new"),
    (S.NEW, A.ACCEPT, S.ACCEPTED, "the owner accepts a new case"),
    (S.NEW, A.NOTE, S.NEW, "a note leaves a new case new"),
    (S.NEW, A.ESCALATE, S.NEW, "escalating a new case makes it new for the upper level"),
    (S.NEW, A.RETURN_TO_PARENT, S.RETURNED, "a misrouted new case goes back to the parent"),
    (S.NEW, A.REASSIGN, S.NEW, "a supervisor reassigns a new case"),
    (S.NEW, A.URGE, S.NEW, "a supervisor urges a new case"),
    (S.ACCEPTED, A.NOTE, S.ACCEPTED, "a note on an accepted case"),
    (S.ACCEPTED, A.START, S.IN_PROGRESS, "work starts on an accepted case"),
    (S.ACCEPTED, A.RESOLVE, S.RESOLVED, "a quick fix resolves an accepted case"),
    (S.ACCEPTED, A.ESCALATE, S.NEW, "an accepted case is escalated"),
    (S.ACCEPTED, A.RETURN_TO_PARENT, S.RETURNED, "an accepted case turns out misrouted"),
    (S.ACCEPTED, A.REASSIGN, S.NEW, "an accepted case is reassigned"),
    (S.ACCEPTED, A.URGE, S.ACCEPTED, "an accepted case is urged"),
    (S.IN_PROGRESS, A.NOTE, S.IN_PROGRESS, "a note during work"),
    (S.IN_PROGRESS, A.RESOLVE, S.RESOLVED, "work ends with an outcome"),
    (S.IN_PROGRESS, A.ESCALATE, S.NEW, "a case in progress is escalated"),
    (S.IN_PROGRESS, A.REASSIGN, S.NEW, "a case in progress is reassigned"),
    (S.IN_PROGRESS, A.URGE, S.IN_PROGRESS, "a case in progress is urged"),
    (S.RESOLVED, A.NOTE, S.RESOLVED, "a note on a resolved case"),
    (S.RESOLVED, A.CLOSE, S.CLOSED, "a resolved case is closed"),
    (S.RESOLVED, A.REOPEN, S.REOPENED, "a resolved case is reopened with a reason"),
    (S.CLOSED, A.REOPEN, S.REOPENED, "a closed case is reopened with a reason"),
    (S.REOPENED, A.NOTE, S.REOPENED, "a note on a reopened case"),
    (S.REOPENED, A.START, S.IN_PROGRESS, "work restarts on a reopened case"),
    (S.REOPENED, A.RESOLVE, S.RESOLVED, "a reopened case is resolved again"),
    (S.REOPENED, A.ESCALATE, S.NEW, "a reopened case is escalated"),
    (S.REOPENED, A.REASSIGN, S.NEW, "a reopened case is reassigned"),
    (S.REOPENED, A.URGE, S.REOPENED, "a reopened case is urged"),
    (S.RETURNED, A.NOTE, S.RETURNED, "a note on a returned case"),
    (S.RETURNED, A.ACCEPT, S.ACCEPTED, "the parent handles a returned case itself"),
    (S.RETURNED, A.REASSIGN, S.NEW, "the parent re-dispatches a returned case"),
    (S.RETURNED, A.ESCALATE, S.NEW, "the parent escalates a returned case"),
    (S.RETURNED, A.URGE, S.RETURNED, "a returned case waiting for re-dispatch is urged"),
]
ALLOWED = {(s, a) for s, a, _, _ in SPEC}


@pytest.mark.parametrize(("state", "action", "to"), [pytest.param(s, a, t, id=d) for s, a, t, d in SPEC])
def test_allowed_transition(state: State | None, action: Action, to: State) -> None:
    """Rule: each allowed (state, action) pair leads to exactly the specified state."""
    assert transition(state, action) is to


def test_table_has_nothing_beyond_the_spec() -> None:
    """Rule: the one table allows exactly the specified pairs, no more."""
    assert set(TRANSITIONS) == ALLOWED


REJECTED = [
    pytest.param(S.NEW, A.RESOLVE, id="a new case cannot be resolved before it is accepted"),
    pytest.param(S.NEW, A.START, id="a new case cannot start before it is accepted"),
    pytest.param(S.NEW, A.CLOSE, id="a new case cannot be closed"),
    pytest.param(S.CLOSED, A.NOTE, id="a closed case takes no notes until reopened"),
    pytest.param(S.CLOSED, A.ESCALATE, id="a closed case cannot be escalated"),
    pytest.param(S.RESOLVED, A.ESCALATE, id="a resolved case cannot be escalated"),
    pytest.param(S.RESOLVED, A.URGE, id="a resolved case is not urged"),
    pytest.param(S.IN_PROGRESS, A.RETURN_TO_PARENT, id="work under way cannot be returned as misrouted"),
    pytest.param(S.RETURNED, A.RETURN_TO_PARENT, id="a returned case is not returned again"),
    pytest.param(S.ACCEPTED, A.REOPEN, id="an open case cannot be reopened"),
    pytest.param(S.IN_PROGRESS, A.ACCEPT, id="a case in progress is not accepted again"),
    pytest.param(S.NEW, A.OPEN, id="a case opens only once"),
    pytest.param(None, A.ACCEPT, id="nothing happens to a case before it opens"),
]


@pytest.mark.parametrize(("state", "action"), REJECTED)
def test_rejected_transition_says_what_is_allowed(state: State | None, action: Action) -> None:
    """Rule: anything not in the table is refused with a sentence naming the allowed actions."""
    with pytest.raises(TransitionError) as exc:
        transition(state, action)
    message = str(exc.value)
    assert action.value in message
    if state is not None:
        assert state.value in message
        for allowed in allowed_actions(state):
            assert allowed.value in message


def test_every_pair_outside_the_spec_is_rejected() -> None:
    """Rule: the full cross product minus the spec is refused."""
    for state in [None, *State]:
        for action in Action:
            if (state, action) not in ALLOWED:
                with pytest.raises(TransitionError):
                    transition(state, action)


# ----------------------------------------------------------------------------- levels


@pytest.mark.parametrize(
    ("level", "up"),
    [
        pytest.param(Level.CELL, Level.COMMUNITY, id="cell -> community"),
        pytest.param(Level.COMMUNITY, Level.TOWN, id="community -> town"),
        pytest.param(Level.TOWN, Level.COUNTY, id="town -> county"),
        pytest.param(Level.COUNTY, Level.CITY, id="county -> city"),
        pytest.param(Level.CITY, Level.PROVINCE, id="city -> province"),
    ],
)
def test_next_level(level: Level, up: Level) -> None:
    """Rule: escalation moves one level toward the province."""
    assert next_level(level) is up


def test_next_level_stops_at_the_top() -> None:
    """Rule: there is nothing above the province, or above the policy's max level."""
    with pytest.raises(EscalationError, match="province"):
        next_level(Level.PROVINCE)
    with pytest.raises(EscalationError, match="city"):
        next_level(Level.CITY, max_level=Level.CITY)


@given(level=st.sampled_from(list(Level)), top=st.sampled_from(list(Level)))
def test_next_level_moves_exactly_one_level_up(level: Level, top: Level) -> None:
    """Rule (property): next_level is one step up, and never above max_level."""
    if level <= top:
        with pytest.raises(EscalationError):
            next_level(level, max_level=top)
    else:
        up = next_level(level, max_level=top)
        assert up == level - 1
        assert up >= top


# ----------------------------------------------------------------------------- events


def _history() -> list[Event]:
    """open at the cell -> accept -> escalate to town -> accept -> start -> resolve -> close."""
    town, county = ancestor(CELL, Level.TOWN), ancestor(CELL, Level.COUNTY)
    steps: list[tuple[Action, dict[str, Any]]] = [
        (A.OPEN, {"owner_code": CELL, "rule": "dispute_default"}),
        (A.ACCEPT, {}),
        (A.ESCALATE, {"reason": "employer outside the community", "to_owner": town}),
        (A.ACCEPT, {}),
        (A.START, {}),
        (A.NOTE, {"text": "mediation session held", "amount_agreed": Decimal("12000.50")}),
        (A.RESOLVE, {"outcome": Outcome.AGREEMENT}),
        (A.CLOSE, {}),
        (A.REOPEN, {"reason": "employer did not pay"}),
        (A.ESCALATE, {"reason": "repeat offender", "to_owner": county}),
    ]
    events: list[Event] = []
    state: CaseState | None = None
    for i, (action, payload) in enumerate(steps):
        ev, state = record(
            state,
            action=action,
            actor="officer:7",
            at=T0 + timedelta(hours=i),
            payload=payload,
            case_id="C-1",
        )
        events.append(ev)
    return events


def test_chain_verifies() -> None:
    """Rule: an untouched history verifies, from the genesis hash to the stored head."""
    events = _history()
    assert verify_chain(events)
    assert verify_chain(events, head=events[-1].hash)


def _tamper_payload(evs: list[Event]) -> list[Event]:
    evs[5] = dataclasses.replace(evs[5], payload={**evs[5].payload, "amount_agreed": "1.00"})
    return evs


def _tamper_and_rehash(evs: list[Event]) -> list[Event]:
    e = dataclasses.replace(evs[3], actor="officer:8")
    evs[3] = dataclasses.replace(e, hash=e.computed_hash())
    return evs


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_tamper_payload, id="a payload edited in place"),
        pytest.param(lambda evs: [*evs[:2], *evs[3:]], id="an event deleted from the middle"),
        pytest.param(lambda evs: [evs[1], evs[0], *evs[2:]], id="two events swapped"),
        pytest.param(
            lambda evs: [dataclasses.replace(evs[0], at=evs[0].at + timedelta(days=1)), *evs[1:]],
            id="the opening time moved",
        ),
        pytest.param(_tamper_and_rehash, id="an edited event re-hashed (breaks the next link)"),
        pytest.param(lambda evs: evs[1:], id="the first event dropped"),
    ],
)
def test_chain_detects_tampering(tamper: Any) -> None:
    """Rule: any change to a stored event breaks the hash chain."""
    assert not verify_chain(tamper(_history()))


def test_head_catches_a_rewritten_last_event_and_a_cut_tail() -> None:
    """Rule: the stored head hash catches what a chain alone cannot (last event, truncation)."""
    events = _history()
    head = events[-1].hash
    last = dataclasses.replace(events[-1], actor="someone-else")
    rewritten = [*events[:-1], dataclasses.replace(last, hash=last.computed_hash())]
    assert verify_chain(rewritten)  # the chain alone is fooled ...
    assert not verify_chain(rewritten, head=head)  # ... the head is not
    assert not verify_chain(events[:-2], head=head)


def test_stored_payload_rehashes_identically() -> None:
    """Rule: an event read back from JSON storage (jsonb) hashes to the same value."""
    for ev in _history():
        stored = json.loads(json.dumps(ev.payload))
        assert (
            chain_hash(
                ev.prev_hash,
                case_id=ev.case_id,
                seq=ev.seq,
                action=ev.action.value,
                from_state=ev.from_state,
                to_state=ev.to_state.value,
                actor=ev.actor,
                at=ev.at.astimezone(UTC),
                payload=stored,
            )
            == ev.hash
        )


def test_float_in_payload_is_refused() -> None:
    """Rule: floats have no single canonical spelling; amounts go in as Decimal or text."""
    with pytest.raises(TypeError, match="Decimal"):
        record(
            None,
            action=A.OPEN,
            actor="system",
            at=T0,
            payload={"owner_code": CELL, "amount": 1.5},
            case_id="C-2",
        )


def test_replay_reconstructs_the_case() -> None:
    """Rule: replay gives state, level, owner and version from the events alone."""
    events = _history()
    state = replay(events)
    assert (state.state, state.level, state.owner_code, state.version) == (
        S.NEW,
        Level.COUNTY,
        ancestor(CELL, Level.COUNTY),
        len(events),
    )


def test_replay_refuses_a_broken_chain() -> None:
    """Rule: replay does not build a state on a tampered history."""
    with pytest.raises(TransitionError, match="broken"):
        replay(_tamper_payload(_history()))


@pytest.mark.parametrize(
    ("action", "payload", "message"),
    [
        pytest.param(A.ESCALATE, {"to_owner": "420502003000"}, "reason", id="escalate needs a reason"),
        pytest.param(
            A.ESCALATE,
            {"reason": "x", "to_owner": "420503000000"},
            "up its own chain",
            id="escalation stays on the case's chain",
        ),
        pytest.param(
            A.RETURN_TO_PARENT,
            {"reason": "x", "to_owner": "420502003004002"},
            "up its own chain",
            id="return goes up, not sideways to another cell",
        ),
        pytest.param(A.REASSIGN, {"to_owner": "42"}, "12-digit", id="reassign needs a real code"),
        pytest.param(A.NOTE, {"text": "  "}, "text", id="a note needs text"),
    ],
)
def test_event_payload_rules(action: Action, payload: dict[str, Any], message: str) -> None:
    """Rule: actions carry what the record needs (reasons, owners on the chain) or nothing is written."""
    _, opened = record(
        None, action=A.OPEN, actor="system", at=T0, payload={"owner_code": CELL}, case_id="C-3"
    )
    with pytest.raises(TransitionError, match=message):
        record(opened, action=action, actor="officer:7", at=T0, payload=payload)


def test_resolve_needs_a_known_outcome() -> None:
    """Rule: resolve(outcome) takes an outcome from the closed list."""
    _, s = record(None, action=A.OPEN, actor="system", at=T0, payload={"owner_code": CELL}, case_id="C-4")
    _, s = record(s, action=A.ACCEPT, actor="officer:7", at=T0)
    with pytest.raises(TransitionError, match="Unknown outcome"):
        record(s, action=A.RESOLVE, actor="officer:7", at=T0, payload={"outcome": "sorted"})


# ----------------------------------------------------------------------------- replay == fold


def _payload_for(action: Action, state: CaseState, draw: Any) -> dict[str, Any]:
    owner = state.owner_code
    up_levels = [
        lv
        for lv in Level
        if lv < min(state.level, Level.COMMUNITY) or (lv == Level.COMMUNITY and len(owner) == 15)
    ]
    if action in (A.ESCALATE, A.RETURN_TO_PARENT):
        target = draw(st.sampled_from(up_levels))
        return {"reason": "r", "to_owner": ancestor(owner, target)}
    if action is A.REASSIGN:
        return {"to_owner": draw(st.sampled_from([CELL, "420502003004002", ancestor(CELL, Level.TOWN)]))}
    if action is A.RESOLVE:
        return {"outcome": draw(st.sampled_from(list(Outcome)))}
    if action is A.REOPEN:
        return {"reason": "r"}
    if action is A.NOTE:
        return {"text": "t"}
    return {}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_replay_equals_folding(data: st.DataObject) -> None:
    """Rule (property): replaying stored events gives the state the write path held after each step."""
    ev, state = record(
        None, action=A.OPEN, actor="system", at=T0, payload={"owner_code": CELL}, case_id="C-9"
    )
    events, states = [ev], [state]
    for i in range(data.draw(st.integers(0, 25))):
        options = [
            a
            for a in allowed_actions(state.state)
            if not (a in (A.ESCALATE, A.RETURN_TO_PARENT) and state.owner_code == "420000000000")
        ]
        action = data.draw(st.sampled_from(options))
        payload = _payload_for(action, state, data.draw)
        ev, state = record(
            state, action=action, actor="officer:1", at=T0 + timedelta(minutes=i), payload=payload
        )
        events.append(ev)
        states.append(state)
    assert verify_chain(events, head=state.last_hash)
    assert replay(events) == state
    assert [replay(events[: k + 1]) for k in range(len(events))] == states
    assert reduce(apply, events, None) == state
