"""The case state machine, escalation levels, and the hash-chained event log.

Everything that may happen to a case is in :data:`TRANSITIONS`, one table keyed by
``(from_state, action)``; anything not in it is refused with a :class:`TransitionError` that says
what *is* allowed, and nothing is written. A case's history is a list of :class:`Event` s, each
carrying the sha256 of its predecessor, so a changed or deleted row breaks the chain
(:func:`verify_chain`). The current state is a fold over the events (:func:`replay`); the write
path (:func:`record`) goes through the same :func:`apply`, so whatever was written replays.

Ownership rides on codes: the owner of a case is a 12-digit division code (the union at that level)
or, at community level, a 15-digit cell code (the grid officer). Escalation and return move the
case to a proper ancestor on the owner's chain, so an owner is always on the cell's chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from functools import reduce
from typing import Any, Final

from connectors.kinds import Outcome
from geodata.codes import CodeError, Level, ancestor, level_of

GENESIS_HASH: Final = "0" * 64


class State(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"
    RETURNED = "returned"

    @property
    def label_zh(self) -> str:
        return _STATE_ZH[self]


# The one "open case" rule: a case is open until it is resolved or closed (the dedupe, the case
# lists, re-routing on a new grid and the coverage counts all read it here). SQL_OPEN / SQL_DONE
# are its twins for a query on ``case_file``.
_DONE: Final = (State.RESOLVED, State.CLOSED)
DONE_STATES: Final = frozenset(_DONE)
_DONE_SQL: Final = ", ".join(f"'{s.value}'" for s in _DONE)
SQL_DONE: Final = f"state IN ({_DONE_SQL})"
SQL_OPEN: Final = f"state NOT IN ({_DONE_SQL})"  # as the partial indexes of migration 0002 spell it
# A case waits to be accepted by its current owner (its response deadline runs) while it is new or
# was returned for re-dispatch; the coverage report's ``overdue_response`` counts the same states.
AWAITING_STATES: Final = frozenset({State.NEW, State.RETURNED})
SQL_AWAITING: Final = "state IN (" + ", ".join(f"'{s.value}'" for s in sorted(AWAITING_STATES)) + ")"


_STATE_ZH = {
    State.NEW: "待受理",
    State.ACCEPTED: "已受理",
    State.IN_PROGRESS: "办理中",
    State.RESOLVED: "已办结",
    State.CLOSED: "已归档",
    State.REOPENED: "已重启",
    State.RETURNED: "已退回待重新派单",
}


class Action(StrEnum):
    OPEN = "open"  # the first event: the routed case appears in its owner's inbox
    ACCEPT = "accept"
    NOTE = "note"
    START = "start"
    RESOLVE = "resolve"
    CLOSE = "close"
    ESCALATE = "escalate"
    RETURN_TO_PARENT = "return_to_parent"
    REOPEN = "reopen"
    REASSIGN = "reassign"
    URGE = "urge"  # 督办 by a supervising level

    @property
    def label_zh(self) -> str:
        return _ACTION_ZH[self]


_ACTION_ZH = {
    Action.OPEN: "立案派单",
    Action.ACCEPT: "受理",
    Action.NOTE: "备注",
    Action.START: "开始办理",
    Action.RESOLVE: "办结",
    Action.CLOSE: "归档",
    Action.ESCALATE: "上报",
    Action.RETURN_TO_PARENT: "退回上级重新派单",
    Action.REOPEN: "重启",
    Action.REASSIGN: "改派",
    Action.URGE: "督办",
}

S, A = State, Action

# The one table. (from_state, action) -> to_state. ``None`` is "no case yet".
# Escalation and reassignment land in NEW: the new owner must accept the case.
TRANSITIONS: Final[Mapping[tuple[State | None, Action], State]] = {
    (None, A.OPEN): S.NEW,
    # new: waiting for the owner to accept
    (S.NEW, A.ACCEPT): S.ACCEPTED,
    (S.NEW, A.NOTE): S.NEW,
    (S.NEW, A.ESCALATE): S.NEW,
    (S.NEW, A.RETURN_TO_PARENT): S.RETURNED,
    (S.NEW, A.REASSIGN): S.NEW,
    (S.NEW, A.URGE): S.NEW,
    # accepted: the owner has taken it
    (S.ACCEPTED, A.NOTE): S.ACCEPTED,
    (S.ACCEPTED, A.START): S.IN_PROGRESS,
    (S.ACCEPTED, A.RESOLVE): S.RESOLVED,
    (S.ACCEPTED, A.ESCALATE): S.NEW,
    (S.ACCEPTED, A.RETURN_TO_PARENT): S.RETURNED,
    (S.ACCEPTED, A.REASSIGN): S.NEW,
    (S.ACCEPTED, A.URGE): S.ACCEPTED,
    # in progress: mediation / assistance under way
    (S.IN_PROGRESS, A.NOTE): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.RESOLVE): S.RESOLVED,
    (S.IN_PROGRESS, A.ESCALATE): S.NEW,
    (S.IN_PROGRESS, A.REASSIGN): S.NEW,
    (S.IN_PROGRESS, A.URGE): S.IN_PROGRESS,
    # resolved: waiting for confirmation before closing
    (S.RESOLVED, A.NOTE): S.RESOLVED,
    (S.RESOLVED, A.CLOSE): S.CLOSED,
    (S.RESOLVED, A.REOPEN): S.REOPENED,
    # closed: only a reopen with a reason brings it back
    (S.CLOSED, A.REOPEN): S.REOPENED,
    # reopened: back with the same owner
    (S.REOPENED, A.NOTE): S.REOPENED,
    (S.REOPENED, A.START): S.IN_PROGRESS,
    (S.REOPENED, A.RESOLVE): S.RESOLVED,
    (S.REOPENED, A.ESCALATE): S.NEW,
    (S.REOPENED, A.REASSIGN): S.NEW,
    (S.REOPENED, A.URGE): S.REOPENED,
    # returned: misrouted, now with the parent to re-dispatch (or handle itself)
    (S.RETURNED, A.NOTE): S.RETURNED,
    (S.RETURNED, A.ACCEPT): S.ACCEPTED,
    (S.RETURNED, A.REASSIGN): S.NEW,
    (S.RETURNED, A.ESCALATE): S.NEW,
    (S.RETURNED, A.URGE): S.RETURNED,
}

# Payload keys each action must carry (checked by apply, so on write and on replay).
REQUIRED_PAYLOAD: Final[Mapping[Action, tuple[str, ...]]] = {
    A.OPEN: ("owner_code",),
    A.NOTE: ("text",),
    A.RESOLVE: ("outcome",),
    A.ESCALATE: ("reason", "to_owner"),
    A.RETURN_TO_PARENT: ("reason", "to_owner"),
    A.REOPEN: ("reason",),
    A.REASSIGN: ("to_owner",),
}


class TransitionError(ValueError):
    """An action that the state machine does not allow, or an event that does not fit its case."""


class EscalationError(TransitionError):
    """Escalation past the top level the policy allows."""


def allowed_actions(state: State | None) -> list[Action]:
    """Actions allowed from ``state``, in table order."""
    return [a for (s, a) in TRANSITIONS if s == state]


def transition(state: State | None, action: Action) -> State:
    """The state after ``action``; raises :class:`TransitionError` with a plain sentence if refused."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        pass
    allowed = ", ".join(a.value for a in allowed_actions(state)) or "nothing"
    if state is None:
        raise TransitionError(f"A case that does not exist yet cannot {action.value}; it must open first.")
    raise TransitionError(
        f"A case that is {state.value} cannot {action.value}; from {state.value} the allowed actions "
        f"are: {allowed}."
    )


