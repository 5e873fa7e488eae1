"""Working days on the official Chinese calendar.

Expected dates below were written by hand from the 2026 schedule that chinese-calendar 1.11 ships
(chinese_calendar/constants.py), never by calling the code under test:

* New Year: Jan 1–3 off; Sun Jan 4 is a make-up working day.
* Spring Festival: Feb 15 (Sun) – Feb 23 (Mon) off; Sat Feb 14 and Sat Feb 28 are working days.
* Mid-Autumn: Sep 25 (Fri) – Sep 27 (Sun) off.
* National Day: Oct 1 (Thu) – Oct 7 (Wed) off; Sun Sep 20 and Sat Oct 10 are working days;
  Thu Oct 8 is an ordinary working day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid.workdays import SHANGHAI, CalendarError, WorkCalendar, WorkdayResult

D = date


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar()


def test_library_schedule_is_what_the_expectations_were_written_from() -> None:
    """The official 2026 schedule in chinese-calendar is the one this file's tables assume."""
    make_up = sorted(d for d in chinese_calendar.workdays if d.year == 2026)
    assert make_up == [
        D(2026, 1, 4),
        D(2026, 2, 14),
        D(2026, 2, 28),
        D(2026, 5, 9),
        D(2026, 9, 20),
        D(2026, 10, 10),
    ]
    national_day = sorted(d for d, h in chinese_calendar.holidays.items() if d.month == 10 and d.year == 2026)
    assert national_day == [D(2026, 10, d) for d in range(1, 8)]


@pytest.mark.parametrize(
    ("day", "working"),
    [
        pytest.param(D(2026, 10, 7), False, id="Oct 7 (Wed) is inside the National Day break"),
        pytest.param(D(2026, 10, 8), True, id="Oct 8 (Thu) is the first working day after it"),
        pytest.param(D(2026, 10, 10), True, id="Sat Oct 10 is a make-up working day"),
        pytest.param(D(2026, 10, 11), False, id="Sun Oct 11 is an ordinary weekend day"),
        pytest.param(D(2026, 9, 20), True, id="Sun Sep 20 is a make-up working day"),
        pytest.param(D(2026, 9, 25), False, id="Fri Sep 25 is Mid-Autumn"),
        pytest.param(D(2026, 2, 23), False, id="Mon Feb 23 is the last Spring Festival day off"),
        pytest.param(D(2026, 2, 14), True, id="Sat Feb 14 is a make-up working day before Spring Festival"),
        pytest.param(D(2026, 2, 28), True, id="Sat Feb 28 is a make-up working day after Spring Festival"),
        pytest.param(D(2026, 1, 4), True, id="Sun Jan 4 is a make-up working day for New Year"),
        pytest.param(D(2026, 3, 7), False, id="an ordinary Saturday is not a working day"),
        pytest.param(D(2027, 1, 1), False, id="an unknown year's 元旦 is a derived statutory day off"),
        pytest.param(D(2027, 2, 5), False, id="an unknown year's 除夕 is a derived statutory day off"),
        pytest.param(D(2027, 1, 4), True, id="an unknown year's ordinary weekday counts as working"),
        pytest.param(D(2027, 1, 2), False, id="an unknown year's Saturday does not"),
    ],
)
def test_is_workday(cal: WorkCalendar, day: date, working: bool) -> None:
    """Rule: known years follow the official schedule; unknown years are Monday to Friday less the
    statutory days off derived from the national rules."""
    assert cal.is_workday(day) is working


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        # National Day 2026
        pytest.param(D(2026, 9, 29), 1, D(2026, 9, 30), id="ND: Tue before the break +1 is Wed"),
        pytest.param(D(2026, 9, 30), 1, D(2026, 10, 8), id="ND: last day before the break +1 skips Oct 1-7"),
        pytest.param(D(2026, 10, 1), 1, D(2026, 10, 8), id="ND: counting from a holiday lands on Oct 8"),
        pytest.param(D(2026, 9, 30), 3, D(2026, 10, 10), id="ND: +3 lands on make-up Saturday Oct 10"),
        pytest.param(D(2026, 9, 30), 4, D(2026, 10, 12), id="ND: +4 skips Sunday Oct 11"),
        pytest.param(D(2026, 9, 30), 10, D(2026, 10, 20), id="ND: +10 working days from Sep 30"),
        pytest.param(D(2026, 9, 18), 1, D(2026, 9, 20), id="ND: Fri Sep 18 +1 is make-up Sunday Sep 20"),
        pytest.param(D(2026, 9, 24), 1, D(2026, 9, 28), id="Mid-Autumn: Thu Sep 24 +1 skips Fri-Sun off"),
        pytest.param(D(2026, 9, 24), 5, D(2026, 10, 9), id="Mid-Autumn into ND: +5 from Sep 24"),
        # Spring Festival 2026
        pytest.param(D(2026, 2, 13), 1, D(2026, 2, 14), id="SF: Fri Feb 13 +1 is make-up Saturday Feb 14"),
        pytest.param(D(2026, 2, 14), 1, D(2026, 2, 24), id="SF: Feb 14 +1 skips Feb 15-23"),
        pytest.param(D(2026, 2, 12), 3, D(2026, 2, 24), id="SF: Thu Feb 12 +3 counts Feb 13, 14, 24"),
        pytest.param(D(2026, 2, 27), 1, D(2026, 2, 28), id="SF: Fri Feb 27 +1 is make-up Saturday Feb 28"),
        pytest.param(D(2026, 2, 24), 5, D(2026, 3, 2), id="SF: Feb 24 +5 counts Sat Feb 28, skips Sun Mar 1"),
        # New Year and ordinary weeks
        pytest.param(D(2025, 12, 31), 1, D(2026, 1, 4), id="New Year: Dec 31 +1 is make-up Sunday Jan 4"),
        pytest.param(D(2026, 3, 6), 1, D(2026, 3, 9), id="an ordinary Friday +1 is Monday"),
        pytest.param(D(2026, 3, 9), 0, D(2026, 3, 9), id="+0 is the start day itself"),
        pytest.param(D(2026, 10, 8), -1, D(2026, 9, 30), id="-1 from Oct 8 counts back over the break"),
    ],
)
def test_add_workdays_across_2026_holidays(cal: WorkCalendar, start: date, n: int, expected: date) -> None:
    """Rule: the n-th working day after start (start not counted), holidays skipped, 调休 counted."""
    assert cal.add_workdays(start, n) == WorkdayResult(expected, provisional=False)


