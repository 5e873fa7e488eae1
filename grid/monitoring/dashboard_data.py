"""Queries behind the province and city dashboards: divisions, coverage snapshots, trends, ranking.

Every function takes an explicit connection and keyword-only arguments. Scope is part of each
query: ``prefix`` is the caller's chain-code prefix ('' for an administrator) and a division
outside it is simply not found, so a page can answer 404 without telling "absent" from "not
yours". The tables read here hold counts only (migration 0004): no personal data passes
through this module. Rates are computed on read, ``None`` when the denominator is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

import psycopg2.extensions

from geodata.codes import chain_codes, own_prefix
from grid.monitoring.coverage import COUNT_FIELDS, RATE_BY_NAME, RATES, Counts, SnapshotRun, latest_run

Conn = psycopg2.extensions.connection

_COLS_SQL: Final = ", ".join(f"s.{c}" for c in COUNT_FIELDS)
FOUR_FULLS: Final = tuple(m for m in RATES if m.family == "four_fulls")
SUPERVISION: Final = tuple(m for m in RATES if m.family == "supervision")
# The trend charts: one per goal of the four fulls (disputes carries its on-time share as a 2nd line).
TREND_CHARTS: Final = (("union",), ("workers",), ("disputes", "disputes_on_time"), ("hardship",))


@dataclass(frozen=True, slots=True)
class DivisionInfo:
    code: str
    level: int
    name: str
    parent_code: str | None
    generated: bool


@dataclass(frozen=True, slots=True)
class RankRow:
    """One unit in the on-time ranking. ``position`` is None for units with nothing due or no data."""

    position: int | None
    unit: DivisionInfo
    counts: Counts | None
    status: str  # "ranked" | "no_due" | "no_data"

    def rate(self, metric: str) -> float | None:
        return None if self.counts is None else self.counts.rate(metric)


def _like(prefix: str) -> str:
    return prefix + "%"


_DIVISION_SQL: Final = "SELECT code, level, name, parent_code, generated FROM division"


def _division(row: Sequence[Any]) -> DivisionInfo:
    return DivisionInfo(str(row[0]), int(row[1]), str(row[2]), row[3] and str(row[3]), bool(row[4]))


def division(conn: Conn, *, code: str, prefix: str) -> DivisionInfo | None:
    """The current division ``code`` if it lies inside ``prefix``."""
    with conn.cursor() as cur:
        cur.execute(
            f"{_DIVISION_SQL} WHERE code = %s AND valid_to IS NULL AND code LIKE %s", (code, _like(prefix))
        )
        row = cur.fetchone()
    return None if row is None else _division(row)


def children(conn: Conn, *, code: str, prefix: str) -> list[DivisionInfo]:
    """The current divisions whose parent is ``code``, by code."""
    with conn.cursor() as cur:
        cur.execute(
            f"{_DIVISION_SQL} WHERE parent_code = %s AND valid_to IS NULL AND code LIKE %s ORDER BY code",
            (code, _like(prefix)),
        )
        return [_division(r) for r in cur.fetchall()]


def units_at_level(conn: Conn, *, within: str, level: int, prefix: str) -> list[DivisionInfo]:
    """The current divisions of ``level`` whose code starts with ``within`` (and ``prefix``)."""
    with conn.cursor() as cur:
        cur.execute(
            f"{_DIVISION_SQL} WHERE level = %s AND valid_to IS NULL AND code LIKE %s AND code LIKE %s "
            "ORDER BY code",
            (level, _like(within), _like(prefix)),
        )
        return [_division(r) for r in cur.fetchall()]


def names(conn: Conn, *, codes: Iterable[str], prefix: str) -> dict[str, str]:
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT code, name FROM division WHERE code = ANY(%s) AND valid_to IS NULL AND code LIKE %s",
            (wanted, _like(prefix)),
        )
        return {str(c): str(n) for c, n in cur.fetchall()}


def counts(conn: Conn, *, codes: Iterable[str], snapshot_date: date, prefix: str) -> dict[str, Counts]:
    """Snapshot counts of the given divisions on one day; a division without a row is absent."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT s.division_code, {_COLS_SQL} FROM coverage_snapshot s "
            "WHERE s.snapshot_date = %s AND s.division_code = ANY(%s::char(12)[]) AND s.division_code LIKE %s",
            (snapshot_date, wanted, _like(prefix)),
        )
        return {str(r[0]): Counts.from_values(r[1:]) for r in cur.fetchall()}


