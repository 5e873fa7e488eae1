"""Benchmark: exact GCJ-02 -> WGS84 inverse, points per CPU-second, against baselines.

Run from the repository root: ``.venv/bin/python -m bench.bench_crs [--points N] [--loop-points N]``

Workload (deterministic): ``--points`` WGS84 points uniform over mainland China's extent
(73.5-135 E, 18-53.5 N), converted to GCJ-02 with the published forward formula; the benchmark
converts them back.

Measured in this process (CPU time, ``time.process_time``):

* ours: ``gcj02_to_wgs84`` (exact: iterates until the forward image is within 1e-9°), and for
  reference ``bd09_to_wgs84`` (two exact inverses) and ``wgs84_to_gcj02`` (one forward pass);
* baseline 1: ``gcj02_to_wgs84_approx``, the common one-step inverse, vectorised: faster, but
  metres off (its worst error is printed next to ours);
* baseline 2: the same exact iteration in pure Python, one point at a time (``math``), on
  ``--loop-points`` points: what a per-record loop in a connector would cost.

Issue target: exact inverse >= 1,000,000 points per CPU-second.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from numpy.typing import NDArray

from bench._util import peak_rss_mb, timed, verdict
from geodata import crs

TARGET_RATE = 1_000_000
_A, _EE = 6378245.0, 0.00669342162296594323


def _py_offset(lon: float, lat: float) -> tuple[float, float]:
    """The published GCJ-02 offset for one point, in plain Python (the loop baseline)."""
    x, y, pi = lon - 105.0, lat - 35.0, math.pi
    t_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    t_lat += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    t_lat += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    t_lat += (160.0 * math.sin(y / 12.0 * pi) + 320 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    t_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    t_lon += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    t_lon += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    t_lon += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1 - _EE * math.sin(rad) ** 2
    d_lat = (t_lat * 180.0) / ((_A * (1 - _EE)) / (magic * math.sqrt(magic)) * pi)
    d_lon = (t_lon * 180.0) / (_A / math.sqrt(magic) * math.cos(rad) * pi)
    return d_lon, d_lat


def py_gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """Exact inverse for one point in plain Python: the same fixed-point iteration and tolerance."""
    x, y = lon, lat
    for _ in range(crs.MAX_ITERATIONS):
        d_lon, d_lat = _py_offset(x, y)
        r_lon, r_lat = x + d_lon - lon, y + d_lat - lat
        if abs(r_lon) < crs.TOLERANCE_DEG and abs(r_lat) < crs.TOLERANCE_DEG:
            break
        x, y = x - r_lon, y - r_lat
    return x, y


def max_error_m(lon: NDArray[np.float64], lat: NDArray[np.float64], lon2: NDArray[np.float64],
                lat2: NDArray[np.float64]) -> float:  # fmt: skip
    """Largest haversine distance between two point arrays, in metres."""
    p1, p2 = np.radians(lat), np.radians(lat2)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon) / 2) ** 2
    return float(2 * 6_371_008.8 * np.arcsin(np.sqrt(h)).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--loop-points", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    lon, lat = rng.uniform(73.5, 135.0, args.points), rng.uniform(18.0, 53.5, args.points)
    g_lon, g_lat = crs.wgs84_to_gcj02(lon, lat)
    n = lon.size
    print(f"workload: {n:,} points over mainland China, GCJ-02 -> WGS84")

    (w_lon, w_lat), t_exact = timed(lambda: crs.gcj02_to_wgs84(g_lon, g_lat))
    print(
        t_exact.line("ours: exact", n) + f"   max error {max_error_m(lon, lat, w_lon, w_lat) * 1000:.3f} mm"
    )
    _, t_fwd = timed(lambda: crs.wgs84_to_gcj02(lon, lat))
    print(t_fwd.line("forward (ref)", n))
    b_lon, b_lat = crs.wgs84_to_bd09(lon, lat)
    (bw_lon, bw_lat), t_bd = timed(lambda: crs.bd09_to_wgs84(b_lon, b_lat))
    print(
        t_bd.line("bd09 -> wgs84", n) + f"   max error {max_error_m(lon, lat, bw_lon, bw_lat) * 1000:.3f} mm"
    )

    (a_lon, a_lat), t_approx = timed(lambda: crs.gcj02_to_wgs84_approx(g_lon, g_lat))
    print(t_approx.line("one-step approx", n) + f"   max error {max_error_m(lon, lat, a_lon, a_lat):.2f} m")
    m = min(args.loop_points, n)
    pairs = list(zip(g_lon[:m].tolist(), g_lat[:m].tolist(), strict=True))
    loop, t_loop = timed(lambda: [py_gcj02_to_wgs84(x, y) for x, y in pairs])
    loop_xy = np.array(loop)
    print(
        t_loop.line("pure-Python loop", m)
        + f"   max error {max_error_m(lon[:m], lat[:m], *loop_xy.T) * 1000:.3f} mm"
    )

    rate = n / t_exact.cpu_s
    ok = verdict(rate >= TARGET_RATE)
    print(f"exact inverse points per CPU-second: {rate:,.0f}  (target >= {TARGET_RATE:,}: {ok})")
    print(f"ratio vs pure-Python loop (per point, CPU): {rate / (m / t_loop.cpu_s):.1f}x")
    gain = max_error_m(lon, lat, a_lon, a_lat) / max(max_error_m(lon, lat, w_lon, w_lat), 1e-12)
    print(
        f"vs one-step approx: {t_exact.cpu_s / t_approx.cpu_s:.2f}x the CPU, {gain:,.0f}x smaller max error"
    )
    print(f"peak RSS: {peak_rss_mb():,.0f} MiB")


if __name__ == "__main__":
    main()
