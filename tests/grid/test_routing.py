"""Routing: the start level from the province policy, the owner from the cell's chain.

The policy under test is the shipped config/policy/default.toml. Codes used throughout:
cell 420502003004001 -> community 420502003004 -> town 420502003000 -> county 420502000000
-> city 420500000000 (Yichang) -> province 420000000000 (Hubei).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kinds import CaseKind, HardshipGrade, Severity
from geodata.codes import Level, chain
from grid.cases.policy import CollectivePolicy, PolicyError, ProvincePolicy, RoutingPolicy, Rule, load_policy
from grid.cases.routing import CaseFacts, RoutingError, route

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = ROOT / "config" / "policy" / "default.toml"

CELL = "420502003004001"
COMMUNITY = "420502003004"
TOWN = "420502003000"
COUNTY = "420502000000"
CITY = "420500000000"
PROVINCE = "420000000000"
ALL_UNITS = {CELL: True, COMMUNITY: True, TOWN: True, COUNTY: True, CITY: True, PROVINCE: True}

K, Sev, G = CaseKind, Severity, HardshipGrade


@pytest.fixture(scope="module")
def policy() -> ProvincePolicy:
    return load_policy(DEFAULT_TOML)


def test_default_file_equals_built_in_defaults(policy: ProvincePolicy) -> None:
    """Rule: config/policy/default.toml and ProvincePolicy() are the same policy."""
    assert policy == ProvincePolicy()


@pytest.mark.parametrize(
    ("facts", "level", "owner", "rule", "dual"),
    [
        pytest.param(
            CaseFacts(K.WAGE_ARREARS),
            Level.COMMUNITY,
            CELL,
            "dispute_default",
            False,
            id="single wage arrears -> the cell's grid officer",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS, workers_affected=10),
            Level.COUNTY,
            COUNTY,
            "dispute_collective",
            True,
            id="10 workers with a common claim is collective -> county (Art. 7), dual-reported",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS, workers_affected=9),
            Level.COMMUNITY,
            CELL,
            "dispute_default",
            False,
            id="9 workers is not collective -> grid officer",
        ),
        pytest.param(
            CaseFacts(K.DISMISSAL, severity=Sev.EARLY_SIGN),
            Level.TOWN,
            TOWN,
            "early_sign",
            True,
            id="early sign -> one level up, dual report",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS, severity=Sev.EARLY_SIGN, workers_affected=30),
            Level.COUNTY,
            COUNTY,
            "dispute_collective",
            True,
            id="early sign never lowers a collective dispute below county",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS, severity=Sev.COLLECTIVE_INCIDENT, amount=Decimal(300_000)),
            Level.COUNTY,
            COUNTY,
            "collective_incident",
            True,
            id="collective incident outranks the amount rules -> county, dual report",
        ),
        pytest.param(
            CaseFacts(K.LABOUR_CONTRACT, amount=Decimal("200000")),
            Level.TOWN,
            TOWN,
            "dispute_amount_large",
            False,
            id="amount at the 200,000 threshold -> town",
        ),
        pytest.param(
            CaseFacts(K.LABOUR_CONTRACT, amount=Decimal("199999.99")),
            Level.COMMUNITY,
            CELL,
            "dispute_default",
            False,
            id="amount just under the threshold -> grid officer",
        ),
        pytest.param(
            CaseFacts(K.SOCIAL_INSURANCE, amount=Decimal("1000000")),
            Level.COUNTY,
            COUNTY,
            "dispute_amount_major",
            False,
            id="amount at 1,000,000 -> county",
        ),
        pytest.param(
            CaseFacts(K.HARDSHIP, hardship_grade=G.DEEP),
            Level.COUNTY,
            COUNTY,
            "hardship_deep",
            False,
            id="deep hardship -> county assistance centre",
        ),
        pytest.param(
            CaseFacts(K.HARDSHIP, hardship_grade=G.ACCIDENT),
            Level.TOWN,
            TOWN,
            "hardship_accident",
            False,
            id="accident hardship -> town",
        ),
        pytest.param(
            CaseFacts(K.HARDSHIP, hardship_grade=G.RELATIVE),
            Level.COMMUNITY,
            CELL,
            "hardship_default",
            False,
            id="relative hardship -> grid officer (default)",
        ),
        pytest.param(
            CaseFacts(K.HARDSHIP),
            Level.COMMUNITY,
            CELL,
            "hardship_default",
            False,
            id="hardship not yet graded -> grid officer (default)",
        ),
    ],
)
def test_routing_table(
    policy: ProvincePolicy, facts: CaseFacts, level: Level, owner: str, rule: str, dual: bool
) -> None:
    """Rule: most specific rule wins; the owner is the unit at that level on the cell's chain."""
    d = route(facts, cell_code=CELL, division_code=None, policy=policy, units=ALL_UNITS)
    assert (d.level, d.owner_code, d.rule, d.dual_report) == (level, owner, rule, dual)
    assert not d.fallback_used
    assert d.alerts == ()
    assert rule in d.explanation_zh
    assert rule in d.explanation_en


