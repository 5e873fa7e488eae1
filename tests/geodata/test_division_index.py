"""geodata.division_index: points to the deepest division polygon, and the whole point/address fallback.

Hand-made world (real codes, made-up boxes):

    31.0 +---------------------------+---------------------------+
         | county 420502 西陵区        | county 420506 夷陵区        |
         |  +-------+-------+ . . . +|                            |
         |  | cell A| cell B|  gap   ||                            |   cells' area (the grid):
    30.5 |  +-------+-------+ . . . +|                            |   111.1..111.4 x 30.5..30.75
         |                           |                            |
    30.0 +---------------------------+---------------------------+   province 湖北: 110..113 x 29..32
       111.0                       111.5                        112.0
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import box

from geodata.address import AddressLocator
from geodata.cellindex import CellIndex
from geodata.codes import Level, division_level
from geodata.crs import wgs84_to_bd09, wgs84_to_gcj02
from geodata.division_index import DivisionIndex, chain_table, locate_points
from geodata.divisions import Division

A, B, RETIRED = "420502001001001", "420502001001002", "420502001001003"


def unit(code: str, name: str, geom: object | None, parent: str | None = None) -> Division:
    return Division(code, name, division_level(code), parent, geom, generated=False, source="test")  # type: ignore[arg-type]


DIVISIONS = [
    unit("420000000000", "湖北省", box(110, 29, 113, 32)),
    unit("420500000000", "宜昌市", box(110.5, 29.5, 112.5, 31.5), "420000000000"),
    unit("420502000000", "西陵区", box(111.0, 30.0, 111.5, 31.0), "420500000000"),
    unit("420506000000", "夷陵区", box(111.5, 30.0, 112.0, 31.0), "420500000000"),
    unit("420502001000", "西陵街道", None, "420502000000"),
    unit("420502001001", "桃湖社区", None, "420502001000"),
    unit("420506001000", "小溪塔街道", None, "420506000000"),
]
CELLS = CellIndex(
    [A, B],
    [box(111.1, 30.5, 111.2, 30.75), box(111.2, 30.5, 111.3, 30.75)],
    retired=[(RETIRED, box(111.3, 30.5, 111.35, 30.75))],
    outline=box(111.1, 30.5, 111.4, 30.75),
)
GRID_AREA = box(111.1, 30.5, 111.4, 30.75)


@pytest.fixture(scope="module")
def index() -> DivisionIndex:
    return DivisionIndex(DIVISIONS)


@pytest.fixture(scope="module")
def locator() -> AddressLocator:
    return AddressLocator(DIVISIONS)


@pytest.mark.parametrize(
    ("lon", "lat", "code", "level"),
    [
        pytest.param(
            111.25, 30.25, "420502000000", Level.COUNTY, id="inside a county: the county, not its province"
        ),
        pytest.param(
            111.5, 30.25, "420502000000", Level.COUNTY, id="on a shared county edge: the smaller code"
        ),
        pytest.param(
            111.0, 30.25, "420502000000", Level.COUNTY, id="on the county's outer edge: closed polygon"
        ),
        pytest.param(110.7, 30.25, "420500000000", Level.CITY, id="in the city but in no county: the city"),
        pytest.param(110.2, 30.25, "420000000000", Level.PROVINCE, id="in the province only: the province"),
        pytest.param(120.0, 30.25, None, 0, id="in no polygon: none"),
        pytest.param(math.nan, 30.25, None, 0, id="not a number: none"),
    ],
)
def test_the_deepest_division_containing_the_point_wins(
    index: DivisionIndex, lon: float, lat: float, code: str | None, level: int
) -> None:
    """Rule: a point goes to the deepest level whose (closed) polygon holds it; on a shared edge
    the smallest code wins, as in CellIndex; divisions without polygons are ignored."""
    got_code, got_level = index.place([lon], [lat])
    assert (got_code[0], int(got_level[0])) == (code, int(level))
    assert index.levels == [Level.PROVINCE, Level.CITY, Level.COUNTY]
    assert index.name("420502000000") == "西陵区"


def _located(**kw: object) -> tuple[str | None, str, str | None]:
    r = locate_points(**kw)  # type: ignore[arg-type]
    return r.code[0], str(r.method[0]), r.reason[0]


def _gcj(lon: float, lat: float) -> tuple[float, float]:
    x, y = wgs84_to_gcj02([lon], [lat])
    return float(x[0]), float(y[0])


def _bd(lon: float, lat: float) -> tuple[float, float]:
    x, y = wgs84_to_bd09([lon], [lat])
    return float(x[0]), float(y[0])


@pytest.mark.parametrize(
    ("lon", "lat", "crs", "address", "given", "expected"),
    [
        pytest.param(111.15, 30.6, "wgs84", None, True, (A, "point_in_cell", None), id="a point in a cell"),
        pytest.param(
            *_gcj(111.15, 30.6),
            "gcj02",
            None,
            True,
            (A, "point_in_cell", None),
            id="a GCJ-02 point in a cell",
        ),
        pytest.param(
            *_bd(111.25, 30.6), "bd09", None, True, (B, "point_in_cell", None), id="a BD-09 point in a cell"
        ),
        pytest.param(
            111.2, 30.6, "EPSG:4490", None, True, (A, "point_in_cell", None), id="on the edge of A and B: A"
        ),
        pytest.param(
            111.38,
            30.6,
            "wgs84",
            None,
            True,
            ("420502000000", "point_in_county", "gap_between_cells"),
            id="a gap in the grid: its county, and why there is no cell",
        ),
        pytest.param(
            111.32,
            30.6,
            "wgs84",
            None,
            True,
            ("420502000000", "point_in_county", "retired_cell"),
            id="in a retired cell: its county, reason retired_cell",
        ),
        pytest.param(
            111.7,
            30.6,
            "wgs84",
            None,
            True,
            ("420506000000", "point_in_county", "outside_area"),
            id="outside the grid, in China: the county only",
        ),
        pytest.param(
            125.0,
            30.0,
            "wgs84",
            None,
            True,
            (None, "unmapped", "outside_loaded_divisions"),
            id="in China's box, in no division: unmapped",
        ),
        pytest.param(
            2.35, 48.85, "wgs84", None, True, (None, "unmapped", "outside_china"), id="outside China"
        ),
        pytest.param(
            111.15, 30.6, None, None, True, (None, "unmapped", "no_crs"), id="a point without a CRS"
        ),
        pytest.param(
            111.15, 30.6, "xian80", None, True, (None, "unmapped", "unknown_crs"), id="an unknown CRS"
        ),
        pytest.param(
            math.inf, 30.6, "wgs84", None, True, (None, "unmapped", "invalid_point"), id="an infinite lon"
        ),
        pytest.param(
            math.nan, math.nan, "wgs84", None, True, (None, "unmapped", "invalid_point"), id="unparsable"
        ),
        pytest.param(
            math.nan, math.nan, None, None, False, (None, "unmapped", "no_location"), id="nothing at all"
        ),
        pytest.param(
            math.nan,
            math.nan,
            None,
            "湖北省宜昌市夷陵区小溪塔街道",
            False,
            ("420506001000", "address_town", None),
            id="an address only: the lowest division it names",
        ),
        pytest.param(
            111.7,
            30.6,
            "wgs84",
            "宜昌市夷陵区小溪塔街道",
            True,
            ("420506001000", "address_town", "outside_area"),
            id="a point reaching only its county and an address naming a town in it: the town",
        ),
        pytest.param(
            111.7,
            30.6,
            "wgs84",
            "宜昌市西陵区西陵街道",
            True,
            ("420506000000", "point_in_county", "outside_area"),
            id="an address naming another county than the point: the point wins",
        ),
        pytest.param(
            111.15,
            30.6,
            "wgs84",
            "宜昌市夷陵区小溪塔街道",
            True,
            (A, "point_in_cell", None),
            id="a point in a cell: the address is not consulted",
        ),
        pytest.param(
            2.35,
            48.85,
            "wgs84",
            "湖北省宜昌市西陵区",
            True,
            ("420502000000", "address_county", "outside_china"),
            id="a point abroad with an address: the address, keeping the point's reason",
        ),
    ],
)
def test_most_specific_rule_wins_and_says_which(
    index: DivisionIndex,
    locator: AddressLocator,
    lon: float,
    lat: float,
    crs: str | None,
    address: str | None,
    given: bool,
    expected: tuple[str | None, str, str | None],
) -> None:
    """Rule: cell by point, else division polygon by point, else (or deeper and consistent) the
    address; every row carries its method, and a reason whenever it has no cell."""
    got = _located(
        lon=[lon],
        lat=[lat],
        crs=[crs],
        cells=CELLS,
        grid_area=GRID_AREA,
        divisions=index,
        addresses=[address],
        locator=locator,
        point_given=[given],
    )
    assert got == expected


@pytest.mark.parametrize(
    ("grid_area", "reason"),
    [
        pytest.param(None, "no_grid_loaded", id="no grid anywhere"),
        pytest.param(GRID_AREA, "gap_between_cells", id="inside the grid's area but no cell near"),
        pytest.param(box(100, 20, 101, 21), "outside_area", id="a grid exists, elsewhere"),
    ],
)
def test_without_cells_the_grid_area_gives_the_reason(
    index: DivisionIndex, grid_area: object, reason: str
) -> None:
    """Rule: with no cell to test, the grid's area tells a gap from outside; no area, no grid."""
    got = _located(lon=[111.15], lat=[30.6], crs="wgs84", cells=None, grid_area=grid_area, divisions=index)
    assert got == ("420502000000", "point_in_county", reason)


