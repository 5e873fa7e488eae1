"""The scope and cell-loading rules on codes where stripping trailing zeros goes wrong.

荆州 ``421000000000`` must not read 黄冈 ``4211…`` or 咸宁 ``4212…`` cells as its own, and a town
whose code ends in 0 (``421002010000``) must not read its neighbours ``…011…``–``…019…``. Every
rule here reads prefixes from :mod:`geodata.codes`; the rows are written in a transaction that is
rolled back, so nothing stays in the session database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg2.extensions
import pytest

from geodata.world import Cell
from grid.accounts.access import Principal, Role
from grid.cases import owners
from grid.store import geo, world

pytestmark = pytest.mark.db

JINGZHOU = "421000000000"
TOWN = "421002010000"  # a town of 荆州's 沙市区 whose own code ends in 0
OURS = ["421002010001001", "421002010001002"]  # cells of the town (and so of 荆州)
NEIGHBOURS = ["421002011001001", "421002019001001"]  # 荆州 cells of the towns next to it
OTHER_CITIES = ["421102001001001", "421202001001001", "421303001001001"]  # 黄冈, 咸宁, 随州


def _square(i: int) -> str:
    x, y = 112.0 + i * 0.01, 30.0
    return f"SRID=4326;MULTIPOLYGON((({x} {y},{x + 0.01} {y},{x + 0.01} {y + 0.01},{x} {y + 0.01},{x} {y})))"


def _write(cur: psycopg2.extensions.cursor, codes: list[str], scope: str) -> int:
    cur.execute(
        "INSERT INTO cell_version (label, scope_code, valid_from) VALUES ('t', %s, '2026-01-01') RETURNING id",
        (scope,),
    )
    row = cur.fetchone()
    assert row is not None
    version = int(row[0])
    for i, code in enumerate(codes):
        cur.execute(
            "INSERT INTO grid_cell (code, community_code, name, geom, version_id, valid_from)"
            " VALUES (%s, %s, %s, %s::geometry, %s, '2026-01-01')",
            (code, code[:12], code, _square(i), version),
        )
    return version


@dataclass
class Stored:
    cur: psycopg2.extensions.cursor
    ours: int
    neighbours: int


@pytest.fixture
def stored(conn: psycopg2.extensions.connection) -> Stored:
    """The cells, in a transaction the test never commits (the conn fixture rolls it back)."""
    c = conn.cursor()
    ours = _write(c, OURS, TOWN)
    neighbours = _write(c, NEIGHBOURS, "421002000000")
    _write(c, OTHER_CITIES, "420000000000")  # written last: the highest version id
    return Stored(c, ours, neighbours)


def test_cell_loading_of_jingzhou_reads_only_jingzhou(stored: Stored) -> None:
    assert geo.load_cells(stored.cur, scope_code=JINGZHOU).codes == sorted(OURS + NEIGHBOURS)
    assert geo.current_version(stored.cur, scope_code=JINGZHOU) == stored.neighbours


def test_cell_loading_of_a_town_ending_in_0_reads_only_that_town(stored: Stored) -> None:
    assert geo.load_cells(stored.cur, scope_code=TOWN).codes == OURS
    assert geo.current_version(stored.cur, scope_code=TOWN) == stored.ours


def test_world_load_of_a_town_ending_in_0_is_not_confused_by_its_neighbours(stored: Stored) -> None:
    """Loading the town's own cells again is a no-op, not a conflict with cells it does not hold."""
    town = geo.load_cells(stored.cur, scope_code=TOWN)
    cells = [
        Cell(code=c, community_code=c[:12], name=c, geometry=g)
        for c, g in zip(town.codes, town.geoms, strict=True)
        if c in OURS
    ]
    assert world.load_cells(
        stored.cur, cells, scope_code=TOWN, label="again", valid_from=date(2026, 1, 1), generated=False
    ) == (0, None)


@pytest.mark.parametrize(
    ("role", "scope", "code", "sees"),
    [
        pytest.param(Role.CITY, JINGZHOU, OURS[0], True, id="荆州 sees its cell"),
        pytest.param(Role.CITY, JINGZHOU, OTHER_CITIES[0], False, id="荆州 does not see 黄冈"),
        pytest.param(Role.CITY, JINGZHOU, OTHER_CITIES[1], False, id="荆州 does not see 咸宁"),
        pytest.param(Role.TOWN, TOWN, OURS[1], True, id="town ending in 0 sees its cell"),
        pytest.param(Role.TOWN, TOWN, NEIGHBOURS[0], False, id="town ending in 0 not town 011"),
        pytest.param(Role.TOWN, TOWN, NEIGHBOURS[1], False, id="town ending in 0 not town 019"),
    ],
)
def test_scope_rules_on_jingzhou_and_a_town_ending_in_0(
    role: Role, scope: str, code: str, sees: bool
) -> None:
    p = Principal(user_id=1, login="t", role=role, scope_code=scope)
    assert p.sees(code) is sees
    assert code.startswith(owners.scope_prefix(scope)) is sees
