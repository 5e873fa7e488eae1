"""geodata.imports: cells and divisions from GeoJSON, GeoPackage and Shapefile; problems per feature.

The hand-made divisions (lon/lat boxes; county 西陵区 is real, the rest made up):

     30.74 +-----------------------------------------+
           |  town 420502002000 (community not loaded)|
     30.72 +--------------------+--------------------+
           | community ...001001| community ...001002|
     30.70 +--------------------+--------------------+
         111.30               111.32               111.34     county: 111.2..111.5 x 30.6..30.8
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from geodata.codes import Level, division_level
from geodata.crs import gcj02_to_bd09, wgs84_to_gcj02
from geodata.divisions import Division
from geodata.imports import (
    CellImport,
    FieldMapping,
    Reason,
    Severity,
    common_scope,
    needed_divisions,
    read_cells,
    read_divisions,
)


def unit(code: str, name: str, geom: BaseGeometry | None) -> Division:
    return Division(code, name, division_level(code), None, geom, generated=False, source="test")


COUNTY = unit("420502000000", "西陵区", box(111.2, 30.6, 111.5, 30.8))
TOWN = unit("420502001000", "西陵街道", box(111.30, 30.70, 111.34, 30.72))
TOWN2 = unit("420502002000", "学院街道", box(111.30, 30.72, 111.34, 30.74))
C1 = unit("420502001001", "桃湖社区", box(111.30, 30.70, 111.32, 30.72))
C2 = unit("420502001002", "柳山社区", box(111.32, 30.70, 111.34, 30.72))
KNOWN = {d.code: d for d in (COUNTY, TOWN, TOWN2, C1, C2, unit("420500000000", "宜昌市", None))}

BOWTIE = Polygon([(111.300, 30.700), (111.301, 30.701), (111.301, 30.700), (111.300, 30.701)])


def write(
    path: Path,
    rows: Sequence[dict[str, Any]],
    *,
    driver: str = "GeoJSON",
    crs: str | None = "EPSG:4490",
    geometry_type: str = "Unknown",
    layer: str | None = None,
    append: bool = False,
) -> Path:
    """Write ``rows`` (dicts with 'geometry' and attributes) with pyogrio, as a real file."""
    names = [k for k in rows[0] if k != "geometry"]
    wkb = np.array(
        [None if r["geometry"] is None else shapely.to_wkb(r["geometry"]) for r in rows], dtype=object
    )
    values = [
        np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None) for k in names
    ]
    kwargs: dict[str, Any] = {"layer": layer} if layer else {}
    if append:
        kwargs["append"] = True
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "'crs' was not provided", UserWarning
        )  # files without a CRS on purpose
        pyogrio.raw.write(
            str(path), wkb, values, names, driver=driver, geometry_type=geometry_type, crs=crs, **kwargs
        )
    return path


def cell(
    code: str, geom: BaseGeometry | None, name: str = "网格", community: str | None = None
) -> dict[str, Any]:
    return {
        "code": code,
        "name": name,
        "sq": community if community is not None else code[:12],
        "geometry": geom,
    }


# --- a malformed file: every problem is a row, nothing crashes -------------------------------------

MALFORMED = [
    cell("420502001001001", box(111.30, 30.70, 111.31, 30.71), "第1网格"),  # 0 good
    cell("42050200100100X", box(111.30, 30.71, 111.31, 30.72)),  # 1
    cell("420502001001", box(111.30, 30.71, 111.31, 30.72)),  # 2
    cell("420502001001002", box(111.30, 30.71, 111.31, 30.72), community="420502001002"),  # 3
    cell("420502001001003", box(111.31, 30.71, 111.33, 30.72)),  # 4 reaches ~950 m into 柳山社区
    cell("420502001001004", box(111.31, 30.70, 111.32 + 2e-8, 30.71)),  # 5 2 mm over: within tolerance
    cell("420502001001005", BOWTIE),  # 6
    cell("420502001001001", box(111.31, 30.71, 111.32, 30.72)),  # 7 the code of feature 0 again
    cell("420502001001007", Point(111.305, 30.705)),  # 8
    cell("420502001001008", None),  # 9
    cell("420599001001001", box(111.30, 30.70, 111.31, 30.71)),  # 10 county 420599 unknown
    cell("420502002001001", box(111.30, 30.72, 111.31, 30.73)),  # 11 community not loaded, inside its town
    cell("420502002001002", box(111.30, 30.735, 111.31, 30.75)),  # 12 ... and reaching out of its town
    cell("420502001001009", box(500000.0, 3400000.0, 501000.0, 3401000.0)),  # 13 metres, not degrees
    cell("420502001002001", box(111.32, 30.70, 111.33, 30.71), name=""),  # 14 no name
]


@pytest.fixture(scope="module")
def malformed(tmp_path_factory: pytest.TempPathFactory) -> CellImport:
    path = write(tmp_path_factory.mktemp("malformed") / "cells.geojson", MALFORMED)
    return read_cells(path, KNOWN, fields=FieldMapping(parent="sq"))


@pytest.mark.parametrize(
    ("feature", "reason", "severity"),
    [
        pytest.param(1, Reason.BAD_CODE, Severity.BLOCKING, id="a code with a letter is a bad code"),
        pytest.param(
            2, Reason.BAD_CODE, Severity.BLOCKING, id="a 12-digit community code is not a cell code"
        ),
        pytest.param(
            3,
            Reason.NOT_UNDER_PARENT,
            Severity.BLOCKING,
            id="a cell code not under the community its field names",
        ),
        pytest.param(
            4,
            Reason.OUTSIDE_PARENT,
            Severity.BLOCKING,
            id="a cell outside its community polygon beyond tolerance",
        ),
        pytest.param(
            6, Reason.INVALID_GEOMETRY, Severity.BLOCKING, id="a self-intersecting polygon is invalid"
        ),
        pytest.param(7, Reason.DUPLICATE_CODE, Severity.BLOCKING, id="a second feature with the same code"),
        pytest.param(8, Reason.NOT_POLYGON, Severity.BLOCKING, id="a point is not a cell"),
        pytest.param(9, Reason.MISSING_GEOMETRY, Severity.BLOCKING, id="a feature without geometry"),
        pytest.param(
            10, Reason.ANCESTOR_NOT_LOADED, Severity.BLOCKING, id="a cell whose county is not known"
        ),
        pytest.param(
            11,
            Reason.PARENT_NOT_LOADED,
            Severity.WARNING,
            id="a community not loaded is a warning checked at town",
        ),
        pytest.param(12, Reason.OUTSIDE_PARENT, Severity.BLOCKING, id="then the cell must lie in the town"),
        pytest.param(13, Reason.OUTSIDE_CHINA, Severity.BLOCKING, id="projected metres under a lon/lat CRS"),
        pytest.param(14, Reason.MISSING_NAME, Severity.WARNING, id="an empty name is a warning"),
    ],
)
def test_a_malformed_import_is_reported_per_feature(
    malformed: CellImport, feature: int, reason: Reason, severity: Severity
) -> None:
    """Rule: every bad feature becomes a problem row (feature index, code as found, reason,
    severity, detail); reading never raises for the file's content."""
    rows = [p for p in malformed.problems if p.feature == feature and p.reason is reason]
    assert len(rows) == 1, malformed.problems
    assert rows[0].severity is severity
    assert rows[0].detail
    assert rows[0].code == MALFORMED[feature]["code"]