def test_rows_are_placed_at_once_and_independently(index: DivisionIndex) -> None:
    """Rule: N rows in one call; a row's answer does not depend on the others or their order."""
    lon = np.array([111.15, 111.7, 2.35, 111.25])
    lat = np.array([30.6, 30.6, 48.85, 30.6])
    crs = ["wgs84", "wgs84", "wgs84", "cgcs2000"]
    together = locate_points(lon, lat, crs, cells=CELLS, grid_area=GRID_AREA, divisions=index)
    order = np.array([3, 1, 0, 2])
    shuffled = locate_points(
        lon[order], lat[order], [crs[i] for i in order], cells=CELLS, grid_area=GRID_AREA, divisions=index
    )
    assert together.code[order].tolist() == shuffled.code.tolist()
    assert together.method[order].tolist() == shuffled.method.tolist()
    assert together.cell_code.tolist() == [A, None, None, B]


def test_the_chain_is_read_from_the_code_down_to_the_level_reached() -> None:
    """Rule: province..community codes come from the code's prefixes; below the level reached: None."""
    code = np.array([A, "420506001000", "110101000000", None], dtype=object)
    level = np.array([6, 4, 3, 0], dtype=np.int8)
    chain = chain_table(code, level)
    assert chain[Level.PROVINCE].tolist() == ["420000000000", "420000000000", "110000000000", None]
    assert chain[Level.CITY].tolist() == ["420500000000", "420500000000", "110100000000", None]
    assert chain[Level.COUNTY].tolist() == ["420502000000", "420506000000", "110101000000", None]
    assert chain[Level.TOWN].tolist() == ["420502001000", "420506001000", None, None]
    assert chain[Level.COMMUNITY].tolist() == ["420502001001", None, None, None]
