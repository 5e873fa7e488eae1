"""Coverage snapshots: the four fulls, supervision rates and overdue counts of every division, per day.

(Over 500 lines on purpose: the definitions, the one SQL statement that computes them and the
rate table stay together, so a definition cannot change without its SQL in the same file.)

This docstring is the definition of every number in ``coverage_snapshot`` (migration 0004); the
SQL below implements it and the dashboard reads it.

Attribution
    A record belongs to division D when its ``division_code`` (the lowest division known for it:
    the community when it sits in a grid cell, a town/county/city when it was placed by address
    only) lies in D's subtree, read from the code prefix (province 2 digits, city 4, county 6,
    town 9, community 12; :mod:`geodata.codes`). A division's row therefore counts its whole
    subtree: the sum of its children's rows plus the records attributed to it directly.
    Enterprises and workers with no ``division_code`` at all count for their source's city
    (``source.city_code``) and the province above it only. Soft-deleted enterprises and workers
    (``deleted_at`` set) are not counted. Cases count where they were filed (``case_file.division_code``,
    fixed at intake), not where their current owner sits.

Registry (工会组织全覆盖, 职工信息全掌握) — the live rows as they are when the snapshot is computed
    * ``enterprises``: live enterprises; ``enterprises_union``: of them, ``union_established``.
    * ``workers``: live worker records; ``workers_mapped``: of them, placed in a grid cell
      (``cell_code`` set). A worker without a division is never mapped.
    * Every *known* record is counted: the denominator of 职工信息掌握率 is every stored worker of
      the division, placed in a cell or not. A worker whose identifying fields (resident ID,
      name) are valid is stored even when its phone, birth date, employer code or location is
      wrong — a field problem (``connectors/problems.py``): without a usable point it is placed
      by address (counted in that division, not mapped) or, with neither, stored unmapped with the
      reason code and counted at its source's city. The same holds for enterprises (credit code,
      name and union flag identify them / are counted) and 工会组织覆盖率.
    * A record quarantined whole (a record problem) is known to no division and counted in no
      rate; the snapshot's notes (:mod:`grid.monitoring.pending`, ``coverage_note``) count such
      records at their source's city and show them beside the rate as "另有 N 条待核实", with
      the records counted despite a field problem — so sending worse data cannot improve a rate.

Case window
    The year counts cover cases opened in the calendar year of the snapshot date in the policy's
    time zone (Asia/Shanghai: a case opened at 00:30 on 1 January local time is in the new year
    although it is still 31 December in UTC), and no later than ``as_of``.
    A case is *done* at ``as_of`` when its state is ``resolved`` or ``closed`` and its
    ``resolved_at`` <= ``as_of`` (closing keeps ``resolved_at``; a reopen clears it and the
    outcome, so a reopened case is not done). It is *open* at ``as_of`` when it was opened by then
    and is not done.

劳资矛盾全调解 (disputes, family ``dispute``, in the window)
    * ``disputes``; ``disputes_resolved``: done; ``disputes_on_time``: done with
      ``resolved_at <= resolve_by``.

困难职工全帮扶 (hardship, family ``hardship``, in the window)
    * ``hardship``; ``hardship_helped``: done with outcome ``assistance_delivered``.

Supervision (all families, in the window; the pattern of the 12345 government hotline)
    * ``cases``.
    * ``responded_on_time``: responded by the case's current owner within its limit —
      ``responded_at <= respond_by`` and the case is not waiting to be accepted (state ``new`` or
      ``returned``). An escalation, reassignment or return gives the case a new owner and a new
      ``respond_by`` but keeps the previous owner's ``responded_at`` until the new owner accepts;
      such a case has not been responded to yet.
    * ``resolved``: done. ``resolved_on_time``: done with ``resolved_at <= resolve_by``.
    * ``due``: done, or ``resolve_by < as_of`` (its deadline has passed either way).

Overdue (open cases of any year at ``as_of``)
    * ``overdue``: ``resolve_by < as_of``.
    * ``overdue_response``: waiting to be accepted by its current owner (state ``new`` or
      ``returned``) with ``respond_by < as_of``.

Rates are never stored: they are computed on read by :func:`rate` / :data:`RATES`, and are
``None`` when the denominator is 0.

    ======================  ===================  ==================  ==========================
    rate                    numerator            denominator         meaning
    ======================  ===================  ==================  ==========================
    ``union``               enterprises_union    enterprises         工会组织全覆盖
    ``workers``             workers_mapped       workers             职工信息全掌握
    ``disputes``            disputes_resolved    disputes            劳资矛盾全调解
    ``disputes_on_time``    disputes_on_time     disputes            of them resolved on time
    ``hardship``            hardship_helped      hardship            困难职工全帮扶
    ``response``            responded_on_time    cases               响应率 (on time)
    ``resolution``          resolved             cases               解决率
    ``on_time``             resolved_on_time     due                 按期办结率
    ======================  ===================  ==================  ==========================

A snapshot is computed for one date in one transaction and replaces that date's rows (re-running
a date is idempotent; two runs of one date queue on the ``coverage_run`` row). Every current
division (``valid_to IS NULL``) gets a row, all zero if nothing is attributed to it. The states,
registry flags and placements are the rows' current values: ``as_of`` bounds the case times only,
so a snapshot computed later for a past date approximates that day (registry changes are not
versioned).

The computation is set-based: each table is aggregated once by its attribution code, each distinct
code is expanded to its ancestors by prefix, and the sums are joined onto the current divisions —
no query per division.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Final
from uuid import UUID

import psycopg2.extensions

from grid.cases.states import SQL_DONE
from grid.monitoring.pending import compute_notes
from grid.store.db import transaction
from grid.workdays import SHANGHAI

Conn = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor


# The count columns of coverage_snapshot, in table order.
COUNT_FIELDS: Final = (
    "enterprises",
    "enterprises_union",
    "workers",
    "workers_mapped",
    "disputes",
    "disputes_resolved",
    "disputes_on_time",
    "hardship",
    "hardship_helped",
    "cases",
    "responded_on_time",
    "resolved",
    "due",
    "resolved_on_time",
    "overdue",
    "overdue_response",
)


@dataclass(frozen=True, slots=True)
class RateDef:
    """One rate: numerator / denominator of two count columns, with its labels."""

    name: str
    numerator: str
    denominator: str
    label_zh: str
    label_en: str
    family: str  # "four_fulls" | "supervision"

    def label(self, lang: str) -> str:
        return self.label_en if lang == "en" else self.label_zh


# The rates, in display order (the four fulls first, then supervision).
RATES: Final[tuple[RateDef, ...]] = (
    RateDef("union", "enterprises_union", "enterprises", "工会组织覆盖率", "Union coverage", "four_fulls"),
    RateDef("workers", "workers_mapped", "workers", "职工信息掌握率", "Workers mapped", "four_fulls"),
    RateDef("disputes", "disputes_resolved", "disputes", "劳资纠纷调解率", "Disputes resolved", "four_fulls"),
    RateDef(
        "disputes_on_time", "disputes_on_time", "disputes", "纠纷按时调解率", "Disputes on time", "four_fulls"
    ),
    RateDef("hardship", "hardship_helped", "hardship", "困难职工帮扶率", "Hardship helped", "four_fulls"),
    RateDef("response", "responded_on_time", "cases", "响应率", "Response rate", "supervision"),
    RateDef("resolution", "resolved", "cases", "解决率", "Resolution rate", "supervision"),
    RateDef("on_time", "resolved_on_time", "due", "按时办结率", "On-time rate", "supervision"),
)


RATE_BY_NAME: Final = {r.name: r for r in RATES}


def rate(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``, or None when there is nothing to divide by."""
    if denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Counts:
    """The count columns of one ``coverage_snapshot`` row (see the module docstring)."""

    enterprises: int = 0
    enterprises_union: int = 0
    workers: int = 0
    workers_mapped: int = 0
    disputes: int = 0
    disputes_resolved: int = 0
    disputes_on_time: int = 0
    hardship: int = 0
    hardship_helped: int = 0
    cases: int = 0
    responded_on_time: int = 0
    resolved: int = 0
    due: int = 0
    resolved_on_time: int = 0
    overdue: int = 0
    overdue_response: int = 0

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> Counts:
        """From the values of :data:`COUNT_FIELDS`, in that order."""
        return cls(*(int(v) for v in values))

    def count(self, name: str) -> int:
        value: int = getattr(self, name)
        return value

    def rate(self, metric: RateDef | str) -> float | None:
        """One rate (Python's int / int is correctly rounded), None when undefined."""
        m = RATE_BY_NAME[metric] if isinstance(metric, str) else metric
        return rate(self.count(m.numerator), self.count(m.denominator))

    def ratio(self, metric: RateDef | str) -> str:
        """``numerator/denominator`` of one rate, for display next to it."""
        m = RATE_BY_NAME[metric] if isinstance(metric, str) else metric
        return f"{self.count(m.numerator)}/{self.count(m.denominator)}"

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def rates(self) -> dict[str, float | None]:
        """Every rate of :data:`RATES`, by name."""
        return {r.name: self.rate(r) for r in RATES}

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, n) + getattr(other, n) for n in COUNT_FIELDS))

    @property
    def empty(self) -> bool:
        return not any(getattr(self, n) for n in COUNT_FIELDS)


