"""Nightly sync: every city's records, page by page, validated, placed and stored.

``nightly_sync`` runs one ``sync-source`` child flow run per enabled source, in parallel up to
``GRIDFLOW_MAX_PARALLEL_SOURCES``; a failing city does not stop the others, and the parent ends
Failed naming them. A source is synced by at most one run at a time (a PostgreSQL advisory lock
held for the run; a second run exits as a no-op). Within a source, a page is the unit of work and
of retry: it is fetched (the only step that touches the network, so the only one retried), split
into chunks prepared on a plain pool (a thread, or a Dask cluster when ``GRIDFLOW_DASK_ADDRESS`` is
set), and written in ONE transaction with the cursor advance — a run killed at any point resumes
from the last committed page. After a page of mostly unchanged records, an HTTP stream's next
page is fetched while this one is prepared and written (:func:`_pages`). Pages, chunks and records
are not task runs: the Prefect server spends ~20 ms of CPU on each task run, more than a city's
page of 500 rows costs to prepare. What
the server shows instead is each stream's progress: one progress artifact per stream and run,
updated after the committed pages (at most once a second, and always after the last page), and
one log line per page. Flow parameters carry source names only — never personal data.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import MissingResult
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from connectors.checks import SuspiciousVolume, check_schema, volume_check
from connectors.config import SourceConfig, SourceRejected, SourceUnavailable, load_all_sources
from connectors.source import Page
from connectors.sources import open_source
from flows.pipeline import (
    ChunkSpec,
    batch_gc,
    current_cell_version,
    prepare_chunk,
    record_key,
    settle_gc,
    skip_unchanged,
)
from grid.cases.intake import page_intake
from grid.cases.store import rules_from_settings
from grid.clock import local_day, past_only, resolve
from grid.settings import FLOWS_ROLE, get_settings
from grid.store.db import connect, transaction
from grid.store.failpoints import failpoint
from grid.sync import store as sync
from grid.sync.store import PreparedChunk


class SyncFailed(RuntimeError):
    """One or more sources failed; the message lists them in one sentence each."""


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # called outside a run
        return logging.getLogger("gridflow.sync")


#: ``submit(prepare_chunk, spec, rows, known, today)`` -> a future of the prepared chunk.
Submit = Callable[..., Any]


@contextmanager
def chunk_pool() -> Iterator[Submit]:
    """Where chunks are prepared: threads by default; the Dask cluster at GRIDFLOW_DASK_ADDRESS
    when set (a plain Dask client: chunks are not Prefect task runs)."""
    settings = get_settings()
    if settings.dask_address:
        from distributed import Client

        client = Client(settings.dask_address, set_as_default=False, timeout=60)  # type: ignore[no-untyped-call]
        try:
            yield lambda fn, *args: client.submit(fn, *args, pure=False)
        finally:
            client.close()  # type: ignore[no-untyped-call]
        return
    pool = ThreadPoolExecutor(max_workers=max(1, settings.prep_workers), thread_name_prefix="prep")
    try:
        yield pool.submit
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed page does not wait for its other chunks


# -- fetching and preparing -------------------------------------------------------------------


def _fetch(
    config: SourceConfig, entity: str, cursor: str | None, since: datetime | None, page_no: int
) -> Page:
    """The only step that touches the network, so the only one retried per page (on top of the
    connector's own retries): while the source may recover (SourceUnavailable) up to
    GRIDFLOW_PAGE_RETRIES more times after GRIDFLOW_PAGE_RETRY_DELAY_S; a refusal (SourceRejected:
    4xx, a bad body, schema drift) needs a person and fails the run at once. A plain call, not a
    task run: with the cities' page sizes (500-1,000 rows) a task per page would cost the Prefect
    server ~20 ms of CPU per page, more than the page's own work."""
    settings = get_settings()
    attempt = 0
    while True:
        try:
            with open_source(config) as source:
                return source.fetch_page(
                    entity, cursor=cursor, since=since.isoformat() if since else None, page_no=page_no
                )
        except SourceRejected:
            raise
        except SourceUnavailable:
            attempt += 1
            if attempt > settings.page_retries:
                raise
            _logger().warning(
                "%s %s page %d: source unavailable; retry %d of %d in %.0f s",
                config.name, entity, page_no, attempt, settings.page_retries, settings.page_retry_delay_s,
            )  # fmt: skip
            time.sleep(settings.page_retry_delay_s)


def _pages(
    config: SourceConfig,
    entity: str,
    cursor: str | None,
    since: datetime | None,
    fetch_ahead: Callable[[], bool] = lambda: True,
) -> Iterator[tuple[int, Page]]:
    """(page number, page) of a stream from ``cursor`` to its last page, in order.

    From an HTTP source, while ``fetch_ahead()`` says so, the next page is fetched while the
    caller prepares and writes this one (one page ahead, in one thread, in the run's context so
    its retries log to the run): the city system's time to build a page and ours to read it
    overlap with the rest. The sync asks for that after a page of mostly unchanged records, when
    the fetch is nearly the whole cost of a page; a page of new records is CPU-bound, and a fetch
    beside it only contends for the cores (bench_sync: 4-5 us more CPU per record). Nothing
    changes for what is committed: a page is still written, with its cursor, only after the one
    before, and a page fetched ahead of a failure is dropped. A file source is read page by page
    (it records a file as taken when it reads the file's last page)."""
    page_no = 0
    ahead: Future[Page] | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch") if config.kind == "http" else None
    try:
        while True:
            page_no += 1
            page = ahead.result() if ahead is not None else _fetch(config, entity, cursor, since, page_no)
            ahead = None
            if pool is not None and page.cursor_after is not None and fetch_ahead():
                run_in = contextvars.copy_context().run
                ahead = pool.submit(run_in, _fetch, config, entity, page.cursor_after, since, page_no + 1)
            yield page_no, page
            if page.cursor_after is None:
                return
            cursor = page.cursor_after
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# -- one source -------------------------------------------------------------------------------


def _chunks(futures: list[Any], written: list[PreparedChunk]) -> Iterator[PreparedChunk]:
    """Each chunk as it is prepared (in order), kept in ``written`` for after the commit."""
    for f in futures:
        chunk = f.result()
        written.append(chunk)
        yield chunk


def _summary(name: str, run_id: int | None, totals: sync.RunTotals, status: str) -> dict[str, Any]:
    return {
        "source": name,
        "run_id": run_id,
        "status": status,
        "pages": totals.pages,
        "received": totals.received,
        "loaded": totals.loaded,
        "unchanged": totals.unchanged,
        "quarantined": totals.quarantined,
        "unmapped": totals.unmapped,
        "field_problems": totals.field_problems,
        "missing": totals.missing,
        "soft_deleted": totals.soft_deleted,
    }


def finished_row(source_name: str, flow_run_id: str) -> dict[str, Any] | None:
    """The summary row of a finished ``sync-source`` flow run, rebuilt from its ``sync_run`` row
    (what the run returned, for when the return value is lost); None if it wrote none."""
    conn = connect(role=FLOWS_ROLE)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "SELECT id, status, pages, received, loaded, unchanged, quarantined, unmapped, counts"
                " FROM sync_run WHERE source = %s AND flow_run_id = %s ORDER BY id DESC LIMIT 1",
                (source_name, flow_run_id),
            )
            found = cur.fetchone()
    finally:
        conn.close()
    if found is None:
        return None
    run_id, status, pages, received, loaded, unchanged, quarantined, unmapped, counts = found
    counts = counts or {}
    totals = sync.RunTotals(
        pages=pages, received=received, loaded=loaded, unchanged=unchanged, quarantined=quarantined,
        unmapped=unmapped, missing=int(counts.get("missing", 0)), soft_deleted=int(counts.get("soft_deleted", 0)),
        field_problems=sum(int(v) for v in counts.get("field_problems_by_reason", {}).values()),
    )  # fmt: skip
    return _summary(source_name, int(run_id), totals, str(status))