def next_level(level: Level, *, max_level: Level = Level.PROVINCE) -> Level:
    """One level up toward the province; raises :class:`EscalationError` at ``max_level``."""
    if level <= max_level:
        raise EscalationError(
            f"A case at {level.name.lower()} level cannot be escalated: {max_level.name.lower()} is the "
            "highest level this policy allows."
        )
    return Level(level - 1)


def owner_rank(owner_code: str) -> Level:
    """Level of an owner code: CELL for a grid officer's 15-digit cell code, else the division level."""
    return level_of(owner_code)


def owner_level(owner_code: str) -> Level:
    """The case level an owner stands for (a cell's grid officer works at community level)."""
    return min(owner_rank(owner_code), Level.COMMUNITY)


# ----------------------------------------------------------------------------- events


def _canon(value: Any, where: str = "payload") -> Any:
    """A JSON-ready copy with one spelling per value, so a stored payload re-hashes identically."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Enum):
        return _canon(value.value, where)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _canon(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_canon(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        raise TypeError(f"{where}: floats do not hash stably; pass a Decimal or a string")
    raise TypeError(f"{where}: {type(value).__name__} cannot go into an event")


def _utc(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"event time {at.isoformat()} has no timezone")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as it is hashed and stored: enums as values, Decimals as strings, UTC times."""
    result: dict[str, Any] = _canon(payload)
    return result