@pytest.mark.parametrize(
    ("a", "b", "count"),
    [
        pytest.param(D(2026, 9, 30), D(2026, 10, 12), 4, id="Oct 8, 9, 10 (Sat) and 12"),
        pytest.param(D(2026, 2, 13), D(2026, 2, 28), 6, id="Feb 14, 24-27 and 28 (Sat)"),
        pytest.param(D(2026, 10, 12), D(2026, 9, 30), -4, id="reversed range is negative"),
        pytest.param(D(2026, 10, 12), D(2026, 10, 12), 0, id="same day is zero"),
    ],
)
def test_workdays_between(cal: WorkCalendar, a: date, b: date, count: int) -> None:
    """Rule: working days d with a < d <= b."""
    assert cal.workdays_between(a, b) == count


def test_add_calendar_days_ignores_holidays(cal: WorkCalendar) -> None:
    """Rule: statutory limits count calendar days, holidays included."""
    assert cal.add_calendar_days(D(2026, 9, 25), 15) == D(2026, 10, 10)


@pytest.mark.parametrize(
    ("start", "n", "expected", "provisional"),
    [
        pytest.param(D(2026, 12, 30), 1, D(2026, 12, 31), False, id="stays in 2026: exact"),
        pytest.param(
            D(2026, 12, 30), 3, D(2027, 1, 5), True, id="runs into 2027: 元旦 derived off, provisional"
        ),
        pytest.param(D(2027, 3, 1), 5, D(2027, 3, 8), True, id="starts in 2027: weekdays, provisional"),
    ],
)
def test_unknown_year_is_provisional_not_an_error(
    cal: WorkCalendar, start: date, n: int, expected: date, provisional: bool
) -> None:
    """Rule: a year the calendar does not know counts Mon-Fri less the derived statutory days off and
    flags the result provisional."""
    assert cal.add_workdays(start, n) == WorkdayResult(expected, provisional)


HOLIDAYS_2027 = """\
# test fixture shaped like a State Council notice; not the real 2027 schedule
year = 2027
holidays = [2027-01-01, 2027-01-02, 2027-01-03, 2027-02-08, 2027-02-09]
workdays = [2027-02-06]
"""


