"""Working days on the official Chinese calendar (法定节假日与调休).

Case limits are counted in working days. China moves holidays every year and adds make-up
working weekends (调休上班), so "Monday to Friday" is wrong around every long holiday. The
``chinese-calendar`` package ships the official schedule for the years it knows (1.11: 2004–2026);
the State Council publishes next year's schedule each November or December, and a deployment loads
it from a file (:meth:`WorkCalendar.add_file`) without waiting for a library release::

    # config/holidays/2027.toml
    year = 2027                       # optional; else taken from the file name or the dates
    holidays = [2027-01-01, ...]      # days off (放假), weekend days inside the break included
    workdays = [2027-02-20, ...]      # make-up working weekend days (调休上班)

A year the calendar does not know is never an error. Its working days are Monday–Friday less the
statutory days off the law fixes for every year (:func:`statutory_days_off`: 《全国年节及纪念日放假办法》,
as amended in 2024 and in force from 2025 — 元旦 1 day, 春节 4 days from 除夕 to 初三, 清明 1, 劳动节
May 1–2, 端午 1, 中秋 1, 国庆 Oct 1–3; the lunar dates and 清明 computed by the ``holidays``
package). Only the make-up working weekends (调休) and bridging days stay unknown, so every result
that depended on such a year says ``provisional=True`` and is recomputed once the official list
arrives (``gridflow calendar load``). The official list (``chinese-calendar`` or a holiday file)
always wins over the derived days.

Counting convention (Civil Code Art. 201: the day a period starts is not counted): the n-th working
day *after* ``start``. A deadline "n working days" from a submitted datetime ends at the end of that
day in local time (default 23:59:59 Asia/Shanghai, see :meth:`WorkCalendar.deadline_at`).

Speed: working days are held as one sorted list of date ordinals covering every known year (and
the weekday-only years around them), so :meth:`WorkCalendar.add_workdays` is one binary search;
:meth:`WorkCalendar.add_workdays_many` does the same for a whole array with numpy.
The calendar is not thread-safe while years are being added; build it once, then share it.
"""

from __future__ import annotations

import bisect
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

SHANGHAI = ZoneInfo("Asia/Shanghai")
END_OF_DAY = time(23, 59, 59)

# Years of margin built around the known years; later dates extend the table on demand.
_MARGIN_YEARS = 2


# Names (zh_CN, as the ``holidays`` package spells them) of the statutory festivals; every other
# entry of its China calendar (调休 "休息日（由 … 调休）" days) is a schedule decision, not the law.
STATUTORY_FESTIVALS: dict[str, str] = {
    "元旦": "new_year",
    "农历除夕": "spring_festival_eve",
    "春节": "spring_festival",
    "清明节": "qingming",
    "劳动节": "labour_day",
    "端午节": "dragon_boat",
    "中秋节": "mid_autumn",
    "国庆节": "national_day",
}


def statutory_days_off(year: int) -> dict[date, str]:
    """The statutory days off of ``year`` under the national rules in force that year: date -> festival.

    Derived, not published: the ``holidays`` package applies each revision of
    《全国年节及纪念日放假办法》 (1999, 2007, 2013, and 2024 in force from 2025) and computes the
    lunar festivals and 清明 (reliable 1901–2099). Days it moves by observance or 调休 are left
    out: which weekdays are bridged and which weekends are worked is announced each year by the
    State Council and cannot be derived. Festival names are the keys of
    :data:`STATUTORY_FESTIVALS`' values (``spring_festival_eve``, ``national_day``, ...).
    """
    from holidays.countries.china import China  # imported here: only unlisted years need it

    out: dict[date, str] = {}
    calendar = China(years=year, observed=False, language="zh_CN")  # type: ignore[no-untyped-call]
    for d, names in calendar.items():
        for name in str(names).split("; "):
            festival = STATUTORY_FESTIVALS.get(name.strip())
            if festival is not None:
                out[d] = festival
    return out


class CalendarError(ValueError):
    """An official holiday list that is malformed or contradicts itself."""


@dataclass(frozen=True, slots=True)
class WorkdayResult:
    """A date reached by counting working days; ``provisional`` if an unknown year was counted."""

    date: date
    provisional: bool


@dataclass(frozen=True, slots=True)
class DeadlineAt:
    """A deadline instant (timezone-aware) and whether it rests on a provisional calendar."""

    at: datetime
    provisional: bool


