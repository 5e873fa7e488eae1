"""Officer and supervisor actions on a case, driven by one table over the state machine.

Every action is the same transaction (:func:`act`): lock the case row and check the caller's
version (:func:`grid.cases.store.lock_case`), ask the state machine whether the action is allowed
from the case's state (:func:`grid.cases.states.transition`), let the action's row of
:data:`PLANS` say what the event carries and which columns change, and append it
(:func:`grid.cases.store.append_event`). Who may act is :mod:`grid.accounts.access`.
The named functions below (:func:`accept`, :func:`resolve`, …) are typed doors to :func:`act`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from connectors.kinds import Outcome
from geodata.codes import CodeError, Level, ancestor, is_cell_code, within
from grid.accounts import access
from grid.cases.outbox import enqueue, notice
from grid.cases.owners import chain_owner_ok, owner_at, owner_candidates, unit_names, units_exist
from grid.cases.routing import RoutingError
from grid.cases.states import Action, State, TransitionError, next_level, owner_rank, transition
from grid.cases.store import (
    ActionResult,
    CaseHead,
    CaseRules,
    Conn,
    Cursor,
    ScopeError,
    append_event,
    current_cell_version,
    lock_case,
    utc_now,
)
from grid.store.db import transaction


@dataclass(frozen=True)
class Plan:
    """What one action writes: the event's payload, the case columns it sets, a new chain."""

    payload: dict[str, Any]
    sets: dict[str, Any] = field(default_factory=dict)
    chain_code: str | None = None
    chain_version_id: int | None = None


Planner = Callable[[Cursor, CaseHead, datetime, CaseRules, Mapping[str, Any]], Plan]


