"""Deadlines of a case and the supervision steps queued behind them (12345 接诉即办 practice).

* ``respond_by`` / ``resolve_by``: the policy's limits for (kind, level) in **working days** on the
  official calendar, counted from the day after the case was opened (Civil Code Art. 201) and
  ending at the end of the last day, local time (:meth:`WorkCalendar.deadline_at`).
* ``mediation_window_ends`` (disputes only): Art. 14 of the Labour Dispute Mediation and
  Arbitration Law, 15 **calendar** days from the application; after it a party may go to
  arbitration. With ``mediation.roll_forward_if_last_day_holiday`` a last day that is a day off moves
  to the next working day (Civil Code Art. 203); off by default, as the province policy counts plain days.
* Steps after a deadline: a reminder (催办) the day after it passes, then a written criticism
  (通报) with escalation one level up ``criticise_after_workdays`` working days after the reminder.

Every result says ``provisional`` when it counted days in a year the calendar does not know yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from connectors.kinds import CaseFamily, CaseKind
from geodata.codes import Level
from grid.cases.policy import ProvincePolicy, ResolvedLimits
from grid.cases.routing import CaseFacts
from grid.cases.states import next_level
from grid.workdays import WorkCalendar, end_of, to_local

StepKind = Literal["remind", "criticise_and_escalate", "criticise"]


@dataclass(frozen=True, slots=True)
class Deadlines:
    respond_by: datetime
    resolve_by: datetime
    mediation_window_ends: datetime | None
    provisional: bool
    limits: ResolvedLimits


@dataclass(frozen=True, slots=True)
class Step:
    """A queued supervision step ``(case, step, due_at)``.

    ``kind`` is ``criticise`` (without escalation) when the case is already at the policy's top
    level or the policy does not escalate on criticism; ``escalate_to`` is then None.
    """

    case_id: str
    kind: StepKind
    due_at: datetime
    level: Level
    escalate_to: Level | None
    provisional: bool


def deadlines_for(
    case: CaseFacts | CaseKind,
    level: Level,
    opened_at: datetime,
    policy: ProvincePolicy,
    calendar: WorkCalendar,
) -> Deadlines:
    """Deadlines for a case of this kind owned at ``level``, opened at the aware ``opened_at``."""
    kind = case.kind if isinstance(case, CaseFacts) else CaseKind(case)
    owner_level = min(level, Level.COMMUNITY)  # a cell's grid officer works to community limits
    limits = policy.deadlines.limits_for(kind, owner_level)
    cal = policy.calendar
    respond = calendar.deadline_at(opened_at, limits.respond_workdays, tz=cal.tz, end_of_day=cal.end_of_day)
    resolve = calendar.deadline_at(opened_at, limits.resolve_workdays, tz=cal.tz, end_of_day=cal.end_of_day)
    provisional = respond.provisional or resolve.provisional

    window: datetime | None = None
    if kind.family is CaseFamily.DISPUTE:
        opened_day = to_local(opened_at, cal.tz).date()
        last: date = calendar.add_calendar_days(opened_day, policy.mediation.window_calendar_days)
        if policy.mediation.roll_forward_if_last_day_holiday:
            rolled = calendar.next_workday_on_or_after(last)
            last = rolled.date
            provisional = provisional or rolled.provisional
        window = end_of(last, tz=cal.tz, end_of_day=cal.end_of_day)

    return Deadlines(respond.at, resolve.at, window, provisional, limits)


def escalation_steps(
    case_id: str,
    level: Level,
    deadline: datetime,
    policy: ProvincePolicy,
    calendar: WorkCalendar,
) -> list[Step]:
    """The reminder and the criticism (with escalation) that follow a missed ``deadline``.

    Reminder: ``supervision.remind_after_days`` days (calendar or working, per policy) after the
    deadline's local day. Criticism: ``criticise_after_workdays`` working days after the reminder.
    Both are due at ``calendar.notice_time`` local time.
    """
    cal, sup = policy.calendar, policy.supervision
    deadline_day = to_local(deadline, cal.tz).date()
    if sup.remind_day_kind == "calendar":
        remind_day = deadline_day + timedelta(days=sup.remind_after_days)
        remind_prov = False
    else:
        r = calendar.add_workdays(deadline_day, sup.remind_after_days)
        remind_day, remind_prov = r.date, r.provisional
    criticise = calendar.add_workdays(remind_day, sup.criticise_after_workdays)

    owner_level = min(level, Level.COMMUNITY)
    escalate_to: Level | None = None
    if sup.escalate_on_criticism and owner_level > policy.routing.max_level:
        escalate_to = next_level(owner_level, max_level=policy.routing.max_level)

    def at(d: date) -> datetime:
        return datetime.combine(d, cal.notice_time, tzinfo=cal.tz)

    return [
        Step(case_id, "remind", at(remind_day), owner_level, None, remind_prov),
        Step(
            case_id,
            "criticise_and_escalate" if escalate_to is not None else "criticise",
            at(criticise.date),
            owner_level,
            escalate_to,
            remind_prov or criticise.provisional,
        ),
    ]