assert tuple(f.name for f in fields(Counts)) == COUNT_FIELDS


@dataclass(frozen=True, slots=True)
class DivisionCoverage:
    """One division's row of a snapshot, with its current name."""

    code: str
    level: int
    parent_code: str | None
    name: str
    counts: Counts


@dataclass(frozen=True, slots=True)
class CoverageSummary:
    """A computed snapshot: its run, the provinces that have records, and their cities."""

    snapshot_date: date
    as_of: datetime
    computed_at: datetime
    flow_run_id: UUID | None
    divisions: int
    provinces: tuple[DivisionCoverage, ...]
    cities: tuple[DivisionCoverage, ...]
    seconds: float | None = None


class CoverageError(ValueError):
    """A snapshot that cannot be computed as asked (one sentence)."""


# ----------------------------------------------------------------------------- time


def year_window(snapshot_date: date, tz: tzinfo = SHANGHAI) -> tuple[datetime, datetime]:
    """[1 January, next 1 January) of the snapshot's year, at local midnight."""
    return (
        datetime(snapshot_date.year, 1, 1, tzinfo=tz),
        datetime(snapshot_date.year + 1, 1, 1, tzinfo=tz),
    )


def as_of_for(snapshot_date: date | None, *, now: datetime, tz: tzinfo = SHANGHAI) -> tuple[date, datetime]:
    """The date and instant of a snapshot: today's is as of ``now``; a past date's is as of the
    end of that day (local midnight after it). A future date is refused."""
    if now.tzinfo is None:
        raise CoverageError("now must carry a time zone")
    today = now.astimezone(tz).date()
    day = snapshot_date or today
    if day > today:
        raise CoverageError(f"the snapshot date {day.isoformat()} is in the future (today is {today})")
    if day == today:
        return day, now
    return day, datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz)


