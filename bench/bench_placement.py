"""Benchmark: CellIndex.place, points per CPU-second and peak memory, against baselines.

Run from the repository root: ``.venv/bin/python -m bench.bench_placement [--points N] [--cells N]``

Workload (deterministic, numpy only): ``--cells`` grid cells over a city-sized area around
Yichang (~0.6° x 0.5°, about 57 km x 55 km). The cells tile the area exactly: a jittered lattice
whose every edge has a vertex pushed sideways (non-convex octagons sharing edges), and
``--detailed`` of them (2% by default) densified to about 2,000 vertices each, like a cell that
follows a river bank. ``--points`` points uniform over the area plus a 2% margin (so some are
outside), and 0.1% NaN.

Measured in this process, ours first so its peak RSS is not polluted by the baselines:

* ours: ``CellIndex(codes, cells, outline=AREA box)`` build, then ``place(lon, lat)`` (arrays in,
  answer out: cell per point by the smallest-code rule, method, reason);
* baseline 1: ``geopandas.sjoin(points_gdf, cells_gdf, predicate="within")``, timed with and
  without building the points GeoDataFrame from the arrays. It does less than ours: no tie-break
  (boundary points are dropped by "within" or duplicated), no reasons for unmapped points;
* baseline 2: ``shapely.STRtree(cells).query(points, predicate="intersects")`` (the textbook
  bulk query: one Point object per point, GEOS predicate per candidate pair), plus a numpy
  tie-break.

Issue targets: >= 1.5x sjoin, >= 500,000 points per CPU-second, peak RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import shapely
from numpy.typing import NDArray

from bench._util import Timing, peak_rss_mb, timed, verdict
from geodata.cellindex import CellIndex, Placement

TARGET_RATIO = 1.5
TARGET_RATE = 500_000
TARGET_RSS_MB = 1024
AREA = (111.0, 30.4, 111.6, 30.9)  # lon/lat box around Yichang's centre


def make_cells(n_cells: int, n_detailed: int, seed: int) -> tuple[list[str], NDArray[np.object_]]:
    """``n_cells`` (rounded to a lattice) non-convex cells tiling AREA, some of them detailed."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = AREA
    ny = max(1, round(math.sqrt(n_cells * (y1 - y0) / (x1 - x0))))
    nx = max(1, round(n_cells / ny))
    dx, dy = (x1 - x0) / nx, (y1 - y0) / ny
    gx, gy = np.meshgrid(x0 + dx * np.arange(nx + 1), y0 + dy * np.arange(ny + 1))
    gx[1:-1, 1:-1] += rng.uniform(-0.25, 0.25, (ny - 1, nx - 1)) * dx if nx > 1 and ny > 1 else 0.0
    gy[1:-1, 1:-1] += rng.uniform(-0.25, 0.25, (ny - 1, nx - 1)) * dy if nx > 1 and ny > 1 else 0.0
    corner = np.stack([gx, gy], axis=-1)  # (ny+1, nx+1, 2)
    # One shared, sideways-pushed vertex in the middle of every lattice edge.
    h_mid = (corner[:, :-1] + corner[:, 1:]) / 2 + np.stack(
        [np.zeros((ny + 1, nx)), rng.uniform(-0.15, 0.15, (ny + 1, nx)) * dy], axis=-1
    )
    v_mid = (corner[:-1] + corner[1:]) / 2 + np.stack(
        [rng.uniform(-0.15, 0.15, (ny, nx + 1)) * dx, np.zeros((ny, nx + 1))], axis=-1
    )
    ring = np.stack(
        [
            corner[:-1, :-1], h_mid[:-1], corner[:-1, 1:], v_mid[:, 1:],
            corner[1:, 1:], h_mid[1:], corner[1:, :-1], v_mid[:, :-1],
        ],
        axis=2,
    ).reshape(ny * nx, 8, 2)  # fmt: skip
    polys = shapely.polygons(ring)
    detailed = rng.choice(len(polys), size=min(n_detailed, len(polys)), replace=False)
    perimeter = shapely.length(polys[detailed])
    polys[detailed] = shapely.segmentize(polys[detailed], perimeter / 2000.0)
    codes = np.array([f"420506{i // 1000:06d}{i % 1000:03d}" for i in range(len(polys))])
    order = rng.permutation(len(polys))  # cells arrive in no particular order
    return list(codes[order]), polys[order]


