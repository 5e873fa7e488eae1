"""Nightly sync: pull each city's records page by page, validate, place, store.

Thin Prefect wiring over ``connectors`` (fetch + validate), ``geodata`` (CRS + placement) and
``grid`` (PII protection + one-transaction page writes). A page is the unit of work and of
retry; records are never tasks. Flow parameters carry source names only — never personal data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from connectors.config import SourceConfig, SourceRejected, SourceUnavailable, load_all_sources
from connectors.http import HttpSource
from connectors.source import Page
from connectors.validate import validate_enterprises, validate_workers
from geodata.address import AddressLocator
from geodata.cellindex import CellIndex
from geodata.placement import place_batch
from grid.ingest import enterprise_rows, reject_rows, worker_rows
from grid.people import Vault, vault_from_settings
from grid.settings import get_settings
from grid.store import geo, sync
from grid.store.db import connect, transaction


class SyncFailed(RuntimeError):
    """One or more sources failed; the message lists them."""


@dataclass
class SyncContext:
    """What one source's run needs besides the page: built once per run."""

    config: SourceConfig
    run_id: int
    index: CellIndex
    locator: AddressLocator
    vault: Vault


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (plain function tests)
        return logging.getLogger("gridflow.sync")


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a page only when the source may recover; a refusal (4xx, bad body) needs a person."""
    try:
        state.result()
    except SourceRejected:
        return False
    except SourceUnavailable:
        return True
    except Exception:
        return False
    return False


@task(cache_policy=NO_CACHE, task_run_name="fetch-{entity}", retry_condition_fn=_transient)
def fetch_page(
    config: SourceConfig, entity: str, cursor: str | None, since: datetime | None, page_no: int
) -> Page:
    """The only step that touches the network, so the only one with retries."""
    with HttpSource(config) as source:
        return source.fetch_page(
            entity, cursor=cursor, since=since.isoformat() if since else None, page_no=page_no
        )


def process_and_write(
    ctx: SyncContext, page: Page, *, since: datetime | None, today: date
) -> sync.PageResult:
    """Validate, place and protect one page, then write it in one transaction."""
    mapping = ctx.config.mapping[page.entity]  # type: ignore[index]
    validate = validate_workers if page.entity == "workers" else validate_enterprises
    records, rejects = validate(page.records, mapping=mapping, default_crs=ctx.config.crs, today=today)
    placed = place_batch(
        [r.lon for r in records],
        [r.lat for r in records],
        [r.crs for r in records],
        [r.address for r in records],
        index=ctx.index,
        locator=ctx.locator,
    )
    build = worker_rows if page.entity == "workers" else enterprise_rows
    rows = build(records, placed, ctx.vault)  # type: ignore[arg-type]
    conn = connect()
    try:
        return sync.write_page(
            conn,
            run_id=ctx.run_id,
            source=ctx.config.name,
            entity=page.entity,
            rows=rows,
            rejects=reject_rows(rejects, ctx.vault),  # type: ignore[arg-type]
            received=len(page.records),
            since=since,
            cursor_after=page.cursor_after,
            high_water=max((r.source_updated_at for r in records), default=None),
        )
    finally:
        conn.close()


@task(cache_policy=NO_CACHE, task_run_name="load-{page.entity}-page-{page.page_no}")
def load_page(ctx: SyncContext, page: Page, since: datetime | None) -> sync.PageResult:
    return process_and_write(ctx, page, since=since, today=date.today())


def build_context(config: SourceConfig, run_id: int) -> SyncContext:
    conn = connect()
    try:
        with transaction(conn) as cur:
            cells = geo.load_cells(cur, scope_code=config.city_code)
            divisions = geo.load_divisions(cur, scope_code=config.city_code)
    finally:
        conn.close()
    if not cells.codes:
        raise SyncFailed(f"no grid cells are loaded for {config.city_code}: run `gridflow world load` first")
    index = CellIndex(cells.codes, cells.geoms, retired=cells.retired, outline=cells.outline)
    return SyncContext(config, run_id, index, AddressLocator(divisions), vault_from_settings())


def register_sources(configs: list[SourceConfig]) -> None:
    conn = connect()
    try:
        with transaction(conn) as cur:
            for c in configs:
                sync.register_source(
                    cur,
                    name=c.name,
                    display_name=c.display_name,
                    city_code=c.city_code,
                    kind=c.kind,
                    crs=c.crs,
                    enabled=c.enabled,
                    config=c.model_dump(mode="json", exclude={"mapping"}),
                )
    finally:
        conn.close()


def _summary_row(name: str, run_id: int, totals: sync.RunTotals, status: str) -> dict[str, Any]:
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
    }


@flow(name="sync-source", flow_run_name="sync-{source_name}", log_prints=False)
def sync_source(source_name: str, full: bool = False) -> dict[str, Any]:
    """Sync one source: every entity, page by page, from its stored cursor."""
    log = _logger()
    settings = get_settings()
    configs = {c.name: c for c in load_all_sources(settings.sources_dir)}
    if source_name not in configs:
        raise SyncFailed(f"unknown source {source_name!r}; known: {', '.join(sorted(configs))}")
    config = configs[source_name]
    register_sources([config])
    conn = connect()
    try:
        run_id = sync.start_run(
            conn,
            source=source_name,
            mode="full" if full else "incremental",
            flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
            parent_flow_run_id=flow_run.get_parent_flow_run_id(),
        )
    finally:
        conn.close()
    totals = sync.RunTotals()
    error: str | None = None
    try:
        ctx = build_context(config, run_id)
        for entity in config.entities:
            conn = connect()
            try:
                with transaction(conn) as cur:
                    pos = sync.get_position(cur, source=source_name, entity=entity)
            finally:
                conn.close()
            # A full resync reads everything; otherwise resume mid-stream or start at the watermark.
            cursor, since = (None, None) if full else (pos.cursor, pos.since)
            fetch = fetch_page.with_options(
                retries=settings.page_retries, retry_delay_seconds=settings.page_retry_delay_s
            )
            page_no = 0
            while True:
                page_no += 1
                page = fetch(config, entity, cursor, since, page_no)
                result = load_page(ctx, page, since)
                totals.add(entity, result)
                log.info(
                    "%s %s page %d: received %d, loaded %d, unchanged %d, quarantined %d, unmapped %d",
                    source_name,
                    entity,
                    page.page_no,
                    result.received,
                    result.loaded,
                    result.unchanged,
                    result.quarantined,
                    result.unmapped,
                )
                if page.cursor_after is None:
                    break
                cursor = page.cursor_after
    except Exception as exc:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise
    finally:
        conn = connect()
        try:
            sync.finish_run(conn, run_id=run_id, totals=totals, error=error)
        finally:
            conn.close()
        row = _summary_row(source_name, run_id, totals, "failed" if error else "completed")
        key = source_name.replace("_", "-")
        create_table_artifact(
            key=f"sync-{key}",
            table=[row],
            description=f"Nightly sync of {config.display_name} ({source_name}), run {run_id}",
        )
        reasons = "\n".join(f"| {k} | {v} |" for k, v in sorted(totals.by_reason.items())) or "| — | 0 |"
        methods = "\n".join(f"| {k} | {v} |" for k, v in sorted(totals.by_method.items())) or "| — | 0 |"
        create_markdown_artifact(
            key=f"sync-{key}-detail",
            markdown=(
                f"## {config.display_name} 同步 / sync — run {run_id}\n\n"
                f"Status: **{row['status']}**{' — ' + error if error else ''}\n\n"
                "| quarantine reason | records |\n|---|---|\n" + reasons + "\n\n"
                "| placement method | records |\n|---|---|\n" + methods + "\n"
            ),
        )
    return row


@flow(name="nightly-sync", log_prints=False)
def nightly_sync(sources: list[str] | None = None, full: bool = False) -> list[dict[str, Any]]:
    """Sync every enabled source (or the named ones). One failing city does not stop the others."""
    settings = get_settings()
    configs = load_all_sources(settings.sources_dir)
    selected = [c for c in configs if (c.name in sources if sources else c.enabled)]
    if sources:
        unknown = sorted(set(sources) - {c.name for c in configs})
        if unknown:
            raise SyncFailed(f"unknown source(s): {', '.join(unknown)}")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for config in selected:
        state = sync_source(config.name, full=full, return_state=True)
        if state.is_completed():
            rows.append(state.result())
        else:
            exc = state.result(raise_on_failure=False)
            reason = str(exc).splitlines()[0] if isinstance(exc, BaseException) and str(exc) else state.name
            failed.append(f"{config.name}: {reason}")
    create_table_artifact(
        key="nightly-sync", table=rows or [{"source": "—"}], description="Nightly sync summary"
    )
    if failed:
        raise SyncFailed("sync failed for " + "; ".join(failed))
    return rows