def parse_date(text: str | None) -> date | None:
    """``YYYY-MM-DD`` or nothing; anything else raises CoverageError."""
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CoverageError(f"a snapshot date is YYYY-MM-DD, got {text!r}") from None


# ----------------------------------------------------------------------------- SQL

# Which leading digits of a 12-digit code are its own (2 province ... 12 community).
_OWN_LEN = """CASE WHEN substr({c}, 3) = '0000000000' THEN 2
                   WHEN substr({c}, 5) = '00000000' THEN 4
                   WHEN substr({c}, 7) = '000000' THEN 6
                   WHEN substr({c}, 10) = '000' THEN 9
                   ELSE 12 END"""

_CASE_COUNTS: Final[Mapping[str, str]] = {
    "disputes": "in_year AND family = 'dispute'",
    "disputes_resolved": "in_year AND family = 'dispute' AND done",
    "disputes_on_time": "in_year AND family = 'dispute' AND done AND resolved_at <= resolve_by",
    "hardship": "in_year AND family = 'hardship'",
    "hardship_helped": "in_year AND family = 'hardship' AND done AND outcome = 'assistance_delivered'",
    "cases": "in_year",
    "responded_on_time": "in_year AND NOT awaiting AND responded_at <= respond_by AND responded_at <= %(as_of)s",
    "resolved": "in_year AND done",
    "due": "in_year AND (done OR resolve_by < %(as_of)s)",
    "resolved_on_time": "in_year AND done AND resolved_at <= resolve_by",
    "overdue": "NOT done AND resolve_by < %(as_of)s",
    "overdue_response": "NOT done AND awaiting AND respond_by < %(as_of)s",
}