def test_only_features_without_blocking_problems_are_kept(malformed: CellImport) -> None:
    """Rule: a blocking problem keeps its feature out; warnings keep it; the within-tolerance
    cell (2 mm over its community's edge) is fine; nothing else is reported."""
    assert [c.feature for c in malformed.cells] == [0, 5, 11, 14]
    reported = {p.feature for p in malformed.problems}
    assert reported == {1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14}
    outside = next(p for p in malformed.problems if p.feature == 4)
    assert "community 420502001001 桃湖社区" in outside.detail and "m² outside" in outside.detail


# --- formats ----------------------------------------------------------------------------------------

GOOD = [
    cell("420502001001001", box(111.30, 30.70, 111.31, 30.71), "第1网格"),
    cell("420502001001002", box(111.31, 30.70, 111.32, 30.71), "第2网格"),
    cell(
        "420502001002001",
        MultiPolygon([box(111.32, 30.70, 111.33, 30.71), box(111.33, 30.71, 111.34, 30.72)]),
        "第1网格",
    ),
]


@pytest.mark.parametrize(
    ("driver", "suffix"),
    [
        pytest.param("GeoJSON", "geojson", id="GeoJSON"),
        pytest.param("GPKG", "gpkg", id="GeoPackage"),
        pytest.param("ESRI Shapefile", "shp", id="Shapefile"),
    ],
)
def test_cells_read_the_same_from_every_format(tmp_path: Path, driver: str, suffix: str) -> None:
    """Rule: GeoJSON, GeoPackage and Shapefile give the same cells (codes, Chinese names, the
    community field, polygons and multipolygons) with no problem."""
    path = write(tmp_path / f"cells.{suffix}", GOOD, driver=driver, geometry_type="MultiPolygon")
    got = read_cells(path, KNOWN, fields=FieldMapping(parent="sq"))
    assert got.problems == ()
    assert got.layer.crs is not None and got.layer.crs.value == "cgcs2000"
    assert [(c.code, c.community_code, c.name) for c in got.cells] == [
        (r["code"], r["code"][:12], r["name"]) for r in GOOD
    ]
    for c, r in zip(got.cells, GOOD, strict=True):
        assert shapely.equals_exact(
            shapely.normalize(MultiPolygon(shapely.get_parts(c.geometry))),
            shapely.normalize(MultiPolygon(shapely.get_parts(r["geometry"]))),
            1e-12,
        )


