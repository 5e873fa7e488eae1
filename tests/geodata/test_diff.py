"""geodata.diff: a candidate grid against the current one — added, removed, changed, renamed, unchanged."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from geodata.diff import DEFAULT_TOLERANCE_M, ChangeKind, area_m2, diff_cells


@dataclass(frozen=True)
class C:
    code: str
    name: str
    geometry: BaseGeometry


CODE = "420502001001001"
BASE = box(111.30, 30.70, 111.31, 30.71)  # about 958 m x 1112 m
M_PER_DEG = 6_371_008.8 * math.pi / 180


def shifted(geom: BaseGeometry, metres: float) -> BaseGeometry:
    """``geom`` moved north by ``metres``."""
    return shapely.transform(geom, lambda xy: xy + np.array([0.0, metres / M_PER_DEG]))


def one(
    old: BaseGeometry, new: BaseGeometry, *, old_name: str = "第1网格", new_name: str = "第1网格"
) -> ChangeKind:
    return diff_cells([C(CODE, old_name, old)], [C(CODE, new_name, new)]).changes[0].kind


@pytest.mark.parametrize(
    ("new", "kind"),
    [
        pytest.param(BASE, ChangeKind.UNCHANGED, id="the same polygon is unchanged"),
        pytest.param(
            Polygon(list(BASE.exterior.coords)[::-1]),
            ChangeKind.UNCHANGED,
            id="reversed ring orientation is unchanged",
        ),
        pytest.param(
            Polygon([*list(BASE.exterior.coords)[2:-1], *list(BASE.exterior.coords)[:3]]),
            ChangeKind.UNCHANGED,
            id="another starting vertex is unchanged",
        ),
        pytest.param(
            MultiPolygon([BASE]), ChangeKind.UNCHANGED, id="a one-part multipolygon of it is unchanged"
        ),
        pytest.param(
            Polygon([(111.30, 30.70), (111.305, 30.70), (111.31, 30.70), (111.31, 30.71), (111.30, 30.71)]),
            ChangeKind.UNCHANGED,
            id="an extra collinear vertex is unchanged",
        ),
        pytest.param(
            shifted(BASE, 0.01),
            ChangeKind.UNCHANGED,
            id="moved 1 cm (within the 5 cm tolerance) is unchanged",
        ),
        pytest.param(shifted(BASE, 0.5), ChangeKind.CHANGED, id="moved 50 cm is changed"),
        pytest.param(
            Polygon(BASE.exterior.coords, [box(111.304, 30.704, 111.306, 30.706).exterior.coords]),
            ChangeKind.CHANGED,
            id="a hole punched inside is changed (the outline alone would not show it)",
        ),
        pytest.param(
            Polygon([(111.30, 30.70), (111.31, 30.70), (111.31, 30.71), (111.305, 30.7099), (111.30, 30.71)]),
            ChangeKind.CHANGED,
            id="one vertex added 11 m inside the edge is changed",
        ),
    ],
)
def test_same_geometry_within_the_tolerance(new: BaseGeometry, kind: ChangeKind) -> None:
    """Rule: a cell whose geometry differs by no more than the tolerance (boundary Hausdorff
    distance and symmetric-difference band) is unchanged, whatever the vertex order."""
    assert DEFAULT_TOLERANCE_M == 0.05
    assert one(BASE, new) is kind


@pytest.mark.parametrize(
    ("old", "new", "kinds"),
    [
        pytest.param(
            [C(CODE, "a", BASE)],
            [C(CODE, "b", BASE)],
            {CODE: ChangeKind.RENAMED},
            id="same geometry new name is renamed",
        ),
        pytest.param(
            [C(CODE, "a", BASE)],
            [C(CODE, "b", shifted(BASE, 5))],
            {CODE: ChangeKind.CHANGED},
            id="new geometry and new name is changed",
        ),
        pytest.param(
            [C(CODE, "a", BASE)],
            [C(CODE, "a", BASE), C("420502001001002", "b", shifted(BASE, 2000))],
            {CODE: ChangeKind.UNCHANGED, "420502001001002": ChangeKind.ADDED},
            id="a code only in the candidate is added",
        ),
        pytest.param(
            [C(CODE, "a", BASE), C("420502001001002", "b", shifted(BASE, 2000))],
            [C(CODE, "a", BASE)],
            {CODE: ChangeKind.UNCHANGED, "420502001001002": ChangeKind.REMOVED},
            id="a code only in the current grid is removed",
        ),
        pytest.param([], [], {}, id="two empty grids give an empty diff"),
    ],
)
def test_cells_are_matched_by_code(old: list[C], new: list[C], kinds: dict[str, ChangeKind]) -> None:
    """Rule: cells are matched by code; each code of either side gets exactly one kind."""
    diff = diff_cells(old, new)
    assert {c.code: c.kind for c in diff.changes} == kinds
    assert [c.code for c in diff.changes] == sorted(kinds)
    assert diff.is_noop is all(k is ChangeKind.UNCHANGED for k in kinds.values())


def test_areas_are_square_metres_and_changed_area_is_the_symmetric_difference() -> None:
    """Rule: areas are in m² (equal-area projection on the cell's meridian); a changed cell
    reports the area of the symmetric difference, an added or removed one its whole area."""
    expected = (0.01 * M_PER_DEG) * (0.01 * M_PER_DEG * math.cos(math.radians(30.705)))
    assert area_m2([BASE])[0] == pytest.approx(expected, rel=1e-4)
    half = box(111.30, 30.70, 111.305, 30.71)
    diff = diff_cells(
        [C(CODE, "a", BASE), C("420502001001002", "gone", BASE)],
        [C(CODE, "a", half), C("420502001001003", "new", half)],
    )
    by = {c.code: c for c in diff.changes}
    assert by[CODE].kind is ChangeKind.CHANGED
    assert by[CODE].changed_area_m2 == pytest.approx(expected / 2, rel=1e-3)
    assert by["420502001001002"].changed_area_m2 == pytest.approx(expected, rel=1e-4)
    assert by["420502001001003"].new_area_m2 == pytest.approx(expected / 2, rel=1e-3)
    assert diff.counts() == {
        ChangeKind.ADDED: 1,
        ChangeKind.REMOVED: 1,
        ChangeKind.CHANGED: 1,
        ChangeKind.RENAMED: 0,
        ChangeKind.UNCHANGED: 0,
    }


def test_repeated_codes_are_refused() -> None:
    """Rule: the diff needs unique codes on each side; validate the import first."""
    with pytest.raises(ValueError, match="repeat code"):
        diff_cells([], [C(CODE, "a", BASE), C(CODE, "b", BASE)])