def counts_at_level(
    conn: Conn, *, within: str, level: int, snapshot_date: date, prefix: str
) -> dict[str, Counts]:
    """Snapshot counts of every division of ``level`` whose code starts with ``within``."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT s.division_code, {_COLS_SQL} FROM coverage_snapshot s "
            "WHERE s.snapshot_date = %s AND s.level = %s AND s.division_code LIKE %s AND s.division_code LIKE %s",
            (snapshot_date, level, _like(within), _like(prefix)),
        )
        return {str(r[0]): Counts.from_values(r[1:]) for r in cur.fetchall()}


def trend(conn: Conn, *, code: str, until: date, days: int, prefix: str) -> list[tuple[date, Counts]]:
    """One division's snapshots over the ``days`` days ending with ``until``, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT s.snapshot_date, {_COLS_SQL} FROM coverage_snapshot s "
            "WHERE s.division_code = %s AND s.snapshot_date > %s AND s.snapshot_date <= %s "
            "AND s.division_code LIKE %s ORDER BY s.snapshot_date",
            (code, until - timedelta(days=days), until, _like(prefix)),
        )
        return [(r[0], Counts.from_values(r[1:])) for r in cur.fetchall()]


def rank(units: Sequence[DivisionInfo], by_code: dict[str, Counts]) -> list[RankRow]:
    """Units ranked by on-time rate (resolved on time / due), exact fractions, best first.

    Ties: more cases due first, then code. Units with nothing due come after every ranked unit
    ("no cases due"), then units without a snapshot row ("no data"); both by code, unnumbered.
    """
    # Float keys order these fractions exactly: a/b and c/d with b, d < 10**7 are equal as floats
    # iff equal as fractions (int / int is correctly rounded), and when different they differ by
    # at least 1/(b*d) > 1e-14, far above a double's rounding error - and 20x cheaper than Fraction.
    on_time = RATE_BY_NAME["on_time"]
    ranked: list[tuple[tuple[float, int, str], DivisionInfo, Counts]] = []
    no_due: list[RankRow] = []
    no_data: list[RankRow] = []
    for u in sorted(units, key=lambda u: u.code):
        c = by_code.get(u.code)
        if c is None:
            no_data.append(RankRow(None, u, None, "no_data"))
            continue
        r = c.rate(on_time)
        if r is None:
            no_due.append(RankRow(None, u, c, "no_due"))
        else:
            ranked.append(((-r, -c.due, u.code), u, c))
    ranked.sort(key=lambda t: t[0])
    out = [RankRow(i, u, c, "ranked") for i, (_, u, c) in enumerate(ranked, start=1)]
    return [*out, *no_due, *no_data]


# ----------------------------------------------------------------------------- page assembly


@dataclass(frozen=True, slots=True)
class ChildRow:
    unit: DivisionInfo
    counts: Counts | None

    def rate(self, metric: str) -> float | None:
        return None if self.counts is None else self.counts.rate(metric)


@dataclass(frozen=True, slots=True)
class DivisionData:
    """Everything a division page, and its exports, show."""

    division: DivisionInfo
    run: SnapshotRun | None
    own: Counts | None
    children: list[ChildRow]
    trend: list[tuple[date, Counts]]
    days: int
    crumbs: list[tuple[str, str]]  # (code, name) from the caller's scope root down to this division


def division_data(
    conn: Conn, *, code: str, prefix: str, on_or_before: date | None = None, days: int = 90
) -> DivisionData | None:
    """The division's own numbers, its children's and its trend; None if absent or out of scope."""
    d = division(conn, code=code, prefix=prefix)
    if d is None:
        return None
    kids = children(conn, code=code, prefix=prefix)
    run = latest_run(conn, on_or_before=on_or_before)
    snap: dict[str, Counts] = {}
    series: list[tuple[date, Counts]] = []
    if run is not None:
        snap = counts(
            conn, codes=[code, *(k.code for k in kids)], snapshot_date=run.snapshot_date, prefix=prefix
        )
        series = trend(conn, code=code, until=run.snapshot_date, days=days, prefix=prefix)
    up = [c for c in chain_codes(code) if c.startswith(prefix) and c != code]
    # a unit directly under the province (a province-administered county) skips the city level
    named = names(conn, codes=up, prefix=prefix)
    crumbs = [(c, named[c]) for c in up if c in named] + [(code, d.name)]
    return DivisionData(
        division=d,
        run=run,
        own=snap.get(code),
        children=[ChildRow(k, snap.get(k.code)) for k in kids],
        trend=series,
        days=days,
        crumbs=crumbs,
    )


def ranking_data(
    conn: Conn, *, unit: DivisionInfo, prefix: str, level: int | None, on_or_before: date | None = None
) -> tuple[SnapshotRun | None, list[RankRow]]:
    """The ranking of the units of ``level`` inside ``unit`` (default: its children), on the
    latest snapshot on or before a date."""
    run = latest_run(conn, on_or_before=on_or_before)
    snap: dict[str, Counts] = {}
    if level is None:
        units = children(conn, code=unit.code, prefix=prefix)
        if run is not None:
            snap = counts(conn, codes=[u.code for u in units], snapshot_date=run.snapshot_date, prefix=prefix)
    else:
        within = own_prefix(unit.code)
        units = units_at_level(conn, within=within, level=level, prefix=prefix)
        if run is not None:
            snap = counts_at_level(
                conn, within=within, level=level, snapshot_date=run.snapshot_date, prefix=prefix
            )
    return run, rank(units, snap)
