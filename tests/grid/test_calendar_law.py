"""The calendar knows the law for every year, and recomputes when the official list is published.

* A year without an official list (chinese-calendar 1.11 ends at 2026) takes its statutory days off
  from the national rules (《全国年节及纪念日放假办法》, as amended in 2024 and in force from 2025),
  lunar dates computed by the ``holidays`` package; results stay provisional (暂定).
* The derived days are compared with chinese-calendar's official schedule for 2004–2026.
* ``gridflow calendar load FILE`` recomputes open provisional cases in one transaction, with an event
  that shows old and new deadlines; the default is a dry run that writes nothing.

Every expected date is written here by hand from the rules and the State Council notices, never
computed by the code under test.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import psycopg2.extensions
import pytest

from connectors.kinds import CaseKind
from geodata.codes import Level
from grid.cases.deadlines import deadlines_for
from grid.cases.intake import open_case
from grid.cases.owners import scope_prefix
from grid.cases.policy import ProvincePolicy
from grid.cases.queries import events_of, get_case
from grid.cases.recompute import CALENDAR_ACTOR, recompute_provisional
from grid.cases.states import Action, verify_chain
from grid.cases.store import CaseRules
from grid.workdays import WorkCalendar, statutory_days_off
from tests.grid.test_case_store import World, make_world, report, rows, scalar

SH = ZoneInfo("Asia/Shanghai")
D = date


def sh(y: int, m: int, d: int, hh: int = 23, mm: int = 59, ss: int = 59) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=SH)


# ----------------------------------------------------------------------------- the law, derived

# The statutory days off under the 2024 amendment (in force 2025), by festival. 2025 and 2026 as
# the State Council notices give them; 2027 from the lunar calendar (春节 初一 = Sat 6 Feb 2027).
STATUTORY = {
    2025: {
        D(2025, 1, 1): "new_year",
        D(2025, 1, 28): "spring_festival_eve",
        D(2025, 1, 29): "spring_festival",
        D(2025, 1, 30): "spring_festival",
        D(2025, 1, 31): "spring_festival",
        D(2025, 4, 4): "qingming",
        D(2025, 5, 1): "labour_day",
        D(2025, 5, 2): "labour_day",
        D(2025, 5, 31): "dragon_boat",
        D(2025, 10, 6): "mid_autumn",
        D(2025, 10, 1): "national_day",
        D(2025, 10, 2): "national_day",
        D(2025, 10, 3): "national_day",
    },
    2026: {
        D(2026, 1, 1): "new_year",
        D(2026, 2, 16): "spring_festival_eve",
        D(2026, 2, 17): "spring_festival",
        D(2026, 2, 18): "spring_festival",
        D(2026, 2, 19): "spring_festival",
        D(2026, 4, 5): "qingming",
        D(2026, 5, 1): "labour_day",
        D(2026, 5, 2): "labour_day",
        D(2026, 6, 19): "dragon_boat",
        D(2026, 9, 25): "mid_autumn",
        D(2026, 10, 1): "national_day",
        D(2026, 10, 2): "national_day",
        D(2026, 10, 3): "national_day",
    },
    2027: {
        D(2027, 1, 1): "new_year",
        D(2027, 2, 5): "spring_festival_eve",
        D(2027, 2, 6): "spring_festival",
        D(2027, 2, 7): "spring_festival",
        D(2027, 2, 8): "spring_festival",
        D(2027, 4, 5): "qingming",
        D(2027, 5, 1): "labour_day",
        D(2027, 5, 2): "labour_day",
        D(2027, 6, 9): "dragon_boat",
        D(2027, 9, 15): "mid_autumn",
        D(2027, 10, 1): "national_day",
        D(2027, 10, 2): "national_day",
        D(2027, 10, 3): "national_day",
    },
}


@pytest.mark.parametrize("year", sorted(STATUTORY), ids=lambda y: f"2024 amendment in {y}")
def test_statutory_days_follow_the_2024_amendment(year: int) -> None:
    """Rule: 元旦 1 day; 春节 4 days 除夕-初三; 清明 1; 劳动节 May 1-2; 端午 1; 中秋 1; 国庆 Oct 1-3
    (13 days), exactly, for every year from 2025."""
    assert statutory_days_off(year) == STATUTORY[year]


# chinese-calendar's name for each festival (its Holiday enum values).
LIBRARY_NAME = {
    "new_year": "New Year's Day",
    "spring_festival_eve": "Spring Festival",
    "spring_festival": "Spring Festival",
    "qingming": "Tomb-sweeping Day",
    "labour_day": "Labour Day",
    "dragon_boat": "Dragon Boat Festival",
    "mid_autumn": "Mid-autumn Festival",
    "national_day": "National Day",
}

# Where the derived days and the official schedule differ, written down per year:
# (statutory days derived, weekdays off in the official schedule that no rule derives = bridging
# days 调休/连休, weekend days worked = make-up days 调休上班). The derivation applies the revision in
# force each year — 1999 (to 2007: 元旦 1, 春节 初一-初三, 劳动节 May 1-3, 国庆 Oct 1-3: 10 days, no
# 清明/端午/中秋), 2007 (2008-2013: 除夕 instead of 初三, 劳动节 May 1 only, 清明/端午/中秋 added: 11),
# 2013 (2014-2024: 初三 back instead of 除夕: 11), 2024 (from 2025: 除夕 added, May 2 back: 13).
# 2020 has 10 because 中秋 fell on 国庆 (Oct 1). 2012 and 2015 list no separate 端午 / 中秋 day of
# their own in the ``holidays`` data (moved into an adjacent break); their dates are still off.
# The two last columns are what a provisional year cannot know, so they stay 暂定 until published.
DIFFERENCES = [
    (2004, 10, 11, 6),
    (2005, 10, 10, 6),
    (2006, 10, 10, 8),
    (2007, 10, 10, 7),
    (2008, 11, 7, 5),
    (2009, 10, 10, 6),
    (2010, 11, 13, 8),
    (2011, 11, 9, 6),
    (2012, 11, 11, 6),
    (2013, 11, 14, 12),
    (2014, 11, 8, 5),
    (2015, 11, 11, 5),
    (2016, 11, 9, 6),
    (2017, 11, 9, 5),
    (2018, 11, 9, 7),
    (2019, 11, 6, 6),
    (2020, 10, 13, 6),
    (2021, 11, 13, 7),
    (2022, 11, 12, 7),
    (2023, 11, 10, 7),
    (2024, 11, 10, 8),
    (2025, 13, 6, 5),
    (2026, 13, 9, 6),
]


@pytest.mark.parametrize(
    ("year", "derived", "bridged", "made_up"),
    [pytest.param(*row, id=f"{row[0]} vs chinese-calendar") for row in DIFFERENCES],
)
def test_derived_days_against_the_official_schedule(
    year: int, derived: int, bridged: int, made_up: int
) -> None:
    """Rule: every derived statutory day is a day off in the official schedule, on a weekday under
    the same festival's name; the official schedule differs only by the bridging weekdays and the
    make-up weekends written down in DIFFERENCES (never derivable, hence 暂定)."""
    days = statutory_days_off(year)
    assert len(days) == derived
    for d, festival in days.items():
        on_holiday, name = chinese_calendar.get_holiday_detail(d)
        assert on_holiday, f"{d} ({festival}) is a working day in the official {year} schedule"
        if d.weekday() < 5:
            assert name == LIBRARY_NAME[festival], (d, festival, name)
    n_bridged = n_made_up = 0
    d = D(year, 1, 1)
    while d.year == year:
        if d.weekday() < 5 and not chinese_calendar.is_workday(d) and d not in days:
            n_bridged += 1
        if d.weekday() >= 5 and chinese_calendar.is_workday(d):
            n_made_up += 1
        d += timedelta(days=1)
    assert (n_bridged, n_made_up) == (bridged, made_up)


def test_the_official_list_wins_over_the_derived_days(tmp_path: Path) -> None:
    """Rule: once a year is official (file or library) its list decides, not the derivation: a file
    that keeps 2027-02-08 (初三) a working day is obeyed, and 2026 follows chinese-calendar."""
    f = tmp_path / "2027.toml"
    f.write_text("year = 2027\nholidays = [2027-01-01, 2027-02-05]\n", encoding="utf-8")
    cal = WorkCalendar.from_files([f])
    assert not cal.is_workday(D(2027, 2, 5))
    assert cal.is_workday(D(2027, 2, 8))
    assert cal.is_workday(D(2026, 2, 14))  # a 2026 make-up Saturday, official
    assert WorkCalendar().is_workday(D(2027, 2, 8)) is False


# ----------------------------------------------------------------------------- done-when deadlines

POLICY = ProvincePolicy()


@pytest.mark.parametrize(
    ("opened", "resolve_by", "days_off"),
    [
        pytest.param(
            sh(2026, 12, 30, 10, 0, 0),
            sh(2027, 1, 7),
            [D(2027, 1, 1)],
            id="opened 2026-12-30: 5 working days skip 元旦, resolve by 2027-01-07 not 01-06",
        ),
        pytest.param(
            sh(2027, 2, 3, 10, 0, 0),
            sh(2027, 2, 12),
            [D(2027, 2, 5), D(2027, 2, 8)],
            id="opened 2027-02-03: skips 除夕 Feb 5 and 初三 Feb 8, resolve by 2027-02-12",
        ),
    ],
)
def test_wage_case_deadline_in_an_unpublished_year(
    opened: datetime, resolve_by: datetime, days_off: list[date]
) -> None:
    """Rule: a community wage case (5 working days) counted into 2027 skips the statutory days off
    and is marked provisional."""
    cal = WorkCalendar()
    d = deadlines_for(CaseKind.WAGE_ARREARS, Level.COMMUNITY, opened, POLICY, cal)
    assert d.resolve_by == resolve_by
    assert d.resolve_by > sh(2027, 1, 6)
    assert d.provisional
    for day in days_off:
        assert not cal.is_workday(day)


# ----------------------------------------------------------------------------- recompute on publication

# A test fixture shaped like a State Council notice (not the real 2027 schedule, unpublished):
# 元旦 Jan 1-3; 春节 Feb 5-12 (8 days) with make-up Sundays Jan 31 and Saturday Feb 20.
HOLIDAYS_2027 = """\
year = 2027
holidays = [2027-01-01, 2027-01-02, 2027-01-03,
            2027-02-05, 2027-02-06, 2027-02-07, 2027-02-08, 2027-02-09, 2027-02-10, 2027-02-11, 2027-02-12]