_PARTS: Final[Mapping[str, tuple[str, ...]]] = {
    "ent": ("enterprises", "enterprises_union"),
    "wk": ("workers", "workers_mapped"),
    "cs": tuple(_CASE_COUNTS),
}
assert sorted(n for part in _PARTS.values() for n in part) == sorted(COUNT_FIELDS)


def _union_leaf() -> str:
    """One row per (attribution code, table) with every count column (0 where the table has none)."""
    selects = []
    for cte, own in _PARTS.items():
        cols = ", ".join(n if n in own else f"0 AS {n}" for n in COUNT_FIELDS)
        selects.append(f"SELECT code, {cols} FROM {cte}")
    return "\n        UNION ALL ".join(selects)


def _registry_ctes(cte: str, table: str, total: str, flagged: str, flag: str) -> str:
    """Live rows of a registry table counted by division; rows without one by source, which
    stands for its city (``<cte>_raw`` then ``<cte>``, one row per attribution code)."""
    return f"""{cte}_raw AS (
    SELECT division_code, CASE WHEN division_code IS NULL THEN source END AS source,
           count(*) AS {total}, count(*) FILTER (WHERE {flag}) AS {flagged}
    FROM {table}
    WHERE deleted_at IS NULL
    GROUP BY 1, 2
),
{cte} AS (
    SELECT coalesce(r.division_code::text, s.city_code::text) AS code,
           sum(r.{total}) AS {total}, sum(r.{flagged}) AS {flagged}
    FROM {cte}_raw r LEFT JOIN source s ON s.name = r.source
    GROUP BY 1
)"""


_SUMS = ",\n           ".join(f"sum({n})::bigint AS {n}" for n in COUNT_FIELDS)
_ROLLED_SUMS = ",\n           ".join(f"sum(l.{n})::integer AS {n}" for n in COUNT_FIELDS)
_CASE_SUMS = ",\n           ".join(
    f"count(*) FILTER (WHERE {cond}) AS {n}" for n, cond in _CASE_COUNTS.items()
)