def register_config(conn: Any, config: SourceConfig) -> None:
    with transaction(conn) as cur:
        sync.register_source(
            cur,
            name=config.name,
            display_name=config.display_name,
            city_code=config.city_code,
            kind=config.kind,
            crs=config.crs,
            enabled=config.enabled,
            config=config.model_dump(mode="json", exclude={"mapping"}),
        )


def _first_seen(known: Mapping[str, object], ids: list[Any]) -> bool:
    """True when no record key of ``ids`` (:func:`flows.pipeline.record_key`) is in ``known``.
    Ids that are their own key (a str with nothing to strip: ``strip`` returns the same object)
    are checked as they are, in C; only the others are turned into keys one by one."""
    keys = known.keys()
    plain = [v for v in ids if type(v) is str and v.strip() is v]
    if not keys.isdisjoint(plain):
        return False
    if len(plain) == len(ids):
        return True
    return keys.isdisjoint(record_key(v) for v in ids if type(v) is not str or v.strip() is not v)


def _sync_entity(
    conn: Any,
    config: SourceConfig,
    entity: str,
    *,
    run_id: int,
    full: bool,
    cell_version: int,
    totals: sync.RunTotals,
    submit: Submit,
    at: datetime | None = None,
) -> None:
    settings = get_settings()
    log = _logger()
    with transaction(conn) as cur:
        pos = sync.get_position(cur, source=config.name, entity=entity)
    plan = sync.plan_stream(pos, full=full, run_id=run_id)
    cursor, since, snapshot = plan.cursor, plan.since, plan.snapshot
    spec = ChunkSpec(
        source=config.name,
        entity=entity,
        city_code=config.city_code,
        cell_version=cell_version,
        mapping=dict(config.mapping[entity]),  # type: ignore[index]
        default_crs=config.crs,
        full=snapshot is not None,
    )
    id_field = spec.mapping["source_record_id"]
    # A stream fetched whole brings back every stored record: read their versions once. An
    # incremental night brings only what changed: look up each page's ids instead.
    stored = (
        sync.stored_versions(conn, source=config.name, entity=entity, limit=settings.version_map_limit)
        if plan.whole
        else None
    )
    if stored:
        settle_gc()  # a million entries the collector need not walk again and again
    progress = _Progress(config.name, entity)
    mostly_unchanged = [False]  # of the last page written: then fetch the next one ahead
    for page_no, page in _pages(config, entity, cursor, since, fetch_ahead=lambda: mostly_unchanged[0]):
        failpoint("after_fetch")
        if page_no == 1 and cursor is None:  # a stream's first page: is the day's volume plausible?
            with transaction(conn) as cur:
                history = sync.recent_volumes(
                    cur, source=config.name, entity=entity, mode="full" if full else "incremental"
                )
            problem = volume_check(page.total, history)
            if problem is not None:
                raise SuspiciousVolume(f"source {config.name} {entity}: {problem}")
        for note in check_schema(entity, page.records, spec.mapping):  # breaking drift raises SchemaDrift
            log.warning("%s %s page %d: %s", config.name, entity, page_no, note)
        known: Mapping[str, sync.StoredVersion]
        if stored is not None:  # the whole stream's stored versions, looked up in place
            known = stored
        else:
            ids = [str(v).strip() for r in page.records if (v := r.get(id_field)) not in (None, "")]
            with transaction(conn) as cur:
                known = sync.existing_versions(cur, source=config.name, entity=entity, ids=ids)
        if known and _first_seen(known, [r.get(id_field) for r in page.records]):
            # a first night's page: nothing in it stored or noted, no row to look up one by one
            known = {}
        done, todo = skip_unchanged(spec, page.records, known)
        size = settings.chunk_size
        pieces = [todo[i : i + size] for i in range(0, len(todo), size)]
        today = date.today() if at is None else local_day(at, rules_from_settings().policy.calendar.tz)
        futures = [
            submit(
                prepare_chunk,
                spec,
                piece,
                {
                    k: sync.stored_version(known[k])
                    for r in piece
                    if (k := record_key(r.get(id_field))) in known
                }
                if known
                else {},
                today,
            )
            for piece in pieces
        ]
        written: list[PreparedChunk] = []
        result = sync.write_page(
            conn,
            run_id=run_id,
            source=config.name,
            entity=entity,
            chunks=itertools.chain([done], _chunks(futures, written)),
            received=len(page.records),
            since=since,
            cursor_after=page.cursor_after,
            snapshot_run_id=snapshot,
            on_reports=page_intake(config.name, at=at) if entity == "cases" else None,
        )
        if stored is not None:
            sync.note_versions(stored, written)  # committed: later pages skip these versions
        totals.add(entity, result)
        log.info(
            "%s %s page %d: received %d, loaded %d, unchanged %d, quarantined %d, unmapped %d",
            config.name, entity, page_no, result.received, result.loaded, result.unchanged,
            result.quarantined, result.unmapped,
        )  # fmt: skip
        if result.released:
            log.info("%s roster page %d: %d open cases of officers who left handed to the community",
                     config.name, page_no, result.released)  # fmt: skip
        progress.page(page_no, result.received, page)
        mostly_unchanged[0] = 2 * result.unchanged >= result.received
        if page.cursor_after is None and snapshot is not None:
            log.info("%s %s full snapshot: %d missing, %d soft-deleted", config.name, entity,
                     result.missing, result.soft_deleted)  # fmt: skip


