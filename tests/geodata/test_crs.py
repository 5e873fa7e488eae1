"""geodata.crs: coordinate-system names and exact conversions to WGS84 (domain.md §3)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import ArrayLike, NDArray

from geodata import crs
from geodata.crs import CHINA_BBOX, CRS, UnknownCRSError, parse_crs

# --- helpers ------------------------------------------------------------------------------------

Transform = Callable[[ArrayLike, ArrayLike], tuple[NDArray[np.float64], NDArray[np.float64]]]
EARTH_RADIUS_M = 6_371_008.8
ROUND_TRIP_LIMIT_M = 0.05


def haversine_m(
    lon1: NDArray[np.float64], lat1: NDArray[np.float64], lon2: NDArray[np.float64], lat2: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Great-circle distance in metres on a sphere (plenty for centimetre-scale differences)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(h)), dtype=np.float64)


def published_wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """Line-by-line transcription of the published GCJ-02 forward algorithm, one point at a time."""
    a, ee, pi = 6378245.0, 0.00669342162296594323, math.pi
    x, y = lon - 105.0, lat - 35.0
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    d_lat += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    d_lat += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    d_lat += (160.0 * math.sin(y / 12.0 * pi) + 320 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    d_lon += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    d_lon += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    d_lon += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad_lat = lat / 180.0 * pi
    magic = 1 - ee * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((a * (1 - ee)) / (magic * sqrt_magic) * pi)
    d_lon = (d_lon * 180.0) / (a / sqrt_magic * math.cos(rad_lat) * pi)
    return lon + d_lon, lat + d_lat


CITIES = [
    pytest.param(111.29, 30.70, id="yichang"),
    pytest.param(87.62, 43.83, id="urumqi"),
    pytest.param(126.63, 45.75, id="harbin"),
    pytest.param(109.51, 18.25, id="sanya"),
    pytest.param(116.404, 39.915, id="beijing"),
    pytest.param(121.47, 31.23, id="shanghai"),
    pytest.param(91.11, 29.65, id="lhasa"),
    pytest.param(105.0, 35.0, id="origin-of-the-offset-formula"),
]

# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("EPSG:4490", CRS.CGCS2000, id="epsg-4490-is-cgcs2000"),
        pytest.param("4490", CRS.CGCS2000, id="bare-4490-is-cgcs2000"),
        pytest.param("CGCS2000", CRS.CGCS2000, id="cgcs2000-any-case"),
        pytest.param("epsg:4326", CRS.WGS84, id="epsg-4326-is-wgs84"),
        pytest.param("4326", CRS.WGS84, id="bare-4326-is-wgs84"),
        pytest.param("WGS84", CRS.WGS84, id="wgs84-upper"),
        pytest.param("WGS 84", CRS.WGS84, id="wgs-84-with-space"),
        pytest.param("OGC:CRS84", CRS.WGS84, id="geojson-crs84-is-wgs84"),
        pytest.param("gcj02", CRS.GCJ02, id="gcj02"),
        pytest.param("GCJ-02", CRS.GCJ02, id="gcj-02-hyphen"),
        pytest.param("Mars", CRS.GCJ02, id="mars-is-gcj02"),
        pytest.param("bd09", CRS.BD09, id="bd09"),
        pytest.param("BD-09", CRS.BD09, id="bd-09-hyphen"),
        pytest.param("bd09ll", CRS.BD09, id="baidu-api-name-bd09ll"),
        pytest.param("Baidu", CRS.BD09, id="baidu-is-bd09"),
        pytest.param("  wgs84  ", CRS.WGS84, id="surrounding-blanks-ignored"),
        pytest.param(CRS.GCJ02, CRS.GCJ02, id="a-crs-member-parses-to-itself"),
    ],
)
def test_parse_crs_accepts_common_spellings(name: str, expected: CRS) -> None:
    """Rule: a declared system is recognised from its usual spellings, case-insensitively."""
    assert parse_crs(name) is expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(None, id="missing-is-not-guessed"),
        pytest.param("", id="empty-is-not-guessed"),
        pytest.param("   ", id="blank-is-not-guessed"),
        pytest.param("EPSG:3857", id="web-mercator-is-not-lonlat"),
        pytest.param("bd09mc", id="baidu-mercator-metres-is-not-lonlat"),
        pytest.param("gcj", id="partial-name-is-not-guessed"),
        pytest.param("beijing54", id="other-datum-is-unknown"),
    ],
)
def test_parse_crs_refuses_unknown_or_missing(name: str | None) -> None:
    """Rule: a missing or unknown system raises UnknownCRSError (a ValueError); never a guess."""
    with pytest.raises(UnknownCRSError):
        parse_crs(name)
    assert issubclass(UnknownCRSError, ValueError)


# --- published reference values -----------------------------------------------------------------

# wandergis/coordtransform README, the reference most Chinese implementations check against.
BEIJING = (116.404, 39.915)


@pytest.mark.parametrize(
    ("convert", "expected"),
    [
        pytest.param(crs.wgs84_to_gcj02, (116.41024449916938, 39.91640428150164), id="wgs84-to-gcj02"),
        pytest.param(crs.gcj02_to_bd09, (116.41036949371029, 39.92133699351021), id="gcj02-to-bd09"),
        pytest.param(crs.wgs84_to_bd09, (116.41662724378733, 39.922699552216216), id="wgs84-to-bd09"),
        pytest.param(
            crs.gcj02_to_wgs84_approx, (116.39775550083061, 39.91359571849836), id="one-step-gcj02-inverse"
        ),
    ],
)
def test_forward_formulas_match_published_values(convert: Transform, expected: tuple[float, float]) -> None:
    """Rule: forward conversions reproduce the published algorithm's reference outputs."""
    lon, lat = convert(np.array([BEIJING[0]]), np.array([BEIJING[1]]))
    assert lon[0] == pytest.approx(expected[0], abs=1e-12)
    assert lat[0] == pytest.approx(expected[1], abs=1e-12)


