"""grid.accounts.access: the access rules, and their agreement with the database's twin.

``sees`` is written twice on purpose: in Python (pages, API, service) and as the SQL function
``gridflow_chain_visible`` that the row-level security policies call. One generated tree, every
principal on it and every code in it: both forms must give the same answer.
"""

from __future__ import annotations

import itertools

import psycopg2.extensions
import pytest

from geodata.codes import Level, division_level, level_of
from grid.accounts.access import Principal, Role, apply_scope, may_reassign, reveal_reason, supervises
from grid.cases.states import Action
from grid.store.db import transaction

ROLE_AT = {
    Level.PROVINCE: Role.PROVINCE,
    Level.CITY: Role.CITY,
    Level.COUNTY: Role.COUNTY,
    Level.TOWN: Role.TOWN,
    Level.COMMUNITY: Role.COMMUNITY,
}


def generated_tree() -> list[str]:
    """Two provinces; cities including 荆州 4210 beside 黄冈 4211; towns ending in 0 beside 011;
    communities; cells. Codes that a zero-stripping rule would confuse are all here."""
    codes: list[str] = []
    for prov in ("42", "43"):
        codes.append(prov + "0" * 10)
        for city in ("05", "10", "11"):
            codes.append(prov + city + "0" * 8)
            for county in ("01", "02"):
                codes.append(prov + city + county + "0" * 6)
                for town in ("001", "010", "011"):
                    codes.append(prov + city + county + town + "000")
                    for comm in ("001", "010"):
                        community = prov + city + county + town + comm
                        codes.append(community)
                        codes.extend(community + cell for cell in ("001", "010"))
    return codes


TREE = generated_tree()


def principals() -> list[Principal]:
    out = []
    for i, code in enumerate(c for c in TREE if len(c) == 12):
        out.append(Principal(user_id=i, login=f"u{i}", role=ROLE_AT[division_level(code)], scope_code=code))
        if division_level(code) is Level.COMMUNITY:
            cells = tuple(c for c in TREE if len(c) == 15 and c.startswith(code))
            for k in (1, 2):
                for pick in itertools.combinations(cells, k):
                    out.append(
                        Principal(
                            user_id=i, login=f"o{i}", role=Role.GRID_OFFICER, scope_code=code, cells=pick
                        )
                    )
    return out