def test_a_numeric_code_field_reads_as_its_digits(tmp_path: Path) -> None:
    """Rule: a code stored as an integer attribute is read as its digits."""
    rows = [{"code": 420502001001001, "name": "第1网格", "geometry": box(111.30, 30.70, 111.31, 30.71)}]
    path = write(tmp_path / "n.gpkg", rows, driver="GPKG")
    assert [c.code for c in read_cells(path, KNOWN).cells] == ["420502001001001"]


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        pytest.param("layers", Reason.LAYER_REQUIRED, id="a file with several layers needs --layer"),
        pytest.param("wrong-layer", Reason.NO_SUCH_LAYER, id="a layer that is not there"),
        pytest.param("missing-field", Reason.MISSING_FIELD, id="a mapped field that is not there"),
        pytest.param("no-file", Reason.UNREADABLE_FILE, id="a file that cannot be opened"),
        pytest.param("empty", Reason.EMPTY_LAYER, id="a layer without features"),
    ],
)
def test_file_level_problems_have_no_feature_index(tmp_path: Path, kind: str, detail: Reason) -> None:
    """Rule: a problem of the whole file is one row with feature None, and no cell is read."""
    path = tmp_path / "f.gpkg"
    fields = FieldMapping()
    layer = None
    if kind in ("layers", "wrong-layer"):
        write(path, GOOD, driver="GPKG", layer="a")
        write(path, GOOD, driver="GPKG", layer="b", append=True)
        layer = "c" if kind == "wrong-layer" else None
    elif kind == "missing-field":
        write(path, GOOD, driver="GPKG")
        fields = FieldMapping(code="wgbm")
    elif kind == "empty":
        empty = np.array([], dtype=object)
        pyogrio.raw.write(
            str(path), empty, [empty], ["code"], driver="GPKG", geometry_type="Polygon", crs="EPSG:4490"
        )
    else:
        path = tmp_path / "nothing.shp"
    got = read_cells(
        path, KNOWN, fields=FieldMapping(code="code", name=None) if kind == "empty" else fields, layer=layer
    )
    assert [(p.feature, p.reason) for p in got.problems] == [(None, detail)]
    assert got.cells == ()