SNAPSHOT_SQL: Final = f"""
WITH
{_registry_ctes("ent", "enterprise", "enterprises", "enterprises_union", "union_established")},
{_registry_ctes("wk", "worker", "workers", "workers_mapped", "cell_code IS NOT NULL")},
c AS (         -- cases opened by as_of, with the flags of the definitions
    SELECT division_code AS code, family, outcome, respond_by, responded_at, resolve_by, resolved_at,
           opened_at >= %(year_start)s AND opened_at < %(year_end)s AS in_year,
           coalesce({SQL_DONE} AND resolved_at <= %(as_of)s, false) AS done,
           state IN ('new', 'returned') AS awaiting
    FROM case_file
    WHERE opened_at <= %(as_of)s
),
cs AS (
    SELECT code,
           {_CASE_SUMS}
    FROM c
    GROUP BY code
),
leaf AS (      -- everything attributed to each code, one row per code
    SELECT code,
           {_SUMS}
    FROM (
        {_union_leaf()}
    ) u
    WHERE code IS NOT NULL
    GROUP BY code
),
anc AS (       -- each attribution code and every division above it (itself included), by prefix
    SELECT DISTINCT l.code AS leaf, rpad(left(l.code, v.n), 12, '0') AS code
    FROM leaf l CROSS JOIN (VALUES (2), (4), (6), (9), (12)) AS v(n)
    WHERE v.n <= {_OWN_LEN.format(c="l.code")}
),
rolled AS (
    SELECT a.code,
           {_ROLLED_SUMS}
    FROM leaf l JOIN anc a ON a.leaf = l.code
    GROUP BY a.code
)
INSERT INTO coverage_snapshot (snapshot_date, division_code, level, parent_code, {", ".join(COUNT_FIELDS)})
SELECT %(day)s, d.code, d.level, d.parent_code, {", ".join(f"coalesce(r.{n}, 0)" for n in COUNT_FIELDS)}
FROM division d LEFT JOIN rolled r ON r.code = d.code::text
WHERE d.valid_to IS NULL
"""


# ----------------------------------------------------------------------------- compute


def compute_snapshot(
    conn: Conn,
    *,
    snapshot_date: date,
    as_of: datetime,
    flow_run_id: UUID | None = None,
    tz: tzinfo = SHANGHAI,
) -> CoverageSummary:
    """Compute and store the snapshot of ``snapshot_date`` as of ``as_of``, replacing any earlier
    one of that date, in one transaction (committed). Returns the province summary."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise CoverageError("as_of must carry a time zone")
    year_start, year_end = year_window(snapshot_date, tz)
    t0 = time.perf_counter()
    with transaction(conn) as cur:
        # The run row first: it serialises two computations of one date.
        cur.execute(
            """
            INSERT INTO coverage_run (snapshot_date, as_of, computed_at, flow_run_id, divisions)
            VALUES (%(day)s, %(as_of)s, now(), %(flow_run_id)s::uuid, 0)
            ON CONFLICT (snapshot_date) DO UPDATE
               SET as_of = EXCLUDED.as_of, computed_at = EXCLUDED.computed_at,
                   flow_run_id = EXCLUDED.flow_run_id, divisions = 0
            """,
            {"day": snapshot_date, "as_of": as_of, "flow_run_id": str(flow_run_id) if flow_run_id else None},
        )
        cur.execute("DELETE FROM coverage_snapshot WHERE snapshot_date = %s", (snapshot_date,))
        cur.execute(
            SNAPSHOT_SQL,
            {"day": snapshot_date, "as_of": as_of, "year_start": year_start, "year_end": year_end},
        )
        written = cur.rowcount
        compute_notes(cur, snapshot_date=snapshot_date)
        cur.execute(
            "UPDATE coverage_run SET divisions = %s WHERE snapshot_date = %s", (written, snapshot_date)
        )
        summary = _summary(cur, snapshot_date)
    assert summary is not None
    return dataclasses.replace(summary, seconds=time.perf_counter() - t0)


def snapshot_is_current(conn: Conn, snapshot_date: date) -> bool:
    """True if the date's snapshot exists and was computed after the last sync run finished
    (the fallback schedule then has nothing to add)."""
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT r.computed_at >= coalesce((SELECT max(finished_at) FROM sync_run), '-infinity')
            FROM coverage_run r WHERE r.snapshot_date = %s
            """,
            (snapshot_date,),
        )
        row = cur.fetchone()
    return bool(row and row[0])


# ----------------------------------------------------------------------------- read

_ROW_SELECT = f"""
    SELECT s.division_code, s.level, s.parent_code, coalesce(d.name, ''),
           {", ".join(f"s.{n}" for n in COUNT_FIELDS)}
    FROM coverage_snapshot s
    LEFT JOIN division d ON d.code = s.division_code AND d.valid_to IS NULL
"""