workdays = [2027-01-31, 2027-02-20]
"""


@pytest.fixture
def file_2027(tmp_path: Path) -> Path:
    p = tmp_path / "2027.toml"
    p.write_text(HOLIDAYS_2027, encoding="utf-8")
    return p


def _two_cases(conn: psycopg2.extensions.connection) -> tuple[World, int, int]:
    world = make_world(conn)
    rules = CaseRules(POLICY, WorkCalendar())
    a = open_case(conn, report=report(world), rules=rules, actor="t", at=sh(2026, 12, 30, 10, 0, 0)).case_id
    b = open_case(
        conn,
        report=report(world, cell_code=world.cells[1]),
        rules=rules,
        actor="t",
        at=sh(2027, 2, 3, 10, 0, 0),
    ).case_id
    return world, a, b


def _fingerprint(conn: psycopg2.extensions.connection, ids: list[int]) -> list[tuple[object, ...]]:
    return rows(
        conn,
        "SELECT c.id, c.version, c.head_hash, c.respond_by, c.resolve_by, c.deadlines_provisional, "
        "(SELECT count(*) FROM case_event e WHERE e.case_id = c.id), "
        "(SELECT array_agg(s.due_at ORDER BY s.id) FROM escalation_step s WHERE s.case_id = c.id) "
        "FROM case_file c WHERE c.id = ANY(%s) ORDER BY c.id",
        ids,
    )


@pytest.mark.db
def test_cases_opened_into_2027_are_provisional_on_the_derived_calendar(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: the stored deadlines are the derived ones (past 元旦; past 除夕 and 初三) and flagged 暂定."""
    _, a, b = _two_cases(conn)
    ca, cb = get_case(conn, case_id=a), get_case(conn, case_id=b)
    assert (ca.resolve_by, ca.deadlines_provisional) == (sh(2027, 1, 7), True)
    assert (cb.resolve_by, cb.deadlines_provisional) == (sh(2027, 2, 12), True)