# --- coordinate systems ------------------------------------------------------------------------------

WGS = box(111.30, 30.70, 111.31, 30.71)


def _gcj(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.column_stack(wgs84_to_gcj02(xy[:, 0], xy[:, 1])))


def _bd(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(_gcj(geom), lambda xy: np.column_stack(gcj02_to_bd09(xy[:, 0], xy[:, 1])))


@pytest.mark.parametrize(
    ("driver", "file_crs", "declared", "stored", "expected"),
    [
        pytest.param("GPKG", "EPSG:4490", None, WGS, "cgcs2000", id="EPSG 4490 CGCS2000 is accepted as is"),
        pytest.param("GPKG", "EPSG:4326", None, WGS, "wgs84", id="EPSG 4326 WGS84 is accepted as is"),
        pytest.param(
            "GeoJSON", None, None, WGS, "wgs84", id="GeoJSON without a crs member is WGS84 by RFC 7946"
        ),
        pytest.param("ESRI Shapefile", None, "cgcs2000", WGS, "cgcs2000", id="no prj but declared CGCS2000"),
        pytest.param(
            "ESRI Shapefile", None, "gcj02", _gcj(WGS), "gcj02", id="declared GCJ-02 is converted exactly"
        ),
        pytest.param(
            "GPKG", "EPSG:4490", "bd09", _bd(WGS), "bd09", id="declared BD-09 on a lon-lat file is converted"
        ),
        pytest.param(
            "ESRI Shapefile", None, None, WGS, Reason.UNKNOWN_CRS, id="no CRS and none declared is refused"
        ),
        pytest.param(
            "GPKG", "EPSG:4490", "mars-2", WGS, Reason.UNKNOWN_CRS, id="an unknown declared CRS name"
        ),
        pytest.param(
            "GPKG", "EPSG:3857", "gcj02", WGS, Reason.UNSUPPORTED_CRS, id="a projected CRS is refused"
        ),
        pytest.param(
            "GPKG", "EPSG:4214", None, WGS, Reason.UNSUPPORTED_CRS, id="another datum (Beijing 1954)"
        ),
    ],
)
def test_the_files_crs_is_checked_never_guessed(
    tmp_path: Path,
    driver: str,
    file_crs: str | None,
    declared: str | None,
    stored: BaseGeometry,
    expected: str | Reason,
) -> None:
    """Rule: EPSG:4490/4326 files are taken as they are; GCJ-02/BD-09 declared by the caller are
    converted to WGS84 (within 0.05 m of the true position); anything else is a file-level
    problem, never a guess."""
    suffix = {"GPKG": "gpkg", "GeoJSON": "geojson", "ESRI Shapefile": "shp"}[driver]
    path = write(tmp_path / f"c.{suffix}", [cell("420502001001001", stored)], driver=driver, crs=file_crs)
    got = read_cells(path, KNOWN, crs=declared)
    if isinstance(expected, Reason):
        assert [(p.feature, p.reason) for p in got.problems] == [(None, expected)]
        assert got.cells == ()
        return
    assert got.problems == ()
    assert got.layer.crs is not None and got.layer.crs.value == expected
    (only,) = got.cells
    metres = shapely.hausdorff_distance(only.geometry, WGS) * 111_195
    assert metres < 0.05


# --- scope and divisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "scope"),
    [
        pytest.param(["420502001001001", "420502001001002"], "420502001001", id="one community"),
        pytest.param(["420502001001001", "420502001002001"], "420502001000", id="two communities of a town"),
        pytest.param(["420502001001001", "420506001001001"], "420500000000", id="two counties of a city"),
        pytest.param(
            ["420502001001001", "110101001001001"], None, id="two provinces have no common division"
        ),
        pytest.param(["x"], None, id="no valid code"),
    ],
)
def test_common_scope_is_the_lowest_division_holding_every_code(codes: list[str], scope: str | None) -> None:
    """Rule: the default scope of an import is the lowest division whose subtree holds every code."""
    assert common_scope(codes) == scope


