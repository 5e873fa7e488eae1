"""Officer and supervisor actions on a case: each one transaction over :func:`grid.cases.store.append_event`.

Who may act is :mod:`grid.accounts.access`; when (from which state) is the table of
:mod:`grid.cases.states`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from connectors.kinds import Outcome
from geodata.codes import (
    CodeError,
    Level,
    ancestor,
    is_cell_code,
    within,
)
from grid.accounts import access
from grid.cases.outbox import enqueue, notice
from grid.cases.owners import chain_owner_ok, owner_at, owner_candidates, units_exist
from grid.cases.routing import RoutingError
from grid.cases.states import (
    Action,
    State,
    TransitionError,
    next_level,
    owner_rank,
    transition,
)
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


def check_allowed(head: CaseHead, action: Action) -> None:
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
    when = at or utc_now()
    with transaction(conn) as cur:
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.ACCEPT)
        return append_event(
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
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.NOTE)
        return append_event(
            cur,
            head,
            action=Action.NOTE,
            actor=actor,
            at=at or utc_now(),
            payload={"text": text},
            rules=rules,
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
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.START)
        return append_event(
            cur, head, action=Action.START, actor=actor, at=at or utc_now(), payload={}, rules=rules
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
    when = at or utc_now()
    oc = Outcome(outcome)
    payload: dict[str, Any] = {"outcome": oc.value}
    with transaction(conn) as cur:
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.RESOLVE)
        payload["on_time"] = when <= head.resolve_by
        if amount_recovered is not None:
            payload["amount_recovered"] = Decimal(amount_recovered)
        if assistance:
            payload["assistance"] = assistance
        return append_event(
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
    when = at or utc_now()
    with transaction(conn) as cur:
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.CLOSE)
        return append_event(
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
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.ESCALATE)
        to_level, owner, alerts = escalation_target(cur, head, rules=rules)
        payload: dict[str, Any] = {
            "reason": reason,
            "to_owner": owner,
            "from_level": int(head.level),
            "to_level": int(to_level),
        }
        if alerts:
            payload["alerts"] = alerts
        return append_event(
            cur, head, action=Action.ESCALATE, actor=actor, at=at or utc_now(), payload=payload, rules=rules
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
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.RETURN_TO_PARENT)
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
        return append_event(
            cur,
            head,
            action=Action.RETURN_TO_PARENT,
            actor=actor,
            at=at or utc_now(),
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
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.REOPEN)
        return append_event(
            cur,
            head,
            action=Action.REOPEN,
            actor=actor,
            at=at or utc_now(),
            payload={"reason": reason},
            rules=rules,
            sets={"resolved_at": None, "closed_at": None, "outcome": None, "amount_recovered": None},
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
    """A supervising unit (``scope``) re-dispatches the case to an existing unit within its subtree.

    The case then rides the new owner's chain: a cell becomes the case's chain; a division off the
    current chain becomes it too.
    """
    with transaction(conn) as cur:
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.REASSIGN)
        returned = head.state is State.RETURNED
        if not access.may_reassign(
            scope, chain_code=head.chain_code, owner_code=head.owner_code, returned=returned
        ):
            raise ScopeError(f"unit {scope} does not supervise case {case_id} (owner {head.owner_code})")
        try:
            rank = owner_rank(to_owner)
        except CodeError as exc:
            raise TransitionError(str(exc)) from None
        if not within(to_owner, scope):
            raise ScopeError(f"{to_owner} is outside the subtree of {scope}")
        if to_owner == head.owner_code:
            raise TransitionError(f"case {case_id} is already owned by {to_owner}")
        if min(rank, Level.COMMUNITY) < rules.max_level:
            raise TransitionError(f"{to_owner} is above the highest level this policy allows")
        if not units_exist(cur, [to_owner]).get(to_owner):
            raise RoutingError(f"{to_owner} is not an existing unit (or a cell without an active officer)")
        chain, chain_version = head.chain_code, head.chain_version_id
        if is_cell_code(to_owner):
            chain, chain_version = to_owner, current_cell_version(cur, to_owner)
        elif not chain_owner_ok(head.chain_code, to_owner):
            chain, chain_version = to_owner, None
        payload: dict[str, Any] = {"to_owner": to_owner, "reason": reason, "by_unit": scope}
        if chain != head.chain_code:
            payload["chain_code"] = chain
        return append_event(
            cur,
            head,
            action=Action.REASSIGN,
            actor=actor,
            at=at or utc_now(),
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
    when = at or utc_now()
    with transaction(conn) as cur:
        head = lock_case(cur, case_id, expected_version)
        check_allowed(head, Action.URGE)
        if not access.supervises(scope, chain_code=head.chain_code, owner_code=head.owner_code):
            raise ScopeError(f"unit {scope} is not above the owner of case {case_id}")
        res = append_event(
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