@pytest.mark.db
def test_loading_the_2027_file_recomputes_in_one_transaction_with_an_event(
    conn: psycopg2.extensions.connection, file_2027: Path
) -> None:
    """Rule: publication recomputes open provisional cases' deadlines and pending steps; a dry run
    writes nothing; the commit writes one hash-chained note per case with old and new deadlines."""
    world, a, b = _two_cases(conn)
    prefix = scope_prefix(world.town)
    cal = WorkCalendar.from_files([file_2027])
    rules = CaseRules(POLICY, cal)
    before = _fingerprint(conn, [a, b])

    dry = recompute_provisional(
        conn, rules=rules, at=sh(2026, 12, 4, 10, 0, 0), commit=False, scope_prefix=prefix
    )
    assert {m.case_id for m in dry.changed} == {a, b}
    assert _fingerprint(conn, [a, b]) == before

    done = recompute_provisional(
        conn, rules=rules, at=sh(2026, 12, 4, 10, 0, 0), commit=True, scope_prefix=prefix
    )
    assert done.committed
    moves = {m.case_id: m for m in done.changed}
    # Case a: Dec 31, Jan 4, 5, 6, 7 — the official 元旦 (Jan 1-3) leaves the date as derived, and it
    # is no longer provisional. Case b: Feb 4, then off Feb 5-12, Feb 15, 16, 17, 18.
    assert (moves[a].old_resolve_by, moves[a].new_resolve_by) == (sh(2027, 1, 7), sh(2027, 1, 7))
    assert (moves[b].old_resolve_by, moves[b].new_resolve_by) == (sh(2027, 2, 12), sh(2027, 2, 18))
    ca, cb = get_case(conn, case_id=a), get_case(conn, case_id=b)
    assert (ca.resolve_by, ca.deadlines_provisional) == (sh(2027, 1, 7), False)
    assert (cb.resolve_by, cb.deadlines_provisional) == (sh(2027, 2, 18), False)
    # b's pending steps moved: reminder the calendar day after, criticism 3 working days later
    # (Feb 22, 23, 24), both at 09:00; the Saturday Feb 20 make-up day counts.
    steps = rows(
        conn,
        "SELECT kind, due_at, provisional FROM escalation_step WHERE case_id = %s AND done_at IS NULL ORDER BY due_at",
        b,
    )
    assert steps == [
        ("remind", sh(2027, 2, 19, 9, 0, 0), False),
        ("criticise_and_escalate", sh(2027, 2, 23, 9, 0, 0), False),
    ]
    for cid, old, new in ((a, "2027-01-07", "2027-01-07"), (b, "2027-02-12", "2027-02-18")):
        stored = events_of(conn, case_id=cid)
        last = stored[-1].event
        assert last.action is Action.NOTE and last.actor == CALENDAR_ACTOR
        assert last.payload["kind"] == "deadlines_recomputed"
        assert (
            datetime.fromisoformat(last.payload["resolve_by"]["old"]).astimezone(SH).date().isoformat() == old
        )
        assert (
            datetime.fromisoformat(last.payload["resolve_by"]["new"]).astimezone(SH).date().isoformat() == new
        )
        assert last.payload["provisional"] == {"old": True, "new": False}
        head = scalar(conn, "SELECT head_hash FROM case_file WHERE id = %s", cid)
        assert verify_chain([s.event for s in stored], head=head)
    again = recompute_provisional(
        conn, rules=rules, at=sh(2026, 12, 4, 11, 0, 0), commit=True, scope_prefix=prefix
    )
    assert again.changed == []


@pytest.mark.db
def test_cli_calendar_load_is_a_dry_run_unless_commit(
    conn: psycopg2.extensions.connection, file_2027: Path
) -> None:
    """Rule: ``gridflow calendar load FILE`` lists what would move and writes nothing; ``--commit``
    applies it (dry run by default for what rewrites the world)."""
    from typer.testing import CliRunner

    from gridflow_cli.calendar_cli import app

    world, a, b = _two_cases(conn)
    before = _fingerprint(conn, [a, b])
    runner = CliRunner()
    dry = runner.invoke(app, ["load", str(file_2027), "--scope", world.town])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output
    assert f"case {b}: resolve by 2027-02-12 23:59 -> 2027-02-18 23:59" in dry.output
    assert _fingerprint(conn, [a, b]) == before
    done = runner.invoke(app, ["load", str(file_2027), "--scope", world.town, "--commit"])
    assert done.exit_code == 0, done.output
    assert get_case(conn, case_id=b).resolve_by == sh(2027, 2, 18)
    bad = runner.invoke(app, ["load", str(file_2027.parent / "missing.toml")])
    assert bad.exit_code == 1 and "cannot read holiday file" in bad.output
