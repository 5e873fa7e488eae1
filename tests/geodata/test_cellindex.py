"""geodata.cellindex: boundary-inclusive, deterministic point -> cell placement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Point, Polygon, box

from geodata import cellindex
from geodata.cellindex import MAX_NUMPY_EDGES, CellIndex, Method, Placement, Reason
from geodata.codes import Level, chain

# --- the hand-made grid -------------------------------------------------------------------------
#
#  31.00 +-------+-------+-------+ - - - +
#        |   C   |   D   |  (R)  |       :      R: retired cell
#  30.75 +-------+-------+-------+       :      gap: inside the outline, in no cell
#        |   A   |   B   |  gap  |   E   :
#  30.50 +-------+-------+       +-------+
#      111.00  111.25  111.50  111.75  112.00   outline: 111.0..112.0 x 30.5..31.0
#
# Dyadic coordinates, so points "on an edge" are exactly on it.

A, B, C, D = "420506001001001", "420506001001002", "420506001001003", "420506001001004"
E, RETIRED = "420506001002001", "420506001001005"
CELLS = {
    D: box(111.25, 30.75, 111.5, 31.0),  # deliberately not in code order
    B: box(111.25, 30.5, 111.5, 30.75),
    E: box(111.75, 30.5, 112.0, 30.75),
    C: box(111.0, 30.75, 111.25, 31.0),
    A: box(111.0, 30.5, 111.25, 30.75),
}
OUTLINE = box(111.0, 30.5, 112.0, 31.0)


@pytest.fixture(scope="module")
def index() -> CellIndex:
    return CellIndex(
        list(CELLS),
        list(CELLS.values()),
        retired=[(RETIRED, box(111.5, 30.75, 111.75, 31.0))],
        outline=OUTLINE,
    )


def place_one(index: CellIndex, lon: float, lat: float) -> tuple[str | None, str, str | None]:
    p = index.place(np.array([lon]), np.array([lat]))
    return p.cell_code[0], p.method[0], p.reason[0]


@pytest.mark.parametrize(
    ("lon", "lat", "code", "reason"),
    [
        pytest.param(111.1, 30.6, A, None, id="interior-point-is-in-its-cell"),
        pytest.param(111.4, 30.9, D, None, id="interior-point-of-another-cell"),
        pytest.param(111.25, 30.6, A, None, id="shared-vertical-edge-goes-to-smaller-code-A-not-B"),
        pytest.param(111.4, 30.75, B, None, id="shared-horizontal-edge-goes-to-smaller-code-B-not-D"),
        pytest.param(111.25, 30.75, A, None, id="corner-shared-by-four-goes-to-smallest-code"),
        pytest.param(111.0, 30.5, A, None, id="outer-polygon-vertex-is-inside"),
        pytest.param(111.5, 30.6, B, None, id="edge-facing-a-gap-belongs-to-the-cell"),
        pytest.param(112.0, 30.6, E, None, id="edge-on-the-outline-belongs-to-the-cell"),
        pytest.param(111.5, 30.9, D, None, id="edge-shared-with-a-retired-cell-goes-to-the-current-cell"),
        pytest.param(111.6, 30.6, None, Reason.GAP_BETWEEN_CELLS, id="between-cells-inside-outline-is-a-gap"),
        pytest.param(111.9, 30.9, None, Reason.GAP_BETWEEN_CELLS, id="uncovered-corner-of-outline-is-a-gap"),
        pytest.param(111.6, 30.9, None, Reason.RETIRED_CELL, id="in-retired-cell-only-is-retired"),
        pytest.param(111.75, 30.9, None, Reason.RETIRED_CELL, id="on-retired-cell-edge-is-retired"),
        pytest.param(112.5, 30.6, None, Reason.OUTSIDE_AREA, id="beyond-the-outline-is-outside"),
        pytest.param(0.0, 0.0, None, Reason.OUTSIDE_AREA, id="far-away-is-outside"),
        pytest.param(math.nan, 30.6, None, Reason.INVALID_POINT, id="nan-longitude-is-invalid"),
        pytest.param(111.1, math.nan, None, Reason.INVALID_POINT, id="nan-latitude-is-invalid"),
        pytest.param(math.inf, 30.6, None, Reason.INVALID_POINT, id="infinite-coordinate-is-invalid"),
    ],
)
def test_hand_made_grid(
    index: CellIndex, lon: float, lat: float, code: str | None, reason: Reason | None
) -> None:
    """Rules: closed cells; ties go to the smallest code; unmapped points carry their reason."""
    got_code, method, got_reason = place_one(index, lon, lat)
    assert (got_code, got_reason) == (code, reason)
    assert method == (Method.POINT_IN_CELL if code else Method.UNMAPPED)


def test_placement_arrays_are_aligned_and_typed(index: CellIndex) -> None:
    """Rule: one row per point; cell_index points back into the codes given to the index."""
    lon = np.array([111.1, 111.6, math.nan, 111.4])
    lat = np.array([30.6, 30.6, 30.6, 30.9])
    p = index.place(lon, lat)
    assert len(p) == 4
    assert p.cell_index.dtype == np.int64
    assert [p.cell_index[i] for i in range(4)] == [list(CELLS).index(A), -1, -1, list(CELLS).index(D)]
    assert list(p.cell_code) == [A, None, None, D]
    assert list(p.method) == ["point_in_cell", "unmapped", "unmapped", "point_in_cell"]
    assert list(p.reason) == [None, "gap_between_cells", "invalid_point", None]
    assert p.reason_counts() == {"gap_between_cells": 1, "invalid_point": 1}


def test_placement_is_read_only(index: CellIndex) -> None:
    """Rule: a Placement is a frozen record; its arrays cannot be edited in place."""
    p = index.place(np.array([111.1]), np.array([30.6]))
    with pytest.raises(ValueError, match="read-only"):
        p.cell_index[0] = 3


def test_chain_of_a_placed_point_reads_the_code_prefixes(index: CellIndex) -> None:
    """Rule: a placed point's chain runs from the province down to its cell; unmapped has none."""
    p = index.place(np.array([111.1, 111.6]), np.array([30.6, 30.6]))
    expected = {
        Level.PROVINCE: "420000000000",
        Level.CITY: "420500000000",
        Level.COUNTY: "420506000000",
        Level.TOWN: "420506001000",
        Level.COMMUNITY: "420506001001",
        Level.CELL: A,
    }
    assert p.chain(0) == chain(A) == expected
    assert p.chain(1) is None


