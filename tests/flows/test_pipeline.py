"""Page-level skipping of unchanged records (``flows.pipeline.skip_unchanged``): what a re-run of
an unchanged night may leave out of the prepare tasks, and what it must still send to them."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import uscc as _uscc

from connectors.reasons import Reason
from connectors.validate import CHINA_TZ
from flows.nightly_sync import _first_seen
from flows.pipeline import ChunkSpec, record_key, skip_unchanged

MAPPING = {"source_record_id": "id", "source_updated_at": "updated_at"}
V1 = datetime(2026, 11, 20, 8, 0, tzinfo=CHINA_TZ)
V2 = datetime(2026, 11, 21, 8, 0, tzinfo=CHINA_TZ)


def _spec(entity: str = "workers", *, full: bool = False) -> ChunkSpec:
    return ChunkSpec(
        source="city",
        entity=entity,
        city_code="420500000000",
        cell_version=1,
        mapping=MAPPING,
        default_crs="gcj02",
        full=full,
    )


def test_rows_stored_at_the_same_version_are_counted_and_everything_else_goes_to_prepare() -> None:
    rows = [
        {"id": "a", "updated_at": "2026-11-20T08:00:00+08:00"},  # stored at this version
        {"id": "b", "updated_at": "2026-11-21T08:00:00+08:00"},  # stored at an older version
        {"id": "c", "updated_at": "2026-11-20T08:00:00+08:00"},  # not stored
        {"id": "d", "updated_at": "yesterday"},  # unreadable time: validation gives the reason
        {"id": "e", "updated_at": "2026-11-20 08:00:00"},  # naive = Beijing time, same instant
        {"id": "f", "updated_at": "2026-11-20T08:00:00"},  # the same, with a T
        {"id": "g", "updated_at": "2026-11-20T08:00+08"},  # 19 characters with its own offset
        {"id": "h", "updated_at": "2026-11-20T08:00+09"},  # ... another instant
    ]
    known = {k: V1 for k in "abdefgh"}
    done, todo = skip_unchanged(_spec(), rows, known)
    assert done.skipped == 4
    assert done.high_water == V1
    assert done.n_rows == 0 and not done.rows_text and not done.rejects_text
    assert done.seen == []  # incremental run: no snapshot bookkeeping
    assert [r["id"] for r in todo] == ["b", "c", "d", "h"]


def test_a_repeated_row_of_an_unchanged_record_is_still_prepared_once_more() -> None:
    """Duplicates in a page are validation's business (duplicate_in_page): only the first copy of
    an unchanged record is skipped."""
    row = {"id": "a", "updated_at": "2026-11-20T08:00:00+08:00"}
    done, todo = skip_unchanged(_spec(), [row, dict(row)], {"a": V1})
    assert done.skipped == 1
    assert todo == [row]


def test_a_full_snapshot_keeps_the_ids_of_skipped_rows_so_they_are_not_counted_missing() -> None:
    rows = [{"id": "a", "updated_at": "2026-11-21T08:00:00+08:00"}, {"id": "b", "updated_at": "x"}]
    done, todo = skip_unchanged(_spec(full=True), rows, {"a": V2})
    assert done.seen == ["a"]
    assert done.high_water == V2
    assert [r["id"] for r in todo] == ["b"]


def test_case_reports_and_pages_with_nothing_stored_are_never_skipped() -> None:
    rows = [{"id": "a", "updated_at": "2026-11-20T08:00:00+08:00"}]
    done, todo = skip_unchanged(_spec("cases"), rows, {"a": V1})
    assert done.skipped == 0 and todo == rows
    done, todo = skip_unchanged(_spec(), rows, {})
    assert done.skipped == 0 and done.high_water is None and todo == rows


@pytest.mark.db
def test_a_prepared_chunk_names_the_version_of_every_row_it_writes_and_no_other(
    loaded_world, sandbox_dataset
) -> None:  # type: ignore[no-untyped-def]
    """What the run folds into its version map once the page commits: each written row's
    (id, version) — not a row skipped as already stored, not a rejected row."""
    from connectors.config import load_source_config
    from flows.pipeline import current_cell_version, prepare_chunk
    from grid.settings import PROJECT_ROOT

    config = load_source_config(PROJECT_ROOT / "config" / "sources" / "yichang.toml")
    mapping = dict(config.mapping["workers"])  # type: ignore[index]
    rows = sandbox_dataset.rows("workers")[:400]
    ok = [r for r in rows if r.label == "ok"]
    bad = [r for r in rows if r.label not in ("ok",) and r.label in {x.value for x in Reason}]
    assert len(ok) > 2 and bad, "the sandbox slice needs good and bad rows"
    spec = ChunkSpec(
        source="city",
        entity="workers",
        city_code=loaded_world.city_code,
        cell_version=current_cell_version(loaded_world.city_code),
        mapping=mapping,
        default_crs="gcj02",
        full=False,
    )
    stored = {ok[0].record_id: ok[0].updated_at, ok[1].record_id: ok[1].updated_at - timedelta(days=1)}
    chunk = prepare_chunk(spec, [r.row for r in rows], stored, date(2026, 11, 21))
    written = dict(chunk.versions)
    assert len(written) == chunk.n_rows
    assert ok[0].record_id not in written  # already stored at this version: skipped
    assert written[ok[1].record_id] == ok[1].updated_at  # stored older: written, noted
    assert all(written[r.record_id] == r.updated_at for r in ok[1:])
    # Issue #21: a record problem keeps the record out; a field problem writes it with the field
    # empty, and the chunk carries one field problem per such record, with its reason code.
    whole = [r for r in bad if r.label == Reason.BAD_ID_CHECKSUM]
    kept = [r for r in bad if r.label != Reason.BAD_ID_CHECKSUM]
    assert whole and kept, "the sandbox slice needs record and field problems"
    assert not {r.record_id for r in whole} & set(written)
    assert all(written[r.record_id] == r.updated_at for r in kept)
    assert chunk.by_reason == Counter(r.label for r in whole)
    assert chunk.by_problem == Counter(r.label for r in kept)
    assert len(chunk.problems_text.splitlines()) == len(kept)


@pytest.mark.parametrize(
    ("address", "loaded"),
    [
        pytest.param("北京路88号", False, id="北京路88号: quarantined address_outside_region, not Beijing"),
        pytest.param("南京路3号", False, id="南京路: quarantined"),
        pytest.param("中山路1号", False, id="中山路: quarantined"),
        pytest.param("夷陵区北京路88号", True, id="a Yichang county named first: loaded in Yichang"),
    ],
)
def test_yichang_source_never_places_a_worker_outside_yichang(
    loaded_world, sandbox_dataset, address: str, loaded: bool
) -> None:  # type: ignore[no-untyped-def]
    """Rule: the source's city bounds address placement; a record whose address names only another
    city is quarantined with ``address_outside_region`` (and counted), never loaded in that city."""
    from connectors.config import load_source_config
    from flows.pipeline import current_cell_version, prepare_chunk
    from grid.settings import PROJECT_ROOT

    config = load_source_config(PROJECT_ROOT / "config" / "sources" / "yichang.toml")
    mapping = dict(config.mapping["workers"])  # type: ignore[index]
    row = dict(next(r for r in sandbox_dataset.rows("workers") if r.label == "ok").row)
    row[mapping["lon"]] = row[mapping["lat"]] = ""
    row[mapping["address"]] = address
    spec = ChunkSpec(
        source="city",
        entity="workers",
        city_code=config.city_code,
        cell_version=current_cell_version(loaded_world.city_code),
        mapping=mapping,
        default_crs="gcj02",
        full=False,
    )
    chunk = prepare_chunk(spec, [row], {}, date(2026, 11, 21))
    if loaded:
        assert (chunk.n_rows, dict(chunk.by_reason)) == (1, {})
        assert dict(chunk.by_method) == {"address_county": 1}
    else:
        assert (chunk.n_rows, dict(chunk.by_reason)) == (0, {"address_outside_region": 1})
        assert chunk.skipped == 0


def test_a_case_report_addressed_outside_the_region_is_quarantined(loaded_world, sandbox_dataset) -> None:  # type: ignore[no-untyped-def]
    """Rule: a case report from Yichang's source whose address names only another city is not
    routed there: it is quarantined with ``address_outside_region``."""
    from connectors.config import load_source_config
    from flows.pipeline import current_cell_version, prepare_chunk
    from grid.settings import PROJECT_ROOT

    config = load_source_config(PROJECT_ROOT / "config" / "sources" / "yichang.toml")
    mapping = dict(config.mapping["cases"])  # type: ignore[index]
    worker = next(r for r in sandbox_dataset.rows("workers") if r.label == "ok")
    when = worker.row[mapping["source_updated_at"]]
    body = "91420500MA4K0000A"
    row = {
        mapping["source_record_id"]: "case-beijing-road",
        mapping["source_updated_at"]: when,
        mapping["reported_at"]: when,
        mapping["kind"]: "拖欠工资",
        mapping["enterprise_uscc"]: body + _uscc.calc_check_digit(body),
        mapping["workers_affected"]: "3",
        mapping["address"]: "北京路88号",
    }
    spec = ChunkSpec(
        source="city",
        entity="cases",
        city_code=config.city_code,
        cell_version=current_cell_version(loaded_world.city_code),
        mapping=mapping,
        default_crs="gcj02",
        full=False,
    )
    chunk = prepare_chunk(spec, [row], {}, date(2026, 11, 21))
    assert chunk.reports == []
    assert dict(chunk.by_reason) == {"address_outside_region": 1}


_COMPARED = (
    "source_record_id, source_updated_at, id_hmac, id_masked, name_masked, gender, birth_year, phone_hmac,"
    " phone_masked, enterprise_uscc, ST_AsEWKT(geom), cell_code, division_code, placement_method,"
    " unmapped_reason, row_hash, first_run_id = last_run_id, deleted_at IS NULL, missed_full_runs"
)


@pytest.mark.db
def test_records_the_store_never_held_are_copied_straight_in_with_what_the_upsert_would_store(
    loaded_world, sandbox_dataset, conn
) -> None:  # type: ignore[no-untyped-def]
    """Rule (issue #20, a cheaper record): a worker the store does not hold is COPYed straight
    into the table, and stores exactly what the version-guarded upsert stores (every column but
    the random nonce of the encrypted blob and the bookkeeping times); a record that is there
    after all — soft-deleted, or not in the prepared map — makes its chunk fall back to the
    upsert, which restores the deleted one and leaves the others unchanged."""
    import dataclasses
    import secrets

    from connectors.config import load_source_config
    from flows.pipeline import current_cell_version, prepare_chunk
    from grid.settings import PROJECT_ROOT
    from grid.store.db import transaction
    from grid.sync import store as sync

    config = load_source_config(PROJECT_ROOT / "config" / "sources" / "yichang.toml")
    rows = [r.row for r in sandbox_dataset.rows("workers")[:300]]
    spec = ChunkSpec(
        source="city", entity="workers", city_code=loaded_world.city_code,
        cell_version=current_cell_version(loaded_world.city_code),
        mapping=dict(config.mapping["workers"]), default_crs="gcj02", full=False,  # type: ignore[index]
    )  # fmt: skip
    day = date(2026, 11, 21)
    direct, upsert = f"d{secrets.token_hex(4)}", f"u{secrets.token_hex(4)}"
    with transaction(conn) as cur:
        for name in (direct, upsert):
            sync.register_source(cur, name=name, display_name=name, city_code=loaded_world.city_code,
                                 kind="http", crs="gcj02", enabled=True, config={})  # fmt: skip

    def write(source: str, chunk: sync.PreparedChunk) -> sync.PageResult:
        run = sync.start_run(conn, source=source, mode="incremental", flow_run_id=None)
        return sync.write_page(conn, run_id=run, source=source, entity="workers", chunks=[chunk],
                               received=len(rows), since=None, cursor_after="c")  # fmt: skip

    first = prepare_chunk(spec, rows[:200], {}, day)
    assert first.n_rows > 150 and not first.rows_text and len(first.new_ids) == first.n_rows
    as_upsert = dataclasses.replace(first, rows_text=first.new_text, new_text="", new_ids=[])
    got, via_upsert = write(direct, first), write(upsert, as_upsert)
    assert (got.inserted, got.updated, got.unchanged) == (first.n_rows, 0, 0)
    assert (via_upsert.inserted, via_upsert.updated) == (first.n_rows, 0)

    def stored(source: str) -> list[tuple]:
        with transaction(conn) as cur:
            cur.execute(
                f"SELECT {_COMPARED} FROM worker WHERE source = %s ORDER BY source_record_id", (source,)
            )
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur.fetchall()]

    assert stored(direct) == stored(upsert)
    assert any(r[10] and r[10].startswith("SRID=4326;POINT(") for r in stored(direct))

    gone = first.new_ids[0]
    with transaction(conn) as cur:
        cur.execute("UPDATE worker SET deleted_at = now() WHERE source = %s AND source_record_id = %s",
                    (direct, gone))  # fmt: skip
    # The next page: the soft-deleted record comes back, another 100 are new; the map (as the sync
    # builds it) holds neither, so the straight COPY meets the deleted row and the chunk falls back.
    back = next(r for r in rows if str(r[spec.mapping["source_record_id"]]).strip() == gone)
    again = prepare_chunk(spec, [back, *rows[200:]], {}, day)
    result = write(direct, again)
    assert result.updated == 1 and result.inserted == again.n_rows - 1
    with transaction(conn) as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM worker WHERE source = %s",
                    (direct,))  # fmt: skip
        assert cur.fetchone() == (first.n_rows + again.n_rows - 1, 0)


def test_the_collector_is_tuned_while_any_sync_runs_and_restored_when_the_last_ends() -> None:
    """Rule (issue #20): during a sync Python's cyclic collector runs with the batch threshold
    and the long-lived structures frozen; syncs of one process share that (one ending does not
    undo it for another still running), and the last one out restores the thresholds it found
    and unfreezes."""
    import gc

    from flows.pipeline import BATCH_GC_THRESHOLD, batch_gc, settle_gc

    before = gc.get_threshold()
    with batch_gc():
        assert gc.get_threshold() == BATCH_GC_THRESHOLD
        settle_gc()
        assert gc.get_freeze_count() > 0
        with batch_gc():  # a second sync of the same process
            pass
        assert gc.get_threshold() == BATCH_GC_THRESHOLD  # still tuned for the first
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


_ID = st.one_of(
    st.sampled_from(["w1", " w1", "w1 ", "\u3000w1", "w2", "", " ", "None", "1", "x"]),
    st.text(alphabet=" w12\t\u3000", max_size=4),
    st.integers(0, 3),
    st.none(),
    st.lists(st.integers(0, 2), max_size=2),
)


@given(st.sets(st.sampled_from(["w1", "w2", "1", "None", "x", "[1]"])), st.lists(_ID, max_size=8))
def test_the_first_night_check_is_disjointness_of_record_keys(known_ids: set[str], ids: list[object]) -> None:
    """Rule: a page counts as unseen (no row looked up one by one) exactly when no row's record key
    (stripped text, "" for none, the text of a number or a list) is a stored or noted id: the
    shortcut that checks plain ids in C answers what turning every id into its key answers."""
    known = dict.fromkeys(known_ids, "2026-11-20 08:00:00")
    assert _first_seen(known, ids) == known.keys().isdisjoint(record_key(v) for v in ids)