class _Progress:
    """A stream's progress on the Prefect server (counts only): one progress artifact per stream
    and run, updated after a committed page when a second has passed since the last update, and
    always after the last page (an update costs the server ~6 ms of CPU; a page of 500 rows ~30 ms
    of work)."""

    EVERY_S = 1.0

    def __init__(self, source: str, entity: str) -> None:
        self.source, self.entity = source, entity
        self.received = 0
        self.artifact_id: Any = None
        self.shown_at = 0.0

    def page(self, page_no: int, received: int, page: Page) -> None:
        self.received += received
        done = page.cursor_after is None
        now = time.monotonic()
        if not done and self.artifact_id is not None and now - self.shown_at < self.EVERY_S:
            return
        self.shown_at = now
        total = max(page.total or 0, self.received)
        percent = 100.0 if done or not total else min(99.9, 100.0 * self.received / total)
        text = (
            f"{self.source} {self.entity}: page {page_no} committed, {self.received:,} records received"
            + (f" of ~{total:,}" if page.total else "")
            + (" — done" if done else "")
        )
        if self.artifact_id is None:
            # artifact keys are lowercase letters, digits and dashes (grid_officers -> grid-officers)
            key = f"sync-{self.source.replace('_', '-')}-{self.entity.replace('_', '-')}-progress"
            self.artifact_id = create_progress_artifact(progress=percent, key=key, description=text)
        else:
            update_progress_artifact(self.artifact_id, progress=percent, description=text)


