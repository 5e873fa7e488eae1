"""Cases: province policy, the state machine, routing and deadlines (pure), and the store.

The modules re-exported here are pure domain logic (no database, Prefect or network). Over the
store, one module per role: ``store`` (the case row and its hash-chained events), ``owners``
(who owns a case, which units exist), ``intake`` (reports in, one path for every channel),
``actions`` (officer and supervisor actions), ``reroute`` (on a new grid version), ``queries``
(reading cases and the ledger), ``sweep`` (escalation steps) and ``outbox`` (notices).
"""

from connectors.kinds import CaseFamily, CaseKind, HardshipGrade, Outcome, Severity
from grid.cases.deadlines import Deadlines, Step, deadlines_for, escalation_steps
from grid.cases.policy import PolicyError, ProvincePolicy, build_calendar, load_policy
from grid.cases.routing import CaseFacts, RoutingAlert, RoutingDecision, RoutingError, route
from grid.cases.states import (
    Action,
    CaseState,
    Event,
    State,
    TransitionError,
    chain_hash,
    next_level,
    record,
    replay,
    transition,
    verify_chain,
)

__all__ = [
    "Action",
    "CaseFacts",
    "CaseFamily",
    "CaseKind",
    "CaseState",
    "Deadlines",
    "Event",
    "HardshipGrade",
    "Outcome",
    "PolicyError",
    "ProvincePolicy",
    "RoutingAlert",
    "RoutingDecision",
    "RoutingError",
    "Severity",
    "State",
    "Step",
    "TransitionError",
    "build_calendar",
    "chain_hash",
    "deadlines_for",
    "escalation_steps",
    "load_policy",
    "next_level",
    "record",
    "replay",
    "route",
    "transition",
    "verify_chain",
]
