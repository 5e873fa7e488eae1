"""One injectable clock: the time a flow, the sweep or the coverage report acts at.

Every time-dependent entry point (``nightly-sync``/``sync-source``/``sync-city``, the escalation
sweep, the coverage report) takes its time as an explicit parameter — ``as_of``/``now`` an ISO time,
``snapshot_date`` a date — and falls back to the real current time when it is not given. There is no
hidden global: the time travels as a flow parameter, so a replay or a simulation names it in the
Prefect run's parameters for anyone to see.

A simulation (``gridflow simulate``) replays the N days ENDING TODAY, so every simulated time is at
or before the database clock: nothing is ever written dated in the future, and the sweep's
future-time guard (:data:`grid.cases.sweep.CLOCK_TOLERANCE`) holds without a drill flag.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo


class FutureTime(ValueError):
    """A time after the current time was asked for where only the past may be replayed."""


def resolve(as_of: str | datetime | None, *, tz: tzinfo = UTC) -> datetime:
    """The time to act at: ``as_of`` (an ISO time; without an offset it is ``tz`` local time), or
    the current time when it is None or empty. Always timezone-aware."""
    if as_of is None or as_of == "":
        return datetime.now(UTC)
    at = as_of if isinstance(as_of, datetime) else datetime.fromisoformat(as_of)
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


def local_day(at: datetime, tz: tzinfo) -> date:
    """The calendar day of ``at`` in ``tz`` (the policy's time zone)."""
    return at.astimezone(tz).date()


def past_only(at: datetime, *, now: datetime | None = None) -> datetime:
    """``at`` unchanged, or :class:`FutureTime` when it lies after ``now`` (the current time)."""
    if at > (now or datetime.now(UTC)):
        raise FutureTime(f"{at.isoformat()} is after the current time; only past days can be simulated")
    return at