def test_cells_outside_a_given_scope_are_problems(tmp_path: Path) -> None:
    """Rule: with a scope, a cell outside it is a blocking problem of its feature."""
    path = write(tmp_path / "c.geojson", GOOD)
    got = read_cells(path, KNOWN, scope="420502001001")
    assert [(p.feature, p.reason) for p in got.problems] == [(2, Reason.OUTSIDE_SCOPE)]


def test_needed_divisions_are_every_ancestor(tmp_path: Path) -> None:
    """Rule: the chain check looks up each cell's community, town, county, city and province."""
    path = write(tmp_path / "c.geojson", GOOD[:1])
    from geodata.imports import read_layer

    assert needed_divisions(read_layer(path)) == {
        "420000000000",
        "420500000000",
        "420502000000",
        "420502001000",
        "420502001001",
    }


def test_without_divisions_only_the_file_is_checked(tmp_path: Path) -> None:
    """Rule: with no known divisions given, shapes and codes are still checked, the chain is not."""
    path = write(tmp_path / "c.geojson", MALFORMED)
    got = read_cells(path, None)
    assert {p.reason for p in got.problems} == {
        Reason.BAD_CODE,
        Reason.INVALID_GEOMETRY,
        Reason.DUPLICATE_CODE,
        Reason.NOT_POLYGON,
        Reason.MISSING_GEOMETRY,
        Reason.OUTSIDE_CHINA,
        Reason.MISSING_NAME,
    }


PROVINCE = unit("420000000000", "湖北省", box(108, 29, 117, 34))
CITY = unit("420500000000", "宜昌市", box(110, 29.9, 112, 31.5))


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        pytest.param({"code": "420502000000", "parent": ""}, None, id="a county under its city is fine"),
        pytest.param(
            {"code": "429004000000", "parent": "420000000000"},
            None,
            id="a province-administered county hangs under the province when 429000 does not exist",
        ),
        pytest.param(
            {"code": "420503000000", "parent": "420000000000"},
            Reason.PARENT_NOT_ONE_LEVEL_UP,
            id="a county naming its province while its city exists",
        ),
        pytest.param(
            {"code": "420504000000", "parent": "420600000000"},
            Reason.NOT_UNDER_PARENT,
            id="a county naming another city",
        ),
        pytest.param(
            {"code": "420505000000", "parent": "", "geometry": box(112.5, 30, 112.6, 30.1)},
            Reason.OUTSIDE_PARENT,
            id="a county outside its city's polygon",
        ),
        pytest.param({"code": "4205050000", "parent": ""}, Reason.BAD_CODE, id="a 10-digit division code"),
        pytest.param(
            {"code": "420599001000", "parent": ""},
            Reason.PARENT_NOT_LOADED,
            id="a town whose county is unknown is a warning",
        ),
    ],
)
def test_divisions_hang_one_level_up_inside_their_parent(
    tmp_path: Path, row: dict[str, Any], reason: Reason | None
) -> None:
    """Rule: a division's parent is the unit one level up (skipping a level with no unit), and
    the division lies inside the parent's polygon within the tolerance."""
    feature = {
        "code": row["code"],
        "name": "单位",
        "parent": row["parent"],
        "geometry": row.get("geometry", box(111, 30, 111.1, 30.1)),
    }
    path = write(tmp_path / "d.geojson", [feature])
    got = read_divisions(path, {d.code: d for d in (PROVINCE, CITY)}, fields=FieldMapping(parent="parent"))
    assert [p.reason for p in got.problems] == ([] if reason is None else [reason])
    if reason is None:
        (d,) = got.divisions
        assert d.level is division_level(row["code"])
        assert d.parent_code == (row["parent"] or "420500000000")
        assert d.source == "import:d.geojson"
    else:
        assert got.divisions == () or got.problems[0].severity is Severity.WARNING


def test_levels_are_read_from_codes() -> None:
    assert division_level(TOWN.code) is Level.TOWN