def test_empty_input_places_nothing(index: CellIndex) -> None:
    """Rule: zero points in, zero rows out."""
    p = index.place(np.array([]), np.array([]))
    assert len(p) == 0 and p.reason_counts() == {}


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        pytest.param(np.zeros((2, 2)), np.zeros((2, 2)), id="two-dimensional"),
        pytest.param(np.zeros(3), np.zeros(2), id="different-lengths"),
    ],
)
def test_place_rejects_misshapen_input(
    index: CellIndex, lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> None:
    """Rule: lon and lat are two 1-D arrays of the same length."""
    with pytest.raises(ValueError, match="1-D"):
        index.place(lon, lat)


# --- more geometry ------------------------------------------------------------------------------

LOW, HIGH = "420506001003001", "420506001003002"


@pytest.mark.parametrize(
    ("cells", "lon", "lat", "code"),
    [
        pytest.param(
            {HIGH: Polygon([(111.0, 30.0), (111.5, 30.0), (111.5, 30.5)]),
             LOW: Polygon([(111.0, 30.0), (111.5, 30.5), (111.0, 30.5)])},
            111.25, 30.25, LOW, id="point-on-a-shared-diagonal-goes-to-smaller-code",
        ),
        pytest.param(
            {HIGH: Polygon([(111.0, 30.0), (111.5, 30.0), (111.5, 30.5)]),
             LOW: Polygon([(111.0, 30.0), (111.5, 30.5), (111.0, 30.5)])},
            111.4, 30.1, HIGH, id="point-beside-the-diagonal-is-in-one-cell-only",
        ),
        pytest.param(
            {HIGH: box(111.0, 30.0, 111.2, 30.2), LOW: box(111.1, 30.1, 111.3, 30.3)},
            111.15, 30.15, LOW, id="overlapping-cells-resolve-to-smaller-code",
        ),
        pytest.param(
            {LOW: Point(111.3, 30.3).buffer(0.1, quad_segs=64), HIGH: box(111.0, 30.0, 111.1, 30.1)},
            111.3, 30.3, LOW, id="detailed-cell-centre-is-inside",
        ),
        pytest.param(
            {LOW: Point(111.3, 30.3).buffer(0.1, quad_segs=64), HIGH: box(111.0, 30.0, 111.1, 30.1)},
            111.3 + 0.1 * math.cos(math.pi / 4), 30.3 + 0.1 * math.sin(math.pi / 4) + 0.01, None,
            id="just-outside-a-detailed-cell-is-nowhere",
        ),
        pytest.param(
            {LOW: Polygon(box(111.0, 30.0, 111.4, 30.4).exterior, [box(111.1, 30.1, 111.2, 30.2).exterior])},
            111.15, 30.15, None, id="point-in-a-hole-is-not-in-the-cell",
        ),
        pytest.param(
            {LOW: Polygon(box(111.0, 30.0, 111.4, 30.4).exterior, [box(111.1, 30.1, 111.2, 30.2).exterior])},
            111.2, 30.15, LOW, id="point-on-a-hole-edge-is-in-the-cell",
        ),
        pytest.param(
            {LOW: MultiPolygon([box(111.0, 30.0, 111.1, 30.1), box(111.3, 30.3, 111.4, 30.4)])},
            111.35, 30.35, LOW, id="point-in-second-part-of-multipolygon",
        ),
    ],
)  # fmt: skip
def test_geometry_cases(cells: dict[str, Polygon], lon: float, lat: float, code: str | None) -> None:
    """Rules: closed polygons incl. holes and parts; smallest code wins wherever cells meet."""
    index = CellIndex(list(cells), list(cells.values()))
    assert index.place(np.array([lon]), np.array([lat])).cell_code[0] == code


def test_detailed_cell_vertex_is_inside() -> None:
    """Rule: every vertex of a detailed cell (tested by GEOS, not numpy) is in that cell."""
    circle = Point(111.3, 30.3).buffer(0.1, quad_segs=64)
    assert len(circle.exterior.coords) - 1 > MAX_NUMPY_EDGES
    xy = shapely.get_coordinates(circle)
    p = CellIndex([LOW], [circle]).place(xy[:, 0], xy[:, 1])
    assert set(p.cell_code) == {LOW}


def test_without_outline_the_hull_of_the_cells_stands_in() -> None:
    """Rule: with no outline, a point inside the cells' hull is a gap, one beyond it is outside."""
    index = CellIndex([LOW, HIGH], [box(111.0, 30.0, 111.1, 30.1), box(111.2, 30.0, 111.3, 30.1)])
    p = index.place(np.array([111.15, 111.5]), np.array([30.05, 30.05]))
    assert list(p.reason) == [Reason.GAP_BETWEEN_CELLS, Reason.OUTSIDE_AREA]


# --- construction errors ------------------------------------------------------------------------

SQUARE = box(111.0, 30.0, 111.1, 30.1)
OTHER = box(111.1, 30.0, 111.2, 30.1)


@pytest.mark.parametrize(
    ("codes", "geoms", "retired", "message"),
    [
        pytest.param([LOW, "42050600100300"], [SQUARE, OTHER], [], r"codes\[1\].*15-digit", id="short-code"),
        pytest.param([LOW, "42050600100300x"], [SQUARE, OTHER], [], r"codes\[1\]", id="non-digit-code"),
        pytest.param([LOW, LOW], [SQUARE, OTHER], [], r"codes\[1\] repeats.*codes\[0\]", id="duplicate-code"),
        pytest.param(
            [LOW, "４２０５０６００１００３００２"],
            [SQUARE, OTHER],
            [],
            r"codes\[1\]",
            id="full-width-digits-code",
        ),
        pytest.param([LOW], [SQUARE, OTHER], [], "1 codes but 2 geometries", id="length-mismatch"),
        pytest.param([], [], [], "at least one cell", id="no-cells"),
        pytest.param(
            [LOW, HIGH], [SQUARE, Point(111.0, 30.0)], [], r"geoms\[1\] is a Point", id="not-a-polygon"
        ),
        pytest.param([LOW], [Polygon()], [], r"geoms\[0\] is empty", id="empty-polygon"),
        pytest.param(
            [LOW], [Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])], [], r"geoms\[0\] is not a valid", id="bow-tie"
        ),
        pytest.param([LOW], ["POLYGON EMPTY"], [], r"geoms\[0\] is str", id="not-a-geometry"),
        pytest.param([LOW], [SQUARE], [("bad", OTHER)], r"retired\[0\]", id="bad-retired-code"),
        pytest.param(
            [LOW], [SQUARE], [(HIGH, Point(0, 0))], r"retired\[0\] is a Point", id="bad-retired-geometry"
        ),
    ],
)
def test_invalid_cells_are_refused_by_position(
    codes: list[str], geoms: list[object], retired: list[tuple[str, object]], message: str
) -> None:
    """Rule: a bad code or geometry raises ValueError naming its position; nothing is guessed."""
    with pytest.raises(ValueError, match=message):
        CellIndex(codes, geoms, retired=retired)  # type: ignore[arg-type]


