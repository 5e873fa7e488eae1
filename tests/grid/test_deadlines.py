"""Deadlines and supervision steps on the official calendar.

Expected dates are worked out by hand from the 2026 schedule in chinese-calendar 1.11 (see
test_workdays.py): National Day Oct 1-7 off, Sat Oct 10 and Sun Sep 20 working; Spring Festival
Feb 15-23 off, Sat Feb 14 and Sat Feb 28 working. Default limits (config/policy/default.toml):
respond 1 working day; resolve community 5, town 7, county 10; hardship respond 3, resolve 15.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.kinds import CaseKind, HardshipGrade
from geodata.codes import Level
from grid.cases.deadlines import Step, deadlines_for, escalation_steps
from grid.cases.policy import ProvincePolicy, build_calendar, load_policy, parse_policy
from grid.cases.routing import CaseFacts
from grid.workdays import SHANGHAI, WorkCalendar

K = CaseKind


def sh(y: int, m: int, d: int, hh: int = 23, mm: int = 59, ss: int = 59) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def policy() -> ProvincePolicy:
    return ProvincePolicy()


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar()


@pytest.mark.parametrize(
    ("facts", "level", "opened", "respond", "resolve", "window", "provisional"),
    [
        pytest.param(
            CaseFacts(K.WAGE_ARREARS),
            Level.COMMUNITY,
            sh(2026, 9, 29, 10, 0, 0),
            sh(2026, 9, 30),
            sh(2026, 10, 12),
            sh(2026, 10, 14),
            False,
            id="grid officer, wage arrears opened Sep 29: 5 working days skip National Day",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS),
            Level.CELL,
            sh(2026, 9, 29, 10, 0, 0),
            sh(2026, 9, 30),
            sh(2026, 10, 12),
            sh(2026, 10, 14),
            False,
            id="a cell-level owner works to community limits",
        ),
        pytest.param(
            CaseFacts(K.LABOUR_CONTRACT),
            Level.TOWN,
            sh(2026, 9, 30, 8, 0, 0),
            sh(2026, 10, 8),
            sh(2026, 10, 15),
            sh(2026, 10, 15),
            False,
            id="town, opened Sep 30: 7 working days count make-up Saturday Oct 10",
        ),
        pytest.param(
            CaseFacts(K.HARDSHIP, hardship_grade=HardshipGrade.DEEP),
            Level.COUNTY,
            sh(2026, 2, 13, 9, 0, 0),
            sh(2026, 2, 25),
            sh(2026, 3, 12),
            None,
            False,
            id="hardship over Spring Festival: 3 and 15 working days, no mediation window",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS, workers_affected=40),
            Level.COUNTY,
            sh(2026, 12, 21, 15, 0, 0),
            sh(2026, 12, 22),
            sh(2027, 1, 5),
            sh(2027, 1, 5),
            True,
            id="county limit running into 2027 skips the derived 元旦 and is provisional",
        ),
        pytest.param(
            CaseFacts(K.WAGE_ARREARS),
            Level.COMMUNITY,
            datetime(2026, 9, 29, 17, 30, tzinfo=UTC),
            sh(2026, 10, 8),
            sh(2026, 10, 13),
            sh(2026, 10, 15),
            False,
            id="17:30 UTC Sep 29 is Sep 30 in Beijing: counting starts from Sep 30",
        ),
    ],
)
def test_deadlines_for(
    policy: ProvincePolicy,
    cal: WorkCalendar,
    facts: CaseFacts,
    level: Level,
    opened: datetime,
    respond: datetime,
    resolve: datetime,
    window: datetime | None,
    provisional: bool,
) -> None:
    """Rule: limits by (kind, level) in working days, ending 23:59:59 local; mediation 15 calendar days."""
    d = deadlines_for(facts, level, opened, policy, cal)
    assert (d.respond_by, d.resolve_by, d.mediation_window_ends, d.provisional) == (
        respond,
        resolve,
        window,
        provisional,
    )


def test_mediation_window_is_calendar_days_through_a_holiday(
    policy: ProvincePolicy, cal: WorkCalendar
) -> None:
    """Rule: Art. 14's 15 days are calendar days: opened Sun Sep 20, it ends Mon Oct 5, inside the break."""
    d = deadlines_for(CaseFacts(K.DISMISSAL), Level.COMMUNITY, sh(2026, 9, 20, 10, 0, 0), policy, cal)
    assert d.mediation_window_ends == sh(2026, 10, 5)


