"""Owners: which unit owns a case on its chain, which units exist, and seeding them.

Ownership: ``chain_code`` is the code whose chain the case rides (its cell, or the division its
address reached); the owner is always the unit at the case's level on that chain
(:func:`owner_at`), passing upward over missing units with an alert. Escalation moves one level.

Two owner kinds: a **unit** (``owner_code`` a 12-digit division: that level's union) and an
**officer** (``owner_code`` a 15-digit cell with an active officer on the roster, and
``case_file.owner_officer`` the officer). Which officer, when the cell has several, is the
**tie-break** :data:`PICK_RULE`: the active officer serving the cell with the fewest open cases
(anywhere), then the lowest officer id. The database applies it whenever a case lands on a cell
(trigger ``case_file_owner_officer``, function ``gridflow_pick_officer``, migration 0012), so
intake, escalation, return, reassignment, the sweep and re-routing all keep it without knowing
about it. A cell with no active officer is no owner: routing passes the case to the community
union and its explanation says "网格…无网格员".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from geodata.codes import (
    CodeError,
    Level,
    ancestor,
    level_of,
    own_prefix,
    parent,
)
from grid.cases.routing import RoutingError
from grid.cases.states import (
    owner_rank,
)
from grid.cases.store import Conn, Cursor, ScopeError
from grid.store.db import transaction

PICK_RULE: Final = "fewest open cases, then lowest officer id"


def units_exist(cur: Cursor, codes: Iterable[str]) -> dict[str, bool]:
    """Which of ``codes`` name an active union unit (12 digits) or a cell with an active officer (15)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    cur.execute(
        """
        SELECT code FROM unit WHERE active AND code = ANY(%s)
        UNION
        SELECT oc.cell_code FROM officer_cell oc JOIN officer o ON o.id = oc.officer_id
        WHERE o.active AND oc.cell_code = ANY(%s)
        """,
        (wanted, wanted),
    )
    present = {str(r[0]) for r in cur.fetchall()}
    return {c: c in present for c in wanted}


@dataclass(frozen=True, slots=True)
class OfficerLoad:
    """An active officer of the roster and how many open cases it owns now."""

    officer_id: int
    name: str
    open_cases: int
    code: str  # the roster's own id of the officer
    cells: tuple[str, ...]


def officers_of_units(cur: Cursor, unit_codes: Iterable[str]) -> dict[str, list[OfficerLoad]]:
    """Per community unit code (12 digits), its active officers serving a cell of it, in the order
    of the tie-break (:data:`PICK_RULE`); a code without officers maps to an empty list.

    Under the web's row-level security it lists the officers of the cells the transaction sees, and
    counts the open cases it sees (a unit sees every case of its subtree).
    """
    wanted = sorted(set(unit_codes))
    if not wanted:
        return {}
    cur.execute(
        """
        SELECT left(oc.cell_code, 12) AS unit_code, o.id, o.name, o.source_record_id,
               array_agg(oc.cell_code ORDER BY oc.cell_code),
               (SELECT count(*) FROM case_file c WHERE c.owner_officer = o.id
                  AND c.state NOT IN ('resolved', 'closed'))
        FROM officer o JOIN officer_cell oc ON oc.officer_id = o.id
        WHERE o.active AND left(oc.cell_code, 12) = ANY(%s)
        GROUP BY 1, o.id, o.name, o.source_record_id
        ORDER BY 1, 6, o.id
        """,
        (wanted,),
    )
    out: dict[str, list[OfficerLoad]] = {c: [] for c in wanted}
    for unit, oid, name, code, cells, n in cur.fetchall():
        out[str(unit)].append(
            OfficerLoad(int(oid), str(name), int(n), str(code), tuple(str(c) for c in cells))
        )
    return out


def case_officer(cur: Cursor, case_id: int) -> OfficerLoad | None:
    """The officer who owns a case now (None when a unit owns it)."""
    cur.execute(
        """
        SELECT o.id, o.name, o.source_record_id,
               ARRAY(SELECT oc.cell_code FROM officer_cell oc WHERE oc.officer_id = o.id ORDER BY 1),
               (SELECT count(*) FROM case_file x WHERE x.owner_officer = o.id
                  AND x.state NOT IN ('resolved', 'closed'))
        FROM case_file c JOIN officer o ON o.id = c.owner_officer WHERE c.id = %s
        """,
        (case_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return OfficerLoad(int(row[0]), str(row[1]), int(row[4]), str(row[2]), tuple(str(c) for c in row[3]))


def owner_candidates(chain_code: str, level: Level, *, max_level: Level) -> list[str]:
    """Units that may own a case at ``level`` on ``chain_code``'s chain, most local first.

    At community level a cell's grid officer comes first, then the community union; above it the
    unit of the level, then each level up to ``max_level`` (the fallback order routing uses).
    """
    own = level_of(chain_code)
    out: list[str] = []
    if level is Level.COMMUNITY and own is Level.CELL:
        out.append(chain_code)
    for lv in range(min(int(level), int(own), int(Level.COMMUNITY)), int(max_level) - 1, -1):
        out.append(ancestor(chain_code, Level(lv)))
    return out


def owner_at(
    chain_code: str, level: Level, units: Mapping[str, bool], *, max_level: Level
) -> tuple[str, list[dict[str, Any]]]:
    """The owner at ``level`` on the chain: the first existing candidate, with an alert per skip."""
    alerts: list[dict[str, Any]] = []
    for code in owner_candidates(chain_code, level, max_level=max_level):
        if units.get(code, False):
            return code, alerts
        alerts.append({"code": "unit_missing", "unit_code": code})
    raise RoutingError(
        f"no unit exists on the chain of {chain_code} from {level.name.lower()} up to "
        f"{max_level.name.lower()} level; the case cannot be given an owner"
    )


def chain_owner_ok(chain_code: str, owner_code: str) -> bool:
    """The ownership invariant: the owner is the unit of its own level on the case's chain."""
    try:
        return ancestor(chain_code, owner_rank(owner_code)) == owner_code
    except CodeError:
        return False


def supervisor_of(owner_code: str) -> str | None:
    """The unit one level up from an owner (a grid officer's supervisor is the community union)."""
    return parent(owner_code)


def scope_prefix(scope: str) -> str:
    """The code prefix that selects a scope's subtree (``420502000000`` -> ``420502``)."""
    try:
        return own_prefix(scope)
    except CodeError:
        raise ScopeError(f"a scope is a 12-digit division or 15-digit cell code, got {scope!r}") from None


def ensure_units(conn: Conn, *, scope: str) -> int:
    """Create an active union unit for every current division within ``scope`` that has none.

    For operators bringing a city online; grid officers come from the officer import.
    """
    with transaction(conn) as cur:
        cur.execute(
            """
            INSERT INTO unit (code, level, name)
            SELECT d.code::text, d.level, d.name || '工会' FROM division d
            WHERE d.valid_to IS NULL AND d.code::text LIKE %s
            ON CONFLICT (code) DO NOTHING
            """,
            (scope_prefix(scope) + "%",),
        )
        return int(cur.rowcount)
