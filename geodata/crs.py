"""Coordinate systems: names, and conversion of lon/lat arrays to WGS84.

Municipal sources store points in one of four systems:

* CGCS2000 (EPSG:4490), the national datum, and WGS84 (EPSG:4326). They differ by a few
  centimetres, far below a grid cell's size or any source's accuracy, so this module treats them
  as the same system and does not transform between them.
* GCJ-02 ("Mars" coordinates, Amap/Tencent): WGS84 plus a published, deliberately non-linear
  offset of a few hundred metres, applied only inside a bounding box around China.
* BD-09 (Baidu): GCJ-02 plus a second small published distortion, applied everywhere.

PROJ does not support GCJ-02 or BD-09, so the published forward formulas live here and the
inverses are computed *exactly*: a fixed-point iteration ``x <- x - (forward(x) - input)`` until
``|forward(x) - input| < 1e-9`` degrees (about 0.1 mm) in both lon and lat. The forward offset's
derivative is about 1e-3 (GCJ-02) and 2e-2 (BD-09), so the iteration contracts by that factor per
step and needs three to five steps. Everything is vectorised over numpy arrays and processed in
cache-sized blocks; the only Python loops are over blocks and iteration steps, never over points.

Non-finite inputs (NaN, inf) come out unchanged (NaN stays NaN); nothing raises for them. Points
outside :data:`CHINA_BBOX` get no GCJ-02 offset, as in the published algorithm. Within about a
kilometre of that box's edge (open sea or foreign territory: China's own extremes are 73.5-134.8 E,
3.9-53.6 N) the published forward jumps, so it is neither continuous nor one-to-one there. The
inverse then returns *a* point that maps forward to the input within tolerance, which may not be
the one the source started from, or NaN if the iteration cannot reach the tolerance; it never
returns a point that fails the tolerance.

Converting a point is the easy half: deciding *which* system a source uses is the source's job.
:func:`parse_crs` accepts only well-known spellings and raises :class:`UnknownCRSError` for
anything else, including a missing name; it never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
LonLat = tuple[FloatArray, FloatArray]


class CRS(StrEnum):
    """The coordinate systems sources may declare. All are longitude/latitude in degrees."""

    CGCS2000 = "cgcs2000"
    WGS84 = "wgs84"
    GCJ02 = "gcj02"
    BD09 = "bd09"


class UnknownCRSError(ValueError):
    """A coordinate-system name that is missing or not one we know. Never guessed."""


# Spellings after normalisation (casefold, spaces/underscores/hyphens removed).
# "bd09mc" (Baidu Mercator metres) is deliberately absent: it is not lon/lat.
_CRS_ALIASES: Final[Mapping[str, CRS]] = {
    "cgcs2000": CRS.CGCS2000,
    "epsg:4490": CRS.CGCS2000,
    "4490": CRS.CGCS2000,
    "wgs84": CRS.WGS84,
    "epsg:4326": CRS.WGS84,
    "4326": CRS.WGS84,
    "crs84": CRS.WGS84,
    "ogc:crs84": CRS.WGS84,
    "gcj02": CRS.GCJ02,
    "mars": CRS.GCJ02,
    "bd09": CRS.BD09,
    "bd09ll": CRS.BD09,
    "baidu": CRS.BD09,
}


def parse_crs(name: str | None) -> CRS:
    """The :class:`CRS` a source declared, from a common spelling, case-insensitively.

    Accepts e.g. ``"EPSG:4490"``, ``"4490"``, ``"CGCS2000"``, ``"EPSG:4326"``, ``"WGS 84"``,
    ``"gcj-02"``, ``"mars"``, ``"BD-09"``, ``"baidu"``. ``None``, blank or unknown names raise
    :class:`UnknownCRSError`: a point whose system is not declared is not placed.
    """
    if name is None or not name.strip():
        raise UnknownCRSError("no coordinate system declared; refusing to guess one")
    key = name.strip().casefold()
    for sep in (" ", "_", "-"):
        key = key.replace(sep, "")
    try:
        return _CRS_ALIASES[key]
    except KeyError:
        known = ", ".join(sorted(_CRS_ALIASES))
        raise UnknownCRSError(f"unknown coordinate system {name!r}; known spellings: {known}") from None


class BBox(NamedTuple):
    """A lon/lat box, inclusive on all sides."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


CHINA_BBOX: Final = BBox(min_lon=72.004, min_lat=0.8293, max_lon=137.8347, max_lat=55.8271)
"""The box the published GCJ-02 algorithm uses to decide whether to apply its offset."""
china_bbox: Final = CHINA_BBOX

# Krasovsky 1940 ellipsoid, as used by the published GCJ-02 algorithm.
_A: Final = 6378245.0
_EE: Final = 0.00669342162296594323
_X_PI: Final = math.pi * 3000.0 / 180.0
_DEG: Final = math.pi / 180.0