def chain_hash(
    prev_hash: str,
    *,
    case_id: str,
    seq: int,
    action: Action | str,
    from_state: State | str | None,
    to_state: State | str,
    actor: str,
    at: datetime,
    payload: Mapping[str, Any],
) -> str:
    """sha256 (hex) over the canonical JSON of the event fields and the previous event's hash."""
    doc = {
        "v": 1,
        "prev": prev_hash,
        "case_id": case_id,
        "seq": seq,
        "action": str(action),
        "from": None if from_state is None else str(from_state),
        "to": str(to_state),
        "actor": actor,
        "at": _utc(at),
        "payload": canonical_payload(payload),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Event:
    """One row of a case's history; ``hash`` covers every other field and ``prev_hash``."""

    case_id: str
    seq: int
    action: Action
    from_state: State | None
    to_state: State
    actor: str
    at: datetime
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        return chain_hash(
            self.prev_hash,
            case_id=self.case_id,
            seq=self.seq,
            action=self.action,
            from_state=self.from_state,
            to_state=self.to_state,
            actor=self.actor,
            at=self.at,
            payload=self.payload,
        )


def first_break(events: Sequence[Event]) -> int | None:
    """Index of the first event that does not chain onto its predecessor, or None if all do."""
    prev = GENESIS_HASH
    for i, ev in enumerate(events):
        if (
            ev.seq != i + 1
            or ev.case_id != events[0].case_id
            or ev.prev_hash != prev
            or ev.computed_hash() != ev.hash
        ):
            return i
        prev = ev.hash
    return None


def verify_chain(events: Sequence[Event], *, head: str | None = None) -> bool:
    """True if the events are one case's complete history from seq 1, unaltered.

    A chain alone cannot notice its *last* event being rewritten and re-hashed, or the tail being
    cut off: pass ``head``, the hash stored with the case row when the last event was written, to
    catch both.
    """
    try:
        if first_break(events) is not None:
            return False
    except (TypeError, ValueError):
        return False
    if head is not None:
        return (events[-1].hash if events else GENESIS_HASH) == head
    return True


# ----------------------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class CaseState:
    """Where a case stands after its events: ``version`` is the seq of the last event."""

    case_id: str
    state: State
    level: Level
    owner_code: str
    version: int
    last_hash: str = field(repr=False)


def _require(action: Action, payload: Mapping[str, Any]) -> None:
    for key in REQUIRED_PAYLOAD.get(action, ()):
        value = payload.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise TransitionError(f"A {action.value} event needs a {key!r} in its payload.")
    if action == A.RESOLVE:
        try:
            Outcome(payload["outcome"])
        except ValueError:
            known = ", ".join(o.value for o in Outcome)
            raise TransitionError(
                f"Unknown outcome {payload['outcome']!r}; expected one of: {known}."
            ) from None


def _check_owner(code: str) -> str:
    try:
        owner_rank(code)
    except CodeError as exc:
        raise TransitionError(str(exc)) from None
    return code


def _moved_up(current: str, to_owner: str, action: Action) -> str:
    """``to_owner`` if it is a proper ancestor of ``current`` (escalation and return only go up)."""
    _check_owner(to_owner)
    if owner_rank(to_owner) >= owner_rank(current) or ancestor(current, owner_rank(to_owner)) != to_owner:
        raise TransitionError(
            f"A {action.value} must move the case up its own chain; {to_owner} is not above {current}."
        )
    return to_owner


def apply(current: CaseState | None, event: Event) -> CaseState:
    """The case after ``event``; refuses an event that does not follow on from ``current``."""
    expected_seq = 1 if current is None else current.version + 1
    expected_prev = GENESIS_HASH if current is None else current.last_hash
    from_state = None if current is None else current.state
    if event.seq != expected_seq:
        raise TransitionError(f"Event seq {event.seq} does not follow version {expected_seq - 1}.")
    if current is not None and event.case_id != current.case_id:
        raise TransitionError(f"Event for case {event.case_id} applied to case {current.case_id}.")
    if event.prev_hash != expected_prev:
        raise TransitionError(f"Event seq {event.seq} does not chain onto the previous event.")
    if event.from_state != from_state:
        raise TransitionError(
            f"Event seq {event.seq} says the case was {event.from_state}, but it was {from_state}."
        )
    action = Action(event.action)  # events read back from storage may carry plain strings
    to_state = transition(from_state, action)
    if event.to_state != to_state:
        raise TransitionError(
            f"Event seq {event.seq} says {action.value} led to {event.to_state}; it leads to {to_state}."
        )
    _require(action, event.payload)
    if current is None:
        owner = _check_owner(str(event.payload["owner_code"]))
    elif action in (A.ESCALATE, A.RETURN_TO_PARENT):
        owner = _moved_up(current.owner_code, str(event.payload["to_owner"]), action)
    elif action == A.REASSIGN:
        owner = _check_owner(str(event.payload["to_owner"]))
    else:
        owner = current.owner_code
    return CaseState(
        case_id=event.case_id,
        state=to_state,
        level=owner_level(owner),
        owner_code=owner,
        version=event.seq,
        last_hash=event.hash,
    )


def replay(events: Iterable[Event], *, verify: bool = True) -> CaseState:
    """Reconstruct a case from its full history; with ``verify`` each event's hash is recomputed."""
    evs = list(events)
    if not evs:
        raise TransitionError("A case with no events has no state.")
    if verify and (i := first_break(evs)) is not None:
        raise TransitionError(f"The event chain is broken at seq {evs[i].seq} (index {i}).")
    state: CaseState | None = reduce(apply, evs, None)
    assert state is not None
    return state


def record(
    current: CaseState | None,
    *,
    action: Action,
    actor: str,
    at: datetime,
    payload: Mapping[str, Any] | None = None,
    case_id: str | None = None,
) -> tuple[Event, CaseState]:
    """The write path: build the next event for ``current`` and the case after it.

    ``case_id`` is needed only for the first (``open``) event. Raises :class:`TransitionError`
    without producing anything if the action is not allowed or its payload is incomplete.
    """
    if current is None and case_id is None:
        raise TransitionError("The first event of a case needs its case_id.")
    cid = current.case_id if current is not None else str(case_id)
    from_state = None if current is None else current.state
    to_state = transition(from_state, action)
    seq = 1 if current is None else current.version + 1
    prev = GENESIS_HASH if current is None else current.last_hash
    body = canonical_payload(payload or {})
    digest = chain_hash(
        prev,
        case_id=cid,
        seq=seq,
        action=action,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        at=at,
        payload=body,
    )
    event = Event(cid, seq, action, from_state, to_state, actor, at, body, prev, digest)
    return event, apply(current, event)