def test_vectorised_gcj02_matches_published_algorithm_point_by_point() -> None:
    """Rule: the vectorised forward equals the published per-point formula across China."""
    rng = np.random.default_rng(20240611)
    lon, lat = rng.uniform(73.5, 135.0, 2000), rng.uniform(3.9, 53.5, 2000)
    got_lon, got_lat = crs.wgs84_to_gcj02(lon, lat)
    want = np.array([published_wgs84_to_gcj02(float(x), float(y)) for x, y in zip(lon, lat, strict=True)])
    np.testing.assert_allclose(got_lon, want[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_lat, want[:, 1], rtol=0, atol=1e-12)


# --- exact inverses -----------------------------------------------------------------------------


@pytest.mark.parametrize(("lon", "lat"), CITIES)
def test_wgs84_gcj02_round_trip_within_5cm(lon: float, lat: float) -> None:
    """Rule: gcj02_to_wgs84 is an exact inverse: WGS84 -> GCJ-02 -> WGS84 is within 5 cm."""
    x, y = np.array([lon]), np.array([lat])
    g_lon, g_lat = crs.wgs84_to_gcj02(x, y)
    assert haversine_m(x, y, g_lon, g_lat)[0] > 50, "GCJ-02 should move a point in China"
    back_lon, back_lat = crs.gcj02_to_wgs84(g_lon, g_lat)
    assert haversine_m(x, y, back_lon, back_lat)[0] < ROUND_TRIP_LIMIT_M


@pytest.mark.parametrize(("lon", "lat"), CITIES)
def test_gcj02_inverse_meets_its_tolerance(lon: float, lat: float) -> None:
    """Rule: the inverse stops only when forward(result) is within 1e-9 degrees of the input."""
    w_lon, w_lat = crs.gcj02_to_wgs84(np.array([lon]), np.array([lat]))
    f_lon, f_lat = crs.wgs84_to_gcj02(w_lon, w_lat)
    assert abs(f_lon[0] - lon) < crs.TOLERANCE_DEG
    assert abs(f_lat[0] - lat) < crs.TOLERANCE_DEG


@pytest.mark.parametrize(("lon", "lat"), CITIES)
def test_gcj02_bd09_round_trip_within_5cm(lon: float, lat: float) -> None:
    """Rule: bd09_to_gcj02 is an exact inverse: GCJ-02 -> BD-09 -> GCJ-02 is within 5 cm."""
    x, y = np.array([lon]), np.array([lat])
    b_lon, b_lat = crs.gcj02_to_bd09(x, y)
    back_lon, back_lat = crs.bd09_to_gcj02(b_lon, b_lat)
    assert haversine_m(x, y, back_lon, back_lat)[0] < ROUND_TRIP_LIMIT_M


@pytest.mark.parametrize(("lon", "lat"), CITIES)
def test_wgs84_bd09_round_trip_within_5cm(lon: float, lat: float) -> None:
    """Rule: bd09_to_wgs84 undoes wgs84_to_bd09 to within 5 cm (both inverses are exact)."""
    x, y = np.array([lon]), np.array([lat])
    back_lon, back_lat = crs.bd09_to_wgs84(*crs.wgs84_to_bd09(x, y))
    assert haversine_m(x, y, back_lon, back_lat)[0] < ROUND_TRIP_LIMIT_M


def test_exact_inverse_beats_the_one_step_inverse() -> None:
    """Rule: the one-step inverse is metres off; the exact inverse is sub-millimetre everywhere."""
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(73.5, 135.0, 5000), rng.uniform(18.0, 53.5, 5000)
    g_lon, g_lat = crs.wgs84_to_gcj02(lon, lat)
    exact = haversine_m(lon, lat, *crs.gcj02_to_wgs84(g_lon, g_lat))
    approx = haversine_m(lon, lat, *crs.gcj02_to_wgs84_approx(g_lon, g_lat))
    assert exact.max() < 0.001
    assert approx.max() > 1.0
    assert np.all(approx > exact)


def test_exact_bd09_inverse_differs_from_the_published_one_step_value() -> None:
    """Rule: the published one-step BD-09 inverse is only approximate; ours maps forward exactly."""
    lon, lat = crs.bd09_to_gcj02(np.array([BEIJING[0]]), np.array([BEIJING[1]]))
    published = (np.array([116.39762729119315]), np.array([39.90865673957631]))
    assert 0.01 < haversine_m(lon, lat, *published)[0] < 5.0
    f_lon, f_lat = crs.gcj02_to_bd09(lon, lat)
    assert abs(f_lon[0] - BEIJING[0]) < crs.TOLERANCE_DEG
    assert abs(f_lat[0] - BEIJING[1]) < crs.TOLERANCE_DEG


box_lon = st.floats(CHINA_BBOX.min_lon + 0.05, CHINA_BBOX.max_lon - 0.05)
box_lat = st.floats(CHINA_BBOX.min_lat + 0.05, CHINA_BBOX.max_lat - 0.05)


@settings(max_examples=300, deadline=None)
@given(lon=box_lon, lat=box_lat)
def test_round_trips_hold_anywhere_in_the_china_box(lon: float, lat: float) -> None:
    """Property: for any point of the China box (away from its edge) every round trip is < 5 cm."""
    x, y = np.array([lon]), np.array([lat])
    gcj = crs.wgs84_to_gcj02(x, y)
    assert haversine_m(x, y, *crs.gcj02_to_wgs84(*gcj))[0] < ROUND_TRIP_LIMIT_M
    assert haversine_m(*gcj, *crs.bd09_to_gcj02(*crs.gcj02_to_bd09(*gcj)))[0] < ROUND_TRIP_LIMIT_M
    assert haversine_m(x, y, *crs.bd09_to_wgs84(*crs.wgs84_to_bd09(x, y)))[0] < ROUND_TRIP_LIMIT_M


@settings(max_examples=300, deadline=None)
@given(lon=st.floats(70.0, 140.0), lat=st.floats(-1.0, 58.0))
def test_inverses_never_return_a_point_that_does_not_map_back(lon: float, lat: float) -> None:
    """Property: anywhere, including the China box's edge where the published forward jumps, an
    inverse returns a point whose forward image is within 1e-9 degrees of the input, or NaN."""
    x, y = np.array([lon]), np.array([lat])
    for inverse, forward in (
        (crs.gcj02_to_wgs84, crs.wgs84_to_gcj02),
        (crs.bd09_to_gcj02, crs.gcj02_to_bd09),
    ):
        back = inverse(x, y)
        if np.isnan(back[0][0]):
            continue
        f_lon, f_lat = forward(*back)
        assert abs(f_lon[0] - lon) < crs.TOLERANCE_DEG and abs(f_lat[0] - lat) < crs.TOLERANCE_DEG


@pytest.mark.parametrize(
    ("lon", "lat", "has_preimage"),
    [
        pytest.param(CHINA_BBOX.min_lon, 40.0, False, id="west-edge-has-no-preimage-so-nan"),
        pytest.param(110.0, CHINA_BBOX.min_lat, False, id="south-edge-has-no-preimage-so-nan"),
        pytest.param(CHINA_BBOX.max_lon, 45.0, True, id="east-edge-gives-a-preimage"),
        pytest.param(120.0, CHINA_BBOX.max_lat, True, id="north-edge-gives-a-preimage"),
    ],
)
def test_box_edge_gives_a_preimage_or_nan(lon: float, lat: float, has_preimage: bool) -> None:
    """Rule: at the box edge (never Chinese soil) the inverse gives a true preimage or NaN."""
    w_lon, w_lat = crs.gcj02_to_wgs84(np.array([lon]), np.array([lat]))
    assert bool(np.isfinite(w_lon[0])) is has_preimage
    if has_preimage:
        f_lon, f_lat = crs.wgs84_to_gcj02(w_lon, w_lat)
        assert abs(f_lon[0] - lon) < crs.TOLERANCE_DEG and abs(f_lat[0] - lat) < crs.TOLERANCE_DEG


# --- outside China, NaN, shapes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        pytest.param(-0.1246, 51.5007, id="london"),
        pytest.param(139.69, 35.69, id="tokyo-east-of-the-box"),
        pytest.param(71.0, 40.0, id="west-of-the-box"),
        pytest.param(100.0, 60.0, id="north-of-the-box"),
        pytest.param(110.0, -5.0, id="south-of-the-box"),
    ],
)
def test_points_outside_china_get_no_gcj02_offset(lon: float, lat: float) -> None:
    """Rule: outside the China box GCJ-02 equals WGS84, in both directions."""
    x, y = np.array([lon]), np.array([lat])
    assert not crs.in_china(x, y)[0]
    for convert in (crs.wgs84_to_gcj02, crs.gcj02_to_wgs84):
        out_lon, out_lat = convert(x, y)
        assert (out_lon[0], out_lat[0]) == (lon, lat)