TOLERANCE_DEG: Final = 1e-9
"""Inverse conversions stop when the forward image is this close to the input (about 0.1 mm)."""
MAX_ITERATIONS: Final = 30
_BLOCK: Final = 32_768  # points per block: keeps the ~40 temporaries of a block in L2/L3 cache


def _as_arrays(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Float64 copies of ``lon`` and ``lat`` broadcast to one shape."""
    x, y = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)


def in_china(lon: ArrayLike, lat: ArrayLike) -> BoolArray:
    """True where the point lies in :data:`CHINA_BBOX` (inclusive); False for NaN."""
    x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    b = CHINA_BBOX
    result: BoolArray = (x >= b.min_lon) & (x <= b.max_lon) & (y >= b.min_lat) & (y <= b.max_lat)
    return result


# --- GCJ-02 -------------------------------------------------------------------------------------


def _multiple_angle_sines(t: FloatArray) -> tuple[FloatArray, ...]:
    """``sin`` of 2t, 5t, 20t, 60t, 120t and 360t from one ``sin`` and one ``cos`` of ``t``.

    The published offset needs sines of x·π/30, x·π/12, x·π/3, x·π, 2x·π and 6x·π; with
    t = x·π/60 those are the multiples above. Double/triple-angle identities replace ten
    transcendental calls by a few multiplications; the error they add is below 1e-13 in the
    sines, i.e. below 1e-17 degrees in the offset.
    """
    s, c = np.sin(t), np.cos(t)
    s2 = 2.0 * s * c
    c2 = 1.0 - 2.0 * s * s
    s4 = 2.0 * s2 * c2
    c4 = 1.0 - 2.0 * s2 * s2
    s5 = s4 * c + c4 * s
    c5 = c4 * c - s4 * s
    s10 = 2.0 * s5 * c5
    c10 = 1.0 - 2.0 * s5 * s5
    s20 = 2.0 * s10 * c10
    c20 = 1.0 - 2.0 * s10 * s10
    s60 = s20 * (3.0 - 4.0 * s20 * s20)
    c60 = c20 * (4.0 * c20 * c20 - 3.0)
    s120 = 2.0 * s60 * c60
    s360 = s120 * (3.0 - 4.0 * s120 * s120)
    return s2, s5, s20, s60, s120, s360


def _gcj02_offset(lon: FloatArray, lat: FloatArray) -> LonLat:
    """The published GCJ-02 offset (degrees) at WGS84 points, ignoring the China box."""
    x = lon - 105.0
    y = lat - 35.0
    sx2, sx5, sx20, sx60, sx120, sx360 = _multiple_angle_sines(x * (math.pi / 60.0))
    sy2, sy5, sy20, sy60, _, _ = _multiple_angle_sines(y * (math.pi / 60.0))
    shared = (20.0 * sx360 + 20.0 * sx120) * (2.0 / 3.0) + 0.1 * x * y
    root = np.sqrt(np.abs(x))
    t_lat = (
        -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.2 * root + shared
        + (20.0 * sy60 + 40.0 * sy20 + 160.0 * sy5 + 320.0 * sy2) * (2.0 / 3.0)
    )  # fmt: skip
    t_lon = (
        300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * root + shared
        + (20.0 * sx60 + 40.0 * sx20 + 150.0 * sx5 + 300.0 * sx2) * (2.0 / 3.0)
    )  # fmt: skip
    sin_lat = np.sin(lat * _DEG)
    magic = 1.0 - _EE * sin_lat * sin_lat
    sqrt_magic = np.sqrt(magic)
    cos_lat = np.sqrt(1.0 - sin_lat * sin_lat)  # latitude is within ±90°, so cos ≥ 0
    d_lat = t_lat * (180.0 / (math.pi * _A * (1.0 - _EE))) * (magic * sqrt_magic)
    d_lon = t_lon * (180.0 / (math.pi * _A)) * sqrt_magic / cos_lat
    return d_lon, d_lat


def _wgs84_to_gcj02_block(lon: FloatArray, lat: FloatArray) -> LonLat:
    """GCJ-02 of one block of WGS84 points: offset applied inside the China box only."""
    d_lon, d_lat = _gcj02_offset(lon, lat)
    inside = in_china(lon, lat)
    return lon + np.where(inside, d_lon, 0.0), lat + np.where(inside, d_lat, 0.0)


def _gcj02_to_wgs84_approx_block(lon: FloatArray, lat: FloatArray) -> LonLat:
    """One step back: subtract the offset evaluated at the GCJ-02 point (metres off)."""
    d_lon, d_lat = _gcj02_offset(lon, lat)
    inside = in_china(lon, lat)
    return lon - np.where(inside, d_lon, 0.0), lat - np.where(inside, d_lat, 0.0)


# --- BD-09 --------------------------------------------------------------------------------------


def _gcj02_to_bd09_block(lon: FloatArray, lat: FloatArray) -> LonLat:
    """The published BD-09 distortion of GCJ-02 points."""
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _bd09_to_gcj02_approx_block(lon: FloatArray, lat: FloatArray) -> LonLat:
    """The published one-step BD-09 -> GCJ-02 formula (about a metre off); the iteration's start."""
    x = lon - 0.0065
    y = lat - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


# --- exact inverse ------------------------------------------------------------------------------

_Transform = Callable[[FloatArray, FloatArray], LonLat]


def _invert_block(forward: _Transform, start: _Transform, lon: FloatArray, lat: FloatArray) -> LonLat:
    """Solve ``forward(x) == (lon, lat)`` for one block by fixed-point iteration.

    Only points not yet within :data:`TOLERANCE_DEG` are carried into the next step, so the
    arrays shrink as points converge. Non-finite inputs pass through unchanged; points that do not
    converge within :data:`MAX_ITERATIONS` steps (only possible at the China box's edge) are NaN.
    """
    out_lon, out_lat = lon.copy(), lat.copy()
    active = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
    g_lon, g_lat = lon[active], lat[active]
    x_lon, x_lat = start(g_lon, g_lat)
    for _ in range(MAX_ITERATIONS):
        f_lon, f_lat = forward(x_lon, x_lat)
        r_lon, r_lat = f_lon - g_lon, f_lat - g_lat
        done = (np.abs(r_lon) < TOLERANCE_DEG) & (np.abs(r_lat) < TOLERANCE_DEG)
        out_lon[active[done]] = x_lon[done]
        out_lat[active[done]] = x_lat[done]
        keep = ~done
        if not keep.any():
            return out_lon, out_lat
        active, g_lon, g_lat = active[keep], g_lon[keep], g_lat[keep]
        x_lon, x_lat = x_lon[keep] - r_lon[keep], x_lat[keep] - r_lat[keep]
    out_lon[active] = np.nan
    out_lat[active] = np.nan
    return out_lon, out_lat


def _blockwise(block_fn: _Transform, lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Apply ``block_fn`` to cache-sized blocks of the flattened inputs; keep the input shape."""
    x, y = _as_arrays(lon, lat)
    shape = x.shape
    fx, fy = x.ravel(), y.ravel()
    out_x = np.empty_like(fx)
    out_y = np.empty_like(fy)
    with np.errstate(invalid="ignore"):  # NaN/inf pass through by design: no warning per block
        for i in range(0, fx.size, _BLOCK):
            sl = slice(i, i + _BLOCK)
            out_x[sl], out_y[sl] = block_fn(fx[sl], fy[sl])
    return out_x.reshape(shape), out_y.reshape(shape)


def _gcj02_to_wgs84_block(lon: FloatArray, lat: FloatArray) -> LonLat:
    return _invert_block(_wgs84_to_gcj02_block, _gcj02_to_wgs84_approx_block, lon, lat)


def _bd09_to_gcj02_block(lon: FloatArray, lat: FloatArray) -> LonLat:
    return _invert_block(_gcj02_to_bd09_block, _bd09_to_gcj02_approx_block, lon, lat)


# --- public conversions -------------------------------------------------------------------------


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """GCJ-02 of WGS84 points (the published forward algorithm; no offset outside China)."""
    return _blockwise(_wgs84_to_gcj02_block, lon, lat)


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """WGS84 of GCJ-02 points, exact: the forward image is within 1e-9° of the input."""
    return _blockwise(_gcj02_to_wgs84_block, lon, lat)


def gcj02_to_wgs84_approx(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """The common one-step inverse, metres off. Kept only to show in tests and benchmarks why
    :func:`gcj02_to_wgs84` iterates; do not use it for data."""
    return _blockwise(_gcj02_to_wgs84_approx_block, lon, lat)


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """BD-09 of GCJ-02 points (the published forward formula, applied everywhere)."""
    return _blockwise(_gcj02_to_bd09_block, lon, lat)


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """GCJ-02 of BD-09 points, exact: the forward image is within 1e-9° of the input."""
    return _blockwise(_bd09_to_gcj02_block, lon, lat)


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """BD-09 of WGS84 points: GCJ-02 first, then the BD-09 distortion."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """WGS84 of BD-09 points: both exact inverses in turn (forward image within ~2e-9°)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def to_wgs84(lon: ArrayLike, lat: ArrayLike, crs: CRS | str) -> LonLat:
    """WGS84 lon/lat arrays of points given in ``crs`` (a :class:`CRS` or a name for :func:`parse_crs`).

    CGCS2000 is returned unchanged: its realisation and current WGS84 agree to a few centimetres
    in China, far below any source's precision and any grid cell's size, so transforming between
    them would only add code and rounding. An unknown or missing ``crs`` raises
    :class:`UnknownCRSError`.
    """
    system = crs if isinstance(crs, CRS) else parse_crs(crs)
    if system in (CRS.WGS84, CRS.CGCS2000):
        return _as_arrays(lon, lat)
    if system is CRS.GCJ02:
        return gcj02_to_wgs84(lon, lat)
    return bd09_to_wgs84(lon, lat)
