"""Place many WGS84 points into grid cells at once.

Rules (these are the contract; tests/geodata/test_cellindex.py states each one as a case):

* **Closed cells.** A cell is its closed polygon: interior plus boundary (outer ring, hole rings,
  every part of a multipolygon). A point on an edge or a vertex is *in* the cell.
* **Exactly one cell per point, smallest code wins.** A point on an edge shared by two cells, or on
  a corner shared by four, is in several closed cells. It is placed in the one with the
  **smallest cell code** (string order, which for 15-digit codes is numeric order). The same rule
  settles overlapping cells from sloppy source data.
* **Deterministic.** The answer for a point depends only on that point and on the *set* of cells:
  not on the order of cells given to :class:`CellIndex`, nor on the order or company of points.
* **Unmapped points carry a reason** from a closed list, checked in this order:
  ``invalid_point`` (NaN or infinite coordinate), ``retired_cell`` (in a retired cell's area and
  in no current cell), ``outside_area`` (outside the index's outline), ``gap_between_cells``
  (inside the outline, in no cell). Without an explicit outline, the convex hull of all cells'
  bounding boxes (current and retired) stands in for it; pass the real city/province outline to
  make ``outside_area`` exact.

Coordinates are WGS84 lon/lat degrees; convert first with :func:`geodata.crs.to_wgs84`.

How it is fast and still exact (profiled against ``geopandas.sjoin`` and against shapely's
``STRtree.query(points, predicate="intersects")``, which builds a Point object per point and costs
more than a microsecond per candidate; see bench/bench_placement.py):

1. **Candidates from a bucket grid.** Cell bounding boxes are registered in a uniform grid of
   buckets sized from the cells; a point's bucket is two float operations away, and its
   candidates are a slice of one int32 array. No per-point Python objects are made.
2. **Crossing-number test in numpy** for cells with at most :data:`MAX_NUMPY_EDGES` edges,
   vectorised over (point, candidate) pairs, looping only over edge slots. Each edge's orientation
   comes with Shewchuk's forward error bound (``orient2dfast``); when the sign is not certain and
   the point is within the edge's reach, the pair is *ambiguous*.
3. **Exact GEOS refinement** (``shapely.intersects_xy``, closed-polygon semantics, robust
   predicates) for ambiguous pairs — points on or within ~1e-15° of a boundary — and for all pairs
   with detailed cells, which are prepared once so each test is logarithmic in their vertex count.

Step 2 only answers when its answer is certain, so every pair gets the answer GEOS's exact
closed-polygon predicate would give; then, per point, the smallest-code cell among the pairs that
contain it is taken with one ``np.minimum.at`` (cells are held in code order). Retired cells go
through the same machinery. The only Python loops are over blocks of points (each sized to about
262k candidate pairs, so memory stays flat however dense the cells), edge slots and edge-count
groups: never over points.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

from geodata.codes import Level, chain, is_cell_code

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
ObjectArray = NDArray[np.object_]


class Method(StrEnum):
    """How a point was placed."""

    POINT_IN_CELL = "point_in_cell"
    UNMAPPED = "unmapped"


class Reason(StrEnum):
    """Why a point was not placed in a cell (a closed list; counted, reprocessable)."""

    OUTSIDE_AREA = "outside_area"
    GAP_BETWEEN_CELLS = "gap_between_cells"
    RETIRED_CELL = "retired_cell"
    INVALID_POINT = "invalid_point"


MAX_NUMPY_EDGES: Final = 32
"""Cells with more edges than this are tested by prepared GEOS geometry instead of numpy."""
_EDGE_WIDTHS: Final = (4, 8, 16, MAX_NUMPY_EDGES)
_BLOCK_WORK: Final = 262_144  # candidate pairs + points per block
_EPS: Final = 2.0**-53
_ORIENT_ERRBOUND: Final = (3.0 + 16.0 * _EPS) * _EPS  # Shewchuk's ccwerrboundA
_MAX_BUCKETS: Final = 4_000_000
_NO_CELL: Final = np.iinfo(np.int64).max
_POLYGON_TYPES: Final = (3, 6)  # shapely type ids of Polygon, MultiPolygon

_METHODS: Final = np.array([Method.UNMAPPED, Method.POINT_IN_CELL], dtype=object)
# Reason slots: 0 = placed (None), then the reasons in Reason's order.
_REASONS: Final = np.array([None, *Reason], dtype=object)
_REASON_SLOT: Final = {reason: slot for slot, reason in enumerate(_REASONS) if reason is not None}


@dataclass(frozen=True, eq=False)
class Placement:
    """Where each of N points went. All arrays have length N and are read-only.

    ``cell_index`` is the position of the cell in the ``codes`` given to :class:`CellIndex`
    (-1 when unmapped); ``cell_code`` the code or None; ``method`` a :class:`Method`;
    ``reason`` None when placed, else a :class:`Reason`.
    """

    cell_index: IntArray
    cell_code: ObjectArray
    method: ObjectArray
    reason: ObjectArray

    def __post_init__(self) -> None:
        for array in (self.cell_index, self.cell_code, self.method, self.reason):
            array.setflags(write=False)

    def __len__(self) -> int:
        return int(self.cell_index.size)

    def chain(self, i: int) -> dict[Level, str] | None:
        """The chain of point ``i``'s cell (see :func:`geodata.codes.chain`), or None if unmapped."""
        code = self.cell_code[i]
        return None if code is None else chain(str(code))

    def reason_counts(self) -> dict[str, int]:
        """How many points were left unmapped for each reason (reasons with zero omitted)."""
        given = self.reason[self.reason.astype(bool)].astype(str)  # None is falsy, reasons are not
        reasons, counts = np.unique(given, return_counts=True)
        return {str(r): int(c) for r, c in zip(reasons, counts, strict=True)}


