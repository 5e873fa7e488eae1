"""Coverage snapshots against numbers computed by hand on a small seeded province (coverage_seed.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg2
import psycopg2.extensions
import pytest

from grid.monitoring.coverage import (
    COUNT_FIELDS,
    Counts,
    CoverageError,
    as_of_for,
    compute_snapshot,
    latest_run,
    province_summary,
    rate,
    snapshot_is_current,
)
from tests.monitoring.coverage_seed import (
    A1,
    A2,
    AS_OF,
    CURRENT_CODES,
    DAY,
    DIRECT,
    DIVISIONS,
    EXPECTED,
    RETIRED,
    SH,
    ZERO,
    A,
    A1a,
    A1a1,
    A1a2,
    B,
    B1b,
    P,
    province,
)

pytestmark = [pytest.mark.db]
__all__ = ["province"]  # the fixture, imported so pytest finds it


def stored(conn: psycopg2.extensions.connection, day: date) -> dict[str, tuple[int, ...]]:
    """The stored rows of the seeded province for a date, counts in COUNT_FIELDS order."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT division_code, {', '.join(COUNT_FIELDS)} FROM coverage_snapshot "
            "WHERE snapshot_date = %s AND division_code LIKE '99%%'",
            (day,),
        )
        rows = {str(r[0]): tuple(int(v) for v in r[1:]) for r in cur.fetchall()}
    conn.commit()
    return rows


@pytest.fixture(scope="module")
def snapshot(province: list[date], database_url: str) -> dict[str, tuple[int, ...]]:
    conn = psycopg2.connect(database_url)
    try:
        compute_snapshot(conn, snapshot_date=DAY, as_of=AS_OF)
        return stored(conn, DAY)
    finally:
        conn.close()


@pytest.mark.parametrize("code", sorted(EXPECTED), ids=lambda c: c)
def test_every_column_matches_the_hand_computed_numbers(
    snapshot: dict[str, tuple[int, ...]], code: str
) -> None:
    """Definitions rule (module docstring of grid.monitoring.coverage): each division's row counts
    its subtree's live enterprises/workers and its 2026 cases up to as_of exactly as worked out by
    hand in coverage_seed.EXPECTED."""
    got = dict(zip(COUNT_FIELDS, snapshot[code], strict=True))
    assert got == dict(zip(COUNT_FIELDS, EXPECTED[code], strict=True))


def test_every_current_division_gets_a_row_and_retired_ones_none(
    snapshot: dict[str, tuple[int, ...]], conn: psycopg2.extensions.connection
) -> None:
    """Rule: every current division (valid_to IS NULL) has a row, an empty one all zeros; a retired
    division has none; the run row records how many rows were written."""
    assert set(snapshot) == CURRENT_CODES  # 14 codes, RETIRED not among them
    assert RETIRED not in snapshot
    assert snapshot[B1b] == ZERO
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM coverage_snapshot WHERE snapshot_date = %(d)s),"
            " (SELECT divisions FROM coverage_run WHERE snapshot_date = %(d)s),"
            " (SELECT count(*) FROM division WHERE valid_to IS NULL)",
            {"d": DAY},
        )
        rows, recorded, current = cur.fetchone()  # type: ignore[misc]
        cur.execute(
            "SELECT level, parent_code FROM coverage_snapshot WHERE snapshot_date = %s AND division_code = %s",
            (DAY, A1a1),
        )
        level_parent = cur.fetchone()
    assert rows == recorded == current
    assert level_parent == (5, A1a)


def test_rollup_is_the_sum_of_children_plus_direct_records(snapshot: dict[str, tuple[int, ...]]) -> None:
    """Roll-up rule: a division's row = the sum of its children's rows + what is attributed to it
    directly (address-only records, division-less records of its city's source)."""
    children: dict[str, list[str]] = {}
    for code, _, parent in DIVISIONS:
        if parent is not None:
            children.setdefault(parent, []).append(code)
    for parent, kids in children.items():
        total = Counts.from_values(DIRECT.get(parent, ZERO))
        for kid in kids:
            total = total + Counts.from_values(snapshot[kid])
        assert Counts.from_values(snapshot[parent]) == total, parent