def _library_schedule() -> dict[int, tuple[frozenset[date], frozenset[date]]]:
    """The official schedule shipped by ``chinese-calendar``: year -> (holidays, make-up workdays)."""
    import chinese_calendar  # imported here: the library is optional for file-only calendars

    holidays: dict[date, Any] = chinese_calendar.holidays
    workdays: dict[date, Any] = chinese_calendar.workdays
    first, last = min(holidays).year, max(holidays).year
    return {
        year: (
            frozenset(d for d in holidays if d.year == year),
            frozenset(d for d in workdays if d.year == year),
        )
        for year in range(first, last + 1)
    }


def _as_date(value: object, *, where: str) -> date:
    if isinstance(value, datetime):
        raise CalendarError(f"{where}: expected a date, got a date-time {value.isoformat()}")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise CalendarError(f"{where}: expected a date like 2027-01-01, got {value!r}")


class WorkCalendar:
    """Working days on the official calendar, with provisional counting for unknown years.

    ``WorkCalendar()`` knows what ``chinese-calendar`` ships; ``include_library=False`` starts empty
    (every year provisional) for deployments that load all years from files. In a year without an
    official list the statutory days off are derived (:func:`statutory_days_off`) unless
    ``derive_statutory=False``, which counts plain Monday–Friday there.
    """

    def __init__(self, *, include_library: bool = True, derive_statutory: bool = True) -> None:
        self._years: dict[int, tuple[frozenset[date], frozenset[date]]] = (
            _library_schedule() if include_library else {}
        )
        self._derive = derive_statutory
        self._derived: dict[int, frozenset[date]] = {}
        self._lo_year = 0
        self._hi_year = -1
        self._ords: list[int] = []
        self._ords_np: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._rebuild()

    # ----------------------------------------------------------------- loading official years

    @classmethod
    def from_files(
        cls, paths: Iterable[str | Path], *, include_library: bool = True, derive_statutory: bool = True
    ) -> WorkCalendar:
        """A calendar with the library's years plus one official holiday file per extra year."""
        cal = cls(include_library=include_library, derive_statutory=derive_statutory)
        for path in paths:
            cal.add_file(path)
        return cal

    def add_file(self, path: str | Path) -> int:
        """Load one official holiday file (see module doc); returns the year it added."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CalendarError(f"{p}: cannot read holiday file ({exc.strerror})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise CalendarError(f"{p}: not valid TOML ({exc})") from exc
        unknown = set(data) - {"year", "holidays", "workdays"}
        if unknown:
            raise CalendarError(f"{p}: unknown keys {sorted(unknown)}; expected year, holidays, workdays")
        raw_h, raw_w = data.get("holidays", []), data.get("workdays", [])
        if not isinstance(raw_h, list) or not isinstance(raw_w, list):
            raise CalendarError(f"{p}: holidays and workdays must be lists of dates")
        holidays = [_as_date(v, where=f"{p}: holidays[{i}]") for i, v in enumerate(raw_h)]
        workdays = [_as_date(v, where=f"{p}: workdays[{i}]") for i, v in enumerate(raw_w)]
        year = data.get("year")
        if year is None and p.stem.isdigit():
            year = int(p.stem)
        if year is None:
            years = {d.year for d in holidays + workdays}
            if len(years) != 1:
                raise CalendarError(f"{p}: say which year this is (year = 2027)")
            year = years.pop()
        if not isinstance(year, int) or isinstance(year, bool):
            raise CalendarError(f"{p}: year must be an integer, got {year!r}")
        try:
            self.add_year(year, holidays, workdays)
        except CalendarError as exc:
            raise CalendarError(f"{p}: {exc}") from exc
        return year

    def add_year(
        self, year: int, holidays: Iterable[date], workdays: Iterable[date], *, replace: bool = False
    ) -> None:
        """Make ``year`` official: ``holidays`` are days off, ``workdays`` make-up working weekends.

        Every date must fall in ``year``. A year the calendar already knows is refused unless
        ``replace=True`` (a correction to a published schedule).
        """
        hs, ws = frozenset(holidays), frozenset(workdays)
        if year in self._years and not replace:
            raise CalendarError(f"year {year} is already known; pass replace=True to correct it")
        for d in sorted(hs | ws):
            if d.year != year:
                raise CalendarError(f"{d.isoformat()} is not in {year}")
        both = sorted(hs & ws)
        if both:
            raise CalendarError(f"{both[0].isoformat()} is listed both as a holiday and as a workday")
        for d in sorted(ws):
            if d.weekday() < 5:
                raise CalendarError(
                    f"{d.isoformat()} is a {d.strftime('%A')}; make-up working days (调休上班) are "
                    "Saturdays or Sundays"
                )
        self._years[year] = (hs, ws)
        self._rebuild()

    @property
    def known_years(self) -> frozenset[int]:
        """Years with an official schedule; every other year is counted provisionally."""
        return frozenset(self._years)

    def is_known(self, d: date) -> bool:
        return d.year in self._years

    def derived_days_off(self, year: int) -> frozenset[date]:
        """The statutory days off assumed for a year without an official list (empty if known)."""
        if year in self._years or not self._derive:
            return frozenset()
        got = self._derived.get(year)
        if got is None:
            got = frozenset(statutory_days_off(year))
            self._derived[year] = got
        return got

    # ----------------------------------------------------------------- the ordinal table

    def _rebuild(self, lo: int | None = None, hi: int | None = None) -> None:
        years = list(self._years) or [date.today().year]
        lo_year = min([*years, *([lo] if lo is not None else [])]) - _MARGIN_YEARS
        hi_year = max([*years, *([hi] if hi is not None else [])]) + _MARGIN_YEARS
        lo_year, hi_year = max(lo_year, 1), min(hi_year, 9998)
        if self._hi_year >= self._lo_year:  # never shrink a table already built
            lo_year, hi_year = min(lo_year, self._lo_year), max(hi_year, self._hi_year)
        first = date(lo_year, 1, 1).toordinal()
        last = date(hi_year, 12, 31).toordinal()
        ords = np.arange(first, last + 1, dtype=np.int64)
        working = (ords - 1) % 7 < 5  # date.fromordinal(1) is a Monday
        for year in range(lo_year, hi_year + 1):
            for d in self.derived_days_off(year):
                working[d.toordinal() - first] = False
        for hs, ws in self._years.values():
            for d in hs:
                if first <= d.toordinal() <= last:
                    working[d.toordinal() - first] = False
            for d in ws:
                if first <= d.toordinal() <= last:
                    working[d.toordinal() - first] = True
        self._ords_np = ords[working]
        self._ords = self._ords_np.tolist()
        self._lo_year, self._hi_year = lo_year, hi_year

    def _cover(self, lo_year: int, hi_year: int) -> None:
        if lo_year < self._lo_year or hi_year > self._hi_year:
            self._rebuild(lo_year, hi_year)

    def _provisional(self, first: date, last: date) -> bool:
        """Whether any year from ``first`` to ``last`` (inclusive, either order) is unknown."""
        a, b = sorted((first.year, last.year))
        return any(y not in self._years for y in range(a, b + 1))

    # ----------------------------------------------------------------- queries

    def is_workday(self, d: date) -> bool:
        """A working day: official schedule for known years, else Monday–Friday less derived days off."""
        sched = self._years.get(d.year)
        if sched is None:
            return d.weekday() < 5 and d not in self.derived_days_off(d.year)
        holidays, workdays = sched
        if d in workdays:
            return True
        return d not in holidays and d.weekday() < 5

    def add_workdays(self, start: date, n: int) -> WorkdayResult:
        """The ``n``-th working day after ``start`` (``start`` itself is not counted).

        ``n = 0`` returns ``start``; a negative ``n`` counts back (the |n|-th working day before).
        ``provisional`` is set when a counted day lies in a year the calendar does not know.
        """
        if isinstance(start, datetime):
            raise TypeError("add_workdays counts from a date; use deadline_at for a date-time")
        if n == 0:
            return WorkdayResult(start, False)
        span = abs(n) // 240 + 2  # a year has at least ~240 working days
        self._cover(start.year - span, start.year + span)
        s = start.toordinal()
        if n > 0:
            i = bisect.bisect_right(self._ords, s) + n - 1
            first = start + timedelta(days=1)
        else:
            i = bisect.bisect_left(self._ords, s) + n
            first = start - timedelta(days=1)
        result = date.fromordinal(self._ords[i])
        return WorkdayResult(result, self._provisional(first, result))

    def add_workdays_many(self, starts: Sequence[date], n: int | Sequence[int]) -> list[WorkdayResult]:
        """:meth:`add_workdays` over many start dates at once (one vectorised search)."""
        if not starts:
            return []
        s = np.fromiter((d.toordinal() for d in starts), dtype=np.int64, count=len(starts))
        ns = np.broadcast_to(np.asarray(n, dtype=np.int64), s.shape)
        if (ns < 0).any():
            raise ValueError("add_workdays_many counts forward only; use add_workdays for n < 0")
        span = int(ns.max()) // 240 + 2
        self._cover(date.fromordinal(int(s.min())).year, date.fromordinal(int(s.max())).year + span)
        idx = np.searchsorted(self._ords_np, s, side="right") + ns - 1
        out = np.where(ns == 0, s, self._ords_np[np.maximum(idx, 0)])
        results: list[WorkdayResult] = []
        for start, o, k in zip(starts, out.tolist(), ns.tolist(), strict=True):
            d = date.fromordinal(o)
            prov = k != 0 and self._provisional(start + timedelta(days=1), d)
            results.append(WorkdayResult(d, prov))
        return results

    def workdays_between(self, a: date, b: date) -> int:
        """Signed count of working days from ``a`` to ``b``, not counting ``a`` but counting ``b``.

        Forward it is the days ``a < d <= b``; backward (``b`` before ``a``) minus the days
        ``b <= d < a``. So it inverts :meth:`add_workdays`: ``workdays_between(a, add_workdays(a, n).date)
        == n`` for every ``n``.
        """
        lo, hi = sorted((a, b))
        self._cover(lo.year, hi.year)
        if b >= a:
            return bisect.bisect_right(self._ords, b.toordinal()) - bisect.bisect_right(
                self._ords, a.toordinal()
            )
        return bisect.bisect_left(self._ords, b.toordinal()) - bisect.bisect_left(self._ords, a.toordinal())

    @staticmethod
    def add_calendar_days(start: date, n: int) -> date:
        """``start`` plus ``n`` calendar days (statutory limits such as the 15-day mediation window)."""
        return start + timedelta(days=n)

    def next_workday_on_or_after(self, d: date) -> WorkdayResult:
        """``d`` if it is a working day, else the first working day after it."""
        if self.is_workday(d):
            return WorkdayResult(d, not self.is_known(d))
        return self.add_workdays(d, 1)

    def deadline_at(
        self,
        opened_at: datetime,
        n: int,
        *,
        tz: ZoneInfo = SHANGHAI,
        end_of_day: time = END_OF_DAY,
    ) -> DeadlineAt:
        """End of the ``n``-th working day after the local date of ``opened_at``.

        ``opened_at`` must be timezone-aware; it is read in ``tz`` (Asia/Shanghai by default), so a
        case submitted at 01:00 Beijing time on a Monday counts from that Monday whatever UTC says.
        The result is ``end_of_day`` (23:59:59 by default) local time of the deadline day.
        """
        local = to_local(opened_at, tz)
        r = self.add_workdays(local.date(), n)
        return DeadlineAt(datetime.combine(r.date, end_of_day, tzinfo=tz), r.provisional)


def to_local(at: datetime, tz: ZoneInfo = SHANGHAI) -> datetime:
    """``at`` in ``tz``; a naive date-time is refused, since its day would be a guess."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(
            f"date-time {at.isoformat()} has no timezone; pass an aware datetime (e.g. Asia/Shanghai)"
        )
    return at.astimezone(tz)


def today_local(now: datetime | None = None, tz: ZoneInfo = SHANGHAI) -> date:
    """Today's date in ``tz`` (Asia/Shanghai by default), not the machine's or UTC's.

    Cell and division versions are dated by it: at 01:00 in Shanghai it is already tomorrow, while
    UTC (and a server kept on UTC) still says yesterday. ``now`` (aware) pins the instant.
    """
    return to_local(now if now is not None else datetime.now(tz), tz).date()


def end_of(d: date, *, tz: ZoneInfo = SHANGHAI, end_of_day: time = END_OF_DAY) -> datetime:
    """The last instant of local day ``d`` (by default 23:59:59 Asia/Shanghai)."""
    return datetime.combine(d, end_of_day, tzinfo=tz)
