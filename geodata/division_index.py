"""Points and addresses to the lowest unit they reach: a cell, else a division polygon, else an address.

:class:`DivisionIndex` places points in division polygons (province, city, county — the real
national ones — and, where loaded, generated town and community polygons). It reuses
:class:`geodata.cellindex.CellIndex` per level, so it has the same rules: closed polygons
(a point on a boundary is inside), the smallest code wins on shared edges, deterministic.
Across levels the **deepest level that contains the point wins**, and the chain above it is read
from its code (polygon layers from different sources disagree by metres along borders; the code
does not).

:func:`locate_points` is the whole fallback for N rows at once (``gridflow locate`` and
``gridflow map``), most specific rule first, and every row says which rule placed it:

1. ``point_in_cell`` — the point, converted to WGS84 from the row's declared CRS, is in a
   current grid cell.
2. ``point_in_<level>`` — it is in no cell (reason: ``outside_area``, ``gap_between_cells``,
   ``retired_cell`` or ``no_grid_loaded``) but in a division polygon: the deepest one.
3. ``address_<...>`` — the row has no usable point, or its point reached only a division and the
   address names a unit *below that division* (consistent with the point): the address decides,
   at the lowest level it names (:class:`geodata.address.AddressLocator`); the point's reason is
   kept. An address naming another county than the point is ignored: the point wins.
4. ``unmapped`` with a reason.

Reasons (a closed list, :data:`REASONS`, plus the address reasons of :mod:`geodata.address`):
``no_location`` (neither point nor address), ``invalid_point`` (a coordinate given but not a
finite number), ``no_crs`` (a point without a declared CRS: never guessed), ``unknown_crs``,
``outside_china`` (outside the box China's GCJ-02 offset is defined in), the cell reasons of
:class:`geodata.cellindex.Reason`, ``no_grid_loaded`` and ``outside_loaded_divisions`` (in
China's box, in no loaded division polygon: the sea, or divisions not loaded).

Only loops over CRS names, levels and blocks: never over points, except the address parser,
which caches by the administrative names it finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

from geodata.address import AddressLocator
from geodata.cellindex import CellIndex
from geodata.cellindex import Reason as CellReason
from geodata.codes import PREFIX_LEN, Level
from geodata.crs import UnknownCRSError, in_china, parse_crs, to_wgs84
from geodata.divisions import Division, polygonal

__all__ = [
    "METHOD_POINT_IN_CELL",
    "METHOD_UNMAPPED",
    "REASONS",
    "DivisionIndex",
    "Located",
    "chain_table",
    "locate_points",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
ObjectArray = NDArray[np.object_]
IntArray = NDArray[np.int64]

METHOD_POINT_IN_CELL: Final = "point_in_cell"
METHOD_UNMAPPED: Final = "unmapped"

NO_LOCATION: Final = "no_location"
INVALID_POINT: Final = CellReason.INVALID_POINT.value
NO_CRS: Final = "no_crs"
UNKNOWN_CRS: Final = "unknown_crs"
OUTSIDE_CHINA: Final = "outside_china"
NO_GRID_LOADED: Final = "no_grid_loaded"
OUTSIDE_LOADED_DIVISIONS: Final = "outside_loaded_divisions"
REASONS: Final = frozenset(
    {
        NO_LOCATION,
        INVALID_POINT,
        NO_CRS,
        UNKNOWN_CRS,
        OUTSIDE_CHINA,
        NO_GRID_LOADED,
        OUTSIDE_LOADED_DIVISIONS,
        *(r.value for r in CellReason),
    }
)

_PAD: Final = "000"
_NONE: Final = np.array(
    None, dtype=object
)  # a 12-digit division code + "000" is a valid 15-digit key for CellIndex


def point_method(level: Level) -> str:
    """``point_in_county`` and so on: a point placed by a division polygon of ``level``."""
    return f"point_in_{level.name.lower()}"


class DivisionIndex:
    """Division polygons that place points at the deepest level containing them.

    Divisions without a polygon are ignored; polygons are made valid first
    (:func:`geodata.divisions.polygonal`). Codes are 12-digit division codes.
    """

    def __init__(self, divisions: Iterable[Division]) -> None:
        by_level: dict[Level, dict[str, BaseGeometry]] = {}
        self._names: dict[str, str] = {}
        for d in divisions:
            self._names[d.code] = d.name
            if d.geometry is None or d.geometry.is_empty:
                continue
            geom = polygonal(d.geometry)
            if not geom.is_empty:
                by_level.setdefault(d.level, {})[d.code + _PAD] = geom
        self._levels: list[tuple[Level, CellIndex]] = [
            (level, CellIndex(list(polys), list(polys.values()))) for level, polys in sorted(by_level.items())
        ]

    def __len__(self) -> int:
        return sum(len(index) for _, index in self._levels)

    @property
    def levels(self) -> list[Level]:
        return [level for level, _ in self._levels]

    def name(self, code: str) -> str | None:
        return self._names.get(code)

    def place(self, lon: ArrayLike, lat: ArrayLike) -> tuple[ObjectArray, NDArray[np.int8]]:
        """(code or None, level or 0) per WGS84 point: the deepest division containing it."""
        x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        code = np.full(x.size, None, dtype=object)
        level = np.zeros(x.size, dtype=np.int8)
        for lvl, index in self._levels:
            hit = index.place(x, y).cell_code
            found = hit.astype(bool)  # None is falsy, a code is not
            if found.any():
                code[found] = [str(c)[:12] for c in hit[found]]
                level[found] = int(lvl)
        return code, level


@dataclass(frozen=True, eq=False)
class Located:
    """Per-row result of :func:`locate_points`; every array has one entry per row.

    ``code`` is the lowest unit reached: a 15-digit cell code, a 12-digit division code, or None;
    ``level`` its :class:`Level` (0 when unmapped). ``lon``/``lat`` are WGS84 (NaN without a
    usable point).
    """

    lon: FloatArray
    lat: FloatArray
    code: ObjectArray
    level: NDArray[np.int8]
    method: ObjectArray
    reason: ObjectArray

    def __len__(self) -> int:
        return int(self.code.size)

    @property
    def cell_code(self) -> ObjectArray:
        out: ObjectArray = np.where(self.level == int(Level.CELL), self.code, _NONE)
        return out

    def chain(self) -> dict[Level, ObjectArray]:
        """Province to community codes per row (None below the level reached); see :func:`chain_table`."""
        return chain_table(self.code, self.level)


def chain_table(code: ObjectArray, level: NDArray[np.int8]) -> dict[Level, ObjectArray]:
    """For each level PROVINCE..COMMUNITY, each row's ancestor code at that level, or None.

    ``code`` holds cell or division codes (None allowed), ``level`` their levels (0 for None).
    Vectorised: truncating a fixed-width string array is a cast.
    """
    text = np.where(level > 0, code, "").astype("U15")
    out: dict[Level, ObjectArray] = {}
    for lvl, n in PREFIX_LEN.items():
        padded = np.char.add(text.astype(f"U{n}"), "0" * (12 - n)).astype(object)
        out[lvl] = np.where(level >= int(lvl), padded, _NONE)
    return out


def _as_object(values: Sequence[str | None] | str | None, n: int) -> ObjectArray:
    out = np.empty(n, dtype=object)
    if values is None or isinstance(values, str):
        out[:] = values
    else:
        if len(values) != n:
            raise ValueError(f"expected {n} values, got {len(values)}")
        out[:] = list(values)
    return out


def _to_wgs84(
    x: FloatArray, y: FloatArray, crs: ObjectArray, rows: IntArray
) -> tuple[FloatArray, FloatArray, ObjectArray]:
    """WGS84 of ``rows`` by their declared CRS (one conversion per name); reasons for the rest."""
    wx, wy = np.full(x.size, np.nan), np.full(y.size, np.nan)
    reason = np.full(x.size, None, dtype=object)
    names = np.array(["" if c is None else str(c).strip() for c in crs[rows]], dtype=object)
    for name in sorted(set(names.tolist())):
        sel = rows[names == name]
        if not name:
            reason[sel] = NO_CRS
            continue
        try:
            system = parse_crs(name)
        except UnknownCRSError:
            reason[sel] = UNKNOWN_CRS
            continue
        wx[sel], wy[sel] = to_wgs84(x[sel], y[sel], system)
    return wx, wy, reason


def locate_points(
    lon: ArrayLike,
    lat: ArrayLike,
    crs: Sequence[str | None] | str | None,
    *,
    cells: CellIndex | None,
    grid_area: BaseGeometry | None = None,
    divisions: DivisionIndex | None = None,
    addresses: Sequence[str | None] | None = None,
    locator: AddressLocator | None = None,
    point_given: ArrayLike | None = None,
) -> Located:
    """Place N rows (see the module rules).

    ``lon``/``lat`` are floats in the row's ``crs`` (one name for all rows, or one per row; NaN
    where absent). ``point_given`` marks rows that claim a point (default: lon or lat not NaN),
    so a coordinate that failed to parse is ``invalid_point`` rather than ``no_location``.
    ``cells`` is the grid (None: no cell here); then ``grid_area`` tells ``gap_between_cells``
    (inside it) from ``outside_area``, and without it the reason is ``no_grid_loaded``.
    """
    x = np.asarray(lon, dtype=np.float64).ravel()
    y = np.asarray(lat, dtype=np.float64).ravel()
    n = x.size
    if y.size != n:
        raise ValueError(f"{n} longitudes but {y.size} latitudes")
    given = (~(np.isnan(x) & np.isnan(y))) if point_given is None else np.asarray(point_given, dtype=bool)
    code = np.full(n, None, dtype=object)
    level = np.zeros(n, dtype=np.int8)
    method = np.full(n, METHOD_UNMAPPED, dtype=object)
    reason = np.full(n, None, dtype=object)

    finite = given & np.isfinite(x) & np.isfinite(y)
    reason[given & ~finite] = INVALID_POINT
    wx, wy, crs_reason = _to_wgs84(x, y, _as_object(crs, n), np.flatnonzero(finite))
    has_crs = finite & (crs_reason == None)  # noqa: E711 - elementwise comparison on an object array
    reason[finite & ~has_crs] = crs_reason[finite & ~has_crs]
    converted = has_crs & np.isfinite(wx) & np.isfinite(wy)
    reason[has_crs & ~converted] = INVALID_POINT
    china = converted & in_china(wx, wy)
    reason[converted & ~china] = OUTSIDE_CHINA

    todo = np.flatnonzero(china)
    if cells is not None and todo.size:
        placed = cells.place(wx[todo], wy[todo])
        hit = placed.cell_code.astype(bool)
        code[todo[hit]] = placed.cell_code[hit]
        level[todo[hit]] = int(Level.CELL)
        method[todo[hit]] = METHOD_POINT_IN_CELL
        reason[todo[~hit]] = placed.reason[~hit]
    elif todo.size:
        if grid_area is None:
            reason[todo] = NO_GRID_LOADED
        else:
            inside = shapely.intersects_xy(grid_area, wx[todo], wy[todo])
            reason[todo] = np.where(inside, CellReason.GAP_BETWEEN_CELLS.value, CellReason.OUTSIDE_AREA.value)

    missed = np.flatnonzero(china & (level == 0))
    if divisions is not None and missed.size:
        div_code, div_level = divisions.place(wx[missed], wy[missed])
        hit = div_level > 0
        rows = missed[hit]
        code[rows] = div_code[hit]
        level[rows] = div_level[hit]
        method[rows] = [point_method(Level(int(v))) for v in div_level[hit]]
        lost = missed[~hit]
        outside = np.isin(reason[lost].astype(str), [CellReason.OUTSIDE_AREA.value, NO_GRID_LOADED])
        reason[lost[outside]] = OUTSIDE_LOADED_DIVISIONS

    if addresses is not None and locator is not None:
        _address_fallback(addresses, locator, code, level, method, reason, given)

    reason[(level == 0) & (reason == None) & ~given] = NO_LOCATION  # noqa: E711
    return Located(lon=wx, lat=wy, code=code, level=level, method=method, reason=reason)


def _address_fallback(
    addresses: Sequence[str | None],
    locator: AddressLocator,
    code: ObjectArray,
    level: NDArray[np.int8],
    method: ObjectArray,
    reason: ObjectArray,
    given: BoolArray,
) -> None:
    """Rows without a cell take the address when it reaches a lower, consistent unit (in place)."""
    text = _as_object(addresses, code.size)
    has_text = np.array([bool(t and str(t).strip()) for t in text], dtype=bool)
    rows = np.flatnonzero(has_text & (level < int(Level.CELL)))
    if rows.size == 0:
        return
    matches = locator.locate([str(t) for t in text[rows]])
    for i, m in zip(rows.tolist(), matches, strict=True):
        if m.code is None or m.level is None:
            if level[i] == 0 and not given[i]:
                reason[i] = m.reason or NO_LOCATION
            continue
        current = int(level[i])
        if current and (int(m.level) <= current or not m.code.startswith(_prefix(str(code[i]), current))):
            continue  # the point reached as deep, or the address disagrees with it: the point wins
        code[i], level[i], method[i] = m.code, int(m.level), m.method
        if not given[i]:
            reason[i] = m.reason


def _prefix(code: str, level: int) -> str:
    return code[: PREFIX_LEN[Level(level)]]
