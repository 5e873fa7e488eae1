"""Quarantine reprocessing: after the city fixes its data, re-taken records leave quarantine and
land in the store through the sync's own write path; still-broken ones stay; a second reprocess
changes nothing; the source cursor never moves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.sandbox.app import SandboxServer, correct_record, create_app
from connectors.sandbox.fixes import fixed_row
from connectors.validate import CHINA_TZ
from grid.ingest import reject_copy
from grid.people import vault_from_settings
from grid.sync import reprocess as rp
from tests.conftest import write_sources
from tests.flows.helpers import fingerprint, query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow]


@pytest.fixture
def city(sandbox_dataset: Any, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """A private sandbox app (its records get fixed) and a source config pointing at it."""
    app = create_app(sandbox_dataset)
    with SandboxServer(app) as server, sources_env(tmp_path):
        write_sources(tmp_path, rp_city=server.base_url)
        yield app, "rp_city"


def _pick(dataset: Any, entity: str, labels: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[str]:
    chosen: list[str] = []
    by_label = dataset.labels(entity)
    for label in labels:
        chosen.append(
            next(
                rid
                for rid, lab in by_label.items()
                if lab == label and rid not in chosen and rid not in exclude
            )
        )
    return chosen


def _qids(source: str, rids: list[str], *, open_only: bool = True) -> list[int]:
    rows = query(
        "SELECT id FROM quarantine WHERE source = %s AND source_record_id = ANY(%s)"
        + (" AND resolved_at IS NULL" if open_only else "")
        + " ORDER BY id",
        source,
        rids,
    )
    return [r[0] for r in rows]


def test_reprocess_moves_fixed_records_out_of_quarantine_keeps_broken_ones_and_is_idempotent(
    prefect_harness: None, loaded_world: Any, sandbox_dataset: Any, city: tuple[Any, str]
) -> None:
    """Rule (issue #8): reprocessing a chosen set after the city fixed its data loads the fixed
    records (worker/enterprise rows, placed, encrypted) and resolves their quarantine rows as
    'reprocessed'; records still invalid stay quarantined with their reason and a higher
    seen_count; the sync cursor does not move; a second reprocess changes no content."""
    from flows.nightly_sync import nightly_sync
    from flows.quarantine_reprocess import quarantine_reprocess

    app, source = city
    rows = nightly_sync(sources=[source])
    assert rows[0]["status"] == "completed" and rows[0]["quarantined"] > 0

    # Issue #21: only record problems are quarantined now (a worker's bad resident ID; a bad phone,
    # birth date or location is a field problem of a loaded worker, reprocessed below).
    fixed_workers = _pick(sandbox_dataset, "workers", ("bad_id_checksum",) * 3)
    broken_workers = _pick(sandbox_dataset, "workers", ("bad_id_checksum",) * 2, exclude=tuple(fixed_workers))
    fixed_firms = _pick(sandbox_dataset, "enterprises", ("bad_uscc_checksum",))
    ids_fixed = _qids(source, fixed_workers + fixed_firms)
    ids_broken = _qids(source, broken_workers)
    assert len(ids_fixed) == 4 and len(ids_broken) == 2
    now = datetime.now(CHINA_TZ)
    for rid in fixed_workers:
        correct_record(
            app, "workers", rid, fixed_row(sandbox_dataset, "workers", rid, updated_at=now), updated_at=now
        )
    for rid in fixed_firms:
        correct_record(
            app,
            "enterprises",
            rid,
            fixed_row(sandbox_dataset, "enterprises", rid, updated_at=now),
            updated_at=now,
        )
    cursors_before = query(
        "SELECT entity, cursor, since, high_water FROM source_cursor WHERE source = %s", source
    )

    counts = quarantine_reprocess(quarantine_ids=ids_fixed + ids_broken)
    assert counts == {"reprocessed": 4, "still_quarantined": 2}

    resolved = query(
        "SELECT id, resolution, reprocess_count FROM quarantine WHERE id = ANY(%s) ORDER BY id", ids_fixed
    )
    assert resolved == [(i, "reprocessed", 1) for i in ids_fixed]
    (run_id, mode, status) = query(
        "SELECT id, mode, status FROM sync_run WHERE source = %s ORDER BY id DESC LIMIT 1", source
    )[0]
    assert (mode, status) == ("reprocess", "completed")
    workers = query(
        "SELECT source_record_id, last_run_id, cell_code IS NOT NULL OR division_code IS NOT NULL,"
        " octet_length(pii_enc) > 0, id_masked LIKE '%%***%%' FROM worker WHERE source = %s"
        " AND source_record_id = ANY(%s) ORDER BY 1",
        source,
        fixed_workers,
    )
    assert workers == [(rid, run_id, True, True, True) for rid in sorted(fixed_workers)]
    firms = query(
        "SELECT count(*) FROM enterprise WHERE source = %s AND source_record_id = ANY(%s) AND last_run_id = %s",
        source,
        fixed_firms,
        run_id,
    )
    assert firms == [(1,)]
    still = query(
        "SELECT reason_code, seen_count, reprocess_count, last_run_id FROM quarantine WHERE id = ANY(%s)"
        " AND resolved_at IS NULL ORDER BY id",
        ids_broken,
    )
    assert sorted(r[0] for r in still) == ["bad_id_checksum", "bad_id_checksum"]
    assert all(r[1:] == (2, 1, run_id) for r in still)
    assert not query(
        "SELECT 1 FROM worker WHERE source = %s AND source_record_id = ANY(%s)", source, broken_workers
    )
    cursors_after = query(
        "SELECT entity, cursor, since, high_water FROM source_cursor WHERE source = %s", source
    )
    assert cursors_after == cursors_before

    # a second reprocess of the same ids changes no content
    before = fingerprint(source)
    again = quarantine_reprocess(quarantine_ids=ids_fixed + ids_broken)
    assert again == {"already_resolved": 4, "still_quarantined": 2}
    assert fingerprint(source) == before

    # the next nightly sync sees the fixed records as unchanged: nothing re-quarantined
    rows = nightly_sync(sources=[source])
    assert rows[0]["status"] == "completed"
    assert _qids(source, fixed_workers + fixed_firms) == []


def test_rejects_read_back_from_copy_text_keep_reason_and_encrypted_raw() -> None:
    """Rule: the reprocess reads the page pipeline's reject lines back exactly (reason, field,
    detail, keyed HMAC and the encrypted raw record, which decrypts to the original)."""
    from connectors.reasons import Reason
    from connectors.records import Reject

    vault = vault_from_settings()
    raw = {"ywid": "a\tb", "xm": "测试\\名", "note": "line\nbreak"}
    text = reject_copy([Reject("a\tb", Reason.BAD_PHONE, "lxdh", "phone is \\ odd", raw=raw)], vault)
    (row,) = rp.parse_rejects(text)
    assert (row.source_record_id, row.reason_code, row.field, row.detail) == (
        "a\tb",
        "bad_phone",
        "lxdh",
        "phone is \\ odd",
    )
    assert rp.raw_record(vault, row.raw_enc) == raw
    assert len(row.raw_hmac) == 32


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        pytest.param([], "at least one", id="empty selection"),
        pytest.param(["x"], "whole numbers", id="not a number"),
        pytest.param([0], "positive", id="zero"),
        pytest.param(list(range(1, 1003)), "at most", id="too many"),
    ],
)
def test_bad_reprocess_parameters_are_refused_with_a_clear_error(ids: list[Any], message: str) -> None:
    """Rule: bad input gives a clear error, before anything is touched."""
    with pytest.raises(rp.ReprocessError, match=message):
        rp.check_ids(ids)


def _fpids(source: str, rids: list[str]) -> list[int]:
    rows = query(
        "SELECT id FROM field_problem WHERE source = %s AND source_record_id = ANY(%s) AND settled_at IS NULL"
        " ORDER BY id",
        source,
        rids,
    )
    return [r[0] for r in rows]


def test_reprocessing_a_field_problem_after_the_city_fixes_the_phone_fills_the_field_in_place(
    prefect_harness: None, loaded_world: Any, sandbox_dataset: Any, city: tuple[Any, str]
) -> None:
    """Rule (issue #21): a worker with a bad phone is stored without it and with a field problem;
    once the city sends a valid phone, reprocessing that problem re-fetches the record by id and
    writes it through the sync's path: the same worker row gets the phone (encrypted, keyed HMAC,
    masked) and the problem is settled as 'fixed'. A problem the city has not fixed stays open.
    The cursor does not move; a second reprocess changes nothing."""
    from flows.nightly_sync import nightly_sync
    from flows.quarantine_reprocess import quarantine_reprocess
    from grid.ingest import decrypt_worker_pii

    app, source = city
    assert nightly_sync(sources=[source])[0]["status"] == "completed"
    fixed, unfixed = _pick(sandbox_dataset, "workers", ("bad_phone", "bad_phone"))
    moved = _pick(sandbox_dataset, "workers", ("out_of_china",))[0]
    before = {
        r[0]: r[1:]
        for r in query(
            "SELECT source_record_id, id, phone_hmac IS NULL, phone_masked IS NULL, cell_code IS NULL"
            " FROM worker WHERE source = %s AND source_record_id = ANY(%s)",
            source,
            [fixed, unfixed, moved],
        )
    }
    # stored, without the bad phone; the worker whose point was abroad has no cell
    assert before[fixed][1:3] == (True, True) and before[unfixed][1:3] == (True, True)
    assert before[moved][3] is True
    ids = _fpids(source, [fixed, unfixed, moved])
    assert len(ids) == 3

    now = datetime.now(CHINA_TZ)
    mapping = sandbox_dataset.mapping["workers"]
    row = fixed_row(sandbox_dataset, "workers", fixed, updated_at=now)
    row[mapping["phone"]] = "139 1234 5678"
    correct_record(app, "workers", fixed, row, updated_at=now)
    correct_record(
        app, "workers", moved, fixed_row(sandbox_dataset, "workers", moved, updated_at=now), updated_at=now
    )
    cursors_before = query(
        "SELECT entity, cursor, since, high_water FROM source_cursor WHERE source = %s", source
    )

    counts = quarantine_reprocess(field_problem_ids=ids)
    assert counts == {"field_fixed": 2, "field_still_bad": 1}

    after = query(
        "SELECT source_record_id, id, phone_masked, pii_enc, cell_code IS NOT NULL FROM worker"
        " WHERE source = %s AND source_record_id = ANY(%s) ORDER BY 1",
        source,
        [fixed, moved],
    )
    by_rid = {r[0]: r[1:] for r in after}
    wid, masked, blob, _ = by_rid[fixed]
    assert wid == before[fixed][0], "the field is filled in place: the same worker row"
    assert masked == "139****5678"
    assert decrypt_worker_pii(bytes(blob), vault_from_settings())["phone"] == "13912345678"
    assert by_rid[moved][0] == before[moved][0] and by_rid[moved][3], (
        "the fixed point now places it in a cell"
    )
    assert query(
        "SELECT source_record_id, resolution, reprocess_count FROM field_problem WHERE id = ANY(%s) ORDER BY 1",
        ids,
    ) == sorted([(fixed, "fixed", 1), (moved, "fixed", 1), (unfixed, None, 1)])
    assert query("SELECT entity, cursor, since, high_water FROM source_cursor WHERE source = %s", source) == (
        cursors_before
    )
    assert query(
        "SELECT count(*) FROM quarantine WHERE source = %s AND source_record_id = ANY(%s)",
        source,
        [fixed, moved, unfixed],
    ) == [(0,)]

    snapshot = fingerprint(source)
    again = quarantine_reprocess(field_problem_ids=ids)
    assert again == {"field_already_settled": 2, "field_still_bad": 1}
    assert fingerprint(source) == snapshot
