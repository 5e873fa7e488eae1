"""Diff a candidate grid against the current one: added, removed, changed, renamed, unchanged.

Pure: two lists of cells in, one :class:`GridDiff` out; no database. ``gridflow cells import``
prints it before anything is written.

Rules (tests/geodata/test_diff.py states each one as a case):

* Cells are matched **by code**. A code only in the candidate is ``added``; only in the current
  grid, ``removed``. A code in both is ``changed`` when its geometry differs beyond the
  tolerance, else ``renamed`` when only its name differs, else ``unchanged``.
* **Same geometry within a tolerance** (:data:`DEFAULT_TOLERANCE_M`, 5 cm — the round-trip
  budget of the CRS conversions, far below any surveyed boundary). Two geometries are the same
  when, measured in metres,

  1. the discrete Hausdorff distance between their *boundaries* (every vertex of each within
     the tolerance of the other's boundary) is at most the tolerance, and
  2. the area of their symmetric difference is at most ``tolerance × (perimeter₁ + perimeter₂)``:
     no more than a band of the tolerance's width along the boundaries.

  Vertex order, ring start, ring orientation, repeated or collinear extra vertices and
  Polygon-versus-one-part-MultiPolygon do not count as changes; a moved vertex, an added hole or
  a shifted edge beyond the tolerance does. (Rule 2 catches what the vertex-only Hausdorff
  distance could miss: a change between vertices.)
* **Areas** are in square metres on a sinusoidal projection centred on each cell's own meridian
  (equal-area on the sphere of radius :data:`EARTH_RADIUS_M`; within 0.5 % of the ellipsoidal
  area at grid-cell scale). ``changed_area_m2`` is the area of the symmetric difference.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

__all__ = [
    "DEFAULT_TOLERANCE_M",
    "EARTH_RADIUS_M",
    "CellChange",
    "ChangeKind",
    "DiffCell",
    "GridDiff",
    "area_m2",
    "diff_cells",
    "to_local_metres",
]

DEFAULT_TOLERANCE_M: Final = 0.05
"""Geometries closer than this (metres) are the same; see the module docstring."""
EARTH_RADIUS_M: Final = 6_371_008.8
_M_PER_DEG: Final = EARTH_RADIUS_M * math.pi / 180.0

ObjectArray = NDArray[np.object_]
FloatArray = NDArray[np.float64]


class DiffCell(Protocol):
    """What the diff needs of a cell: a 15-digit code, a name and a lon/lat (multi)polygon."""

    @property
    def code(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def geometry(self) -> BaseGeometry: ...


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"  # geometry differs beyond the tolerance (the name may differ too)
    RENAMED = "renamed"  # same geometry, another name
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class CellChange:
    """One code's fate. Areas in m²; ``None`` where the side does not exist."""

    code: str
    kind: ChangeKind
    old_name: str | None
    new_name: str | None
    old_area_m2: float | None
    new_area_m2: float | None
    changed_area_m2: float  # symmetric difference; 0 for unchanged and renamed, the area for added/removed


@dataclass(frozen=True)
class GridDiff:
    """All codes of either side, sorted by code."""

    changes: tuple[CellChange, ...]
    tolerance_m: float

    def of(self, kind: ChangeKind) -> list[CellChange]:
        return [c for c in self.changes if c.kind is kind]

    def counts(self) -> dict[ChangeKind, int]:
        """How many codes of each kind (every kind present, zero included)."""
        found = Counter(c.kind for c in self.changes)
        return {kind: found.get(kind, 0) for kind in ChangeKind}

    @property
    def is_noop(self) -> bool:
        """True when applying the candidate would change nothing."""
        return all(c.kind is ChangeKind.UNCHANGED for c in self.changes)


def to_local_metres(
    geoms: Iterable[BaseGeometry] | ObjectArray, lon0: Sequence[float] | FloatArray
) -> ObjectArray:
    """Each geometry on a sinusoidal projection (metres) centred on its own meridian ``lon0[i]``.

    ``x = R·(λ − λ₀)·cos φ``, ``y = R·φ``: equal-area on the sphere, and with ``λ₀`` inside the
    geometry, distances are true to well under 0.1 % across a community or a county. Geometries
    compared with each other must share ``λ₀``.
    """
    array = _as_array(list(geoms))
    if array.size == 0:
        return array
    coords, owner = shapely.get_coordinates(array, return_index=True)
    lat = coords[:, 1]
    centre = np.asarray(lon0, dtype=np.float64)[owner]
    local = np.column_stack(((coords[:, 0] - centre) * np.cos(np.radians(lat)), lat)) * _M_PER_DEG
    out: ObjectArray = shapely.set_coordinates(array.copy(), local)  # a shallow copy: new objects
    return out