def test_invalid_outline_is_refused() -> None:
    """Rule: the outline must be a valid polygon too."""
    with pytest.raises(ValueError, match="outline"):
        CellIndex([LOW], [SQUARE], outline=Point(0, 0))


# --- properties over generated grids ------------------------------------------------------------


def wobbly_grid(seed: int, nx: int = 6, ny: int = 5) -> tuple[list[str], list[Polygon], NDArray[np.float64]]:
    """A partition of a small area into nx*ny non-convex cells with shared, wobbly edges.

    Each lattice edge gets 0-30 intermediate vertices pushed sideways, shared by both cells it
    separates, so cells have 4 to 124 edges (every numpy edge group and the GEOS path) and tile
    the area exactly. Returns codes, polygons and every vertex (for on-boundary test points).
    """
    rng = np.random.default_rng(seed)
    step = 0.01
    gx, gy = np.meshgrid(111.0 + step * np.arange(nx + 1), 30.5 + step * np.arange(ny + 1))
    gx += rng.uniform(-0.15, 0.15, gx.shape) * step
    gy += rng.uniform(-0.15, 0.15, gy.shape) * step

    def wobble(p: NDArray[np.float64], q: NDArray[np.float64]) -> NDArray[np.float64]:
        k = int(rng.choice([0, 0, 0, 1, 3, 12, 30]))
        t = np.sort(rng.uniform(0.15, 0.85, k))
        normal = np.array([-(q - p)[1], (q - p)[0]])
        return p + t[:, None] * (q - p) + rng.uniform(-0.08, 0.08, (k, 1)) * normal

    corner = np.stack([gx, gy], axis=-1)
    h_edges = {(j, i): wobble(corner[j, i], corner[j, i + 1]) for j in range(ny + 1) for i in range(nx)}
    v_edges = {(j, i): wobble(corner[j, i], corner[j + 1, i]) for j in range(ny) for i in range(nx + 1)}
    codes = [f"420506001001{n:03d}" for n in range(nx * ny)]
    rng.shuffle(codes)  # code order unrelated to position
    polys = []
    for j in range(ny):
        for i in range(nx):
            bottom = [corner[j, i][None], h_edges[j, i], corner[j, i + 1][None], v_edges[j, i + 1]]
            top = [
                corner[j + 1, i + 1][None],
                h_edges[j + 1, i][::-1],
                corner[j + 1, i][None],
                v_edges[j, i][::-1],
            ]
            ring = np.concatenate(bottom + top)
            polys.append(Polygon(ring))
    return codes, polys, shapely.get_coordinates(polys)