@pytest.fixture
def file_2027(tmp_path: Path) -> Path:
    path = tmp_path / "2027.toml"
    path.write_text(HOLIDAYS_2027, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        pytest.param(D(2026, 12, 30), 3, D(2027, 1, 5), id="New Year 2027 off: Dec 31, Jan 4, Jan 5"),
        pytest.param(D(2027, 2, 5), 1, D(2027, 2, 6), id="make-up Saturday Feb 6 2027 counts"),
        pytest.param(D(2027, 2, 6), 1, D(2027, 2, 10), id="Feb 8-9 2027 off"),
    ],
)
def test_holiday_file_makes_2027_official(file_2027: Path, start: date, n: int, expected: date) -> None:
    """Rule: an official holiday file for a year the library lacks is respected and not provisional."""
    cal = WorkCalendar.from_files([file_2027])
    assert 2027 in cal.known_years
    assert cal.add_workdays(start, n) == WorkdayResult(expected, provisional=False)


def test_year_after_the_file_is_still_provisional(file_2027: Path) -> None:
    """Rule: provisional follows each year counted: 2028 is still unknown after loading 2027."""
    cal = WorkCalendar.from_files([file_2027])
    assert cal.add_workdays(D(2027, 12, 30), 2) == WorkdayResult(D(2028, 1, 3), provisional=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "year = 2027\nworkdays = [2027-02-08]\n", "Saturdays or Sundays", id="make-up day on a Monday"
        ),
        pytest.param("year = 2027\nholidays = [2028-01-01]\n", "not in 2027", id="date outside the year"),
        pytest.param(
            "year = 2027\nholidays = [2027-02-06]\nworkdays = [2027-02-06]\n",
            "both as a holiday and as a workday",
            id="date listed twice",
        ),
        pytest.param("year = 2027\nholiday = [2027-01-01]\n", "unknown keys", id="misspelt key"),
        pytest.param("year = 2027\nholidays = ['Jan 1']\n", "expected a date", id="not a date"),
        pytest.param("year = 2027\nholidays = [2027-01-01\n", "not valid TOML", id="broken TOML"),
    ],
)
def test_bad_holiday_file_is_refused_with_its_reason(tmp_path: Path, text: str, message: str) -> None:
    """Rule: a malformed official list fails loudly at load, naming the file and the problem."""
    path = tmp_path / "2027.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalendarError, match=message) as exc:
        WorkCalendar.from_files([path])
    assert "2027.toml" in str(exc.value)


def test_known_year_is_not_silently_overwritten() -> None:
    """Rule: replacing a published year needs replace=True."""
    cal = WorkCalendar()
    with pytest.raises(CalendarError, match="already known"):
        cal.add_year(2026, [], [])
    cal.add_year(2026, [D(2026, 3, 9)], [], replace=True)
    assert not cal.is_workday(D(2026, 3, 9))
    assert cal.is_workday(D(2026, 10, 1))  # the replacement is the whole year's schedule


def test_file_only_calendar_starts_with_no_known_years() -> None:
    """Rule: include_library=False knows nothing until files are loaded; everything is provisional,
    and the statutory days off are still derived (国庆 Oct 1-3 2026 off: the next working day is Mon
    Oct 5); derive_statutory=False counts plain Monday-Friday."""
    cal = WorkCalendar(include_library=False)
    assert cal.known_years == frozenset()
    assert cal.add_workdays(D(2026, 9, 30), 1) == WorkdayResult(D(2026, 10, 5), provisional=True)
    plain = WorkCalendar(include_library=False, derive_statutory=False)
    assert plain.add_workdays(D(2026, 9, 30), 1) == WorkdayResult(D(2026, 10, 1), provisional=True)


@pytest.mark.parametrize(
    ("opened_at", "n", "expected"),
    [
        pytest.param(
            datetime(2026, 9, 30, 10, 0, tzinfo=SHANGHAI),
            1,
            datetime(2026, 10, 8, 23, 59, 59, tzinfo=SHANGHAI),
            id="Beijing morning of Sep 30, 1 working day: end of Oct 8",
        ),
        pytest.param(
            datetime(2026, 9, 29, 17, 30, tzinfo=ZoneInfo("UTC")),
            1,
            datetime(2026, 10, 8, 23, 59, 59, tzinfo=SHANGHAI),
            id="17:30 UTC Sep 29 is already Sep 30 in Beijing",
        ),
        pytest.param(
            datetime(2026, 9, 29, 23, 59, tzinfo=SHANGHAI),
            0,
            datetime(2026, 9, 29, 23, 59, 59, tzinfo=SHANGHAI),
            id="0 working days: end of the same local day",
        ),
    ],
)
def test_deadline_ends_at_end_of_local_day(
    cal: WorkCalendar, opened_at: datetime, n: int, expected: datetime
) -> None:
    """Rule: N working days from a date-time end at 23:59:59 Asia/Shanghai of the N-th working day."""
    result = cal.deadline_at(opened_at, n)
    assert result.at == expected
    assert result.at.utcoffset() == timedelta(hours=8)
    assert not result.provisional


