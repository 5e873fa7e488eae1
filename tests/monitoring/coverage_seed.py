"""A small province built by hand for the coverage tests, and the numbers expected of it.

Province 99 does not exist (no real code starts with 99, and 99 is no resident-ID province), so the
seed cannot collide with the sample world or with any other test's rows. The rows are committed
(a snapshot computation commits) and removed again by the fixture's teardown.

    990000000000  P    province
    990100000000  A    city            source covtest_a (city A)
      990101000000  A1   county
        990101001000  A1a  town
          990101001001  A1a1 community
          990101001002  A1a2 community
          990101001009  (retired community: valid_to set, must get no row)
        990101002000  A1b  town
          990101002001  A1b1 community
      990102000000  A2   county (no towns)
    990200000000  B    city            source covtest_b (city B)
      990201000000  B1   county
        990201001000  B1a  town
          990201001001  B1a1 community
        990201002000  B1b  town (nothing at all: an all-zero row)

Snapshot date 2026-07-13, as of 2026-07-13 20:00 Asia/Shanghai (``AS_OF``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2.extras import execute_values

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 7, 13)
AS_OF = datetime(2026, 7, 13, 20, 0, tzinfo=SH)

P, A, B = "990000000000", "990100000000", "990200000000"
A1, A2, B1 = "990101000000", "990102000000", "990201000000"
A1a, A1b, B1a, B1b = "990101001000", "990101002000", "990201001000", "990201002000"
A1a1, A1a2, A1b1, B1a1 = "990101001001", "990101001002", "990101002001", "990201001001"
RETIRED = "990101001009"

DIVISIONS = [  # code, level, parent
    (P, 1, None),
    (A, 2, P),
    (B, 2, P),
    (A1, 3, A),
    (A2, 3, A),
    (B1, 3, B),
    (A1a, 4, A1),
    (A1b, 4, A1),
    (B1a, 4, B1),
    (B1b, 4, B1),
    (A1a1, 5, A1a),
    (A1a2, 5, A1a),
    (A1b1, 5, A1b),
    (B1a1, 5, B1a),
]
CURRENT_CODES = {code for code, _, _ in DIVISIONS}
SOURCES = {"covtest_a": A, "covtest_b": B}

# Enterprises: (source, division_code, cell_code, union_established, soft_deleted, how many)
ENTERPRISES = [
    ("covtest_a", A1a1, A1a1 + "001", True, False, 3),
    ("covtest_a", A1a1, A1a1 + "002", False, False, 1),
    ("covtest_a", A1a1, A1a1 + "001", True, True, 1),  # soft-deleted: not counted
    ("covtest_a", A1a2, A1a2 + "001", False, False, 2),
    ("covtest_a", A1b1, A1b1 + "001", True, False, 2),
    ("covtest_a", A1b1, A1b1 + "001", False, False, 1),
    ("covtest_a", A1a, None, True, False, 1),  # placed by address at town level
    ("covtest_a", A2, None, True, False, 1),  # placed by address at county level
    ("covtest_a", A2, None, False, False, 1),
    ("covtest_b", B1a1, B1a1 + "001", True, False, 3),
    ("covtest_b", B1a1, B1a1 + "001", False, True, 1),  # soft-deleted
    ("covtest_a", None, None, True, False, 1),  # no division: city A and the province only
    ("covtest_a", None, None, False, False, 1),
    ("covtest_b", None, None, False, False, 1),  # no division: city B and the province only
]  # 20 rows, 18 live

# Workers: (source, division_code, cell_code, soft_deleted, how many)
WORKERS = [
    ("covtest_a", A1a1, A1a1 + "001", False, 4),
    ("covtest_a", A1a1, A1a1 + "002", False, 2),
    ("covtest_a", A1a1, A1a1 + "001", True, 1),  # soft-deleted
    ("covtest_a", A1a2, A1a2 + "001", False, 3),
    ("covtest_a", A1a, None, False, 2),  # town by address: not mapped
    ("covtest_a", A1b1, A1b1 + "001", False, 4),
    ("covtest_a", A1b1, A1b1 + "001", True, 1),  # soft-deleted
    ("covtest_a", A2, None, False, 1),  # county by address
    ("covtest_b", B1a1, B1a1 + "001", False, 5),
    ("covtest_b", B1, None, False, 1),  # county by address
    ("covtest_a", None, None, False, 3),  # unmapped, no division: city A
    ("covtest_b", None, None, False, 2),  # unmapped, no division: city B
    ("covtest_a", None, None, True, 1),  # unmapped and soft-deleted
]  # 30 rows, 27 live

# Cases (times Asia/Shanghai):
# label, division, kind, state, opened, respond_by, responded_at, resolve_by, resolved_at, outcome
CASES = [
    # c1 closed, responded and resolved on time
    ("c1", A1a1, "wage_arrears", "closed", "2026-03-01 09:00", "2026-03-03 18:00", "2026-03-02 10:00",
     "2026-03-20 18:00", "2026-03-15 10:00", "agreement"),
    # c2 resolved, responded late and resolved late
    ("c2", A1a1, "dismissal", "resolved", "2026-06-01 09:00", "2026-06-03 18:00", "2026-06-05 10:00",
     "2026-06-20 18:00", "2026-06-25 10:00", "remedied"),
    # c3 in progress, responded on time, resolve_by passed: overdue
    ("c3", A1a1, "wage_arrears", "in_progress", "2026-06-20 09:00", "2026-06-22 18:00", "2026-06-21 10:00",
     "2026-07-10 18:00", None, None),
    # c4 new, never accepted, respond_by passed: overdue response; resolve_by still ahead
    ("c4", A1a2, "labour_contract", "new", "2026-07-10 09:00", "2026-07-12 18:00", None,
     "2026-07-30 18:00", None, None),
    # c5 accepted on time, resolve_by ahead
    ("c5", A1b1, "social_insurance", "accepted", "2026-07-01 09:00", "2026-07-03 18:00", "2026-07-02 10:00",
     "2026-07-25 18:00", None, None),
    # c6 escalated: new owner (state new) with a new respond_by already passed; responded_at is the
    #    previous owner's acceptance, so it is neither responded on time nor spared overdue_response
    ("c6", A1b1, "wage_arrears", "new", "2026-05-01 09:00", "2026-07-12 18:00", "2026-05-02 10:00",
     "2026-07-31 18:00", None, None),
    # c7 filed at town level by address, reopened (resolved_at cleared, fresh deadlines), resolve_by passed
    ("c7", A1a, "work_injury", "reopened", "2026-02-01 09:00", "2026-06-03 18:00", "2026-02-02 10:00",
     "2026-06-30 18:00", None, None),
    # c8 previous year, closed late: in no 2026 count
    ("c8", A1a1, "wage_arrears", "closed", "2025-11-10 09:00", "2025-11-12 18:00", "2025-11-11 10:00",
     "2025-11-30 18:00", "2025-12-01 10:00", "agreement"),
    # c9 previous year (23:30 on 31 Dec local time), still open and overdue: counts in overdue only
    ("c9", A1a1, "wage_arrears", "accepted", "2025-12-31 23:30", "2026-01-02 18:00", "2026-01-01 10:00",
     "2026-01-20 18:00", None, None),
    # c10 00:30 on 1 Jan local time (still 2025 in UTC): in the 2026 window; resolved on time
    ("c10", A1a2, "wage_arrears", "resolved", "2026-01-01 00:30", "2026-01-05 18:00", "2026-01-02 10:00",
     "2026-01-20 18:00", "2026-01-18 10:00", "agreement"),
    # c11 opened after as_of: in nothing
    ("c11", A1a1, "wage_arrears", "new", "2026-07-14 09:00", "2026-07-16 18:00", None,
     "2026-08-01 18:00", None, None),
    # h1 closed, assistance delivered, all on time
    ("h1", A1a1, "hardship", "closed", "2026-04-01 09:00", "2026-04-03 18:00", "2026-04-02 10:00",
     "2026-04-30 18:00", "2026-04-20 10:00", "assistance_delivered"),
    # h2 resolved late as not substantiated (not helped), responded late
    ("h2", A1b1, "hardship", "resolved", "2026-05-01 09:00", "2026-05-03 18:00", "2026-05-05 10:00",
     "2026-05-30 18:00", "2026-06-05 10:00", "not_substantiated"),
    # h3 in progress, resolve_by passed: overdue
    ("h3", B1a1, "hardship", "in_progress", "2026-06-01 09:00", "2026-06-03 18:00", "2026-06-02 10:00",
     "2026-07-01 18:00", None, None),
    # h4 returned to the county (waiting for it), its respond_by passed: overdue response
    ("h4", B1, "hardship", "returned", "2026-07-05 09:00", "2026-07-08 18:00", "2026-07-06 10:00",
     "2026-08-05 18:00", None, None),
    # h5 closed, assistance delivered on time
    ("h5", B1a1, "hardship", "closed", "2026-02-01 09:00", "2026-02-03 18:00", "2026-02-02 10:00",
     "2026-02-28 18:00", "2026-02-27 10:00", "assistance_delivered"),
    # h6 previous year, helped: in no 2026 count
    ("h6", A2, "hardship", "closed", "2025-10-01 09:00", "2025-10-03 18:00", "2025-10-02 10:00",
     "2025-10-30 18:00", "2025-10-20 10:00", "assistance_delivered"),
]  # fmt: skip

# Column order of the tuples below: grid.monitoring.coverage.COUNT_FIELDS
# (enterprises, enterprises_union, workers, workers_mapped, disputes, disputes_resolved,
#  disputes_on_time, hardship, hardship_helped, cases, responded_on_time, resolved, due,
#  resolved_on_time, overdue, overdue_response)
ZERO = (0,) * 16
EXPECTED = {
    # A1a1: 5 enterprise rows - 1 deleted = 4, 3 with a union; 7 workers - 1 deleted = 6, all in cells.
    # 2026 cases c1 c2 c3 h1 (c8, c9 previous year, c11 after as_of). Disputes c1 c2 c3: resolved c1 c2,
    # on time c1. Hardship h1 helped. Responded on time c1 c3 h1 (c2 late). Resolved c1 c2 h1; due
    # c1 c2 h1 + c3 (resolve_by 07-10 passed); resolved on time c1 h1. Overdue c3 + c9 (2025 case).
    A1a1: (4, 3, 6, 6, 3, 2, 1, 1, 1, 4, 3, 3, 4, 2, 2, 0),
    # A1a2: 2 enterprises, no union; 3 workers mapped. c4 (new, respond_by passed) and c10 (resolved on
    # time, opened 00:30 1 Jan local). Responded on time c10; due c10 only; overdue response c4.
    A1a2: (2, 0, 3, 3, 2, 1, 1, 0, 0, 2, 1, 1, 1, 1, 0, 1),
    # A1b1: 3 enterprises, 2 union; 5 workers - 1 deleted. c5, c6, h2. Responded on time c5 only (c6
    # waits for its new owner, h2 late). Resolved/due h2 (late). Overdue response c6.
    A1b1: (3, 2, 4, 4, 2, 0, 0, 1, 0, 3, 1, 1, 1, 0, 0, 1),
    # B1a1: 4 enterprise rows - 1 deleted, all 3 union; 5 workers. h3 (overdue), h5 (helped, on time).
    B1a1: (3, 3, 5, 5, 0, 0, 0, 2, 1, 2, 2, 1, 2, 1, 1, 0),
    # A1a town: A1a1 + A1a2 + its own 1 enterprise (union), 2 address-only workers, and c7 (reopened:
    # responded on time, due and overdue, not resolved).
    A1a: (7, 4, 11, 9, 6, 3, 2, 1, 1, 7, 5, 4, 6, 3, 3, 1),
    A1b: (3, 2, 4, 4, 2, 0, 0, 1, 0, 3, 1, 1, 1, 0, 0, 1),  # = A1b1
    B1a: (3, 3, 5, 5, 0, 0, 0, 2, 1, 2, 2, 1, 2, 1, 1, 0),  # = B1a1
    B1b: ZERO,  # nothing at all
    # A1 county: A1a + A1b.
    A1: (10, 6, 15, 13, 8, 3, 2, 2, 1, 10, 6, 5, 7, 3, 3, 2),
    # A2 county: 2 address-only enterprises (1 union), 1 worker; h6 is a 2025 case.
    A2: (2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    # B1 county: B1a + 1 address-only worker + h4 (returned, respond_by passed).
    B1: (3, 3, 6, 5, 0, 0, 0, 3, 1, 3, 2, 1, 2, 1, 1, 1),
    # City A: A1 + A2 + source covtest_a's division-less rows (2 enterprises, 1 union; 3 workers).
    A: (14, 8, 19, 13, 8, 3, 2, 2, 1, 10, 6, 5, 7, 3, 3, 2),
    # City B: B1 + covtest_b's division-less rows (1 enterprise, 2 workers).
    B: (4, 3, 8, 5, 0, 0, 0, 3, 1, 3, 2, 1, 2, 1, 1, 1),
    # Province: A + B. 18 live enterprises, 27 live workers; 13 cases in 2026 up to as_of.
    P: (18, 11, 27, 18, 8, 3, 2, 5, 2, 13, 8, 6, 9, 4, 4, 3),
}

# What is attributed to a division itself rather than to one of its children (all other divisions
# above community level: nothing).
DIRECT = {
    A1a: (1, 1, 2, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1, 0),  # 1 enterprise, 2 workers, c7
    A2: (2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # 2 enterprises, 1 worker (h6 is 2025)
    B1: (0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1),  # 1 worker, h4
    A: (2, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # covtest_a rows without a division
    B: (1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # covtest_b rows without a division
}


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=SH)


def _level_of(code: str) -> int:
    return next(lv for c, lv, _ in DIVISIONS if c == code)


def seed(conn: psycopg2.extensions.connection) -> None:
    """Insert the province, its sources, enterprises, workers and cases (committed)."""
    with conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO division (code, level, name, parent_code, source, valid_from, valid_to) VALUES %s",
            [(c, lv, f"测试{c}", parent, "test", date(2020, 1, 1), None) for c, lv, parent in DIVISIONS]
            + [(RETIRED, 5, "撤销社区", A1a, "test", date(2020, 1, 1), date(2026, 1, 1))],
        )
        execute_values(
            cur,
            "INSERT INTO source (name, display_name, city_code, kind, crs) VALUES %s",
            [(name, name, city, "file", "wgs84") for name, city in SOURCES.items()],
        )
        rows = []
        for source, division, cell, union, deleted, n in ENTERPRISES:
            for _ in range(n):
                i = len(rows) + 1
                rows.append(
                    (source, f"e{i}", AS_OF, f"91990000MA{i:08d}", f"企业{i}", union, division, cell,
                     "cell" if cell else ("address" if division else "unmapped"), b"h",
                     AS_OF if deleted else None)
                )  # fmt: skip
        execute_values(
            cur,
            "INSERT INTO enterprise (source, source_record_id, source_updated_at, uscc, name, union_established,"
            " division_code, cell_code, placement_method, row_hash, deleted_at) VALUES %s",
            rows,
        )
        rows = []
        for source, division, cell, deleted, n in WORKERS:
            for _ in range(n):
                i = len(rows) + 1
                rows.append(
                    (source, f"w{i}", AS_OF, f"hmac{i}".encode(), "***", "*", b"sealed", division, cell,
                     "cell" if cell else ("address" if division else "unmapped"), b"h",
                     AS_OF if deleted else None)
                )  # fmt: skip
        execute_values(
            cur,
            "INSERT INTO worker (source, source_record_id, source_updated_at, id_hmac, id_masked, name_masked,"
            " pii_enc, division_code, cell_code, placement_method, row_hash, deleted_at) VALUES %s",
            rows,
        )
        rows = []
        for (
            label,
            division,
            kind,
            state,
            opened,
            respond_by,
            responded,
            resolve_by,
            resolved,
            outcome,
        ) in CASES:
            resolved_at = _at(resolved)
            rows.append(
                (kind, "hardship" if kind == "hardship" else "dispute", "officer", label, division, division,
                 _level_of(division), division, state, 1, '{"rule": "test"}', outcome, _at(opened),
                 _at(respond_by), _at(responded), _at(resolve_by), resolved_at,
                 resolved_at if state == "closed" else None, "0" * 64)
            )  # fmt: skip
        execute_values(
            cur,
            "INSERT INTO case_file (kind, family, channel, source_ref, division_code, chain_code, level,"
            " owner_code, state, version, routing, outcome, opened_at, respond_by, responded_at, resolve_by,"
            " resolved_at, closed_at, head_hash) VALUES %s",
            rows,
        )
    conn.commit()


def unseed(conn: psycopg2.extensions.connection, dates: list[date]) -> None:
    """Remove everything :func:`seed` inserted and the snapshots of ``dates``."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM coverage_run WHERE snapshot_date = ANY(%s)", (dates,))
        cur.execute("DELETE FROM case_file WHERE division_code LIKE '99%%'")
        cur.execute("DELETE FROM worker WHERE source = ANY(%s)", (list(SOURCES),))
        cur.execute("DELETE FROM enterprise WHERE source = ANY(%s)", (list(SOURCES),))
        cur.execute("DELETE FROM source WHERE name = ANY(%s)", (list(SOURCES),))
        cur.execute("DELETE FROM division WHERE code LIKE '99%%'")
    conn.commit()


@pytest.fixture(scope="module")
def province(database_url: str) -> Iterator[list[date]]:
    """The seeded province (committed); yields a list the tests add their snapshot dates to."""
    conn = psycopg2.connect(database_url)
    dates: list[date] = [DAY]
    try:
        seed(conn)
        yield dates
    finally:
        conn.rollback()
        unseed(conn, dates)
        conn.close()