def test_mediation_window_can_roll_past_a_holiday(cal: WorkCalendar) -> None:
    """Rule: with Civil Code Art. 203 switched on, a last day off moves to the next working day."""
    policy = parse_policy({"mediation": {"roll_forward_if_last_day_holiday": True}})
    d = deadlines_for(CaseFacts(K.DISMISSAL), Level.COMMUNITY, sh(2026, 9, 20, 10, 0, 0), policy, cal)
    assert d.mediation_window_ends == sh(2026, 10, 8)


def test_naive_opening_time_is_refused(policy: ProvincePolicy, cal: WorkCalendar) -> None:
    """Rule: a deadline needs to know which local day the case was opened."""
    with pytest.raises(ValueError, match="no timezone"):
        deadlines_for(CaseFacts(K.DISMISSAL), Level.COMMUNITY, datetime(2026, 9, 20, 10), policy, cal)


@pytest.mark.parametrize(
    ("override", "kind", "level", "resolve", "source"),
    [
        pytest.param(
            {"kinds": {"wage_arrears": {"levels": {"county": {"resolve_workdays": 7}}}}},
            K.WAGE_ARREARS,
            Level.COUNTY,
            7,
            "deadlines.kinds.wage_arrears.levels.county",
            id="a (kind, level) entry wins",
        ),
        pytest.param(
            {"kinds": {"wage_arrears": {"levels": {"county": {"resolve_workdays": 7}}}}},
            K.WAGE_ARREARS,
            Level.TOWN,
            7,
            "deadlines.levels.town",
            id="the kind's other levels keep the level limits",
        ),
        pytest.param(
            {"kinds": {"wage_arrears": {"levels": {"county": {"resolve_workdays": 7}}}}},
            K.DISMISSAL,
            Level.COUNTY,
            10,
            "deadlines.levels.county",
            id="other kinds are untouched",
        ),
        pytest.param(
            {"levels": {"town": {"resolve_workdays": 6}}},
            K.DISMISSAL,
            Level.COMMUNITY,
            5,
            "deadlines.levels.community",
            id="overriding one level keeps the other levels' defaults",
        ),
        pytest.param(
            {"levels": {"town": {"resolve_workdays": 6}}},
            K.HARDSHIP,
            Level.TOWN,
            15,
            "deadlines.kinds.hardship",
            id="a kind entry beats a level entry",
        ),
    ],
)
def test_limits_lookup_most_specific_first(
    override: dict[str, object], kind: CaseKind, level: Level, resolve: int, source: str
) -> None:
    """Rule: limits come from kinds.K.levels.L, then kinds.K, then levels.L, then default."""
    limits = parse_policy({"deadlines": override}).deadlines.limits_for(kind, level)
    assert (limits.resolve_workdays, limits.resolve_source) == (resolve, source)


def test_policy_holiday_file_makes_deadlines_exact(tmp_path: Path) -> None:
    """Rule: holiday files named by the policy (relative to it) feed the calendar; 2027 becomes exact."""
    (tmp_path / "holidays").mkdir()
    (tmp_path / "holidays" / "2027.toml").write_text(
        "# test fixture, not the real 2027 schedule\nholidays = [2027-01-01, 2027-01-02, 2027-01-03]\n",
        encoding="utf-8",
    )
    (tmp_path / "policy").mkdir()
    path = tmp_path / "policy" / "p.toml"
    path.write_text('[calendar]\nholiday_files = ["../holidays/2027.toml"]\n', encoding="utf-8")
    policy = load_policy(path)
    d = deadlines_for(
        CaseFacts(K.WAGE_ARREARS, workers_affected=40),
        Level.COUNTY,
        sh(2026, 12, 21, 15, 0, 0),
        policy,
        build_calendar(policy),
    )
    assert (d.resolve_by, d.provisional) == (sh(2027, 1, 5), False)


