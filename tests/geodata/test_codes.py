"""geodata.codes: the five-level chain read from 12-digit division and 15-digit cell codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geodata.codes import (
    CodeError,
    Level,
    ancestor,
    chain,
    division_level,
    from_gb2260,
    from_town_code,
    gb2260,
    is_cell_code,
    is_division_code,
    level_of,
    own_prefix,
    parent,
    subtree_like,
    within,
)

PROVINCE = "420000000000"
CITY = "420500000000"
COUNTY = "420502000000"
TOWN = "420502001000"
COMMUNITY = "420502001001"
CELL = "420502001001003"


@pytest.mark.parametrize(
    ("code", "level"),
    [
        pytest.param(PROVINCE, Level.PROVINCE, id="ten-trailing-zeros-is-a-province"),
        pytest.param(CITY, Level.CITY, id="eight-trailing-zeros-is-a-city"),
        pytest.param(COUNTY, Level.COUNTY, id="six-trailing-zeros-is-a-county"),
        pytest.param(TOWN, Level.TOWN, id="three-trailing-zeros-is-a-town"),
        pytest.param(COMMUNITY, Level.COMMUNITY, id="no-trailing-zero-group-is-a-community"),
        pytest.param("110101000000", Level.COUNTY, id="municipal-district-is-a-county"),
        pytest.param("429004000000", Level.COUNTY, id="province-administered-county-is-a-county"),
        pytest.param("460400000000", Level.CITY, id="city-without-counties-is-a-city"),
    ],
)
def test_division_level_is_read_from_trailing_zero_groups(code: str, level: Level) -> None:
    """Rule: the level of a division code is the last non-zero group of PP CC DD TTT VVV."""
    assert division_level(code) == level


@pytest.mark.parametrize(
    ("code", "level", "expected"),
    [
        pytest.param(CELL, Level.CELL, CELL, id="a-cell-is-its-own-cell-ancestor"),
        pytest.param(CELL, Level.COMMUNITY, COMMUNITY, id="cell-community-is-its-first-12-digits"),
        pytest.param(CELL, Level.TOWN, TOWN, id="cell-town-keeps-9-digits"),
        pytest.param(CELL, Level.COUNTY, COUNTY, id="cell-county-keeps-6-digits"),
        pytest.param(CELL, Level.CITY, CITY, id="cell-city-keeps-4-digits"),
        pytest.param(CELL, Level.PROVINCE, PROVINCE, id="cell-province-keeps-2-digits"),
        pytest.param(COUNTY, Level.COUNTY, COUNTY, id="a-division-is-its-own-ancestor-at-its-level"),
        pytest.param(TOWN, Level.CITY, CITY, id="town-city"),
        pytest.param("110101000000", Level.CITY, "110100000000", id="municipal-district-city-is-code-xx0100"),
    ],
)
def test_ancestor_keeps_the_prefix_of_the_level(code: str, level: Level, expected: str) -> None:
    """Rule: the ancestor at a level is the code's prefix for that level padded with zeros."""
    assert ancestor(code, level) == expected


def test_chain_of_a_cell_lists_every_level_from_the_province() -> None:
    """Rule: a cell's escalation chain is read from its code's prefixes, province to cell."""
    assert chain(CELL) == {
        Level.PROVINCE: PROVINCE,
        Level.CITY: CITY,
        Level.COUNTY: COUNTY,
        Level.TOWN: TOWN,
        Level.COMMUNITY: COMMUNITY,
        Level.CELL: CELL,
    }


@pytest.mark.parametrize(
    ("code", "levels"),
    [
        pytest.param(PROVINCE, [Level.PROVINCE], id="province-chain-is-itself"),
        pytest.param(COUNTY, [Level.PROVINCE, Level.CITY, Level.COUNTY], id="county-chain-stops-at-county"),
    ],
)
def test_chain_stops_at_the_code_own_level(code: str, levels: list[Level]) -> None:
    """Rule: a chain has no entries below the code's own level."""
    assert list(chain(code)) == levels
    assert chain(code)[levels[-1]] == code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(PROVINCE, None, id="a-province-has-no-parent"),
        pytest.param(CITY, PROVINCE, id="city-parent-is-province"),
        pytest.param(COUNTY, CITY, id="county-parent-is-city"),
        pytest.param(TOWN, COUNTY, id="town-parent-is-county"),
        pytest.param(COMMUNITY, TOWN, id="community-parent-is-town"),
        pytest.param(CELL, COMMUNITY, id="cell-parent-is-community"),
    ],
)
def test_parent_is_one_level_up(code: str, expected: str | None) -> None:
    """Rule: parent() is the code of the level directly above, read from the code alone."""
    assert parent(code) == expected


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        pytest.param(division_level, "4205", id="level-of-short-code"),
        pytest.param(division_level, "42050200100A", id="level-of-non-digit-code"),
        pytest.param(division_level, CELL, id="level-of-a-cell-code-is-not-a-division-level"),
        pytest.param(lambda c: ancestor(c, Level.CITY), "abc", id="ancestor-of-garbage"),
        pytest.param(lambda c: ancestor(c, Level.TOWN), COUNTY, id="no-town-above-a-county"),
        pytest.param(lambda c: ancestor(c, Level.CELL), COMMUNITY, id="only-cells-have-a-cell-ancestor"),
        pytest.param(chain, "42050200100", id="chain-of-11-digits"),
        pytest.param(parent, "4205020010010031", id="parent-of-16-digits"),
        pytest.param(from_gb2260, "42050", id="gb2260-of-5-digits"),
        pytest.param(from_gb2260, "420502000000", id="gb2260-of-12-digits"),
        pytest.param(from_town_code, "42050200", id="town-code-of-8-digits"),
        pytest.param(from_town_code, "42050200x", id="town-code-with-a-letter"),
    ],
)
def test_malformed_codes_raise_code_error(call: object, arg: str) -> None:
    """Rule: a malformed code is refused with CodeError (a ValueError), never padded or guessed."""
    assert callable(call)
    with pytest.raises(CodeError):
        call(arg)
    assert issubclass(CodeError, ValueError)