@pytest.mark.parametrize(
    ("lon", "lat", "inside"),
    [
        pytest.param(111.29, 30.70, True, id="yichang-inside"),
        pytest.param(CHINA_BBOX.min_lon, CHINA_BBOX.min_lat, True, id="corner-is-inclusive"),
        pytest.param(CHINA_BBOX.max_lon + 1e-9, 30.0, False, id="just-east-is-outside"),
        pytest.param(math.nan, 30.0, False, id="nan-is-not-in-china"),
    ],
)
def test_in_china_uses_the_published_box(lon: float, lat: float, inside: bool) -> None:
    """Rule: the GCJ-02 offset applies inside the published, inclusive China box only."""
    assert bool(crs.in_china(np.array([lon]), np.array([lat]))[0]) is inside
    assert crs.china_bbox == CHINA_BBOX == (72.004, 0.8293, 137.8347, 55.8271)


CONVERSIONS = [
    pytest.param(f, id=f.__name__)
    for f in (
        crs.wgs84_to_gcj02,
        crs.gcj02_to_wgs84,
        crs.gcj02_to_wgs84_approx,
        crs.gcj02_to_bd09,
        crs.bd09_to_gcj02,
        crs.wgs84_to_bd09,
        crs.bd09_to_wgs84,
    )
]


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_nan_passes_through_without_disturbing_neighbours(convert: Transform) -> None:
    """Rule: NaN in gives NaN out for that point only; finite neighbours convert as alone."""
    lon = np.array([111.29, math.nan, 87.62, 111.29, math.inf])
    lat = np.array([30.70, 30.70, math.nan, 30.70, 30.0])
    out_lon, out_lat = convert(lon, lat)
    assert np.isnan(out_lon[1]) and np.isnan(out_lat[2])
    alone_lon, alone_lat = convert(lon[:1], lat[:1])
    assert (out_lon[0], out_lat[0]) == (alone_lon[0], alone_lat[0]) == (out_lon[3], out_lat[3])
    assert not np.isfinite(out_lon[4])


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_conversions_keep_shape_and_accept_scalars(convert: Transform) -> None:
    """Rule: outputs have the inputs' (broadcast) shape; plain floats are accepted."""
    grid_lon, grid_lat = np.meshgrid(np.linspace(100, 120, 4), np.linspace(20, 40, 3))
    out_lon, out_lat = convert(grid_lon, grid_lat)
    assert out_lon.shape == out_lat.shape == (3, 4)
    s_lon, s_lat = convert(111.29, 30.70)
    assert s_lon.shape == () and np.isfinite(s_lat)


