"""``gridflow cells import``, ``gridflow locate`` and ``gridflow map`` end to end on the real database.

Through typer's CliRunner on the registered ``gridflow`` app (fast), plus one real subprocess of
the installed console script. Each test runs on its own clone of the geo template database
(tests/grid/test_cells_import.py): Hubei and Beijing divisions, the generated Yichang grid.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import box
from typer.testing import CliRunner

from geodata.crs import wgs84_to_gcj02
from grid.store.db import transaction
from gridflow_cli.main import app
from tests.grid.test_cells_import import Scenario, cloned_database, open_cases, scenario, template_database

pytestmark = pytest.mark.db

runner = CliRunner()
XILING_POINT = (111.30, 30.70)  # WGS84, inside the generated grid of 西陵区
BEIJING = (116.4074, 39.9042)  # 天安门: 东城区; no grid there
PARIS = (2.35, 48.85)
EAST_CHINA_SEA = (125.0, 30.0)  # inside China's GCJ-02 box, in no division


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def gcj(lon: float, lat: float) -> tuple[float, float]:
    x, y = wgs84_to_gcj02([lon], [lat])
    return float(x[0]), float(y[0])


@pytest.fixture(scope="session")
def geo_template(database_url: str, sample_world: Any) -> Iterator[str]:
    with template_database(database_url, sample_world) as name:
        yield name


@pytest.fixture
def geo_db(database_url: str, geo_template: str) -> Iterator[str]:
    with cloned_database(database_url, geo_template) as url:
        yield url


@pytest.fixture(scope="module")
def sc(sample_world: Any) -> Scenario:
    return scenario(sample_world)


def cell_at(url: str, lon: float, lat: float) -> tuple[str, str, list[str]]:
    """The current cell covering a WGS84 point by PostGIS, its name and its chain's names."""
    conn = psycopg2.connect(url)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "SELECT code::text, name FROM grid_cell WHERE valid_to IS NULL"
                " AND ST_Covers(geom, ST_SetSRID(ST_Point(%s, %s), 4326)) ORDER BY code LIMIT 1",
                (lon, lat),
            )
            code, name = cur.fetchone() or ("", "")
            cur.execute(
                "SELECT name FROM division WHERE valid_to IS NULL AND code = ANY(%s) ORDER BY level DESC",
                (
                    [
                        code[:12],
                        code[:9] + "000",
                        code[:6] + "000000",
                        code[:4] + "00000000",
                        code[:2] + "0" * 10,
                    ],
                ),
            )
            return code, name, [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def write_cells(path: Path, cells: Any, *, driver: str = "GPKG", codes: dict[int, str] | None = None) -> Path:
    """Cells (CellFeature-like) to a file; ``codes`` overrides the code of some features."""
    wkb = np.array([shapely.to_wkb(c.geometry) for c in cells], dtype=object)
    code = np.array([(codes or {}).get(i, c.code) for i, c in enumerate(cells)], dtype=object)
    name = np.array([c.name for c in cells], dtype=object)
    pyogrio.raw.write(
        str(path),
        wkb,
        [code, name],
        ["code", "name"],
        driver=driver,
        geometry_type="MultiPolygon",
        crs="EPSG:4490",
    )
    return path


# ----------------------------------------------------------------------------- cells import


def test_cells_import_dry_run_then_commit_then_no_op(geo_db: str, sc: Scenario, tmp_path: Path) -> None:
    """Rule: `cells import FILE` prints the diff and the open cases that would move and writes
    nothing; --commit applies it as a new version; importing the same file again is a no-op."""
    conn = psycopg2.connect(geo_db)
    try:
        cases = open_cases(conn, sc)
    finally:
        conn.close()
    path = write_cells(tmp_path / "grid.gpkg", sc.cells)

    dry = invoke("cells", "import", str(path), "--valid-from", "2026-10-01")
    assert dry.exit_code == 0, dry.output
    assert "scope: 420500000000 宜昌市" in dry.output
    assert "diff: 1 added, 2 removed, 2 changed, 1 renamed" in dry.output
    assert f"added     {sc.a_east}" in dry.output and f"removed   {sc.d}" in dry.output
    assert "open cases that would move: 3 (and 1 staying" in dry.output
    assert f"case {cases.moving:<8} {sc.a} → {sc.a_east}  (point)" in dry.output
    assert "dry run: nothing written" in dry.output

    done = invoke(
        "cells", "import", str(path), "--valid-from", "2026-10-01", "--commit", "--label", "十月调整"
    )
    assert done.exit_code == 0, done.output
    assert "committed cell version 2 valid from 2026-10-01; closed version(s) 1" in done.output
    assert "open cases re-routed: 3" in done.output

    again = invoke("cells", "import", str(path), "--valid-from", "2026-11-01", "--commit")
    assert again.exit_code == 0, again.output
    assert "no change" in again.output


def test_a_malformed_file_is_reported_per_feature_and_never_committed(
    geo_db: str, sc: Scenario, tmp_path: Path
) -> None:
    """Rule: problems are printed per feature (index, code, reason) and any blocking one makes
    the command exit 1; --commit then writes nothing."""
    cells = sc.cells[:3]
    bad = [
        *cells,
        type(cells[0])(
            code=cells[0].code[:12] + "900",
            community_code=cells[0].code[:12],
            name="越界网格",
            geometry=shapely.MultiPolygon([box(111.0, 31.5, 111.1, 31.6)]),  # far outside its community
            feature=3,
        ),
    ]
    path = write_cells(tmp_path / "bad.geojson", bad, driver="GeoJSON", codes={1: "4205020010010AB"})
    out = invoke("cells", "import", str(path), "--commit", "--valid-from", "2026-10-01")
    assert out.exit_code == 1
    assert "feature 1" in out.output and "bad_code" in out.output
    assert "feature 3" in out.output and "outside_parent" in out.output
    assert "nothing committed" in out.output
    conn = psycopg2.connect(geo_db)
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT count(*) FROM cell_version")
            assert (cur.fetchone() or [0])[0] == 1
    finally:
        conn.close()


def test_an_unknown_crs_is_refused(geo_db: str, sc: Scenario, tmp_path: Path) -> None:
    """Rule: a CRS that is not known is an error, never a guess."""
    path = write_cells(tmp_path / "g.gpkg", sc.cells[:2])
    out = invoke("cells", "import", str(path), "--crs", "xian80")
    assert out.exit_code == 1
    assert "unknown_crs" in out.output


# ----------------------------------------------------------------------------- locate


@pytest.mark.parametrize(
    ("where", "expect"),
    [
        pytest.param(
            "grid-gcj02", "cell", id="inside the grid, given in GCJ-02: the cell and its chain with names"
        ),
        pytest.param("grid-bd09", "cell", id="inside the grid, given in BD-09: the same cell"),
        pytest.param("beijing", "county", id="outside the grid but in China: the county by its polygon"),
        pytest.param("paris", "outside_china", id="outside China: unmapped with the reason"),
        pytest.param("sea", "outside_loaded_divisions", id="in China's box but in no division: unmapped"),
    ],
)
def test_locate(geo_db: str, where: str, expect: str) -> None:
    """Rule: locate converts the declared CRS, places the point in a cell, else in the deepest
    division polygon holding it, else says why it is unmapped."""
    if where.startswith("grid"):
        code, name, chain_names = cell_at(geo_db, *XILING_POINT)
        lon, lat = gcj(*XILING_POINT)
        crs = "gcj02"
        if where == "grid-bd09":
            from geodata.crs import gcj02_to_bd09

            bx, by = gcj02_to_bd09([lon], [lat])
            lon, lat, crs = float(bx[0]), float(by[0]), "bd09"
        out = invoke("locate", "--lon", repr(lon), "--lat", repr(lat), "--crs", crs)
        assert out.exit_code == 0, out.output
        assert f"cell       {code}  {name}" in out.output
        assert f"community  {code[:12]}" in out.output
        for n in chain_names:
            assert n in out.output
        assert "method     point_in_cell" in out.output
        return
    lon, lat = {"beijing": BEIJING, "paris": PARIS, "sea": EAST_CHINA_SEA}[where]
    out = invoke("locate", "--lon", str(lon), "--lat", str(lat))
    assert out.exit_code == 0, out.output
    if expect == "county":
        assert "cell       none (outside_area)" in out.output
        assert "county     110101000000     东城区" in out.output
        assert "province   110000000000     北京市" in out.output
        assert "method     point_in_county (reason outside_area)" in out.output
    else:
        assert f"unmapped   reason {expect}" in out.output


def test_locate_refuses_an_unknown_crs(geo_db: str) -> None:
    """Rule: an unknown CRS name is an error (exit 1), never a guess."""
    out = invoke("locate", "--lon", "111.3", "--lat", "30.7", "--crs", "gcj-2000")
    assert out.exit_code == 1
    assert "unknown coordinate system" in out.output


# ----------------------------------------------------------------------------- map


def test_map_writes_cell_chain_method_and_reason_per_row(geo_db: str, tmp_path: Path) -> None:
    """Rule: map places every row — GCJ-02 points in the grid to their cell, points elsewhere in
    China to their county, points abroad unmapped, address-only rows at the lowest division the
    address names — and writes the documented columns, in chunks."""
    code, _, _ = cell_at(geo_db, *XILING_POINT)
    glon, glat = gcj(*XILING_POINT)
    rows = [
        {"id": "in-grid-gcj02", "lon": repr(glon), "lat": repr(glat), "crs": "gcj02", "address": ""},
        {"id": "in-grid-default-crs", "lon": "111.3", "lat": "30.7", "crs": "", "address": ""},
        {"id": "beijing", "lon": str(BEIJING[0]), "lat": str(BEIJING[1]), "crs": "wgs84", "address": ""},
        {"id": "paris", "lon": str(PARIS[0]), "lat": str(PARIS[1]), "crs": "wgs84", "address": ""},
        {"id": "address-town", "lon": "", "lat": "", "crs": "", "address": "湖北省宜昌市夷陵区小溪塔街道"},
        {"id": "address-county", "lon": "", "lat": "", "crs": "", "address": "北京市东城区东华门大街"},
        {"id": "bad-crs", "lon": "111.3", "lat": "30.7", "crs": "epsg:3857", "address": ""},
        {"id": "garbage", "lon": "东经111", "lat": "30.7", "crs": "wgs84", "address": ""},
        {"id": "nothing", "lon": "", "lat": "", "crs": "", "address": ""},
    ]
    src = tmp_path / "in.csv"
    with src.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "lon", "lat", "crs", "address"])
        writer.writeheader()
        writer.writerows(rows)
    dst = tmp_path / "out.csv"
    out = invoke("map", str(src), "--out", str(dst), "--crs", "wgs84", "--chunk-size", "4")
    assert out.exit_code == 0, out.output
    with dst.open(encoding="utf-8") as f:
        got = {r["id"]: r for r in csv.DictReader(f)}
    assert list(got) == [r["id"] for r in rows]
    assert list(next(iter(got.values()))) == [
        "id",
        "cell_code",
        "community_code",
        "town_code",
        "county_code",
        "city_code",
        "province_code",
        "method",
        "reason",
    ]

    def short(r: dict[str, str]) -> tuple[str, str, str, str, str]:
        return r["cell_code"], r["town_code"], r["county_code"], r["method"], r["reason"]

    town = code[:9] + "000"
    assert short(got["in-grid-gcj02"]) == (code, town, "420502000000", "point_in_cell", "")
    assert got["in-grid-gcj02"]["community_code"] == code[:12]
    assert got["in-grid-gcj02"]["province_code"] == "420000000000"
    assert short(got["in-grid-default-crs"]) == (code, town, "420502000000", "point_in_cell", "")
    assert short(got["beijing"]) == ("", "", "110101000000", "point_in_county", "outside_area")
    assert short(got["paris"]) == ("", "", "", "unmapped", "outside_china")
    assert short(got["address-town"]) == ("", "420506001000", "420506000000", "address_town", "")
    assert short(got["address-county"]) == ("", "", "110101000000", "address_county", "")
    assert short(got["bad-crs"]) == ("", "", "", "unmapped", "unknown_crs")
    assert short(got["garbage"]) == ("", "", "", "unmapped", "invalid_point")
    assert short(got["nothing"]) == ("", "", "", "unmapped", "no_location")
    assert "9 rows" in out.output


def test_map_needs_an_id_column(geo_db: str, tmp_path: Path) -> None:
    """Rule: the input's columns are checked first; without id the command exits 1."""
    src = tmp_path / "in.csv"
    src.write_text("lon,lat\n111.3,30.7\n", encoding="utf-8")
    out = invoke("map", str(src), "--out", str(tmp_path / "o.csv"))
    assert out.exit_code == 1
    assert "no id column" in out.output


# ----------------------------------------------------------------------------- a real process


def test_the_installed_command_locates_a_point(geo_db: str) -> None:
    """Smoke: the console script `gridflow locate` runs as its own process on the same database."""
    exe = Path(sys.executable).with_name("gridflow")
    env = {**os.environ, "GRIDFLOW_DATABASE_URL": geo_db}
    proc = subprocess.run(
        [str(exe), "locate", "--lon", str(BEIJING[0]), "--lat", str(BEIJING[1])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "110101000000     东城区" in proc.stdout