def test_end_of_day_is_configurable(cal: WorkCalendar) -> None:
    """Rule: the end-of-day time is a parameter (e.g. 18:00 office close)."""
    r = cal.deadline_at(datetime(2026, 9, 30, 10, tzinfo=SHANGHAI), 1, end_of_day=time(18, 0))
    assert r.at == datetime(2026, 10, 8, 18, 0, tzinfo=SHANGHAI)


def test_naive_datetime_is_refused(cal: WorkCalendar) -> None:
    """Rule: a date-time without a timezone has no well-defined local day."""
    with pytest.raises(ValueError, match="no timezone"):
        cal.deadline_at(datetime(2026, 9, 30, 10, 0), 1)


def test_many_equals_one_by_one(cal: WorkCalendar) -> None:
    """Rule: the vectorised form gives the same results as add_workdays."""
    starts = [D(2026, 9, 30), D(2026, 2, 13), D(2026, 12, 30), D(2027, 3, 1), D(2026, 3, 9)]
    ns = [4, 1, 3, 5, 0]
    assert cal.add_workdays_many(starts, ns) == [
        cal.add_workdays(s, k) for s, k in zip(starts, ns, strict=True)
    ]


KNOWN = st.dates(min_value=D(2004, 1, 1), max_value=D(2026, 10, 31))


def _oracle(start: date, n: int) -> date:
    """Step day by day with the library's own is_workday (an independent implementation)."""
    d = start
    while n:
        d += timedelta(days=1)
        if chinese_calendar.is_workday(d):
            n -= 1
    return d


@settings(max_examples=300, deadline=None)
@given(start=KNOWN, n=st.integers(min_value=0, max_value=40))
def test_add_workdays_agrees_with_the_library_day_by_day(start: date, n: int) -> None:
    """Rule: within 2004-2026 the fast table gives exactly what stepping with chinese-calendar gives."""
    cal = WorkCalendar()
    assert cal.add_workdays(start, n) == WorkdayResult(_oracle(start, n), provisional=False)


@settings(max_examples=300, deadline=None)
@given(start=st.dates(min_value=D(2000, 1, 1), max_value=D(2035, 12, 31)), n=st.integers(-600, 600))
def test_workdays_between_inverts_add_workdays(start: date, n: int) -> None:
    """Rule: workdays_between(a, add_workdays(a, n)) == n, in known and unknown years alike."""
    cal = WorkCalendar()
    assert cal.workdays_between(start, cal.add_workdays(start, n).date) == n


UTC_ = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("instant", "today"),
    [
        pytest.param(datetime(2026, 12, 4, 16, 30, tzinfo=UTC_), D(2026, 12, 5), id="utc-evening-is-shanghai-tomorrow"),
        pytest.param(datetime(2026, 12, 4, 15, 59, 59, tzinfo=UTC_), D(2026, 12, 4), id="second-before-midnight"),
        pytest.param(datetime(2026, 12, 4, 16, 0, tzinfo=UTC_), D(2026, 12, 5), id="shanghai-midnight"),
        pytest.param(datetime(2026, 12, 31, 23, 0, tzinfo=UTC_), D(2027, 1, 1), id="new-year-in-shanghai-first"),
        pytest.param(datetime(2026, 12, 5, 1, 0, tzinfo=SHANGHAI), D(2026, 12, 5), id="already-shanghai-time"),
    ],
)  # fmt: skip
def test_today_is_the_shanghai_date_not_the_utc_one(instant: datetime, today: date) -> None:
    """Versions are dated in Asia/Shanghai: at 00:30 there, UTC still says yesterday."""
    from grid.workdays import today_local

    assert today_local(instant) == today


def test_today_refuses_a_naive_instant() -> None:
    """A naive instant has no day: refused, not guessed."""
    from grid.workdays import today_local

    with pytest.raises(ValueError, match="no timezone"):
        today_local(datetime(2026, 12, 5, 1, 0))