def make_points(n: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed + 1)
    x0, y0, x1, y1 = AREA
    mx, my = 0.02 * (x1 - x0), 0.02 * (y1 - y0)
    lon = rng.uniform(x0 - mx, x1 + mx, n)
    lat = rng.uniform(y0 - my, y1 + my, n)
    lon[rng.choice(n, size=n // 1000, replace=False)] = np.nan
    return lon, lat


def run_sjoin(
    codes: list[str], polys: NDArray[np.object_], lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[Timing, Timing, NDArray[np.object_]]:
    """sjoin timings (with and without building the points frame) and its code per point."""
    import geopandas as gpd

    cells = gpd.GeoDataFrame({"code": codes}, geometry=polys, crs="EPSG:4326")

    def frame_and_join() -> gpd.GeoDataFrame:
        points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
        return gpd.sjoin(points, cells, predicate="within")

    _, with_frame = timed(frame_and_join)
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    joined, join_only = timed(lambda: gpd.sjoin(points, cells, predicate="within"))
    code = np.full(lon.size, None, dtype=object)
    code[joined.index.to_numpy()] = joined["code"].to_numpy()
    return with_frame, join_only, code


def run_strtree(polys: NDArray[np.object_], lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Timing:
    """The textbook bulk query: tree over cells, Point objects queried with "intersects"."""
    tree = shapely.STRtree(polys)

    def query() -> NDArray[np.int64]:
        pairs = tree.query(shapely.points(lon, lat), predicate="intersects")
        best = np.full(lon.size, np.iinfo(np.int64).max)
        np.minimum.at(best, pairs[0], pairs[1])
        return best

    _, timing = timed(query)
    return timing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=50_000)
    parser.add_argument("--detailed", type=int, default=None, help="detailed cells (default: 2%% of cells)")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--no-baselines", action="store_true", help="measure ours only")
    args = parser.parse_args(argv)
    n_detailed = args.detailed if args.detailed is not None else args.cells // 50

    (codes, polys), t_gen = timed(lambda: make_cells(args.cells, n_detailed, args.seed))
    lon, lat = make_points(args.points, args.seed)
    vertices = int(shapely.get_num_coordinates(polys).sum())
    print(f"workload: {len(codes):,} cells ({n_detailed:,} detailed, {vertices:,} vertices), "
          f"{lon.size:,} points; generated in {t_gen.cpu_s:.2f} CPU-s")  # fmt: skip
    print(f"  RSS before the index: {peak_rss_mb():,.0f} MiB")

    index, t_build = timed(lambda: CellIndex(codes, list(polys), outline=shapely.box(*AREA)))
    placement: Placement
    placement, t_ours = timed(lambda: index.place(lon, lat))
    rss = peak_rss_mb()
    ours_rate = lon.size / t_ours.cpu_s
    print(t_build.line("ours: build"))
    print(t_ours.line("ours: place", lon.size))
    print(f"  reasons: {placement.reason_counts()}")
    print(f"  peak RSS after ours (data + index + placement): {rss:,.0f} MiB  "
          f"(target < {TARGET_RSS_MB} MiB: {verdict(rss < TARGET_RSS_MB)})")  # fmt: skip
    print(f"  points per CPU-second: {ours_rate:,.0f}  (target >= {TARGET_RATE:,}: "
          f"{verdict(ours_rate >= TARGET_RATE)})")  # fmt: skip
    if args.no_baselines:
        return

    with_frame, join_only, sjoin_code = run_sjoin(codes, polys, lon, lat)
    print(with_frame.line("sjoin + frame", lon.size))
    print(join_only.line("sjoin only", lon.size))
    t_tree = run_strtree(polys, lon, lat)
    print(t_tree.line("STRtree query", lon.size))
    ratio = with_frame.cpu_s / t_ours.cpu_s
    print(f"ratio vs sjoin, arrays to answer (CPU): {ratio:.2f}x  "
          f"(target >= {TARGET_RATIO}x: {verdict(ratio >= TARGET_RATIO)})")  # fmt: skip
    print(f"ratio vs sjoin alone, frame prebuilt (CPU): {join_only.cpu_s / t_ours.cpu_s:.2f}x")
    print(f"ratio vs STRtree bulk query (CPU): {t_tree.cpu_s / t_ours.cpu_s:.2f}x")
    ours_set, sjoin_set = placement.cell_code.astype(bool), sjoin_code.astype(bool)  # None is falsy
    both = ours_set & sjoin_set
    differ = int((sjoin_code[both] != placement.cell_code[both]).sum())
    print(f"agreement: {int(both.sum()):,} points placed by both, {differ} in different cells; "
          f"placed only by ours: {int((ours_set & ~sjoin_set).sum())}, only by sjoin: "
          f"{int((sjoin_set & ~ours_set).sum())}")  # fmt: skip
    print(f"peak RSS at the end (incl. baselines): {peak_rss_mb():,.0f} MiB")


if __name__ == "__main__":
    main()