def test_soft_deleted_records_are_not_counted(snapshot: dict[str, tuple[int, ...]]) -> None:
    """Rule: soft-deleted enterprises and workers are excluded. A1a1 holds 5 enterprise rows and 7
    worker rows, one of each soft-deleted; the province holds 20 and 30 rows, 2 and 3 deleted."""
    a1a1 = dict(zip(COUNT_FIELDS, snapshot[A1a1], strict=True))
    province_row = dict(zip(COUNT_FIELDS, snapshot[P], strict=True))
    assert (a1a1["enterprises"], a1a1["workers"]) == (4, 6)
    assert (province_row["enterprises"], province_row["workers"]) == (18, 27)


def test_records_without_a_division_count_for_their_source_city_only(
    snapshot: dict[str, tuple[int, ...]],
) -> None:
    """Attribution rule: a division-less record counts for its source's city and the province, and is
    never mapped. City A = its counties (10 + 2 enterprises, 15 + 1 workers) + covtest_a's 2
    enterprises and 3 workers without a division; none of them reaches a county."""
    a = dict(zip(COUNT_FIELDS, snapshot[A], strict=True))
    b = dict(zip(COUNT_FIELDS, snapshot[B], strict=True))
    assert (a["enterprises"], a["enterprises_union"], a["workers"], a["workers_mapped"]) == (14, 8, 19, 13)
    assert (b["enterprises"], b["workers"], b["workers_mapped"]) == (4, 8, 5)
    assert snapshot[A1][:4] == (10, 6, 15, 13)


def test_previous_year_cases_are_excluded_but_still_count_as_overdue(
    province: list[date], conn: psycopg2.extensions.connection, snapshot: dict[str, tuple[int, ...]]
) -> None:
    """Window rule: year counts take cases opened in the snapshot's calendar year in Asia/Shanghai,
    up to as_of; overdue takes open cases of any year. A1a1 has 7 case rows: c8 and c9 (2025) and c11
    (after as_of) are not among its 4 cases, but c9 (open, deadline 2026-01-20) is one of its 2 overdue.
    c10, opened 00:30 on 1 January local time (31 December in UTC), is in 2026.

    The same data as of the end of 2025: A1a1's 2025 cases are c8 (closed late) and c9 (opened 23:30
    local on 31 December, deadline not yet passed); A2's is h6 (helped); c10 is not yet opened."""
    a1a1 = dict(zip(COUNT_FIELDS, snapshot[A1a1], strict=True))
    assert (a1a1["cases"], a1a1["disputes"], a1a1["overdue"]) == (4, 3, 2)
    assert dict(zip(COUNT_FIELDS, snapshot[A1a2], strict=True))["cases"] == 2  # c4 and c10

    end_2025 = date(2025, 12, 31)
    province.append(end_2025)
    compute_snapshot(conn, snapshot_date=end_2025, as_of=datetime(2026, 1, 1, tzinfo=SH))
    rows = stored(conn, end_2025)
    old = dict(zip(COUNT_FIELDS, rows[A1a1], strict=True))
    assert (old["cases"], old["disputes"], old["disputes_resolved"], old["disputes_on_time"]) == (2, 2, 1, 0)
    assert (old["due"], old["overdue"]) == (1, 0)  # c8 done; c9 due 2026-01-20
    assert dict(zip(COUNT_FIELDS, rows[A1a2], strict=True))["cases"] == 0
    a2 = dict(zip(COUNT_FIELDS, rows[A2], strict=True))
    assert (a2["hardship"], a2["hardship_helped"]) == (1, 1), A2