def _publish(config: SourceConfig, row: dict[str, Any], totals: sync.RunTotals, error: str | None) -> None:
    key = config.name.replace("_", "-")
    create_table_artifact(
        key=f"sync-{key}",
        table=[row],
        description=f"Nightly sync of {config.display_name} ({config.name}), run {row['run_id']}",
    )
    reasons = "\n".join(f"| {k} | {v} |" for k, v in sorted(totals.by_reason.items())) or "| — | 0 |"
    methods = "\n".join(f"| {k} | {v} |" for k, v in sorted(totals.by_method.items())) or "| — | 0 |"
    problems = "\n".join(f"| {k} | {v} |" for k, v in sorted(totals.by_problem.items())) or "| — | 0 |"
    create_markdown_artifact(
        key=f"sync-{key}-detail",
        markdown=(
            f"## {config.display_name} 同步 / sync — run {row['run_id']}\n\n"
            f"Status: **{row['status']}**{' — ' + error if error else ''}\n\n"
            f"Received {row['received']}, loaded {row['loaded']}, unchanged {row['unchanged']}, "
            f"quarantined {row['quarantined']}, unmapped {row['unmapped']}, "
            f"loaded with a field problem {row['field_problems']}, "
            f"missing from snapshot {row['missing']}, soft-deleted {row['soft_deleted']}.\n\n"
            "| quarantine reason (record problems) | records |\n|---|---|\n" + reasons + "\n\n"
            "| field problem (record loaded, field empty) | fields |\n|---|---|\n" + problems + "\n\n"
            "| placement method | records |\n|---|---|\n" + methods + "\n"
        ),
    )