def test_empty_input_gives_empty_output() -> None:
    """Rule: zero points in, zero points out."""
    out_lon, out_lat = crs.gcj02_to_wgs84(np.array([]), np.array([]))
    assert out_lon.size == out_lat.size == 0


# --- to_wgs84 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "encode"),
    [
        pytest.param(CRS.WGS84, None, id="wgs84-unchanged"),
        pytest.param(CRS.CGCS2000, None, id="cgcs2000-treated-as-wgs84"),
        pytest.param(CRS.GCJ02, crs.wgs84_to_gcj02, id="gcj02-inverted-exactly"),
        pytest.param(CRS.BD09, crs.wgs84_to_bd09, id="bd09-inverted-exactly"),
        pytest.param("EPSG:4490", None, id="name-is-parsed"),
        pytest.param("gcj-02", crs.wgs84_to_gcj02, id="gcj-name-is-parsed"),
    ],
)
def test_to_wgs84_dispatches_on_the_declared_system(system: CRS | str, encode: Transform | None) -> None:
    """Rule: to_wgs84 returns WGS84 for every supported system, CGCS2000 taken as WGS84."""
    lon, lat = np.array([111.29, 114.30]), np.array([30.70, 30.59])
    src = (lon, lat) if encode is None else encode(lon, lat)
    out_lon, out_lat = crs.to_wgs84(src[0], src[1], system)
    assert out_lon.dtype == np.float64
    assert np.all(haversine_m(lon, lat, out_lon, out_lat) < ROUND_TRIP_LIMIT_M)


def test_to_wgs84_refuses_an_undeclared_system() -> None:
    """Rule: converting without a known system raises instead of passing points through."""
    with pytest.raises(UnknownCRSError):
        crs.to_wgs84(np.array([111.29]), np.array([30.7]), "")
