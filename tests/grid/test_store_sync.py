"""One-transaction page writes: version guard, replays, quarantine once, cursor with the page."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.pipeline import ChunkSpec, skip_unchanged
from grid.store.copy import (
    ESCAPES,
    ascii_field,
    bytea_field,
    copy_from_text,
    copy_text,
    escape,
    parse_copy_text,
    unescape_field,
)
from grid.store.db import transaction
from grid.sync import store as sync
from grid.sync.store import PreparedChunk

pytestmark = pytest.mark.db

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _source(conn: psycopg2.extensions.connection) -> str:
    name = f"t{secrets.token_hex(4)}"
    with transaction(conn) as cur:
        sync.register_source(
            cur,
            name=name,
            display_name="测试",
            city_code="420500000000",
            kind="http",
            crs="gcj02",
            enabled=True,
            config={},
        )
    return name


def _ent(
    rid: str, updated: datetime, name: str = "宜昌测试有限公司", cell: str | None = "420502001001001"
) -> tuple:
    return (
        rid,
        updated,
        "91420500MA4KXXXX1X",
        name,
        True,
        12,
        "湖北省宜昌市西陵区",
        None,
        None,
        None,
        111.29,
        30.70,
        cell,
        cell[:12] if cell else None,
        "point_in_cell" if cell else "unmapped",
        None if cell else "gap_between_cells",
        (name + updated.isoformat()).encode(),
    )


def _chunk(rows: list, rejects: list, entity: str | None = None) -> PreparedChunk:
    """A prepared chunk as the pipeline would hand it to the store."""
    ent = entity or ("workers" if rejects and not rows else "enterprises")
    cols = list(sync.ENTERPRISE_COLUMNS)
    hw = max((r[1] for r in rows), default=None)
    return PreparedChunk(
        entity=ent,
        rows_text=copy_text(rows),
        n_rows=len(rows),
        rejects_text=copy_text(rejects),
        unmapped=sum(1 for r in rows if r[cols.index("cell_code")] is None),
        high_water=hw,
        by_method=Counter(r[cols.index("placement_method")] for r in rows),
        by_reason=Counter(j[1] for j in rejects),
    )


def _write(
    conn: psycopg2.extensions.connection,
    run: int,
    src: str,
    *chunks: PreparedChunk,
    entity: str = "enterprises",
    **page: Any,
) -> sync.PageResult:
    """``sync.write_page`` of ``chunks`` as one page of ``src`` fetched from no watermark."""
    return sync.write_page(conn, run_id=run, source=src, entity=entity, chunks=chunks, since=None, **page)


# Text fields rich in what COPY must escape (tab, newline, CR, backslash, and the "\\N" that
# stands for NULL), and NULLs.
_FIELD = (
    st.none() | st.text(alphabet=st.sampled_from(["\t", "\n", "\r", "\\", "N", "x", "测", " "])) | st.text()
)
_ROWS = st.integers(min_value=1, max_value=6).flatmap(
    lambda width: st.lists(st.lists(_FIELD, min_size=width, max_size=width), max_size=8)
)


@given(_ROWS)
def test_copy_text_reads_back_exactly(rows: list[list[str | None]]) -> None:
    """Rule: parse_copy_text is the inverse of copy_text: text with tabs, newlines, backslashes and
    carriage returns, and NULLs, come back exactly (one row per row, one field per field)."""
    assert parse_copy_text(copy_text(rows)) == rows


@given(_FIELD.filter(lambda v: v is not None))
def test_the_cheap_escape_is_the_full_translation(text: str) -> None:
    """Rule: escape(), which skips str.translate for text with nothing to escape, gives exactly
    what translating every field with ESCAPES gives (tabs, newlines, CR, backslashes, any text)."""
    assert escape(text) == text.translate(ESCAPES)


@given(_FIELD.filter(lambda v: v is not None))
def test_an_ascii_field_is_ascii_and_reads_back_as_the_text(text: str) -> None:
    """Rule: ascii_field writes any text (Chinese, tabs, backslashes, a literal "\\x41") in ASCII
    only, and reading the field back gives the text itself."""
    field = ascii_field(text)
    assert field.isascii()
    assert unescape_field(field) == text
    assert parse_copy_text(field + "\t" + copy_text([[text]])) == [[text, text]]


_TRICKY = [
    "张*",
    "欧****娜",
    "a\tb\\c",
    "\\x41",
    "\\\\xe5",
    "😀 emoji",
    "\u3000全角空格\u3000",
    "tab\there",
    "x" * 300,
]


def test_postgresql_reads_an_ascii_field_as_the_text_itself(conn: psycopg2.extensions.connection) -> None:
    """Rule: what ascii_field writes, COPY into a UTF-8 database stores as the original text (the
    byte escapes are read as UTF-8; a backslash or tab in the text stays one)."""
    with transaction(conn) as cur:
        cur.execute("CREATE TEMP TABLE ascii_copy (n int, t text) ON COMMIT DROP")
        copy_from_text(
            cur, "ascii_copy", ("n", "t"), "".join(f"{i}\t{ascii_field(t)}\n" for i, t in enumerate(_TRICKY))
        )
        cur.execute("SELECT t FROM ascii_copy ORDER BY n")
        assert [r[0] for r in cur.fetchall()] == _TRICKY


def test_a_database_not_encoded_in_utf8_is_refused_before_any_migration(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: migrate.upgrade (and so `gridflow db up`) refuses a database that is not UTF-8 (the
    sync writes Chinese text as UTF-8 byte escapes), with a sentence naming the encoding, and
    creates nothing in it."""
    from grid.store import migrate

    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    name = f"gridflow_latin1_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    url = database_url.rsplit("/", 1)[0] + "/" + name
    try:
        with pytest.raises(migrate.WrongEncoding, match=f"database {name} is encoded LATIN1"):
            migrate.upgrade(url)
        # gridflow db up says so in one sentence, no traceback
        from typer.testing import CliRunner

        from grid.settings import get_settings
        from gridflow_cli.main import app

        monkeypatch.setenv("GRIDFLOW_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(app, ["db", "up"])
        finally:
            monkeypatch.undo()
            get_settings.cache_clear()
        assert result.exit_code == 1, result.output
        assert f"gridflow: database {name} is encoded LATIN1" in result.output
        assert "Traceback" not in result.output
        check = psycopg2.connect(url)
        with check.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert cur.fetchone() == (0,)
        check.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_bytes_read_back_from_copy_text() -> None:
    """Rule: a bytea value copy_text writes reads back with bytea_field; NULL is not bytes."""
    ((blob, null),) = parse_copy_text(copy_text([(b"\x00\t\\\xff", None)]))
    assert bytea_field(blob) == b"\x00\t\\\xff"
    with pytest.raises(ValueError, match="not a bytea value"):
        bytea_field(null)


def _count(conn: psycopg2.extensions.connection, sql: str, *args: object) -> int:
    with transaction(conn) as cur:
        cur.execute(sql, args)
        return int(cur.fetchone()[0])


def test_replay_of_a_page_changes_nothing(conn: psycopg2.extensions.connection) -> None:
    """A page written twice inserts once; the second write counts everything unchanged."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    rows = [_ent("e1", T0), _ent("e2", T0, cell=None)]
    first = _write(conn, run, src, _chunk(rows, []), received=2, cursor_after="c1")
    again = _write(conn, run, src, _chunk(rows, []), received=2, cursor_after="c1")
    assert (first.inserted, first.updated, first.unmapped) == (2, 0, 1)
    assert (again.loaded, again.unchanged) == (0, 2)
    assert _count(conn, "SELECT count(*) FROM enterprise WHERE source = %s", src) == 2


def test_stored_versions_hold_each_live_record_and_follow_committed_pages(
    conn: psycopg2.extensions.connection,
) -> None:
    """A run that fetches a whole stream reads its stored versions once (unless there are more
    than the limit); soft-deleted records are not among them (a record that comes back must be
    written again), and each committed page's versions are folded in, so a later page skips
    exactly what is now stored at that version."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    later = T0 + timedelta(hours=1)
    first = _chunk([_ent("e1", T0), _ent("e2", T0), _ent("e3", later)], [])
    _write(conn, run, src, first, received=3, cursor_after="c1")
    with transaction(conn) as cur:
        cur.execute(
            "UPDATE enterprise SET deleted_at = now() WHERE source = %s AND source_record_id = 'e2'", (src,)
        )
    stored = sync.stored_versions(conn, source=src, entity="enterprises", limit=2)
    assert stored is not None
    assert {rid: sync.stored_version(v) for rid, v in stored.items()} == {"e1": T0, "e3": later}
    assert sync.stored_versions(conn, source=src, entity="enterprises", limit=1) is None  # too big: per page
    assert sync.stored_versions(conn, source=src, entity="cases", limit=2) == {}
    assert sync.stored_versions(conn, source=_source(conn), entity="enterprises", limit=2) == {}

    page = PreparedChunk(entity="enterprises", versions=[("e2", later), ("e4", T0)])
    sync.note_versions(stored, [PreparedChunk(entity="enterprises"), page])
    assert {rid: sync.stored_version(v) for rid, v in stored.items()} == {
        "e1": T0, "e2": later, "e3": later, "e4": T0
    }  # fmt: skip


# Versions that test the text form of stored_versions: whole and fractional seconds, the turn of
# a day in UTC but not in Beijing, and China's summer time (1986-1991), including the hour
# 01:00-02:00 on 1988-09-11 that Beijing's clocks showed twice.
_SHANGHAI = ZoneInfo("Asia/Shanghai")
_VERSIONS = {
    "whole": datetime(2026, 11, 20, 8, 0, tzinfo=_SHANGHAI),
    "fraction": datetime(2026, 11, 20, 8, 0, 0, 250_000, tzinfo=_SHANGHAI),
    "utc-yesterday": datetime(2026, 11, 21, 3, 0, tzinfo=_SHANGHAI),
    "1991": datetime(1991, 12, 31, 23, 59, 59, tzinfo=_SHANGHAI),
    "summer-1988": datetime(1988, 7, 1, 12, 0, tzinfo=_SHANGHAI),
    "twice-first": datetime(1988, 9, 11, 1, 30, tzinfo=_SHANGHAI, fold=0),
    "twice-second": datetime(1988, 9, 11, 1, 30, tzinfo=_SHANGHAI, fold=1),
    "tab\tand\\backslash": datetime(2025, 1, 1, tzinfo=_SHANGHAI),
}


def _forms(version: datetime) -> list[Any]:
    """The ways a source may send one instant."""
    local = version.astimezone(_SHANGHAI)
    naive = local.replace(tzinfo=None)
    return [
        naive.isoformat(" "),
        naive.isoformat(),
        version.isoformat(),
        version.astimezone(UTC).isoformat(),
        naive.isoformat(" ", timespec="microseconds"),
    ]


def test_a_stored_version_read_as_text_skips_exactly_what_the_instant_skips(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: the versions stored_versions reads (Beijing wall time as text from 1992 on, an instant
    before) make a re-run skip exactly the rows it would skip comparing instants: every form of the
    stored instant is skipped, a different instant never is, and a naive time in the hour Beijing
    saw twice in 1988 (which means its first occurrence) does not match the second."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    _write(conn, run, src, _chunk([_ent(rid, v) for rid, v in _VERSIONS.items()], []), received=len(_VERSIONS),
           cursor_after=None)  # fmt: skip
    stored = sync.stored_versions(conn, source=src, entity="enterprises", limit=100)
    assert stored is not None and stored.keys() == _VERSIONS.keys()
    assert stored["whole"] == "2026-11-20 08:00:00"  # what the sandbox and most cities send
    assert isinstance(stored["summer-1988"], datetime)  # before 1992: an instant
    instants = {rid: sync.stored_version(v) for rid, v in stored.items()}
    assert {rid: v.timestamp() for rid, v in instants.items()} == {
        rid: v.timestamp() for rid, v in _VERSIONS.items()
    }
    mapping = {"source_record_id": "id", "source_updated_at": "t"}
    spec = ChunkSpec(source=src, entity="enterprises", city_code="420500000000", cell_version=1, mapping=mapping,
                     default_crs="gcj02", full=False)  # fmt: skip
    for rid, version in _VERSIONS.items():
        others = [v for v in _VERSIONS.values() if v.timestamp() != version.timestamp()]
        same = [{"id": rid, "t": form} for form in _forms(version)]
        other = [{"id": rid, "t": form} for v in others for form in _forms(v)]
        for row in same + other:
            with_text, todo_text = skip_unchanged(spec, [row], stored)
            with_instant, todo_instant = skip_unchanged(spec, [row], instants)
            assert (with_text.skipped, with_text.high_water, todo_text) == (
                with_instant.skipped, with_instant.high_water, todo_instant
            ), (rid, row["t"])  # fmt: skip
            # A naive time in the hour seen twice names no single instant (PEP 495): never skipped,
            # only validated again (the version guard keeps the store right).
            repeated_hour = rid.startswith("twice") and "+" not in row["t"]
            assert with_text.skipped == (row in same and not repeated_hour), (rid, row["t"])
    fold_naive = {"id": "twice-second", "t": "1988-09-11 01:30:00"}  # the first 01:30, an hour earlier
    assert skip_unchanged(spec, [fold_naive], stored)[0].skipped == 0


def test_older_version_never_overwrites_newer(conn: psycopg2.extensions.connection) -> None:
    """The upsert is version-guarded on the source's update time."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    _write(
        conn,
        run,
        src,
        _chunk([_ent("e1", T0 + timedelta(hours=1), name="新名称")], []),
        received=1,
        cursor_after=None,
    )
    stale = _write(conn, run, src, _chunk([_ent("e1", T0, name="旧名称")], []), received=1, cursor_after=None)
    newer = _write(
        conn,
        run,
        src,
        _chunk([_ent("e1", T0 + timedelta(hours=2), name="更新名称")], []),
        received=1,
        cursor_after=None,
    )
    assert stale.loaded == 0 and newer.updated == 1
    with transaction(conn) as cur:
        cur.execute("SELECT name FROM enterprise WHERE source = %s AND source_record_id = 'e1'", (src,))
        assert cur.fetchone()[0] == "更新名称"


def test_reject_is_quarantined_once_per_record_and_reason(conn: psycopg2.extensions.connection) -> None:
    """A reject seen again (a replayed page) does not open a second quarantine row."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    rej = [("w9", "bad_id_checksum", "id_number", "check digit does not match", b"h" * 32, b"\x01enc")]
    for _ in range(2):
        page = _write(conn, run, src, _chunk([], rej), entity="workers", received=1, cursor_after="c")
        assert page.quarantined == 1 and page.by_reason == {"bad_id_checksum": 1}
    assert _count(conn, "SELECT count(*) FROM quarantine WHERE source = %s", src) == 1


def test_cursor_advances_only_with_its_page(conn: psycopg2.extensions.connection) -> None:
    """A page whose write fails leaves neither rows nor a moved cursor behind."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    _write(conn, run, src, _chunk([_ent("e1", T0)], []), received=1, cursor_after="after-page-1")
    bad = _ent("e2", T0)
    bad = (*bad[:12], "4205020010010XY", *bad[13:])  # violates the cell-code check
    with pytest.raises(psycopg2.Error):
        _write(conn, run, src, _chunk([bad], []), received=1, cursor_after="after-page-2")
    with transaction(conn) as cur:
        assert sync.get_cursor(cur, source=src, entity="enterprises") == "after-page-1"
    assert _count(conn, "SELECT count(*) FROM enterprise WHERE source = %s", src) == 1


def test_after_write_sees_the_page_and_commits_or_fails_with_it(conn: psycopg2.extensions.connection) -> None:
    """``after_write`` (reprocessing settles quarantine rows there) runs inside the page's
    transaction: it sees the rows just written, and if it fails the page is not committed."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    seen: list[int] = []

    def look(cur: psycopg2.extensions.cursor) -> None:
        cur.execute("SELECT count(*) FROM enterprise WHERE source = %s", (src,))
        seen.append(cur.fetchone()[0])

    _write(
        conn,
        run,
        src,
        _chunk([_ent("e1", T0)], []),
        received=1,
        cursor_after="after-page-1",
        after_write=look,
    )
    assert seen == [1]

    def fail(cur: psycopg2.extensions.cursor) -> None:
        look(cur)
        raise RuntimeError("settling failed")

    with pytest.raises(RuntimeError):
        _write(
            conn,
            run,
            src,
            _chunk([_ent("e2", T0)], []),
            received=1,
            cursor_after="after-page-2",
            after_write=fail,
        )
    assert seen == [1, 2]  # it saw the second page's row ...
    assert _count(conn, "SELECT count(*) FROM enterprise WHERE source = %s", src) == 1  # ... rolled back
    with transaction(conn) as cur:
        assert sync.get_cursor(cur, source=src, entity="enterprises") == "after-page-1"


def test_finish_run_records_counts_and_cursors(conn: psycopg2.extensions.connection) -> None:
    """The run row carries the counts and the cursor positions before and after."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    totals = sync.RunTotals()
    page = _write(conn, run, src, _chunk([_ent("e1", T0)], []), received=1, cursor_after="k1")
    totals.add("enterprises", page)
    sync.finish_run(conn, run_id=run, totals=totals)
    with transaction(conn) as cur:
        cur.execute(
            "SELECT status, received, loaded, cursor_before, cursor_after FROM sync_run WHERE id = %s", (run,)
        )
        assert cur.fetchone() == ("completed", 1, 1, {}, {"enterprises": {"cursor": "k1", "since": None}})


def test_stream_end_moves_watermark_and_clears_cursor(conn: psycopg2.extensions.connection) -> None:
    """Mid-stream the keyset cursor is kept; the last page moves `since` to the newest committed update."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    _write(conn, run, src, _chunk([_ent("e1", t2)], []), received=1, cursor_after="k1")
    with transaction(conn) as cur:
        assert sync.get_position(cur, source=src, entity="enterprises") == sync.StreamPosition("k1", None)
    _write(conn, run, src, _chunk([_ent("e2", t1)], []), received=1, cursor_after=None)
    with transaction(conn) as cur:
        assert sync.get_position(cur, source=src, entity="enterprises") == sync.StreamPosition(None, t2)


def _full_page(conn, src: str, run: int, snap: int, ids: list[str]) -> sync.PageResult:  # type: ignore[no-untyped-def]
    chunk = _chunk([_ent(i, T0) for i in ids], [])
    chunk.seen = list(ids)
    return _write(conn, run, src, chunk, received=len(ids), cursor_after=None, snapshot_run_id=snap)


def test_record_missing_from_two_full_snapshots_is_soft_deleted(conn: psycopg2.extensions.connection) -> None:
    """A record absent from one full snapshot is only counted; absent from two in a row, it is
    soft-deleted (kept, with deleted_at); seen again, it is restored."""
    src = _source(conn)
    r1 = sync.start_run(conn, source=src, mode="full", flow_run_id=None)
    _full_page(conn, src, r1, r1, ["a", "b", "c"])
    r2 = sync.start_run(conn, source=src, mode="full", flow_run_id=None)
    first_miss = _full_page(conn, src, r2, r2, ["a", "b"])
    assert (first_miss.missing, first_miss.soft_deleted) == (1, 0)
    r3 = sync.start_run(conn, source=src, mode="full", flow_run_id=None)
    second_miss = _full_page(conn, src, r3, r3, ["a", "b"])
    assert (second_miss.missing, second_miss.soft_deleted) == (1, 1)
    deleted = "SELECT count(*) FROM enterprise WHERE source = %s AND deleted_at IS NOT NULL"
    assert _count(conn, deleted, src) == 1
    assert _count(conn, "SELECT count(*) FROM enterprise WHERE source = %s", src) == 3, "nothing is lost"
    r4 = sync.start_run(conn, source=src, mode="full", flow_run_id=None)
    back = _full_page(conn, src, r4, r4, ["a", "b", "c"])
    assert back.missing == 0 and _count(conn, deleted, src) == 0
    assert _count(conn, "SELECT count(*) FROM full_seen WHERE run_id = ANY(%s)", [r1, r2, r3, r4]) == 0


def test_a_record_seen_between_misses_starts_counting_again(conn: psycopg2.extensions.connection) -> None:
    """Only CONSECUTIVE full snapshots without a record delete it."""
    src = _source(conn)
    for ids in (["a", "b"], ["a"], ["a", "b"], ["a"]):
        run = sync.start_run(conn, source=src, mode="full", flow_run_id=None)
        _full_page(conn, src, run, run, ids)
    assert (
        _count(conn, "SELECT count(*) FROM enterprise WHERE source = %s AND deleted_at IS NOT NULL", src) == 0
    )


def test_one_run_per_source_lock_and_crashed_runs(
    database_url: str, conn: psycopg2.extensions.connection
) -> None:
    """A second holder of a source's lock is refused; a 'running' row left by a dead run is marked crashed."""
    src = _source(conn)
    other = psycopg2.connect(database_url)
    try:
        assert sync.try_lock_source(conn, src)
        assert not sync.try_lock_source(other, src)
        dead = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
        assert sync.mark_crashed_runs(conn, source=src) == 1
        with transaction(conn) as cur:
            cur.execute("SELECT status FROM sync_run WHERE id = %s", (dead,))
            assert cur.fetchone() == ("crashed",)
        conn.close()  # the holder dies: its lock goes with its connection (once its backend exits)
        deadline = time.monotonic() + 10
        while not sync.try_lock_source(other, src):
            assert time.monotonic() < deadline, "the lock of a closed connection was never released"
            time.sleep(0.05)
    finally:
        other.close()


def _problems(conn: psycopg2.extensions.connection, src: str) -> list[tuple[Any, ...]]:
    with transaction(conn) as cur:
        cur.execute(
            "SELECT source_record_id, field, reason_code, seen_count, resolution FROM field_problem"
            " WHERE source = %s ORDER BY id",
            (src,),
        )
        return cur.fetchall()


def test_field_problems_are_kept_once_with_the_stored_version_and_settled_when_it_is_fixed(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule (issue #21): a loaded record's field problem is stored once per record and field (a
    replay counts it seen again); an older version the guard does not store records nothing; a
    newer stored version without the problem settles it as 'fixed'."""
    src = _source(conn)
    run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None)
    phone = [("e1", "legal_rep_phone", "bad_phone", "phone is no number (field fddbrdh)", b"\x01enc")]

    def page(
        version: datetime, problems: list[tuple[Any, ...]], name: str, new_run: bool = True
    ) -> sync.PageResult:
        chunk = _chunk([_ent("e1", version, name=name)], [])
        chunk.problems_text = copy_text(problems)
        chunk.by_problem = Counter(p[2] for p in problems)
        this_run = sync.start_run(conn, source=src, mode="incremental", flow_run_id=None) if new_run else run
        return _write(conn, this_run, src, chunk, received=1, cursor_after=None)

    first = page(T0, phone, "甲", new_run=False)
    assert (first.loaded, first.quarantined, first.field_problems) == (1, 0, 1)
    page(T0, phone, "甲", new_run=False)  # replay: same version, unchanged, nothing new
    assert _problems(conn, src) == [("e1", "legal_rep_phone", "bad_phone", 1, None)]
    page(T0 + timedelta(hours=1), phone, "乙")  # newer version, still a bad phone
    assert _problems(conn, src) == [("e1", "legal_rep_phone", "bad_phone", 2, None)]
    page(T0 - timedelta(hours=1), [("e1", "employee_count", "bad_value", "count", b"\x01e")], "旧")
    assert _problems(conn, src) == [("e1", "legal_rep_phone", "bad_phone", 2, None)]
    fixed = page(T0 + timedelta(hours=2), [], "丙")  # the city fixed the phone
    assert fixed.updated == 1
    assert _problems(conn, src) == [("e1", "legal_rep_phone", "bad_phone", 2, "fixed")]
    assert (
        _count(conn, "SELECT count(*) FROM field_problem WHERE source = %s AND settled_at IS NULL", src) == 0
    )


def test_worker_pages_need_a_registered_source_and_a_source_keeps_its_workers(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule (migration 0015): worker rows no longer check their source per row; instead a page of
    workers is refused, writing nothing, unless its source is registered, and a source that has
    worker rows can be neither deleted nor renamed (what the foreign key promised)."""
    ghost = f"g{secrets.token_hex(4)}"
    run = sync.start_run(conn, source=_source(conn), mode="incremental", flow_run_id=None)
    with pytest.raises(ValueError, match="is not registered"):
        _write(
            conn, run, ghost, PreparedChunk(entity="workers"), entity="workers", received=0, cursor_after="c"
        )
    assert _count(conn, "SELECT count(*) FROM source_cursor WHERE source = %s", ghost) == 0
    src = _source(conn)
    with transaction(conn) as cur:
        cur.execute(
            "INSERT INTO worker (source, source_record_id, source_updated_at, id_hmac, id_masked, name_masked,"
            " pii_enc, placement_method, row_hash) VALUES (%s, 'w1', now(), '\\x01', 'm', 'n', '\\x02', 'unmapped',"
            " '\\x03')",
            (src,),
        )
    for sql in ("DELETE FROM source WHERE name = %s", "UPDATE source SET name = name || 'x' WHERE name = %s"):
        refused = pytest.raises(psycopg2.errors.ForeignKeyViolation, match="still has worker records")
        with refused, transaction(conn) as cur:
            cur.execute(sql, (src,))
    with transaction(conn) as cur:  # other changes to the source row go through
        cur.execute("UPDATE source SET display_name = 'renamed' WHERE name = %s", (src,))
    empty = _source(conn)
    with transaction(conn) as cur:
        cur.execute("DELETE FROM source WHERE name = %s", (empty,))
        assert cur.rowcount == 1