@flow(name="sync-source", flow_run_name="sync-{source_name}", task_runner=ThreadPoolTaskRunner(max_workers=2))  # type: ignore[arg-type]
def sync_source(source_name: str, full: bool = False, as_of: str | None = None) -> dict[str, Any]:
    """Sync one source, every entity, from its stored position. A concurrent run is a no-op.

    ``as_of`` (an ISO time, see :mod:`grid.clock`) is the time the run acts at: the day records are
    validated against and the time cases are taken in at; default the current time."""
    settings = get_settings()
    at = past_only(resolve(as_of)) if as_of else None
    configs = {c.name: c for c in load_all_sources(settings.sources_dir)}
    if source_name not in configs:
        raise SyncFailed(f"unknown source {source_name!r}; known: {', '.join(sorted(configs)) or 'none'}")
    config = configs[source_name]
    conn = connect(role=FLOWS_ROLE)
    try:
        if not sync.try_lock_source(conn, source_name):
            _logger().info("%s: another run holds this source; nothing to do", source_name)
            return _summary(source_name, None, sync.RunTotals(), "skipped")
        register_config(conn, config)
        sync.mark_crashed_runs(conn, source=source_name)

        def publish(run: sync.Run) -> None:
            row = _summary(source_name, run.id, run.totals, "failed" if run.error else "completed")
            _publish(config, row, run.totals, run.error)

        with sync.run(
            conn,
            source=source_name,
            mode="full" if full else "incremental",
            flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
            parent_flow_run_id=flow_run.get_parent_flow_run_id(),
            on_finish=publish,
            at=at,
        ) as run:
            version = current_cell_version(config.city_code)
            if not version:
                raise SyncFailed(
                    f"no grid cells are loaded for {config.city_code}: run `gridflow world load` first"
                )
            with batch_gc(), chunk_pool() as submit:
                for entity in config.entities:
                    _sync_entity(
                        conn, config, entity, run_id=run.id, full=full, cell_version=version,
                        totals=run.totals, submit=submit, at=at,
                    )  # fmt: skip
        run_id, totals = run.id, run.totals
        row = _summary(source_name, run_id, totals, "completed")
        # Heartbeat of a healthy source: the stale-source automation expects one per source.
        emit_event(
            event="gridflow.source.synced",
            resource={
                "prefect.resource.id": f"gridflow.source.{source_name}",
                "prefect.resource.name": source_name,
            },
            payload={"run_id": run_id, "received": totals.received, "loaded": totals.loaded},
        )
        return row
    finally:
        conn.close()


@flow(name="sync-city", flow_run_name="sync-city-{source_name}")
def sync_city(source_name: str, full: bool = False, as_of: str | None = None) -> dict[str, Any]:
    """One city on demand (deployment ``sync-city/one-city``, taken by any worker of the pool):
    ``sync-source`` as the nightly run uses it (chunks prepared where the settings ask)."""
    result: dict[str, Any] = sync_source(source_name, full=full, as_of=as_of)
    return result


# -- all sources ------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE, task_run_name="source-{source_name}")
def run_source(source_name: str, full: bool, as_of: str | None = None) -> dict[str, Any]:
    """One child flow run; its failure is reported, not raised, so the other cities go on."""
    state = sync_source(source_name, full=full, as_of=as_of, return_state=True)
    if state.is_completed():
        try:
            return {"ok": True, "row": state.result()}
        except MissingResult:
            # Seen under load in CI: the child's return value did not come back through Prefect
            # (results are not persisted). Its counts are in its sync_run row.
            row = finished_row(source_name, str(state.state_details.flow_run_id))
            if row is None:
                raise
            return {"ok": True, "row": row}
    exc = state.result(raise_on_failure=False)
    reason = sync.error_line(exc) if isinstance(exc, BaseException) else ""
    return {"ok": False, "source": source_name, "error": reason or state.name or "failed"}


@flow(name="nightly-sync", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def nightly_sync(
    sources: list[str] | None = None, full: bool = False, as_of: str | None = None
) -> list[dict[str, Any]]:
    """Sync every enabled source (or the named ones) in parallel up to the configured limit, at
    ``as_of`` (an ISO time; default now — see :mod:`grid.clock`)."""
    settings = get_settings()
    configs = load_all_sources(settings.sources_dir)
    if sources:
        unknown = sorted(set(sources) - {c.name for c in configs})
        if unknown:
            raise SyncFailed(f"unknown source(s): {', '.join(unknown)}")
    selected = [c.name for c in configs if (c.name in sources if sources else c.enabled)]
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    pending: list[Future[Any] | PrefectFuture[Any]] = []
    limit = max(1, settings.max_parallel_sources)
    results: list[dict[str, Any]] = []
    for name in selected:
        pending.append(run_source.submit(name, full, as_of))
        if len(pending) >= limit:
            results.append(pending.pop(0).result())
    results.extend(f.result() for f in pending)
    for res in results:
        if res["ok"]:
            rows.append(res["row"])
        else:
            failed.append(f"{res['source']}: {res['error']}")
    create_table_artifact(
        key="nightly-sync",
        table=rows or [{"source": "—"}],
        description="Nightly sync summary" + (f" — failed: {'; '.join(failed)}" if failed else ""),
    )
    if failed:
        raise SyncFailed("sync failed for " + "; ".join(failed))
    return rows
