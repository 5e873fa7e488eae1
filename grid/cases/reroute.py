"""Re-routing open cases when a new grid version is committed (``gridflow cells import --commit``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from grid.cases.owners import owner_at, owner_candidates, units_exist
from grid.cases.states import (
    DONE_STATES,
    SQL_OPEN,
    Action,
)
from grid.cases.store import CaseRules, Conn, Cursor, append_event, lock_case, utc_now
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

    The case's own point decides when it has one; else the same cell code if it still exists; else
    the new cell covering a point inside the old cell; else the old cell's community (division).
    """
    cur.execute(
        f"""
        SELECT c.id, c.chain_code, m.code, m.how
        FROM case_file c
        LEFT JOIN LATERAL (
            SELECT code, how FROM (
                SELECT g.code::text AS code, 'point' AS how, 1 AS pref FROM grid_cell g
                    WHERE c.geom IS NOT NULL AND g.version_id = %(new)s AND ST_Covers(g.geom, c.geom)
                UNION ALL
                SELECT g.code::text, 'same_code', 2 FROM grid_cell g
                    WHERE g.version_id = %(new)s AND g.code = c.chain_code
                UNION ALL
                SELECT g.code::text, 'overlap', 3 FROM grid_cell g
                    JOIN grid_cell o ON o.version_id = %(old)s AND o.code = c.chain_code
                    WHERE g.version_id = %(new)s AND ST_Covers(g.geom, ST_PointOnSurface(o.geom))
            ) x ORDER BY pref, code LIMIT 1
        ) m ON true
        WHERE c.chain_version_id = %(old)s AND {SQL_OPEN}
        ORDER BY c.id
        """,
        {"old": old_version, "new": new_version},
    )
    moves = []
    for case_id, chain, code, how in cur.fetchall():
        if code is None:
            moves.append(RerouteMove(int(case_id), str(chain), str(chain)[:12], "community"))
        else:
            moves.append(RerouteMove(int(case_id), str(chain), str(code), str(how)))
    return moves


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

    The only way open cases change cells. A case whose cell keeps its code only has its version id
    updated (it does not move); a case that moves gets an event with ``reason`` and the move — a
    reassignment (back to NEW, fresh deadlines) if its owner at its level changes, else a note.
    """
    if not reason.strip():
        raise ValueError("a re-route needs a reason")
    when = at or utc_now()
    report = RerouteReport()
    with transaction(conn) as cur:
        moves = plan_reroute(cur, old_version=old_version, new_version=new_version)
        for mv in moves:
            head = lock_case(cur, mv.case_id, None)
            if head.state in DONE_STATES or head.chain_version_id != old_version:
                continue
            to_version = None if mv.how == "community" else new_version
            if mv.to_chain == head.chain_code:
                cur.execute("UPDATE case_file SET chain_version_id = %s WHERE id = %s", (to_version, head.id))
                report.relabelled += 1
                continue
            codes = owner_candidates(mv.to_chain, head.level, max_level=rules.max_level)
            owner, alerts = owner_at(
                mv.to_chain, head.level, units_exist(cur, codes), max_level=rules.max_level
            )
            move = {
                "from_chain": head.chain_code,
                "to_chain": mv.to_chain,
                "old_version": old_version,
                "new_version": new_version,
                "how": mv.how,
            }
            payload: dict[str, Any] = {"reason": reason, "reroute": move, "chain_code": mv.to_chain}
            if alerts:
                payload["alerts"] = alerts
            if owner != head.owner_code:
                payload["to_owner"] = owner
                action = Action.REASSIGN
                report.reassigned += 1
            else:
                payload["text"] = reason
                action = Action.NOTE
            append_event(
                cur,
                head,
                action=action,
                actor=actor,
                at=when,
                payload=payload,
                rules=rules,
                chain_code=mv.to_chain,
                chain_version_id=to_version,
            )
            report.moved += 1
            report.moves.append(mv)
    return report
