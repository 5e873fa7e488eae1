"""Quarantine reprocessing: re-take chosen quarantined records after the city fixed its data.

Parameters are quarantine row ids only (and the id of the web/CLI request that asked), never
personal data. Per source (under the same advisory lock as the nightly sync, so the two never
interleave):

1. the current version of each record is fetched from the source by its record id, when the
   source is an HTTP API that answers ``{path}/by-id`` (the only step that touches the network,
   so the only task with retries); otherwise — a file drop, an API without that endpoint, or a
   record the source no longer has — the stored raw record (decrypted) is re-validated;
2. the records go through the sync's own path: :func:`flows.pipeline.prepare_chunk` (validation,
   placement, encryption, case-report preparation) and :func:`grid.sync.store.write_page`
   (version-guarded upsert, case intake) under a ``sync_run`` of mode ``reprocess`` — with the
   source cursor left exactly where it was;
3. :func:`grid.sync.reprocess.settle` resolves the quarantine rows of records now stored
   and updates those still invalid (new reason, seen count) — inside the write's own
   transaction (``write_page(after_write=…)``), so records and quarantine commit together.

Field problems (records loaded with one field empty, ``field_problem_ids``) go the same way: the
record is re-fetched by its id and written through the same page path, which fills the field in
place and settles the problem when the source now sends a valid value. A source that cannot answer
by id leaves the problem open (a loaded record keeps no raw row to re-read).

Idempotent: resolved rows are skipped, an unchanged record is neither re-written nor re-counted.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, cast

import psycopg2.extensions
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from connectors.config import Entity, SourceConfig, load_all_sources
from connectors.http import HttpSource
from flows.pipeline import ChunkSpec, current_cell_version, prepare_chunk
from grid.cases.intake import page_intake
from grid.people import vault_from_settings
from grid.settings import FLOWS_ROLE, get_settings
from grid.store.db import connect, transaction
from grid.sync import reprocess as rp
from grid.sync import store as sync


class ReprocessFailed(RuntimeError):
    """Some records could not be re-taken (one sentence per source, no personal data)."""


@task(cache_policy=NO_CACHE, task_run_name="fetch-by-id-{entity}", retries=2, retry_delay_seconds=2)
def fetch_by_id(config: SourceConfig, entity: str, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    """The source's current version of each record, by its record id; None when the source
    cannot answer by id (not an HTTP API, or no ``by-id`` endpoint). See
    :meth:`connectors.http.HttpSource.fetch_by_id`."""
    if config.kind != "http" or not config.base_url or not ids:
        return None
    with HttpSource(config) as src:
        return src.fetch_by_id(entity, ids)


def _settle_in_page(
    cur: Any,
    *,
    source: str,
    entity: str,
    run_id: int,
    rows: list[rp.QuarantinedRow],
    rejects: list[rp.RejectRow],
    ids: list[str],
    out: dict[str, int],
) -> None:
    """In the page's own transaction: the re-taken records and the settling of their quarantine
    rows commit together, so a crash between the two cannot leave one without the other."""
    present = rp.present_records(cur, source=source, entity=entity, ids=ids)
    out.update(rp.settle(cur, run_id=run_id, rows=rows, rejects=rejects, present=present))


@contextmanager
def _reprocess_run(
    source: str, config: SourceConfig
) -> Iterator[tuple[psycopg2.extensions.connection, int, sync.Run]]:
    """The source locked for the run (a sync of it refuses to start meanwhile, and a running one
    makes this refuse), the city's current grid version, and a sync run of mode ``reprocess``."""
    conn = connect(role=FLOWS_ROLE)
    try:
        if not sync.try_lock_source(conn, source):
            raise ReprocessFailed(
                f"{source}: a sync of this source is running; reprocess again after it ends"
            )
        version = current_cell_version(config.city_code)
        if not version:
            raise ReprocessFailed(f"{source}: no grid cells are loaded for {config.city_code}")
        with sync.run(
            conn,
            source=source,
            mode="reprocess",
            flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
        ) as run:
            yield conn, version, run
    finally:
        conn.close()


def _check_configured(source: str, config: SourceConfig, entity: str) -> None:
    if entity not in config.entities or config.mapping.get(entity) is None:
        raise ReprocessFailed(f"{source}: entity {entity} is no longer configured")


def _prepare_in_place(
    conn: psycopg2.extensions.connection,
    config: SourceConfig,
    entity: str,
    version: int,
    rids: list[str],
    raw_rows: list[dict[str, Any]],
) -> tuple[sync.PreparedChunk, sync.StreamPosition]:
    """Re-taken records prepared exactly as the nightly sync prepares a page (validation,
    placement, protection), against the versions stored now; the chunk leaves the cursor and the
    full-snapshot bookkeeping where they are. Returns it with the entity's stream position."""
    spec = ChunkSpec(
        source=config.name,
        entity=entity,
        city_code=config.city_code,
        cell_version=version,
        mapping=dict(config.mapping[cast(Entity, entity)]),
        default_crs=config.crs,
        full=False,
    )
    with transaction(conn) as cur:
        known = sync.existing_versions(cur, source=config.name, entity=entity, ids=rids)
        pos = sync.get_position(cur, source=config.name, entity=entity)
    chunk = prepare_chunk(spec, raw_rows, known, date.today())
    chunk.high_water, chunk.seen = None, []
    return chunk, pos


