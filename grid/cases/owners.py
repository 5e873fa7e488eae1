"""Owners: which unit owns a case on its chain, which units exist, and seeding them.

Ownership: ``chain_code`` is the code whose chain the case rides (its cell, or the division its
address reached); the owner is always the unit at the case's level on that chain
(:func:`owner_at`), passing upward over missing units with an alert. Escalation moves one level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from geodata.codes import (
    PREFIX_LEN,
    CodeError,
    Level,
    ancestor,
    division_level,
    is_division_code,
    level_of,
    own_prefix,
    parent,
)
from grid.cases.routing import RoutingError
from grid.cases.states import (
    SQL_OPEN,
    owner_rank,
)
from grid.cases.store import Conn, Cursor, ScopeError
from grid.store.db import transaction


def units_exist(cur: Cursor, codes: Iterable[str]) -> dict[str, bool]:
    """Which of ``codes`` name an active union unit (12 digits) or a cell with an active officer (15)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    cur.execute(
        """
        SELECT code FROM unit WHERE active AND code = ANY(%s)
        UNION
        SELECT cell_code FROM grid_officer WHERE active AND cell_code = ANY(%s)
        """,
        (wanted, wanted),
    )
    present = {str(r[0]) for r in cur.fetchall()}
    return {c: c in present for c in wanted}


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


@dataclass(frozen=True, slots=True)
class DispatchTarget:
    """One entry of a re-dispatch pick-list: a unit (or a cell with an active officer) one level
    below the dispatching unit, with its open cases (owned anywhere in its subtree)."""

    code: str
    name: str | None
    level: Level
    open_cases: int
    officers: tuple[str, ...] = ()  # accounts of the active grid officers of a cell


def dispatch_targets(cur: Cursor, unit_code: str) -> list[DispatchTarget]:
    """Where ``unit_code`` may re-dispatch a case (改派): its existing children, by code.

    A county, town or city lists its active child units; a community its cells that have an active
    grid officer (a cell without one cannot own a case). The same list serves a returned case's
    owner and a supervisor's reassign; :func:`grid.cases.actions.reassign` still checks the pick.
    Counts and rows are what the caller's transaction may see (row-level security applies).
    """
    if not is_division_code(unit_code):
        return []
    level = division_level(unit_code)
    prefix = own_prefix(unit_code)
    if level is Level.COMMUNITY:
        cur.execute(
            f"""
            SELECT o.cell_code, max(g.name), array_agg(DISTINCT o.account ORDER BY o.account),
                   (SELECT count(*) FROM case_file c WHERE c.owner_code = o.cell_code AND {SQL_OPEN})
            FROM grid_officer o
            LEFT JOIN grid_cell g ON g.code = o.cell_code AND g.valid_to IS NULL
            WHERE o.active AND o.cell_code LIKE %s
            GROUP BY o.cell_code ORDER BY o.cell_code
            """,
            (prefix + "%",),
        )
        return [
            DispatchTarget(str(r[0]), r[1], Level.CELL, int(r[3]), tuple(str(a) for a in r[2]))
            for r in cur.fetchall()
        ]
    cur.execute(
        f"""
        SELECT u.code, u.name,
               (SELECT count(*) FROM case_file c
                 WHERE c.owner_code LIKE (left(u.code, %s) || '%%') AND {SQL_OPEN})
        FROM unit u
        WHERE u.active AND u.level = %s AND u.code LIKE %s AND u.code <> %s
        ORDER BY u.code
        """,
        (PREFIX_LEN[Level(int(level) + 1)], int(level) + 1, prefix + "%", unit_code),
    )
    return [DispatchTarget(str(r[0]), r[1], Level(int(level) + 1), int(r[2])) for r in cur.fetchall()]


def unit_names(cur: Cursor, codes: Iterable[str]) -> dict[str, str]:
    """Display names of union units (``unit.name``) and of cells (the current ``grid_cell.name``,
    a cell's owner being its grid officer); codes without a name are left out."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    cur.execute(
        """
        SELECT code, name FROM unit WHERE code = ANY(%s) AND name IS NOT NULL
        UNION ALL
        SELECT code, name FROM grid_cell WHERE code = ANY(%s) AND valid_to IS NULL AND name IS NOT NULL
        """,
        (wanted, wanted),
    )
    return {str(r[0]): str(r[1]) for r in cur.fetchall()}