def oracle(
    codes: list[str], polys: list[Polygon], lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> list[str | None]:
    """The rule stated directly: smallest code among cells whose closed polygon holds the point."""
    hits = [shapely.intersects_xy(poly, lon, lat) for poly in polys]
    return [min((c for c, h in zip(codes, hits, strict=True) if h[i]), default=None) for i in range(len(lon))]


def test_points_to_place_cover_the_hard_cases() -> None:
    """Guard for the generator below: cells span all numpy edge groups and the GEOS path."""
    _, polys, _ = wobbly_grid(0)
    edges = [len(p.exterior.coords) - 1 for p in polys]
    assert min(edges) <= 8 and max(edges) > MAX_NUMPY_EDGES


def sample_points(
    rng: np.random.Generator, vertices: NDArray[np.float64], n: int = 300
) -> NDArray[np.float64]:
    """Random points, exact vertices, and midpoints of consecutive vertices (on an edge up to
    rounding, or a shared vertex-to-vertex edge of two cells)."""
    lo, hi = vertices.min(axis=0) - 0.002, vertices.max(axis=0) + 0.002
    random = rng.uniform(lo, hi, (n, 2))
    exact = vertices[rng.integers(0, len(vertices), n)]
    midpoints = (vertices[:-1] + vertices[1:]) / 2
    near = midpoints[rng.integers(0, len(midpoints), n)]
    return np.concatenate([random, exact, near])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_placement_matches_the_stated_rule_exactly(seed: int) -> None:
    """Property: every point gets exactly the smallest code among the closed cells holding it,
    including points on vertices and a rounding error away from edges (numpy path vs GEOS)."""
    codes, polys, vertices = wobbly_grid(seed)
    pts = sample_points(np.random.default_rng(seed), vertices)
    placed = CellIndex(codes, polys).place(pts[:, 0], pts[:, 1])
    assert list(placed.cell_code) == oracle(codes, polys, pts[:, 0], pts[:, 1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_order_of_cells_and_points_does_not_change_any_answer(seed: int, data: st.DataObject) -> None:
    """Property: permuting the cells and the points yields the same cell for every point."""
    codes, polys, vertices = wobbly_grid(seed)
    pts = sample_points(np.random.default_rng(seed), vertices, n=100)
    cell_perm = data.draw(st.permutations(range(len(codes))))
    point_perm = np.array(data.draw(st.permutations(range(len(pts)))))
    first = CellIndex(codes, polys).place(pts[:, 0], pts[:, 1])
    second = CellIndex([codes[i] for i in cell_perm], [polys[i] for i in cell_perm]).place(
        pts[point_perm, 0], pts[point_perm, 1]
    )
    assert list(second.cell_code) == list(first.cell_code[point_perm])
    assert list(second.reason) == list(first.reason[point_perm])
    position_codes = np.array([codes[i] for i in cell_perm] + [None], dtype=object)
    assert list(position_codes[second.cell_index]) == list(second.cell_code)


def test_large_batch_agrees_with_one_point_at_a_time() -> None:
    """Rule: a point's answer does not depend on the other points in the batch (blocks of work)."""
    codes, polys, vertices = wobbly_grid(3)
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform(vertices.min(0), vertices.max(0), (70_000, 2)), vertices])
    index = CellIndex(codes, polys)
    batch: Placement = index.place(pts[:, 0], pts[:, 1])
    for i in rng.integers(0, len(pts), 200):
        assert index.place(pts[i : i + 1, 0], pts[i : i + 1, 1]).cell_code[0] == batch.cell_code[i]


def test_tiny_blocks_give_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule: how points are split into blocks of work changes no answer."""
    codes, polys, vertices = wobbly_grid(11)
    pts = sample_points(np.random.default_rng(11), vertices)
    index = CellIndex(codes, polys)
    expected = index.place(pts[:, 0], pts[:, 1])
    monkeypatch.setattr(cellindex, "_BLOCK_WORK", 5)
    got = index.place(pts[:, 0], pts[:, 1])
    assert list(got.cell_code) == list(expected.cell_code)
    assert list(got.reason) == list(expected.reason)
