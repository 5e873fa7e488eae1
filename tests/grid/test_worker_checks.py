"""The worker table's code checks and ``id_hmac`` index (migration 0017), against the database."""

from __future__ import annotations

import itertools
import secrets

import psycopg2
import psycopg2.errors
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grid.store.db import transaction

pytestmark = pytest.mark.db

_CODES = st.one_of(
    st.text(alphabet="0123456789", min_size=0, max_size=16),
    st.text(alphabet="0123456789 ０１２a\u3000-+.", min_size=0, max_size=16),
    st.text(max_size=16),
)


def _accepts(cur: psycopg2.extensions.cursor, expression: str, column_type: str, value: str) -> bool | None:
    """Whether a CHECK ``expression`` on a column of ``column_type`` lets ``value`` in (None when
    the value does not fit the column type at all)."""
    cur.execute("SAVEPOINT v")
    try:
        cur.execute(f"SELECT ({expression}) IS NOT FALSE FROM (SELECT %s::{column_type} AS code) t", (value,))
    except (psycopg2.errors.StringDataRightTruncation, psycopg2.errors.CharacterNotInRepertoire):
        cur.execute("ROLLBACK TO SAVEPOINT v")
        return None
    except psycopg2.errors.UntranslatableCharacter:
        cur.execute("ROLLBACK TO SAVEPOINT v")
        return None
    (ok,) = cur.fetchone()  # type: ignore[misc]
    cur.execute("RELEASE SAVEPOINT v")
    return bool(ok)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codes=st.lists(_CODES, max_size=20))
@example(
    codes=[
        "420502001001001",
        "420502001001",
        "42050200100100",
        "42050200100100 ",
        " 42050200100100",
        "42050200100100a",
        "４２０５０２００１００１００１",
        "",
        "-42050200100100",
        "4205020010010.1",
    ]
)
def test_the_cheap_code_checks_accept_exactly_what_the_regex_accepted(
    conn: psycopg2.extensions.connection, codes: list[str]
) -> None:
    """Rule: worker.cell_code (char(15)) and division_code (char(12)) hold digits only, exactly 15
    and 12 of them; the regex-free checks of migration 0017 accept and refuse the same values as
    the regexes before them (blanks, full-width digits, signs, letters, short codes)."""
    with transaction(conn) as cur:
        cur.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname IN ('worker_cell_code_check', 'worker_division_code_check') ORDER BY conname"
        )
        cell_check, division_check = (row[0].removeprefix("CHECK ") for row in cur.fetchall())
        for code, (check, column, n) in itertools.product(
            (c.replace("\x00", "") for c in codes),
            ((cell_check, "cell_code", 15), (division_check, "division_code", 12)),
        ):
            assert "~" not in check  # no regex left in the row's path
            now = _accepts(cur, check.replace(column, "code"), f"character({n})", code)
            before = _accepts(cur, f"code ~ '^[0-9]{{{n}}}$'", f"character({n})", code)
            assert now == before, (column, code)


def test_a_worker_is_found_by_its_id_hmac_through_the_hash_index(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: the lookups by a worker's ID HMAC (case intake, case page, reveal) are equalities, and
    the hash index serves them: one row found, by an index scan."""
    with transaction(conn) as cur:
        cur.execute(
            "SELECT amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.relname = 'worker_id_hmac'"
        )
        assert cur.fetchone() == ("hash",)
        name = f"t{secrets.token_hex(4)}"
        cur.execute(
            "INSERT INTO source (name, display_name, city_code, kind, crs, enabled, config)"
            " VALUES (%s, '测试', '420500000000', 'http', 'gcj02', true, '{}')",
            (name,),
        )
        hmacs = [secrets.token_bytes(32) for _ in range(3)]
        for i, h in enumerate(hmacs):
            cur.execute(
                "INSERT INTO worker (source, source_record_id, source_updated_at, id_hmac, id_masked,"
                " name_masked, pii_enc, placement_method, row_hash, cell_code, division_code)"
                " VALUES (%s, %s, now(), %s, 'x', 'x', '\\x00', 'unmapped', '\\x00', %s, %s)",
                (name, f"r{i}", h, "420502001001001", "420502001001"),
            )
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN SELECT id FROM worker WHERE id_hmac = %s", (hmacs[1],))
        plan = " ".join(row[0] for row in cur.fetchall())
        assert "worker_id_hmac" in plan
        cur.execute("SELECT source_record_id FROM worker WHERE id_hmac = %s", (hmacs[1],))
        assert cur.fetchall() == [("r1",)]


def test_worker_ids_come_from_a_cached_sequence_and_stay_unique_across_sessions(database_url: str) -> None:
    """Rule: worker ids are drawn 1,000 at a time per session (migration 0017: no locked nextval a
    row); two sessions drawing at once never get the same id, and each session's ids increase."""
    first, second = psycopg2.connect(database_url), psycopg2.connect(database_url)
    try:
        drawn = []
        for c in (first, second, first, second):
            with transaction(c) as cur:
                cur.execute("SELECT seqcache FROM pg_sequence WHERE seqrelid = 'worker_id_seq'::regclass")
                assert cur.fetchone() == (1000,)
                cur.execute("SELECT nextval('worker_id_seq') FROM generate_series(1, 600)")
                drawn.append([v for (v,) in cur.fetchall()])
        assert len({v for ids in drawn for v in ids}) == 4 * 600
        for ids in (drawn[0] + drawn[2], drawn[1] + drawn[3]):
            assert ids == sorted(ids)
    finally:
        first.close()
        second.close()