def _reprocess_source(
    source: str, rows: list[rp.QuarantinedRow], config: SourceConfig, outcome: Counter[str]
) -> None:
    log = get_run_logger()
    vault = vault_from_settings()
    with _reprocess_run(source, config) as (conn, version, run):
        run_id, totals = run.id, run.totals
        for entity in sorted({q.entity for q in rows}):
            group = [q for q in rows if q.entity == entity]
            _check_configured(source, config, entity)
            rids = sorted({q.source_record_id for q in group if q.source_record_id is not None})
            fresh = fetch_by_id(config, entity, rids)
            raw_rows, fetched = rp.rows_to_retake(group, rids, fresh, vault)
            chunk, pos = _prepare_in_place(conn, config, entity, version, rids, raw_rows)
            rejects = rp.parse_rejects(chunk.rejects_text)
            chunk.rejects_text = ""  # quarantine rows are settled below, not inserted again
            settled: dict[str, int] = {}
            result = sync.write_page(
                conn,
                run_id=run_id,
                source=source,
                entity=entity,
                chunks=[chunk],
                received=len(raw_rows),
                since=pos.since,
                cursor_after=pos.cursor,
                snapshot_run_id=pos.full_run_id,
                on_reports=page_intake(source) if entity == "cases" else None,
                after_write=functools.partial(
                    _settle_in_page,
                    source=source,
                    entity=entity,
                    run_id=run_id,
                    rows=group,
                    rejects=rejects,
                    ids=rids,
                    out=settled,
                ),
            )
            result.quarantined = len(rejects)
            totals.add(entity, result)
            outcome.update(settled)
            log.info(
                "%s %s: %d quarantined records re-taken (%d fetched from the source, %d from the stored "
                "raw record): %s",
                source, entity, len(group), fetched, len(raw_rows) - fetched,
                ", ".join(f"{k} {v}" for k, v in sorted(settled.items())) or "nothing to do",
            )  # fmt: skip


def _settle_field_problems_in_page(
    cur: Any, *, rows: list[rp.FieldProblemRow], refetched: set[str], out: Counter[str]
) -> None:
    out.update(rp.settle_field_problems(cur, rows=rows, refetched=refetched))


def _reprocess_field_problems(
    source: str, rows: list[rp.FieldProblemRow], config: SourceConfig, outcome: Counter[str]
) -> None:
    """Re-fetch the records of chosen field problems by id and write them through the sync's page
    path (which fills the field and settles the problem when the value is now valid)."""
    log = get_run_logger()
    with _reprocess_run(source, config) as (conn, version, run):
        run_id, totals = run.id, run.totals
        for entity in sorted({r.entity for r in rows}):
            group = [r for r in rows if r.entity == entity]
            _check_configured(source, config, entity)
            rids = sorted({r.source_record_id for r in group})
            fresh = fetch_by_id(config, entity, rids) or {}
            raw_rows = [fresh[rid] for rid in rids if rid in fresh]
            # A newer version that now has a record problem is quarantined as the sync would.
            chunk, pos = _prepare_in_place(conn, config, entity, version, rids, raw_rows)
            settled: Counter[str] = Counter()

            result = sync.write_page(
                conn,
                run_id=run_id,
                source=source,
                entity=entity,
                chunks=[chunk],
                received=len(raw_rows),
                since=pos.since,
                cursor_after=pos.cursor,
                snapshot_run_id=pos.full_run_id,
                after_write=functools.partial(
                    _settle_field_problems_in_page, rows=group, refetched=set(fresh), out=settled
                ),
            )
            totals.add(entity, result)
            outcome.update(settled)
            log.info(
                "%s %s: %d field problems re-taken (%d records fetched from the source): %s",
                source, entity, len(group), len(raw_rows),
                ", ".join(f"{k} {v}" for k, v in sorted(settled.items())) or "nothing to do",
            )  # fmt: skip


@flow(name="quarantine-reprocess", flow_run_name="reprocess-{request_id}")
def quarantine_reprocess(
    quarantine_ids: list[int] | None = None, request_id: int = 0, field_problem_ids: list[int] | None = None
) -> dict[str, int]:
    """Re-take the open quarantine rows among ``quarantine_ids`` and the open field problems among
    ``field_problem_ids``; returns counts by outcome."""
    ids = rp.check_ids(quarantine_ids or [], allow_empty=True)
    fp_ids = rp.check_ids(field_problem_ids or [], allow_empty=True)
    if not ids and not fp_ids:
        raise rp.ReprocessError("choose at least one quarantined record or field problem")
    conn = connect(role=FLOWS_ROLE)
    try:
        with transaction(conn) as cur:
            rows = rp.load_open(cur, ids=ids) if ids else []
            fp_rows = rp.load_open_field_problems(cur, ids=fp_ids) if fp_ids else []
    finally:
        conn.close()
    outcome: Counter[str] = Counter()
    outcome["already_resolved"] = len(ids) - len(rows)
    outcome["field_already_settled"] = len(fp_ids) - len(fp_rows)
    configs = {c.name: c for c in load_all_sources(get_settings().sources_dir)}
    failed: list[str] = []
    for source in sorted({q.source for q in rows} | {r.source for r in fp_rows}):
        group = [q for q in rows if q.source == source]
        fp_group = [r for r in fp_rows if r.source == source]
        config = configs.get(source)
        try:
            if config is None:
                raise ReprocessFailed(f"{source}: no source config of that name")
            if group:
                _reprocess_source(source, group, config, outcome)
            if fp_group:
                _reprocess_field_problems(source, fp_group, config, outcome)
        except Exception as exc:
            failed.append(sync.error_line(exc))
            outcome["failed"] += len(group) + len(fp_group)
    counts = {k: v for k, v in sorted(outcome.items()) if v}
    error = "; ".join(failed) or None
    if request_id:
        conn = connect(role=FLOWS_ROLE)
        try:
            with transaction(conn) as cur:
                rp.request_finished(
                    cur,
                    request_id=request_id,
                    outcome=counts,
                    error=error,
                    flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
                )
        finally:
            conn.close()
    if error:
        raise ReprocessFailed(error)
    return counts
