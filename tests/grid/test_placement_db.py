"""Placement agrees with PostGIS on the stored grid: interiors, shared edges, shared corners.

The in-memory CellIndex decides every point the sync places; PostGIS (GEOS, exact predicates)
is the reference. On a boundary several cells cover the point; the documented tie-break gives it
to exactly one of them: the smallest cell code.
"""

from __future__ import annotations

import numpy as np
import psycopg2
import pytest

from geodata.cellindex import CellIndex
from grid.store import geo
from grid.store.db import transaction

pytestmark = pytest.mark.db

CITY = "420500000000"


@pytest.fixture(scope="module")
def index(loaded_world, database_url: str) -> CellIndex:  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(database_url)
    try:
        with transaction(conn) as cur:
            cells = geo.load_cells(cur, scope_code=CITY)
    finally:
        conn.close()
    return CellIndex(cells.codes, cells.geoms, retired=cells.retired, outline=cells.outline)


def _place(
    index: CellIndex, rows: list[tuple[float, float, list[str]]]
) -> list[tuple[str | None, list[str]]]:
    placed = index.place(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    return [(placed.cell_code[i], rows[i][2]) for i in range(len(rows))]


def _covering(conn: psycopg2.extensions.connection, points_sql: str) -> list[tuple[float, float, list[str]]]:
    with transaction(conn) as cur:
        cur.execute(
            f"""
            WITH p AS ({points_sql})
            SELECT ST_X(p.pt), ST_Y(p.pt), array_agg(c.code::text ORDER BY c.code)
            FROM p JOIN grid_cell c ON c.valid_to IS NULL AND ST_Covers(c.geom, p.pt)
            GROUP BY p.pt
            """
        )
        return [(x, y, list(codes)) for x, y, codes in cur.fetchall()]


def test_interior_points_go_to_the_cell_that_contains_them(index: CellIndex, conn) -> None:  # type: ignore[no-untyped-def]
    """A point strictly inside a cell is placed in that cell and no other."""
    rows = _covering(
        conn,
        "SELECT ST_PointOnSurface(geom) AS pt FROM grid_cell WHERE valid_to IS NULL ORDER BY code LIMIT 500",
    )
    assert len(rows) == 500
    for got, covering in _place(index, rows):
        assert covering == [got]


def test_shared_vertices_go_to_exactly_one_covering_cell_the_smallest_code(index: CellIndex, conn) -> None:  # type: ignore[no-untyped-def]
    """Corners and vertices shared by two or more cells are placed once, by the smallest-code tie-break."""
    rows = _covering(
        conn,
        "SELECT DISTINCT (ST_DumpPoints(geom)).geom AS pt FROM grid_cell WHERE valid_to IS NULL AND code < '420503'",
    )
    shared = [r for r in rows if len(r[2]) >= 2]
    corners = [r for r in shared if len(r[2]) >= 3]
    assert len(shared) > 100 and len(corners) > 20, (len(shared), len(corners))
    for got, covering in _place(index, shared):
        assert got == covering[0]


def test_points_on_shared_edges_are_placed_in_a_covering_cell(index: CellIndex, conn) -> None:  # type: ignore[no-untyped-def]
    """Midpoints of shared edges land in a cell PostGIS says covers them, smallest code on a tie."""
    rows = _covering(
        conn,
        """
        SELECT ST_LineInterpolatePoint(
                   ST_GeometryN(ST_LineMerge(ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 2)), 1), 0.5) AS pt
        FROM grid_cell a JOIN grid_cell b
          ON a.code < b.code AND a.valid_to IS NULL AND b.valid_to IS NULL AND ST_Touches(a.geom, b.geom)
        WHERE a.code < '420503' AND ST_Dimension(ST_Intersection(a.geom, b.geom)) >= 1
        """,
    )
    assert len(rows) > 100
    for got, covering in _place(index, rows):
        assert got == covering[0]


def test_point_outside_the_city_is_unmapped_with_a_reason(index: CellIndex) -> None:
    """A point in China but outside the loaded city is not guessed into a cell."""
    placed = index.place(np.array([116.397]), np.array([39.909]))  # Tiananmen, Beijing
    assert placed.cell_code[0] is None
    assert placed.reason[0] == "outside_area"
