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


def _pick(dataset: Any, entity: str, labels: tuple[str, ...]) -> list[str]:
    chosen: list[str] = []
    by_label = dataset.labels(entity)
    for label in labels:
        chosen.append(next(rid for rid, lab in by_label.items() if lab == label and rid not in chosen))
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

    fixed_workers = _pick(sandbox_dataset, "workers", ("bad_id_checksum", "bad_phone", "out_of_china"))
    broken_workers = _pick(sandbox_dataset, "workers", ("bad_date", "unknown_crs"))
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
    assert sorted(r[0] for r in still) == ["bad_date", "unknown_crs"]
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
