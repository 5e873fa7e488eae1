"""Cases: kinds, province policy, the state machine, routing and deadlines.

The modules re-exported here are pure domain logic (no database, Prefect or network);
``service``, ``sweep``, ``outbox`` and ``intake`` apply them to the store.
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