def test_explanation_names_thresholds_not_amounts(policy: ProvincePolicy) -> None:
    """Rule: the explanation says why without the claimant's own figures (PIPL minimum necessary)."""
    d = route(
        CaseFacts(K.WAGE_ARREARS, amount=Decimal("254321.77")),
        cell_code=CELL,
        division_code=None,
        policy=policy,
        units=ALL_UNITS,
    )
    assert "200000" in d.explanation_zh
    assert "254321" not in d.explanation


def test_missing_community_unit_falls_back_to_town_with_alerts(policy: ProvincePolicy) -> None:
    """Rule: a missing unit passes the case upward with an alert per missing unit; never ownerless."""
    units = {**ALL_UNITS, CELL: False, COMMUNITY: False}
    d = route(CaseFacts(K.WAGE_ARREARS), cell_code=CELL, division_code=None, policy=policy, units=units)
    assert (d.level, d.owner_code, d.fallback_used) == (Level.TOWN, TOWN, True)
    assert [(a.code, a.unit_code) for a in d.alerts] == [("unit_missing", CELL), ("unit_missing", COMMUNITY)]
    assert d.rule == "dispute_default"
    assert d.rule_level is Level.COMMUNITY


def test_cell_without_officer_goes_to_the_community_union(policy: ProvincePolicy) -> None:
    """Rule: at community level the cell's grid officer comes first, then the community union."""
    d = route(
        CaseFacts(K.WAGE_ARREARS),
        cell_code=CELL,
        division_code=None,
        policy=policy,
        units=lambda code: code != CELL,
    )
    assert (d.level, d.owner_code, d.fallback_used) == (Level.COMMUNITY, COMMUNITY, True)
    assert [a.code for a in d.alerts] == ["unit_missing"]


def test_unit_missing_from_the_map_counts_as_missing(policy: ProvincePolicy) -> None:
    """Rule: a units mapping that does not list a code means that unit does not exist."""
    d = route(
        CaseFacts(K.WAGE_ARREARS, workers_affected=12),
        cell_code=CELL,
        division_code=None,
        policy=policy,
        units={CITY: True, PROVINCE: True},
    )
    assert (d.level, d.owner_code) == (Level.CITY, CITY)


@pytest.mark.parametrize(
    ("facts", "division", "level", "owner", "fallback"),
    [
        pytest.param(
            CaseFacts(K.WAGE_ARREARS),
            COUNTY,
            Level.COUNTY,
            COUNTY,
            True,
            id="no cell, address reached county: county takes a grid-level case",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS),
            COMMUNITY,
            Level.COMMUNITY,
            COMMUNITY,
            True,
            id="no cell, address reached the community: community union",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS, workers_affected=15),
            TOWN,
            Level.COUNTY,
            COUNTY,
            False,
            id="no cell, town address, collective: the rule's county, no fallback",
        ),
    ],
)
def test_case_without_cell_routes_to_its_lowest_division(
    policy: ProvincePolicy, facts: CaseFacts, division: str, level: Level, owner: str, fallback: bool
) -> None:
    """Rule: without a cell, the lowest division the address reached, at or above the policy level."""
    d = route(facts, cell_code=None, division_code=division, policy=policy, units=ALL_UNITS)
    assert (d.level, d.owner_code, d.fallback_used) == (level, owner, fallback)
    assert ("address_only" in [a.code for a in d.alerts]) is fallback