def _as_array(geoms: Sequence[BaseGeometry]) -> ObjectArray:
    array = np.empty(len(geoms), dtype=object)
    array[:] = list(geoms)
    return array


def area_m2(geoms: Sequence[BaseGeometry]) -> FloatArray:
    """Areas in square metres (sinusoidal projection centred on each geometry)."""
    array = _as_array(geoms)
    if array.size == 0:
        return np.zeros(0)
    centre = shapely.get_x(shapely.centroid(array))
    result: FloatArray = shapely.area(to_local_metres(array, centre))
    return result


def _same_geometry(
    old: ObjectArray, new: ObjectArray, tolerance_m: float
) -> tuple[NDArray[np.bool_], FloatArray]:
    """(same within tolerance, symmetric-difference area m²) for pairs of lon/lat geometries.

    Pairs with exactly the same coordinates (most of a whole-city file) are the same, with no
    difference: only the others are projected and measured.
    """
    same: NDArray[np.bool_] = np.ones(len(old), dtype=bool)
    changed_area: FloatArray = np.zeros(len(old))
    rest = ~shapely.equals_exact(_one_part(old), _one_part(new), tolerance=0.0)
    if rest.any():
        same[rest], changed_area[rest] = _measure(old[rest], new[rest], tolerance_m)
    return same, changed_area


def _one_part(geoms: ObjectArray) -> ObjectArray:
    """A one-part multi-geometry as its part (a stored MultiPolygon equals the file's Polygon)."""
    out = geoms.copy()
    single = shapely.get_num_geometries(geoms) == 1
    out[single] = shapely.get_geometry(geoms[single], 0)
    return out


def _measure(old: ObjectArray, new: ObjectArray, tolerance_m: float) -> tuple[NDArray[np.bool_], FloatArray]:
    centre = shapely.get_x(shapely.centroid(old))
    a, b = to_local_metres(old, centre), to_local_metres(new, centre)
    changed_area: FloatArray = shapely.area(shapely.symmetric_difference(a, b))
    hausdorff = shapely.hausdorff_distance(shapely.boundary(a), shapely.boundary(b))
    band = tolerance_m * (shapely.length(a) + shapely.length(b))
    same: NDArray[np.bool_] = (hausdorff <= tolerance_m) & (changed_area <= band)
    return same, changed_area


def diff_cells(
    current: Sequence[DiffCell], candidate: Sequence[DiffCell], *, tolerance_m: float = DEFAULT_TOLERANCE_M
) -> GridDiff:
    """The diff of ``candidate`` against ``current``; see the module rules. Codes must be unique
    on each side (ValueError otherwise: validate the import first)."""
    if tolerance_m < 0:
        raise ValueError("tolerance_m must not be negative")
    old = _by_code(current, "current")
    new = _by_code(candidate, "candidate")
    both = sorted(old.keys() & new.keys())
    changes: list[CellChange] = []

    only_old = sorted(old.keys() - new.keys())
    only_new = sorted(new.keys() - old.keys())
    old_only_area = area_m2([old[c].geometry for c in only_old])
    new_only_area = area_m2([new[c].geometry for c in only_new])
    for code, area in zip(only_old, old_only_area.tolist(), strict=True):
        changes.append(CellChange(code, ChangeKind.REMOVED, old[code].name, None, area, None, area))
    for code, area in zip(only_new, new_only_area.tolist(), strict=True):
        changes.append(CellChange(code, ChangeKind.ADDED, None, new[code].name, None, area, area))

    if both:
        old_geoms = _as_array([old[c].geometry for c in both])
        new_geoms = _as_array([new[c].geometry for c in both])
        same, changed_area = _same_geometry(old_geoms, new_geoms, tolerance_m)
        old_area, new_area = area_m2(list(old_geoms)), area_m2(list(new_geoms))
        for i, code in enumerate(both):
            o, n = old[code], new[code]
            if not same[i]:
                kind, delta = ChangeKind.CHANGED, float(changed_area[i])
            else:
                kind, delta = (ChangeKind.UNCHANGED if o.name == n.name else ChangeKind.RENAMED), 0.0
            changes.append(
                CellChange(code, kind, o.name, n.name, float(old_area[i]), float(new_area[i]), delta)
            )
    changes.sort(key=lambda c: c.code)
    return GridDiff(tuple(changes), tolerance_m)


def _by_code(cells: Sequence[DiffCell], side: str) -> dict[str, DiffCell]:
    out: dict[str, DiffCell] = {}
    for cell in cells:
        if cell.code in out:
            raise ValueError(f"{side} cells repeat code {cell.code}")
        out[cell.code] = cell
    return out
