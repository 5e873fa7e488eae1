"""Re-routing open cases when a new grid version is committed (``gridflow cells import --commit``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from grid.cases.store import CaseRules, Conn, Cursor, utc_now
from grid.store.db import transaction


@dataclass(frozen=True, slots=True)
class RerouteMove:
    """One open case whose chain cell changes with a new cell version (the dry-run diff)."""

    case_id: int
    from_chain: str
    to_chain: str
    how: str  # point | same_code | overlap | community


@dataclass
class RerouteReport:
    moved: int = 0
    reassigned: int = 0
    relabelled: int = 0  # same cell code in the new version: only the version id changes
    moves: list[RerouteMove] = field(default_factory=list)


def plan_reroute(cur: Cursor, *, old_version: int, new_version: int) -> list[RerouteMove]:
    """Where each open case riding a cell of ``old_version`` goes in ``new_version``; read-only.

    Every such case, staying ones included (set-based: :func:`grid.cases.reroute_plan.plan`).
    """
    from grid.cases import reroute_plan

    p = reroute_plan.plan(cur, old_version=old_version, new_version=new_version, list_untouched=True)
    return sorted((*p.planned, *p.untouched_cases), key=lambda m: m.case_id)


def reroute_for_cell_version(
    conn: Conn,
    *,
    old_version: int,
    new_version: int,
    reason: str,
    rules: CaseRules,
    actor: str = "system:cells-import",
    at: datetime | None = None,
) -> RerouteReport:
    """Move open cases onto a committed new cell version, recording why on each moved case.

    The only way open cases change cells (:mod:`grid.cases.reroute_plan`). A case whose cell keeps
    its code only has its version id updated (it does not move); a case that moves gets an event
    with ``reason`` and the move — a reassignment (back to NEW, fresh deadlines) if its owner at
    its level changes, else a note.
    """
    from grid.cases import reroute_plan

    if not reason.strip():
        raise ValueError("a re-route needs a reason")
    with transaction(conn) as cur:
        return reroute_plan.apply(
            cur,
            old_version=old_version,
            new_version=new_version,
            reason=reason,
            rules=rules,
            actor=actor,
            at=at or utc_now(),
        )