def test_division_that_disagrees_with_the_cell_is_flagged(policy: ProvincePolicy) -> None:
    """Rule: the cell decides; an address division off the cell's chain raises an alert."""
    d = route(
        CaseFacts(K.WAGE_ARREARS),
        cell_code=CELL,
        division_code="420503000000",
        policy=policy,
        units=ALL_UNITS,
    )
    assert d.owner_code == CELL
    assert [a.code for a in d.alerts] == ["division_mismatch"]
    assert not d.fallback_used


@pytest.mark.parametrize(
    ("cell", "division", "units", "message"),
    [
        pytest.param(None, None, ALL_UNITS, "neither a cell nor a division", id="no cell and no division"),
        pytest.param("4205", None, ALL_UNITS, "15 digits", id="malformed cell code"),
        pytest.param(CELL, None, {}, "no unit exists", id="no unit anywhere on the chain"),
    ],
)
def test_routing_fails_loudly(
    policy: ProvincePolicy, cell: str | None, division: str | None, units: dict[str, bool], message: str
) -> None:
    """Rule: a case that cannot get an owner raises RoutingError; it is never stored ownerless."""
    with pytest.raises(RoutingError, match=message):
        route(CaseFacts(K.WAGE_ARREARS), cell_code=cell, division_code=division, policy=policy, units=units)


def test_fallback_never_goes_above_max_level() -> None:
    """Rule: a city-only deployment (max_level = city) does not hand cases to the province."""
    city_only = ProvincePolicy.model_validate({"routing": {"max_level": "city"}})
    with pytest.raises(RoutingError, match="up to city"):
        route(
            CaseFacts(K.WAGE_ARREARS),
            cell_code=CELL,
            division_code=None,
            policy=city_only,
            units={PROVINCE: True},
        )


@pytest.mark.parametrize(
    ("switch", "facts", "dual"),
    [
        pytest.param(
            True, CaseFacts(K.WAGE_ARREARS, workers_affected=10), True, id="collective dispute: dual"
        ),
        pytest.param(False, CaseFacts(K.WAGE_ARREARS, workers_affected=10), False, id="switch off: not dual"),
        pytest.param(
            True, CaseFacts(K.WAGE_ARREARS, workers_affected=9), False, id="9 workers: not collective"
        ),
        pytest.param(
            True,
            CaseFacts(K.HARDSHIP, workers_affected=12),
            False,
            id="hardship is never a collective dispute",
        ),
    ],
)
def test_collective_disputes_are_dual_reported_by_policy(switch: bool, facts: CaseFacts, dual: bool) -> None:
    """Rule: routing.dual_report_collective (on by default) dual-reports a collective labour dispute
    (Art. 7: threshold_workers or more) to the same-level government and the union above."""
    policy = ProvincePolicy.model_validate({"routing": {"dual_report_collective": switch}})
    d = route(facts, cell_code=CELL, division_code=None, policy=policy, units=ALL_UNITS)
    assert d.dual_report is dual
    assert ("须同时报告同级党委政府" in d.explanation_zh) is dual


def test_no_matching_rule_is_a_routing_error() -> None:
    """Rule: when nothing matches, routing fails loudly (load validation normally prevents this)."""
    only_wages = RoutingPolicy.model_construct(
        max_level=Level.PROVINCE,
        dual_report_severities=(),
        rules=(Rule(id="wages", level=Level.TOWN, kinds=(K.WAGE_ARREARS,)),),
    )
    policy = ProvincePolicy.model_construct(routing=only_wages, collective=CollectivePolicy())
    with pytest.raises(RoutingError, match="no routing rule matches a dismissal case"):
        route(CaseFacts(K.DISMISSAL), cell_code=CELL, division_code=None, policy=policy, units=ALL_UNITS)