def _division_rows(cur: Cursor, where: str, params: Mapping[str, Any]) -> list[DivisionCoverage]:
    cur.execute(f"{_ROW_SELECT} WHERE {where} ORDER BY s.division_code", params)
    return [
        DivisionCoverage(
            code=str(r[0]),
            level=int(r[1]),
            parent_code=None if r[2] is None else str(r[2]),
            name=str(r[3]),
            counts=Counts.from_values(r[4:]),
        )
        for r in cur.fetchall()
    ]


def _summary(cur: Cursor, snapshot_date: date) -> CoverageSummary | None:
    cur.execute(
        "SELECT as_of, computed_at, flow_run_id, divisions FROM coverage_run WHERE snapshot_date = %s",
        (snapshot_date,),
    )
    run = cur.fetchone()
    if run is None:
        return None
    provinces = [
        p
        for p in _division_rows(cur, "s.snapshot_date = %(day)s AND s.level = 1", {"day": snapshot_date})
        if not p.counts.empty
    ]
    cities: list[DivisionCoverage] = []
    if provinces:
        cities = _division_rows(
            cur,
            "s.snapshot_date = %(day)s AND s.level = 2 AND left(s.division_code, 2) = ANY(%(provinces)s)",
            {"day": snapshot_date, "provinces": [p.code[:2] for p in provinces]},
        )
    return CoverageSummary(
        snapshot_date=snapshot_date,
        as_of=run[0],
        computed_at=run[1],
        flow_run_id=None if run[2] is None else UUID(str(run[2])),
        divisions=int(run[3]),
        provinces=tuple(provinces),
        cities=tuple(cities),
    )


def province_summary(conn: Conn, snapshot_date: date) -> CoverageSummary | None:
    """The stored snapshot of a date: every province with any record, and all of its cities
    (a city that has not joined yet shows as zeros). None if the date was not computed."""
    with transaction(conn) as cur:
        return _summary(cur, snapshot_date)


@dataclass(frozen=True, slots=True)
class SnapshotRun:
    snapshot_date: date
    as_of: datetime
    computed_at: datetime


def latest_run(conn: Conn, *, on_or_before: date | None = None) -> SnapshotRun | None:
    """The most recent computed snapshot (on or before a date, if given), or None."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT snapshot_date, as_of, computed_at FROM coverage_run "
            "WHERE %(d)s::date IS NULL OR snapshot_date <= %(d)s ORDER BY snapshot_date DESC LIMIT 1",
            {"d": on_or_before},
        )
        row = cur.fetchone()
    return None if row is None else SnapshotRun(row[0], row[1], row[2])


def division_coverage(conn: Conn, *, snapshot_date: date, code: str) -> DivisionCoverage | None:
    """One division's row of a snapshot."""
    with transaction(conn) as cur:
        rows = _division_rows(
            cur,
            "s.snapshot_date = %(day)s AND s.division_code = %(code)s",
            {"day": snapshot_date, "code": code},
        )
    return rows[0] if rows else None


def children_coverage(conn: Conn, *, snapshot_date: date, code: str) -> list[DivisionCoverage]:
    """The rows of a division's direct children (by ``parent_code``) in a snapshot."""
    with transaction(conn) as cur:
        return _division_rows(
            cur,
            "s.snapshot_date = %(day)s AND s.parent_code = %(code)s",
            {"day": snapshot_date, "code": code},
        )


# ----------------------------------------------------------------------------- presenting


def percent(value: float | None, undefined: str = "-") -> str:
    """A rate as ``61.1%``, or ``undefined`` when there is nothing to divide by."""
    return undefined if value is None else f"{value * 100:.1f}%"


def headline(counts: Counts) -> list[tuple[RateDef, int, int, float | None]]:
    """Each rate with its numerator and denominator, in display order."""
    return [(r, counts.count(r.numerator), counts.count(r.denominator), counts.rate(r)) for r in RATES]