@pytest.mark.parametrize(
    ("code", "division", "cell"),
    [
        pytest.param(COUNTY, True, False, id="12-digits-is-a-division-code"),
        pytest.param(CELL, False, True, id="15-digits-is-a-cell-code"),
        pytest.param("42050200100", False, False, id="11-digits-is-neither"),
        pytest.param("４２０５０２００１００１", False, False, id="full-width-digits-are-neither"),
    ],
)
def test_code_shape_predicates(code: str, division: bool, cell: bool) -> None:
    """Rule: division codes are exactly 12 ASCII digits, cell codes exactly 15."""
    assert is_division_code(code) is division
    assert is_cell_code(code) is cell


@pytest.mark.parametrize(
    ("func", "arg", "expected"),
    [
        pytest.param(from_gb2260, "420502", COUNTY, id="gb2260-county-padded-to-12"),
        pytest.param(from_gb2260, "420500", CITY, id="gb2260-city-padded-to-12"),
        pytest.param(from_town_code, "420502001", TOWN, id="town-9-digits-padded-to-12"),
        pytest.param(gb2260, COMMUNITY, "420502", id="gb2260-is-the-first-six-digits"),
    ],
)
def test_code_conversions(func: object, arg: str, expected: str) -> None:
    """Rule: GB/T 2260 (6 digits) and MCA town (9 digits) codes pad with zeros to 12 digits."""
    assert callable(func)
    assert func(arg) == expected


def test_levels_are_ordered_top_down_with_chinese_labels() -> None:
    """Rule: Level orders province above cell and names each level in Chinese."""
    assert list(Level) == sorted(Level)
    assert Level.PROVINCE < Level.COUNTY < Level.CELL
    assert [lvl.label_zh for lvl in Level] == ["省", "市", "县/区", "乡镇/街道", "社区/村", "网格"]


_codes = st.tuples(
    st.integers(11, 82), st.integers(1, 99), st.integers(1, 99), st.integers(1, 999), st.integers(1, 999)
).map(lambda t: f"{t[0]:02d}{t[1]:02d}{t[2]:02d}{t[3]:03d}{t[4]:03d}")


@given(code=_codes, seq=st.integers(1, 999))
def test_every_chain_entry_is_at_its_level_and_a_prefix_of_the_cell(code: str, seq: int) -> None:
    """Rule: for codes with non-zero groups, chain(cell)[L] is at level L and parent() walks the chain."""
    cell = f"{code}{seq:03d}"
    links = chain(cell)
    assert list(links) == list(Level)
    prefix = {Level.PROVINCE: 2, Level.CITY: 4, Level.COUNTY: 6, Level.TOWN: 9, Level.COMMUNITY: 12}
    for level, n in prefix.items():
        assert links[level] == cell[:n] + "0" * (12 - n)
        assert division_level(links[level]) == level
    walked = [cell]
    while (up := parent(walked[-1])) is not None:
        walked.append(up)
    assert walked == [links[lvl] for lvl in reversed(Level)]


# 荆州 421000000000 and a town whose own code ends in 0: stripping zeros would give ``421`` (also
# 黄冈 4211, 咸宁 4212, 随州 4213) and ``42100201`` (also the towns 011–019 beside it).
@pytest.mark.parametrize(
    ("scope", "code", "inside"),
    [
        pytest.param("421000000000", "421002010001", True, id="荆州 holds its own community"),
        pytest.param("421000000000", "421102001001001", False, id="荆州 does not hold 黄冈's cells"),
        pytest.param("421000000000", "421202000000", False, id="荆州 does not hold 咸宁's counties"),
        pytest.param("421000000000", "421300000000", False, id="荆州 does not hold 随州"),
        pytest.param("421002010000", "421002010003001", True, id="a town ending in 0 holds its cells"),
        pytest.param("421002010000", "421002011001001", False, id="a town ending in 0 not town 011"),
        pytest.param("421002010000", "421002019000", False, id="a town ending in 0 not town 019"),
        pytest.param("420502001001003", "420502001001003", True, id="a cell is its own scope"),
        pytest.param("420502001001003", "420502001001004", False, id="a cell holds no other cell"),
    ],
)
def test_a_scope_holds_exactly_its_subtree(scope: str, code: str, inside: bool) -> None:
    assert within(code, scope) is inside
    assert code.startswith(own_prefix(scope)) is inside
    assert subtree_like(scope) == own_prefix(scope) + "%"


@pytest.mark.parametrize(
    ("code", "prefix", "level"),
    [
        pytest.param("421000000000", "4210", Level.CITY, id="荆州 keeps its trailing 0"),
        pytest.param("421002010000", "421002010", Level.TOWN, id="a town keeps its trailing 0"),
        pytest.param("420000000000", "42", Level.PROVINCE, id="province"),
        pytest.param("420502001001", "420502001001", Level.COMMUNITY, id="community"),
        pytest.param("420502001001003", "420502001001003", Level.CELL, id="cell"),
    ],
)
def test_own_prefix_and_level_of(code: str, prefix: str, level: Level) -> None:
    assert own_prefix(code) == prefix
    assert level_of(code) is level


def test_level_of_refuses_what_is_not_a_code() -> None:
    with pytest.raises(CodeError, match="12-digit division or 15-digit cell"):
        level_of("4205")