def test_province_can_override_a_threshold_from_its_file(tmp_path: Path) -> None:
    """Rule: every number is policy: a province with an 8-worker threshold routes 8 workers to county."""
    path = tmp_path / "hubei.toml"
    path.write_text(
        'name = "hubei"\nprovince_code = "420000000000"\n[collective]\nthreshold_workers = 8\n',
        encoding="utf-8",
    )
    d = route(
        CaseFacts(K.WAGE_ARREARS, workers_affected=8),
        cell_code=CELL,
        division_code=None,
        policy=load_policy(path),
        units=ALL_UNITS,
    )
    assert (d.level, d.rule) == (Level.COUNTY, "dispute_collective")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        pytest.param(
            "[collective]\nthreshold_workers = 0\n",
            "collective.threshold_workers: Input should be greater than or equal to 2 (got 0)",
            id="collective threshold below 2",
        ),
        pytest.param(
            "[collective]\nthreshhold_workers = 10\n",
            "collective.threshhold_workers: unknown key",
            id="misspelt key is not silently ignored",
        ),
        pytest.param(
            '[[routing.rules]]\nid = "x"\nlevel = "village"\n[[routing.rules]]\nid = "d"\nlevel = "town"\n',
            "routing.rules[0](id=x).level: level must be one of",
            id="unknown level name, rule id shown",
        ),
        pytest.param(
            '[[routing.rules]]\nid = "only_disputes"\nlevel = "community"\nfamily = "dispute"\n',
            "no default rule for 'hardship' cases",
            id="a family without a default rule",
        ),
        pytest.param(
            '[[routing.rules]]\nid = "a"\nlevel = "town"\n[[routing.rules]]\nid = "a"\nlevel = "town"\n',
            "rule id 'a' is used twice",
            id="duplicate rule id",
        ),
        pytest.param(
            '[[routing.rules]]\nid = "c"\nlevel = "cell"\n', "use 'community'", id="cell is not a level"
        ),
        pytest.param(
            '[routing]\nmax_level = "town"\n',
            "starts at county, above max_level town",
            id="a default rule above max_level",
        ),
        pytest.param(
            "[deadlines.levels.town]\nrespond_workdays = 9\n",
            "respond_workdays 9 (deadlines.levels.town) exceeds resolve_workdays 7",
            id="respond limit longer than resolve limit",
        ),
        pytest.param('[calendar]\ntimezone = "Asia/Beijing"\n', "unknown time zone", id="unknown time zone"),
        pytest.param(
            'province_code = "420500000000"\n', "12-digit province code", id="city code as province"
        ),
        pytest.param(
            "[mediation]\nwindow_calendar_days = 'fifteen'\n",
            "mediation.window_calendar_days",
            id="text where a number belongs",
        ),
        pytest.param("[collective\n", "not valid TOML", id="broken TOML"),
    ],
)
def test_bad_policy_file_gives_a_clear_error(tmp_path: Path, toml: str, expected: str) -> None:
    """Rule: a policy is validated at load and every problem names its field (and rule id)."""
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------- properties


def _group(width: int) -> st.SearchStrategy[str]:
    return st.integers(1, 10**width - 1).map(lambda n: str(n).zfill(width))


CELLS = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["11", "42", "44", "65"]),
    _group(2),
    _group(2),
    _group(3),
    _group(3),
    _group(3),
)
FACTS = st.builds(
    CaseFacts,
    kind=st.sampled_from([k for k in CaseKind if k is not CaseKind.HARDSHIP]),
    severity=st.sampled_from(list(Severity)),
    workers_affected=st.integers(1, 500),
    amount=st.none() | st.decimals(0, 5_000_000, places=2),
) | st.builds(CaseFacts, kind=st.just(CaseKind.HARDSHIP), hardship_grade=st.none() | st.sampled_from(list(G)))


@settings(max_examples=300, deadline=None)
@given(cell=CELLS, facts=FACTS, missing=st.sets(st.sampled_from(list(Level)), max_size=5))
def test_owner_is_always_on_the_cells_chain(cell: str, facts: CaseFacts, missing: set[Level]) -> None:
    """Rule (property): owners sit on the cell's chain, at or above the rule's level (fallback goes up)."""
    policy = ProvincePolicy()
    units = {code: lvl not in missing for lvl, code in chain(cell).items()}
    units[chain(cell)[Level.PROVINCE]] = True  # the province always exists
    d = route(facts, cell_code=cell, division_code=None, policy=policy, units=units)
    assert d.owner_code in chain(cell).values()
    assert units[d.owner_code]
    assert d.level <= d.rule_level
    assert d.fallback_used == (len(d.alerts) > 0)
    assert d.owned_by_grid_officer == (d.owner_code == cell)