# --- validation ---------------------------------------------------------------------------------


def _check_codes(codes: Sequence[str], what: str) -> None:
    """Raise ValueError naming the first malformed or duplicated cell code."""
    seen: dict[str, int] = {}
    for i, code in enumerate(codes):
        if not isinstance(code, str) or not code.isascii() or not is_cell_code(code):
            raise ValueError(f"{what}[{i}] = {code!r} is not a 15-digit cell code")
        if code in seen:
            raise ValueError(f"{what}[{i}] repeats cell code {code} of {what}[{seen[code]}]")
        seen[code] = i


def _check_polygons(geoms: ObjectArray, what: str) -> None:
    """Raise ValueError naming the first geometry that is not a valid, non-empty (multi)polygon."""
    is_geom = np.array([isinstance(g, BaseGeometry) for g in geoms], dtype=bool)
    for i in np.flatnonzero(~is_geom)[:1]:
        raise ValueError(f"{what}[{i}] is {type(geoms[i]).__name__}, not a shapely geometry")
    wrong_type = ~np.isin(shapely.get_type_id(geoms), _POLYGON_TYPES)
    for i in np.flatnonzero(wrong_type)[:1]:
        raise ValueError(f"{what}[{i}] is a {geoms[i].geom_type}, expected Polygon or MultiPolygon")
    for i in np.flatnonzero(shapely.is_empty(geoms))[:1]:
        raise ValueError(f"{what}[{i}] is empty")
    for i in np.flatnonzero(~shapely.is_valid(geoms))[:1]:
        raise ValueError(f"{what}[{i}] is not a valid polygon: {shapely.is_valid_reason(geoms[i])}")


def _as_geometry_array(geoms: Sequence[BaseGeometry], what: str) -> ObjectArray:
    array = np.empty(len(geoms), dtype=object)
    array[:] = list(geoms)
    _check_polygons(array, what)
    return array


# --- candidates: a uniform bucket grid over cell bounding boxes ---------------------------------