# ----------------------------------------------------------------------------- supervision steps


def nine(y: int, m: int, d: int) -> datetime:
    return sh(y, m, d, 9, 0, 0)


@pytest.mark.parametrize(
    ("override", "level", "deadline", "expected"),
    [
        pytest.param(
            {},
            Level.COMMUNITY,
            sh(2026, 10, 12),
            [
                ("remind", nine(2026, 10, 13), None, False),
                ("criticise_and_escalate", nine(2026, 10, 16), Level.TOWN, False),
            ],
            id="remind the next day, criticise and escalate 3 working days later",
        ),
        pytest.param(
            {},
            Level.COMMUNITY,
            datetime(2026, 10, 12, 15, 59, 59, tzinfo=UTC),
            [
                ("remind", nine(2026, 10, 13), None, False),
                ("criticise_and_escalate", nine(2026, 10, 16), Level.TOWN, False),
            ],
            id="the same deadline given in UTC",
        ),
        pytest.param(
            {},
            Level.TOWN,
            sh(2026, 10, 16),
            [
                ("remind", nine(2026, 10, 17), None, False),
                ("criticise_and_escalate", nine(2026, 10, 21), Level.COUNTY, False),
            ],
            id="Friday deadline: reminder on Saturday (calendar day), criticism Wednesday",
        ),
        pytest.param(
            {"remind_day_kind": "workdays"},
            Level.TOWN,
            sh(2026, 10, 16),
            [
                ("remind", nine(2026, 10, 19), None, False),
                ("criticise_and_escalate", nine(2026, 10, 22), Level.COUNTY, False),
            ],
            id="reminders on working days only: Monday, then Thursday",
        ),
        pytest.param(
            {"remind_day_kind": "workdays"},
            Level.COUNTY,
            sh(2026, 9, 30),
            [
                ("remind", nine(2026, 10, 8), None, False),
                ("criticise_and_escalate", nine(2026, 10, 12), Level.CITY, False),
            ],
            id="deadline before National Day: remind Oct 8, criticise after make-up Sat Oct 10",
        ),
        pytest.param(
            {},
            Level.PROVINCE,
            sh(2026, 10, 12),
            [("remind", nine(2026, 10, 13), None, False), ("criticise", nine(2026, 10, 16), None, False)],
            id="at the province there is nowhere to escalate: criticism only",
        ),
        pytest.param(
            {"escalate_on_criticism": False},
            Level.COMMUNITY,
            sh(2026, 10, 12),
            [("remind", nine(2026, 10, 13), None, False), ("criticise", nine(2026, 10, 16), None, False)],
            id="a province may criticise without escalating",
        ),
        pytest.param(
            {},
            Level.COMMUNITY,
            sh(2026, 12, 30),
            [
                ("remind", nine(2026, 12, 31), None, False),
                ("criticise_and_escalate", nine(2027, 1, 6), Level.TOWN, True),
            ],
            id="criticism in 2027 skips the derived 元旦 and is provisional",
        ),
    ],
)
def test_escalation_steps(
    cal: WorkCalendar,
    override: dict[str, object],
    level: Level,
    deadline: datetime,
    expected: list[tuple[str, datetime, Level | None, bool]],
) -> None:
    """Rule: 催办 the day after the deadline; 通报 + escalation N working days after the reminder."""
    policy = parse_policy({"supervision": override})
    steps = escalation_steps("C-1", level, deadline, policy, cal)
    assert [(s.kind, s.due_at, s.escalate_to, s.provisional) for s in steps] == expected
    assert all(isinstance(s, Step) and s.case_id == "C-1" for s in steps)


def test_city_only_deployment_does_not_escalate_past_the_city(cal: WorkCalendar) -> None:
    """Rule: max_level bounds escalation: a city case in a city-only deployment is criticised only."""
    policy = parse_policy({"routing": {"max_level": "city"}})
    steps = escalation_steps("C-2", Level.CITY, sh(2026, 10, 12), policy, cal)
    assert steps[-1].kind == "criticise"
    assert steps[-1].escalate_to is None
