"""Deadlines on the officer pages: response and resolution deadline, time left, 暂定 marks.

Strings are merged into :data:`grid.web.i18n.STRINGS`; :func:`time_left` is what the templates
call (``left(at)``) and :func:`seconds_left` what the API returns. A response deadline only
matters while the case waits to be accepted by its current owner (state ``new`` or ``returned``,
the same rule as the coverage report's ``overdue_response``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from grid.cases.states import AWAITING_STATES as _AWAITING

#: The states whose response deadline runs (the rule is :data:`grid.cases.states.AWAITING_STATES`),
#: as the strings the templates compare.
AWAITING_STATES: Final = frozenset(s.value for s in _AWAITING)

STRINGS: dict[str, tuple[str, str]] = {
    "respond_by": ("响应时限", "Respond by"),
    "provisional_mark": ("暂定", "provisional"),
    "provisional_hint": (
        "期限跨入官方放假安排尚未公布的年份，按法定节假日推算，调休公布后重算",
        "runs into a year whose official holiday schedule is not published yet: counted with the "
        "statutory days off, recomputed when the schedule is published",
    ),
    "responded_mark": ("已响应", "responded"),
    "left_fmt": ("剩余{d}", "{d} left"),
    "late_fmt": ("超期{d}", "{d} overdue"),
    "days_hours": ("{d}天{h}小时", "{d} d {h} h"),
    "hours_minutes": ("{h}小时{m}分", "{h} h {m} min"),
}


def seconds_left(deadline: datetime, now: datetime | None = None) -> int:
    """Whole seconds from ``now`` to ``deadline`` (negative once it has passed)."""
    return int((deadline - (now or datetime.now(UTC))).total_seconds())


def time_left(lang: str, deadline: datetime, now: datetime | None = None) -> str:
    """ "剩余2天3小时" / "2 d 3 h left", or "超期1天0小时" / "1 d 0 h overdue"."""
    i = 1 if lang == "en" else 0
    secs = seconds_left(deadline, now)
    span = abs(secs)
    days, rest = divmod(span, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        amount = STRINGS["days_hours"][i].format(d=days, h=hours)
    else:
        amount = STRINGS["hours_minutes"][i].format(h=hours, m=rest // 60)
    return STRINGS["left_fmt" if secs >= 0 else "late_fmt"][i].format(d=amount)