@dataclass(frozen=True)
class _BucketGrid:
    """Cells registered in every bucket their closed bounding box touches.

    Bucket indices come from the monotone map ``int((v - origin) / size)``, so a point inside a
    cell's bounding box always lands in a bucket the cell is registered in.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    sx: float
    sy: float
    nx: int
    starts: IntArray  # bucket b's members are members[starts[b]:starts[b + 1]]
    members: NDArray[np.int32]  # cell ranks, ascending within a bucket

    @classmethod
    def build(cls, bounds: FloatArray) -> _BucketGrid:
        """Size buckets at half the median cell extent, growing them until memory is bounded."""
        x0, y0 = float(bounds[:, 0].min()), float(bounds[:, 1].min())
        x1, y1 = float(bounds[:, 2].max()), float(bounds[:, 3].max())
        widths, heights = bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]
        sx = max(float(np.median(widths)) / 2.0, (x1 - x0) / 4096.0, 1e-9)
        sy = max(float(np.median(heights)) / 2.0, (y1 - y0) / 4096.0, 1e-9)
        max_members = max(16 * len(bounds), 1_000_000)
        while True:
            nx, ny = int((x1 - x0) / sx) + 1, int((y1 - y0) / sy) + 1
            ix0, ix1 = (
                ((bounds[:, 0] - x0) / sx).astype(np.int64),
                ((bounds[:, 2] - x0) / sx).astype(np.int64),
            )
            iy0, iy1 = (
                ((bounds[:, 1] - y0) / sy).astype(np.int64),
                ((bounds[:, 3] - y0) / sy).astype(np.int64),
            )
            per_cell = (ix1 - ix0 + 1) * (iy1 - iy0 + 1)
            if nx * ny <= _MAX_BUCKETS and int(per_cell.sum()) <= max_members:
                break
            sx, sy = sx * 1.5, sy * 1.5
        cell = np.repeat(np.arange(len(bounds), dtype=np.int64), per_cell)
        local = np.arange(cell.size, dtype=np.int64) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
        span = (ix1 - ix0 + 1)[cell]
        bucket = (iy0[cell] + local // span) * nx + ix0[cell] + local % span
        order = np.argsort(bucket, kind="stable")  # stable: ranks stay ascending within a bucket
        starts = np.zeros(nx * ny + 1, dtype=np.int64)
        np.cumsum(np.bincount(bucket, minlength=nx * ny), out=starts[1:])
        members = cell[order].astype(np.int32)
        return cls(x0, y0, x1, y1, sx, sy, nx, starts, members)

    def _buckets(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """Indices of the points inside the grid's extent (never NaN), and their buckets."""
        points = np.flatnonzero((x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1))
        ix = ((x[points] - self.x0) / self.sx).astype(np.int64)
        iy = ((y[points] - self.y0) / self.sy).astype(np.int64)
        return points, iy * self.nx + ix

    def candidate_counts(self, x: FloatArray, y: FloatArray) -> IntArray:
        """How many candidate cells each point has (0 outside the extent)."""
        counts = np.zeros(x.size, dtype=np.int64)
        points, bucket = self._buckets(x, y)
        counts[points] = self.starts[bucket + 1] - self.starts[bucket]
        return counts

    def candidates(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """(point, cell rank) pairs whose bucket matches; NaN and far points have none."""
        points, bucket = self._buckets(x, y)
        first, count = self.starts[bucket], self.starts[bucket + 1] - self.starts[bucket]
        pair_point = np.repeat(points, count)
        skip = np.repeat(first - (np.cumsum(count) - count), count)
        pair_rank = self.members[np.arange(pair_point.size, dtype=np.int64) + skip].astype(np.int64)
        return pair_point, pair_rank


# --- exact point-in-polygon over (point, cell) pairs --------------------------------------------


@dataclass(frozen=True)
class _EdgeGroup:
    """Edges of cells with at most ``width`` edges, one row per edge slot, padded.

    Padding slots are zero-length edges at the cell's last vertex: they never cross a ray and
    only touch a point that *is* that vertex, which a real edge touches too.
    """

    ax: FloatArray  # shape (width, cells in group)
    ay: FloatArray
    bx: FloatArray
    by: FloatArray

    def test(self, px: FloatArray, py: FloatArray, rows: IntArray) -> tuple[BoolArray, BoolArray]:
        """(inside, ambiguous) per pair; ``inside`` is exact wherever ``ambiguous`` is False.

        Crossing number with the half-open rule: an edge counts when exactly one end is above
        the point and the point is left of the edge going up (right of it going down).
        """
        inside = np.zeros(px.size, dtype=bool)
        ambiguous = np.zeros(px.size, dtype=bool)
        for k in range(self.ax.shape[0]):
            dax, day = self.ax[k][rows] - px, self.ay[k][rows] - py
            dbx, dby = self.bx[k][rows] - px, self.by[k][rows] - py
            det_left, det_right = dax * dby, day * dbx
            det = det_left - det_right
            b_above = dby > 0
            straddles = (day > 0) != b_above
            inside ^= straddles & ((det > 0) == b_above)
            bound = _ORIENT_ERRBOUND * (np.abs(det_left) + np.abs(det_right))
            u = np.flatnonzero(np.abs(det) <= bound)  # sign not certain: rare, so look closer
            if u.size:
                reaches = straddles[u] | ((dax[u] * dbx[u] <= 0) & (day[u] * dby[u] <= 0))
                ambiguous[u[reaches]] = True
        return inside, ambiguous


def _cell_edges(geoms: ObjectArray) -> tuple[FloatArray, FloatArray, IntArray]:
    """Start points, end points and owning cell of every edge of every ring, grouped by cell."""
    parts, part_cell = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same_ring = coord_ring[:-1] == coord_ring[1:]
    cell = part_cell[ring_part[coord_ring[:-1][same_ring]]].astype(np.int64)
    return coords[:-1][same_ring], coords[1:][same_ring], cell


class _PolygonSet:
    """Closed polygons in a fixed order ("ranks"), answering: which contain each point?"""

    def __init__(self, geoms: ObjectArray) -> None:
        self._geoms = geoms
        bounds: FloatArray = shapely.bounds(geoms)
        self._minx, self._miny = bounds[:, 0].copy(), bounds[:, 1].copy()
        self._maxx, self._maxy = bounds[:, 2].copy(), bounds[:, 3].copy()
        self._grid = _BucketGrid.build(bounds)
        # Only cells small enough for numpy need their edges as arrays; the rest go to GEOS.
        simple = np.flatnonzero(shapely.get_num_coordinates(geoms) <= MAX_NUMPY_EDGES + 1)
        start, end, simple_cell = _cell_edges(geoms[simple])
        cell = simple[simple_cell]
        n_edges = np.bincount(cell, minlength=len(geoms))
        self._group = np.full(len(geoms), -1, dtype=np.int64)  # -1: tested by GEOS
        self._row = np.zeros(len(geoms), dtype=np.int64)
        self._groups = [self._edge_group(g, w, start, end, cell, n_edges) for g, w in enumerate(_EDGE_WIDTHS)]
        self._prepare(geoms[self._group < 0])

    @staticmethod
    def _prepare(detailed: ObjectArray) -> None:
        """Prepare the cells GEOS tests, and build their point-in-area index now, not mid-place."""
        shapely.prepare(detailed)
        bounds = shapely.bounds(detailed)
        shapely.intersects_xy(detailed, (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)

    def _edge_group(
        self, g: int, width: int, start: FloatArray, end: FloatArray, cell: IntArray, n_edges: IntArray
    ) -> _EdgeGroup:
        lower = _EDGE_WIDTHS[g - 1] if g else 0
        members = np.flatnonzero((n_edges > lower) & (n_edges <= width))
        self._group[members] = g
        self._row[members] = np.arange(members.size)
        edge_first = np.cumsum(n_edges) - n_edges
        last = end[edge_first[members] + n_edges[members] - 1]  # the closing vertex of each cell
        ax, ay = np.tile(last[:, 0], (width, 1)), np.tile(last[:, 1], (width, 1))
        bx, by = ax.copy(), ay.copy()
        mine = np.flatnonzero(self._group[cell] == g)
        slot, row = mine - edge_first[cell[mine]], self._row[cell[mine]]
        ax[slot, row], ay[slot, row] = start[mine, 0], start[mine, 1]
        bx[slot, row], by[slot, row] = end[mine, 0], end[mine, 1]
        return _EdgeGroup(ax, ay, bx, by)

    def _containing_pairs(self, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        """All (point, rank) pairs where the closed polygon contains the point (finite points)."""
        point, rank = self._grid.candidates(x, y)
        px, py = x[point], y[point]
        in_box = (px >= self._minx[rank]) & (px <= self._maxx[rank])
        in_box &= (py >= self._miny[rank]) & (py <= self._maxy[rank])
        point, rank, px, py = point[in_box], rank[in_box], px[in_box], py[in_box]
        group = self._group[rank]
        inside = np.zeros(point.size, dtype=bool)
        exact = group < 0
        for g, edges in enumerate(self._groups):
            sel = np.flatnonzero(group == g)
            hit, unsure = edges.test(px[sel], py[sel], self._row[rank[sel]])
            inside[sel] = hit & ~unsure
            exact[sel[unsure]] = True
        sel = np.flatnonzero(exact)
        inside[sel] = shapely.intersects_xy(self._geoms[rank[sel]], px[sel], py[sel])
        return point[inside], rank[inside]

    def first_containing(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Per point, the lowest rank whose closed polygon contains it, or -1."""
        best = np.full(x.size, _NO_CELL, dtype=np.int64)
        bounds = self._block_bounds(self._grid.candidate_counts(x, y))
        for start, stop in itertools.pairwise(bounds):
            point, rank = self._containing_pairs(x[start:stop], y[start:stop])
            np.minimum.at(best[start:stop], point, rank)
        best[best == _NO_CELL] = -1
        return best

    @staticmethod
    def _block_bounds(counts: IntArray) -> list[int]:
        """Block edges such that each block holds about _BLOCK_WORK (candidate pairs + points):
        memory stays flat however many cells crowd a bucket, and blocks stay cache-sized."""
        work = np.cumsum(counts + 1)
        total = int(work[-1]) if work.size else 0
        cuts = np.searchsorted(work, np.arange(_BLOCK_WORK, total, _BLOCK_WORK)) + 1
        return sorted({0, counts.size, *cuts.tolist()})


# --- the index ----------------------------------------------------------------------------------


def _default_outline(geoms: ObjectArray) -> BaseGeometry:
    """Convex hull of all cells' bounding-box corners: a stand-in when no outline is given."""
    b = shapely.bounds(geoms)
    corners = np.concatenate([b[:, [0, 1]], b[:, [0, 3]], b[:, [2, 1]], b[:, [2, 3]]])
    hull: BaseGeometry = shapely.convex_hull(shapely.multipoints(corners))
    return hull


class CellIndex:
    """Grid cells (15-digit codes, WGS84 polygons) that place points; see the module docstring.

    ``retired`` cells are no longer valid: a point in one (and in no current cell) is unmapped
    with reason ``retired_cell``. ``outline`` is the area the index covers (e.g. the city); a
    point outside it is ``outside_area``, one inside it but in no cell ``gap_between_cells``.
    Invalid input (bad or repeated code, non-polygon, empty or invalid geometry) raises
    ValueError naming its position. Detailed cells' geometries are prepared in place.
    """

    def __init__(
        self,
        codes: Sequence[str],
        geoms: Sequence[BaseGeometry],
        *,
        retired: Sequence[tuple[str, BaseGeometry]] = (),
        outline: BaseGeometry | None = None,
    ) -> None:
        if len(codes) != len(geoms):
            raise ValueError(f"{len(codes)} codes but {len(geoms)} geometries")
        if not codes:
            raise ValueError("a CellIndex needs at least one cell")
        _check_codes(codes, "codes")
        _check_codes([code for code, _ in retired], "retired")
        cell_geoms = _as_geometry_array(geoms, "geoms")
        retired_geoms = _as_geometry_array([geom for _, geom in retired], "retired")
        order = np.argsort(np.array(codes, dtype=str), kind="stable")  # rank -> position in codes
        self._position: IntArray = order.astype(np.int64)
        self._codes: ObjectArray = np.array([*(codes[i] for i in order), None], dtype=object)
        self._cells = _PolygonSet(cell_geoms[order])
        self._retired = _PolygonSet(retired_geoms) if len(retired_geoms) else None
        if outline is None:
            outline = _default_outline(np.concatenate([cell_geoms, retired_geoms]))
        else:
            _check_polygons(np.array([outline], dtype=object), "outline")
        self._outline = outline
        shapely.prepare(self._outline)

    def __len__(self) -> int:
        return int(self._position.size)

    def place(self, lon: ArrayLike, lat: ArrayLike) -> Placement:
        """Place N WGS84 points (two 1-D arrays of equal length); see the module rules."""
        x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"lon and lat must be 1-D arrays of equal length, got {x.shape} and {y.shape}")
        valid = np.isfinite(x) & np.isfinite(y)
        rank = self._cells.first_containing(x, y)  # non-finite points never have candidates
        placed = rank >= 0
        reason = np.zeros(x.size, dtype=np.int8)
        reason[~valid] = _REASON_SLOT[Reason.INVALID_POINT]
        missed = valid & ~placed
        reason[missed] = self._unmapped_reasons(x[missed], y[missed])
        return Placement(
            cell_index=np.where(placed, self._position[np.maximum(rank, 0)], -1),
            cell_code=self._codes[rank],  # rank -1 picks the trailing None
            method=_METHODS[placed.astype(np.int8)],
            reason=_REASONS[reason],
        )

    def _unmapped_reasons(self, x: FloatArray, y: FloatArray) -> NDArray[np.int8]:
        """Reason slots for finite points in no current cell: retired, outside or gap."""
        slot = np.full(x.size, _REASON_SLOT[Reason.GAP_BETWEEN_CELLS], dtype=np.int8)
        outside = ~shapely.intersects_xy(self._outline, x, y)
        slot[outside] = _REASON_SLOT[Reason.OUTSIDE_AREA]
        if self._retired is not None:
            slot[self._retired.first_containing(x, y) >= 0] = _REASON_SLOT[Reason.RETIRED_CELL]
        return slot