def test_rerunning_a_date_replaces_its_rows(
    province: list[date], conn: psycopg2.extensions.connection, snapshot: dict[str, tuple[int, ...]]
) -> None:
    """Idempotence rule: computing a date again replaces that date's rows (no duplicates, same
    numbers when nothing changed, new numbers when something did) and keeps one run row, without
    touching other dates."""
    day = date(2026, 7, 12)
    province.append(day)
    compute_snapshot(conn, snapshot_date=day, as_of=AS_OF)
    first = stored(conn, day)
    compute_snapshot(conn, snapshot_date=day, as_of=AS_OF)
    assert stored(conn, day) == first == snapshot
    with conn.cursor() as cur:  # one more A1a1 worker soft-deleted, then the same date again
        cur.execute(
            "UPDATE worker SET deleted_at = now() WHERE id = (SELECT min(id) FROM worker"
            " WHERE division_code = %s AND deleted_at IS NULL)",
            (A1a1,),
        )
    conn.commit()
    try:
        compute_snapshot(conn, snapshot_date=day, as_of=AS_OF)
        again = stored(conn, day)
    finally:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE worker SET deleted_at = NULL WHERE division_code = %s AND deleted_at > %s",
                (A1a1, AS_OF),
            )
        conn.commit()
    assert again[A1a1][2:4] == (5, 5) and again[P][2:4] == (26, 17)
    assert stored(conn, DAY) == snapshot  # the other date is untouched
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM coverage_run WHERE snapshot_date = %s", (day,))
        assert cur.fetchone() == (1,)
        cur.execute(
            "SELECT count(*), count(DISTINCT division_code) FROM coverage_snapshot WHERE snapshot_date = %s",
            (day,),
        )
        n, distinct = cur.fetchone()  # type: ignore[misc]
    assert n == distinct


def test_rates_are_computed_on_read_and_undefined_without_a_denominator(
    snapshot: dict[str, tuple[int, ...]],
) -> None:
    """Rate rule: rate = numerator / denominator, None when the denominator is 0. Province:
    union 11/18, mapped 18/27, disputes 3/8 and 2/8 on time, hardship 2/5, response 8/13,
    resolution 6/13, on time 4/9."""
    assert rate(0, 0) is None
    assert rate(3, 4) == 0.75
    got = Counts.from_values(snapshot[P]).rates()
    assert got == {
        "union": 11 / 18,
        "workers": 18 / 27,
        "disputes": 3 / 8,
        "disputes_on_time": 2 / 8,
        "hardship": 2 / 5,
        "response": 8 / 13,
        "resolution": 6 / 13,
        "on_time": 4 / 9,
    }
    assert set(Counts.from_values(snapshot[B1b]).rates().values()) == {None}


def test_province_summary_lists_provinces_with_records_and_all_their_cities(
    snapshot: dict[str, tuple[int, ...]], conn: psycopg2.extensions.connection
) -> None:
    """Summary rule: the summary of a date holds every province with any record and all of its
    cities, with names and counts; latest_run finds the newest date on or before a day."""
    summary = province_summary(conn, DAY)
    assert summary is not None
    ours = [p for p in summary.provinces if p.code == P]
    assert len(ours) == 1 and ours[0].counts == Counts.from_values(EXPECTED[P])
    assert ours[0].name == f"测试{P}"
    cities = {c.code: c.counts for c in summary.cities if c.code.startswith("99")}
    assert cities == {A: Counts.from_values(EXPECTED[A]), B: Counts.from_values(EXPECTED[B])}
    assert summary.as_of == AS_OF
    assert province_summary(conn, date(2001, 1, 1)) is None
    run = latest_run(conn, on_or_before=date(2026, 7, 13))
    assert run is not None and run.snapshot_date == DAY
    assert latest_run(conn, on_or_before=date(2001, 1, 1)) is None