def _accept(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """受理: counts as responded, on time if before ``respond_by``."""
    return Plan({"on_time": when <= head.respond_by}, {"responded_at": when})


def _note(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    return Plan({"text": a["text"]})


def _start(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    return Plan({})


def _resolve(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """An outcome, the amount recovered and the assistance given; the queued steps end."""
    oc = Outcome(a["outcome"])
    amount, assistance = a.get("amount_recovered"), a.get("assistance")
    payload: dict[str, Any] = {"outcome": oc.value, "on_time": when <= head.resolve_by}
    if amount is not None:
        payload["amount_recovered"] = Decimal(amount)
    if assistance:
        payload["assistance"] = assistance
    return Plan(payload, {"outcome": oc.value, "amount_recovered": amount, "resolved_at": when})


def _close(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    return Plan({}, {"closed_at": when})


def escalation_target(
    cur: Cursor, head: CaseHead, *, rules: CaseRules
) -> tuple[Level, str, list[dict[str, Any]]]:
    """One level up the case's chain, and the unit there (passing upward over missing units)."""
    to_level = next_level(head.level, max_level=rules.max_level)
    codes = owner_candidates(head.chain_code, to_level, max_level=rules.max_level)
    owner, alerts = owner_at(head.chain_code, to_level, units_exist(cur, codes), max_level=rules.max_level)
    return to_level, owner, alerts


def _escalate(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """One level up the chain with a reason: new owner, new deadlines, new steps."""
    to_level, owner, alerts = escalation_target(cur, head, rules=rules)
    payload: dict[str, Any] = {
        "reason": a["reason"],
        "to_owner": owner,
        "from_level": int(head.level),
        "to_level": int(to_level),
    }
    if alerts:
        payload["alerts"] = alerts
    return Plan(payload)


def _return(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """A misrouted case goes to the unit above its owner (the nearest existing one) to re-dispatch."""
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
    payload: dict[str, Any] = {"reason": a["reason"], "to_owner": target}
    if skipped:
        payload["alerts"] = skipped
    return Plan(payload)


def _reopen(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """Same owner, fresh deadlines and steps."""
    return Plan(
        {"reason": a["reason"]},
        {"resolved_at": None, "closed_at": None, "outcome": None, "amount_recovered": None},
    )


def _reassign(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """A supervising unit (``scope``) re-dispatches the case to an existing unit of its subtree;
    the case then rides the new owner's chain (a cell, or a division off the current chain)."""
    scope, to_owner = a["scope"], a["to_owner"]
    returned = head.state is State.RETURNED
    if not access.may_reassign(
        scope, chain_code=head.chain_code, owner_code=head.owner_code, returned=returned
    ):
        raise ScopeError(f"unit {scope} does not supervise case {head.id} (owner {head.owner_code})")
    try:
        rank = owner_rank(to_owner)
    except CodeError as exc:
        raise TransitionError(str(exc)) from None
    if not within(to_owner, scope):
        raise ScopeError(f"{to_owner} is outside the subtree of {scope}")
    if to_owner == head.owner_code:
        raise TransitionError(f"case {head.id} is already owned by {to_owner}")
    if min(rank, Level.COMMUNITY) < rules.max_level:
        raise TransitionError(f"{to_owner} is above the highest level this policy allows")
    if not units_exist(cur, [to_owner]).get(to_owner):
        raise RoutingError(f"{to_owner} is not an existing unit (or a cell without an active officer)")
    chain, chain_version = head.chain_code, head.chain_version_id
    if is_cell_code(to_owner):
        chain, chain_version = to_owner, current_cell_version(cur, to_owner)
    elif not chain_owner_ok(head.chain_code, to_owner):
        chain, chain_version = to_owner, None
    payload: dict[str, Any] = {"to_owner": to_owner, "reason": a["reason"], "by_unit": scope}
    local = when.astimezone(rules.policy.calendar.tz)
    routing = redispatch_routing(cur, head, local, scope, to_owner, chain)
    sets = {"routing": json.dumps(routing, ensure_ascii=False)}
    if chain == head.chain_code:
        return Plan(payload, sets, chain_version_id=chain_version)
    return Plan({**payload, "chain_code": chain}, sets, chain_code=chain, chain_version_id=chain_version)


def redispatch_routing(
    cur: Cursor, head: CaseHead, when: datetime, by_unit: str, to_owner: str, chain: str
) -> dict[str, Any]:
    """The case's routing explanation after a re-dispatch (改派, ``when`` in local time): it names the unit that
    re-dispatched and the new owner (not the routing that sent the case to the old one, which is
    kept under ``previous``). No reason text: that may hold personal data and stays in the event."""
    cur.execute("SELECT routing FROM case_file WHERE id = %s", (head.id,))
    row = cur.fetchone()
    old: dict[str, Any] = dict(row[0]) if row and row[0] else {}
    names = unit_names(cur, [by_unit, to_owner, head.owner_code])
    by, to, was = (
        f"{names.get(c, '')}（{c}）" if c in names else c for c in (by_unit, to_owner, head.owner_code)
    )
    returned = head.state is State.RETURNED
    why_zh = f"原承办单位{was}退回后" if returned else f"原承办单位为{was}，"
    why_en = f"returned by {head.owner_code}; " if returned else f"previously owned by {head.owner_code}; "
    previous = {k: old[k] for k in ("rule", "text_zh", "text_en", "owner_code") if k in old}
    return {
        **{k: v for k, v in old.items() if k != "previous"},
        "rule": "redispatch",
        "owner_code": to_owner,
        "chain_code": chain,
        "level": owner_rank(to_owner).name.lower(),
        "fallback_used": False,
        "text_zh": f"{why_zh}由{by}于{when.month}月{when.day}日改派至{to}",
        "text_en": f"{why_en}re-dispatched by {by_unit} to {to_owner} on {when:%Y-%m-%d}",
        "redispatch": {
            "by_unit": by_unit,
            "from_owner": head.owner_code,
            "to_owner": to_owner,
            "at": when.isoformat(),
            "returned": returned,
        },
        "previous": previous,
    }


def _urge(cur: Cursor, head: CaseHead, when: datetime, rules: CaseRules, a: Mapping[str, Any]) -> Plan:
    """督办: a unit above the owner presses for a solution (the owner is notified, see :func:`act`)."""
    scope = a["scope"]
    if not access.supervises(scope, chain_code=head.chain_code, owner_code=head.owner_code):
        raise ScopeError(f"unit {scope} is not above the owner of case {head.id}")
    return Plan({"text": a["text"], "by_unit": scope})


# The table: one row per action an officer or supervisor takes (OPEN is intake's, the sweep's
# steps are the sweep's). Whether the case's state allows it is the state machine's question.
PLANS: Final[dict[Action, Planner]] = {
    Action.ACCEPT: _accept,
    Action.NOTE: _note,
    Action.START: _start,
    Action.RESOLVE: _resolve,
    Action.CLOSE: _close,
    Action.ESCALATE: _escalate,
    Action.RETURN_TO_PARENT: _return,
    Action.REOPEN: _reopen,
    Action.REASSIGN: _reassign,
    Action.URGE: _urge,
}


def act(
    conn: Conn,
    action: Action,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    rules: CaseRules,
    at: datetime | None = None,
    **args: Any,
) -> ActionResult:
    """Take ``action`` on a case in one transaction (see the module's docstring)."""
    plan_of = PLANS[action]
    when = at or utc_now()
    with transaction(conn) as cur:
        head = lock_case(cur, case_id, expected_version)
        transition(head.state, action)  # raises TransitionError naming the allowed actions
        plan = plan_of(cur, head, when, rules, args)
        res = append_event(
            cur,
            head,
            action=action,
            actor=actor,
            at=when,
            payload=plan.payload,
            rules=rules,
            sets=plan.sets or None,
            chain_code=plan.chain_code,
            chain_version_id=plan.chain_version_id,
        )
        if action is Action.URGE:
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


# ----------------------------------------------------------------------------- typed doors


def accept(
    conn: Conn,
    *,
    case_id: int,
    expected_version: int,
    actor: str,
    rules: CaseRules,
    at: datetime | None = None,
) -> ActionResult:
    """The owner takes the case (受理)."""
    return act(
        conn,
        Action.ACCEPT,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
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
    return act(
        conn,
        Action.NOTE,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        text=text,
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
    return act(
        conn,
        Action.START,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
    )


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
    """Resolve with an outcome (amount recovered, assistance given); cancels the queued steps."""
    return act(
        conn,
        Action.RESOLVE,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        outcome=outcome,
        amount_recovered=amount_recovered,
        assistance=assistance,
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
    return act(
        conn,
        Action.CLOSE,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
    )


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
    """Escalate one level up the case's chain, with a reason."""
    return act(
        conn,
        Action.ESCALATE,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        reason=reason,
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
    """Return a misrouted case to the unit above its owner to re-dispatch."""
    return act(
        conn,
        Action.RETURN_TO_PARENT,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        reason=reason,
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
    """Reopen a resolved or closed case with a reason."""
    return act(
        conn,
        Action.REOPEN,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        reason=reason,
    )


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
    """A supervising unit (``scope``) re-dispatches the case within its subtree."""
    return act(
        conn,
        Action.REASSIGN,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        scope=scope,
        to_owner=to_owner,
        reason=reason,
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
    """督办 by a unit above the owner; the owner is notified."""
    return act(
        conn,
        Action.URGE,
        case_id=case_id,
        expected_version=expected_version,
        actor=actor,
        rules=rules,
        at=at,
        scope=scope,
        text=text,
    )