@pytest.mark.db
def test_sees_agrees_with_gridflow_chain_visible_on_a_generated_tree(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: the Python ``sees`` and the RLS function ``gridflow_chain_visible`` are one rule."""
    disagreements = []
    checked = 0
    for p in principals():
        apply_scope(conn, p)
        with transaction(conn) as cur:
            cur.execute("SELECT c, gridflow_chain_visible(c) FROM unnest(%s::text[]) AS c", (TREE,))
            in_sql = dict(cur.fetchall())
        for code in TREE:
            checked += 1
            if in_sql[code] is not p.sees(code):
                disagreements.append((p.role.value, p.scope_code, p.cells, code, in_sql[code]))
    assert checked > 10_000
    assert disagreements == []


@pytest.mark.db
def test_no_scope_stated_sees_nothing_in_either_form(conn: psycopg2.extensions.connection) -> None:
    """Rule: a transaction that states no scope sees nothing (the policies fail closed)."""
    apply_scope(conn, None)
    with transaction(conn) as cur:
        cur.execute("SELECT bool_or(gridflow_chain_visible(c)) FROM unnest(%s::text[]) AS c", (TREE,))
        assert cur.fetchone() == (False,)


CITY, COUNTY, TOWN, COMMUNITY = "420500000000", "420502000000", "420502010000", "420502010001"
CELL = COMMUNITY + "003"


@pytest.mark.parametrize(
    ("unit", "chain", "owner", "expected"),
    [
        pytest.param(COMMUNITY, CELL, CELL, True, id="a community supervises its cells' officer"),
        pytest.param(TOWN, CELL, COMMUNITY, True, id="a town supervises a community case"),
        pytest.param(CITY, CELL, TOWN, True, id="two levels up supervises too"),
        pytest.param(TOWN, CELL, TOWN, False, id="the owner does not supervise its own case"),
        pytest.param(COMMUNITY, CELL, TOWN, False, id="below the owner does not supervise"),
        pytest.param(TOWN, "420502011001003", "420502011001", False, id="not the neighbour town 011"),
        pytest.param(TOWN, "420502011001003", COUNTY, False, id="not off its subtree"),
        pytest.param(CELL, CELL, CELL, False, id="a cell is no supervising unit"),
    ],
)
def test_supervises_is_strictly_above_the_owner_on_the_chain(
    unit: str, chain: str, owner: str, expected: bool
) -> None:
    assert supervises(unit, chain_code=chain, owner_code=owner) is expected
    role = Role.GRID_OFFICER if len(unit) == 15 else ROLE_AT[level_of(unit)]
    p = Principal(
        user_id=1, login="t", role=role, scope_code=unit[:12], cells=(unit,) if len(unit) == 15 else ()
    )
    assert p.supervises(chain, owner) is expected


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        pytest.param("  核实工资  ", "核实工资", id="trimmed"),
        pytest.param("x" * 600, "x" * 500, id="kept to 500 characters"),
        pytest.param(" ab ", None, id="too short"),
    ],
)
def test_a_reveal_reason_has_one_rule(raw: str, kept: str | None) -> None:
    if kept is None:
        with pytest.raises(ValueError, match="at least 4"):
            reveal_reason(raw)
    else:
        assert reveal_reason(raw) == kept


@pytest.mark.parametrize(
    ("unit", "owner", "returned", "expected"),
    [
        pytest.param(COMMUNITY, COMMUNITY, True, True, id="the owner of a returned case re-dispatches it"),
        pytest.param(TOWN, TOWN, False, False, id="an owner does not reassign its own case"),
        pytest.param(TOWN, COMMUNITY, False, True, id="a unit above reassigns"),
    ],
)
def test_may_reassign(unit: str, owner: str, returned: bool, expected: bool) -> None:
    assert may_reassign(unit, chain_code=CELL, owner_code=owner, returned=returned) is expected


OTHER_CELL = COMMUNITY + "004"


@pytest.mark.parametrize(
    ("officer_id", "cells", "owner", "owner_officer", "expected"),
    [
        pytest.param(7, (CELL,), CELL, 7, True, id="the roster gave the case to this officer"),
        pytest.param(7, (CELL,), CELL, None, True, id="a cell case given to no officer in particular"),
        pytest.param(7, (CELL,), CELL, 8, False, id="another officer of the same cell owns it"),
        pytest.param(7, (CELL,), OTHER_CELL, 9, False, id="a neighbouring cell's case"),
        pytest.param(7, (CELL,), COMMUNITY, None, False, id="the community union's case"),
        pytest.param(
            None, (CELL,), CELL, 7, False, id="an account not tied to the roster, case of an officer"
        ),
        pytest.param(None, (CELL,), CELL, None, True, id="an account not tied to the roster, no officer"),
    ],
)
def test_an_officer_owns_the_cases_the_roster_gave_it(
    officer_id: int | None, cells: tuple[str, ...], owner: str, owner_officer: int | None, expected: bool
) -> None:
    """Rule: owner kind officer — the case's cell is the officer's and the officer is the one of record."""
    p = Principal(1, "o", Role.GRID_OFFICER, COMMUNITY, cells, officer_id)
    assert p.owns(owner, owner_officer) is expected
    assert p.may(Action.RESOLVE, chain_code=CELL, owner_code=owner, owner_officer=owner_officer) is expected
    unit = Principal(2, "c", Role.COMMUNITY, COMMUNITY)
    assert unit.owns(owner, owner_officer) is (owner == COMMUNITY)