def test_a_snapshot_is_current_only_if_computed_after_the_last_sync(
    snapshot: dict[str, tuple[int, ...]], conn: psycopg2.extensions.connection
) -> None:
    """Fallback rule: the 06:00 schedule skips a date whose snapshot was computed after the last
    sync run finished, and computes one that is missing or older."""
    assert snapshot_is_current(conn, DAY)
    assert not snapshot_is_current(conn, date(2001, 1, 1))
    with conn.cursor() as cur:  # a sync run that finishes after the snapshot was computed
        cur.execute(
            "INSERT INTO source (name, display_name, city_code, kind, crs) VALUES ('covtest_x', 'x', %s,"
            " 'file', 'wgs84')",
            (A,),
        )
        cur.execute(
            "INSERT INTO sync_run (source, status, finished_at)"
            " VALUES ('covtest_x', 'completed', now() + interval '1 hour')"
        )
    conn.commit()
    try:
        assert not snapshot_is_current(conn, DAY)
    finally:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM sync_run WHERE source = 'covtest_x'")
            cur.execute("DELETE FROM source WHERE name = 'covtest_x'")
        conn.commit()
    assert snapshot_is_current(conn, DAY)


@pytest.mark.parametrize(
    ("asked", "now", "expected_day", "expected_as_of"),
    [
        pytest.param(
            None,
            datetime(2026, 7, 13, 22, 30, tzinfo=UTC),  # 06:30 on 14 July in Shanghai
            date(2026, 7, 14),
            datetime(2026, 7, 13, 22, 30, tzinfo=UTC),
            id="default-is-today-local-as-of-now",
        ),
        pytest.param(
            date(2026, 7, 10),
            datetime(2026, 7, 13, 22, 30, tzinfo=UTC),
            date(2026, 7, 10),
            datetime(2026, 7, 11, tzinfo=SH),
            id="past-date-as-of-the-end-of-that-day",
        ),
    ],
)
def test_snapshot_date_and_as_of(
    asked: date | None, now: datetime, expected_day: date, expected_as_of: datetime
) -> None:
    """Time rule: a snapshot is of today (policy time zone) as of now, or of a past day as of its end."""
    assert as_of_for(asked, now=now, tz=SH) == (expected_day, expected_as_of)


def test_a_future_date_or_a_naive_as_of_is_refused(conn: psycopg2.extensions.connection) -> None:
    """Time rule: no snapshot of a day that has not begun; as_of must carry a time zone."""
    with pytest.raises(CoverageError, match="future"):
        as_of_for(date(2026, 7, 15), now=datetime(2026, 7, 13, 22, 30, tzinfo=UTC), tz=SH)
    with pytest.raises(CoverageError, match="time zone"):
        compute_snapshot(conn, snapshot_date=DAY, as_of=datetime(2026, 7, 13, 20, 0))


def test_the_cli_computes_a_date_and_shows_a_division(
    province: list[date], conn: psycopg2.extensions.connection
) -> None:
    """CLI rule: ``gridflow coverage --date D`` computes D's snapshot and prints the province summary;
    ``gridflow coverage show CODE --date D`` prints that division's numbers, rates and children.
    As of the end of 2026-07-13 the seeded province reads as at 20:00 (no deadline falls between)."""
    from typer.testing import CliRunner

    from gridflow_cli.main import app

    runner = CliRunner()
    computed = runner.invoke(app, ["coverage", "--date", "2026-07-13"])
    assert computed.exit_code == 0, computed.output
    assert f"({P}, level 1)" in computed.output
    assert "11 / 18" in computed.output  # enterprises with a union / live enterprises

    shown = runner.invoke(app, ["coverage", "show", A1a, "--date", "2026-07-13"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert any("Workers mapped" in ln and "9 / 11" in ln and "81.8%" in ln for ln in lines)
    assert any("On-time rate" in ln and "3 / 6" in ln and "50.0%" in ln for ln in lines)
    assert any(A1a1 in ln for ln in lines) and any(A1a2 in ln for ln in lines)  # its children

    refused = runner.invoke(app, ["coverage", "show", "99", "--date", "2026-07-13"])
    assert refused.exit_code == 1 and "12 digits" in refused.output
    compute_snapshot(conn, snapshot_date=DAY, as_of=AS_OF)  # the module's snapshot as it was
