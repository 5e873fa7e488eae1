"""The per-chunk pipeline of the nightly sync: validate → place → protect → COPY text.

Plain functions (no Prefect, no database writes): they run in the sync's chunk pool — a thread,
or a Dask worker process on another machine — and return a picklable
:class:`grid.sync.store.PreparedChunk`. Each process builds the grid context it needs once and
caches it by (city, cell version).
"""

from __future__ import annotations

import gc
import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from connectors.reasons import Reason
from connectors.records import Reject
from connectors.validate import (
    CHINA_TZ,
    FieldError,
    parse_timestamp,
    validate_cases,
    validate_enterprises,
    validate_officers,
    validate_workers,
)
from geodata.address import AddressLocator
from geodata.cellindex import CellIndex
from geodata.placement import place_batch
from grid.cases.details import CaseDetails, masked_address, seal
from grid.cases.intake import CaseReport, IntakeError, worker_key
from grid.ingest import enterprise_copy, field_problem_copy, reject_copy, worker_lines
from grid.people import Vault, vault_from_settings
from grid.roster.store import officer_copy
from grid.settings import FLOWS_ROLE
from grid.store import geo
from grid.store.db import connect, transaction
from grid.sync.store import PreparedChunk, StoredVersion, newest_version, stored_version


@dataclass(frozen=True)
class ChunkSpec:
    """Everything a worker needs to prepare a chunk, small enough to ship with every task."""

    source: str
    entity: str
    city_code: str
    cell_version: int
    mapping: Mapping[str, str]
    default_crs: str | None
    full: bool


@dataclass(frozen=True)
class GridContext:
    index: CellIndex
    locator: AddressLocator
    vault: Vault
    cell_codes: frozenset[str] = frozenset()  # the city's current cells (a roster names them)


_contexts: dict[tuple[str, int], GridContext] = {}
_lock = threading.Lock()

#: Young-generation threshold of Python's cyclic garbage collector during a sync (default 700).
BATCH_GC_THRESHOLD: Final = (50_000, 20, 100)
_gc_users = 0
_gc_lock = threading.Lock()
_gc_before: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def batch_gc() -> Iterator[None]:
    """Python's cyclic garbage collector tuned for a sync, for as long as any sync of this process
    runs (nested and concurrent syncs share it; the last one out restores the defaults).

    A page of JSON is tens of thousands of new dicts, and every collection walked the grid
    context, the stored-version map and the page: about a fifth of the CPU spent preparing a chunk
    (measured, 100,000 sandbox rows: 33 µs a record with the defaults, 23 with this). So the
    long-lived structures, once built, are frozen out of the collector's walks (:func:`settle_gc`)
    and the young generation is collected every 50,000 allocations instead of 700. Reference
    counting still frees everything that is not in a cycle at once."""
    global _gc_users, _gc_before
    with _gc_lock:
        if _gc_users == 0:
            _gc_before = gc.get_threshold()
            gc.set_threshold(*BATCH_GC_THRESHOLD)
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_before)
                gc.unfreeze()


def settle_gc() -> None:
    """Everything alive now is long-lived (a grid context or a version map just built): keep it
    out of the collector's walks until the last sync of the process ends (:func:`batch_gc`).
    Outside a sync (a test, a reprocessing request) nothing is frozen."""
    with _gc_lock:
        if _gc_users:
            gc.freeze()


def current_cell_version(city_code: str) -> int:
    """The newest committed grid version under a city (keys the per-process context cache)."""
    conn = connect(role=FLOWS_ROLE)
    try:
        with transaction(conn) as cur:
            return geo.current_version(cur, scope_code=city_code)
    finally:
        conn.close()


def grid_context(city_code: str, cell_version: int) -> GridContext:
    """Build (once per process) the cell index, address locator and vault for a city."""
    key = (city_code, cell_version)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is not None:
            return ctx
        conn = connect(role=FLOWS_ROLE)
        try:
            with transaction(conn) as cur:
                cells = geo.load_cells(cur, scope_code=city_code)
                divisions = geo.load_divisions(cur, scope_code=city_code)
        finally:
            conn.close()
        if not cells.codes:
            raise RuntimeError(f"no grid cells are loaded for {city_code}: run `gridflow world load` first")
        ctx = GridContext(
            index=CellIndex(cells.codes, cells.geoms, retired=cells.retired, outline=cells.outline),
            locator=AddressLocator(divisions),
            vault=vault_from_settings(),
            cell_codes=frozenset(cells.codes),
        )
        _contexts[key] = ctx
        settle_gc()
        return ctx


def record_key(value: Any) -> str:
    """A row's record id as the version map keys it ("" when there is none)."""
    return value.strip() if type(value) is str else str(value).strip() if value is not None else ""


def _split_unchanged(
    spec: ChunkSpec, raw_rows: Sequence[Mapping[str, Any]], known: Mapping[str, StoredVersion]
) -> tuple[list[tuple[str, StoredVersion]], list[Mapping[str, Any]]]:
    """Rows the store already holds at exactly this version need no validation: they were valid
    when stored, and the same version is the same content. Returns ((id, stored version) of those,
    the rest to validate). A row whose id or time cannot be read goes to validation and its reason.

    A version read by :func:`grid.sync.store.stored_versions` is the Beijing wall time as text:
    a source that sends its times in the same form ("2026-11-20 08:00:00") is matched by one
    string comparison, with nothing parsed (a naive source time is Beijing time, and from 1992 a
    Beijing wall time is one instant). Any other form is read and compared as an instant."""
    if not known:
        return [], list(raw_rows)
    id_field, ts_field = spec.mapping["source_record_id"], spec.mapping["source_updated_at"]
    unchanged: list[tuple[str, StoredVersion]] = []
    todo: list[Mapping[str, Any]] = []
    seen_ids: set[str] = set()
    for row in raw_rows:
        rid = row.get(id_field)
        key = (
            rid.strip() if type(rid) is str else str(rid).strip() if rid is not None else ""
        )  # record_key, inlined
        stored = known.get(key)
        if stored is not None and key not in seen_ids:
            ts = row.get(ts_field)
            if ts == stored or _same_instant(ts, stored):
                unchanged.append((key, stored))
                seen_ids.add(key)
                continue
        todo.append(row)
    return unchanged, todo


def _same_instant(ts: Any, stored: StoredVersion) -> bool:
    """Whether a source's time ``ts`` is the stored version (in any form the validator reads)."""
    version: datetime | None = None
    if type(ts) is str and len(ts) == 19:  # "2024-05-01T12:00:00", a usual form: at once
        try:
            naive = datetime.fromisoformat(ts)
        except ValueError:
            naive = None
        if naive is not None and naive.tzinfo is None:
            version = datetime.combine(naive, naive.time(), CHINA_TZ)
    if version is None:
        try:
            version = parse_timestamp(ts)
        except FieldError:
            return False
    return version is not None and version == stored_version(stored)


def skip_unchanged(
    spec: ChunkSpec, raw_rows: Sequence[Mapping[str, Any]], known: Mapping[str, StoredVersion]
) -> tuple[PreparedChunk, list[Mapping[str, Any]]]:
    """A page's rows already stored at exactly this version, summarised as one chunk that needs no
    preparing (their count, newest time and, in a full snapshot, their ids), and the rest to prepare.

    On a night when little changed this leaves almost nothing to prepare, so a re-run costs a
    fetch and one version lookup per page. Case reports are never skipped here: intake decides
    what is new."""
    if spec.entity == "cases" or not known:
        return PreparedChunk(entity=spec.entity), list(raw_rows)
    unchanged, todo = _split_unchanged(spec, raw_rows, known)
    done = PreparedChunk(
        entity=spec.entity,
        skipped=len(unchanged),
        high_water=newest_version([t for _, t in unchanged]),
        seen=[rid for rid, _ in unchanged] if spec.full else [],
    )
    return done, todo


def _prepare_cases(
    spec: ChunkSpec, raw_rows: Sequence[Mapping[str, Any]], today: date, ctx: GridContext
) -> PreparedChunk:
    """Case reports: validated, located, and reduced to what intake needs — the worker only as
    a keyed HMAC, the free-text description not carried at all. Intake itself runs in the page's
    transaction (idempotent per source record)."""
    records, rejects = validate_cases(
        raw_rows, mapping=spec.mapping, default_crs=spec.default_crs, today=today
    )
    placed = place_batch(
        [r.lon for r in records],
        [r.lat for r in records],
        [r.crs for r in records],
        [r.address for r in records],
        index=ctx.index,
        locator=ctx.locator,
        region=spec.city_code,  # the source's region: an address never places a record elsewhere
    )
    reports: list[CaseReport] = []
    located: list[Reject] = list(rejects)
    id_field = spec.mapping["source_record_id"]
    by_id = {str(row.get(id_field, "")).strip(): row for row in raw_rows}
    for i, r in enumerate(records):
        cell, division = placed.cell_code[i], placed.division_code[i]
        if cell is None and division is None:
            raw = by_id.get(r.source_record_id, {})
            if placed.reason[i] == OUTSIDE_REGION:
                located.append(_outside_region(r.source_record_id, raw))
                continue
            detail = "the report has no usable point or address to locate it"
            located.append(
                Reject(r.source_record_id, Reason.MISSING_COORDINATES, "lon", detail, raw=dict(raw))
            )
            continue
        details = CaseDetails(r.description, r.amount, r.address)
        try:
            report = CaseReport(
                kind=r.kind,
                channel="sync",
                severity=r.severity,
                workers_affected=r.workers_affected,
                amount=r.amount,
                hardship_grade=r.hardship_grade,
                cell_code=cell,
                cell_version_id=spec.cell_version if cell else None,
                division_code=None if cell else division,
                lon=None if math.isnan(placed.lon[i]) else float(placed.lon[i]),
                lat=None if math.isnan(placed.lat[i]) else float(placed.lat[i]),
                worker_hmac=worker_key(ctx.vault, r.worker_id_number) if r.worker_id_number else None,
                enterprise_uscc=r.enterprise_uscc,
                source_ref=f"{spec.source}:{r.source_record_id}",
                details_enc=seal(ctx.vault, details),
                address_masked=masked_address(details),
            )
        except IntakeError:  # never crash a page over one report: quarantine it with a reason
            raw = by_id.get(r.source_record_id, {})
            detail = "the report does not meet the case intake rules"
            located.append(Reject(r.source_record_id, Reason.BAD_VALUE, None, detail, raw=dict(raw)))
            continue
        reports.append(report)
    return PreparedChunk(
        entity=spec.entity,
        rejects_text=reject_copy(located, ctx.vault),  # type: ignore[arg-type]
        high_water=max((r.source_updated_at for r in records), default=None),
        by_method=Counter(placed.method),
        by_reason=Counter(str(j.reason) for j in located),
        reports=reports,
    )


OUTSIDE_REGION: Final = str(Reason.ADDRESS_OUTSIDE_REGION)


def _outside_region(record_id: str, raw: Mapping[str, Any]) -> Reject:
    detail = "the address names a place outside the source's region and nothing inside it"
    return Reject(record_id, Reason.ADDRESS_OUTSIDE_REGION, "address", detail, raw=dict(raw))


_LOCATION_FIELDS = frozenset({"lon", "lat", "crs", "address"})


def _unmapped_reasons(
    records: Sequence[Any],
    reasons: list[str | None],
    cells: Sequence[str | None],
    divisions: Sequence[str | None],
) -> None:
    """A record whose location was dropped as a field problem and that could not be placed by
    address either is stored unmapped with that problem's reason code (``out_of_china``,
    ``unknown_crs`` ...), not the generic ``no_location``."""
    for i, r in enumerate(records):
        if r.problems and cells[i] is None and divisions[i] is None:
            reason = next((str(p.reason) for p in r.problems if p.field in _LOCATION_FIELDS), None)
            if reason is not None:
                reasons[i] = reason


def _prepare_officers(
    spec: ChunkSpec,
    raw_rows: Sequence[Mapping[str, Any]],
    known: Mapping[str, datetime],
    today: date,
    ctx: GridContext,
) -> PreparedChunk:
    """Roster rows: validated, each cell checked against the city's current grid (a cell it does
    not have is ``unknown_cell``), the phone protected. Officers have no point to place."""
    unchanged, todo = _split_unchanged(spec, raw_rows, known)
    records, rejects = validate_officers(todo, mapping=spec.mapping, today=today)
    id_field = spec.mapping["source_record_id"]
    by_id = {str(row.get(id_field, "")).strip(): row for row in todo}
    good = []
    for r in records:
        if any(c not in ctx.cell_codes for c in r.cells):
            detail = f"a cell is not a current cell of {spec.city_code} (field {spec.mapping['cells']})"
            raw = by_id.get(r.source_record_id, {})
            rejects.append(Reject(r.source_record_id, Reason.UNKNOWN_CELL, "cells", detail, raw=dict(raw)))
            continue
        good.append(r)
    fresh = [r for r in good if known.get(r.source_record_id) != r.source_updated_at]
    seen: list[str] = []
    if spec.full:
        seen = [r.source_record_id for r in records] + [
            j.source_record_id for j in rejects if j.source_record_id
        ]
        seen += [rid for rid, _ in unchanged]
    return PreparedChunk(
        entity=spec.entity,
        rows_text=officer_copy(fresh, ctx.vault),
        n_rows=len(fresh),
        rejects_text=reject_copy(rejects, ctx.vault),  # type: ignore[arg-type]
        skipped=len(good) - len(fresh) + len(unchanged),
        high_water=newest_version([*(r.source_updated_at for r in records), *(t for _, t in unchanged)]),
        by_reason=Counter(str(j.reason) for j in rejects),
        seen=seen,
        versions=[(r.source_record_id, r.source_updated_at) for r in fresh],
    )


def prepare_chunk(
    spec: ChunkSpec,
    raw_rows: Sequence[Mapping[str, Any]],
    known: Mapping[str, datetime],
    today: date,
) -> PreparedChunk:
    """Validate a chunk, skip records already stored at this version, place and protect the rest."""
    ctx = grid_context(spec.city_code, spec.cell_version)
    if spec.entity == "cases":
        return _prepare_cases(spec, raw_rows, today, ctx)
    if spec.entity == "grid_officers":
        return _prepare_officers(spec, raw_rows, known, today, ctx)
    unchanged, todo = _split_unchanged(spec, raw_rows, known)
    validate = validate_workers if spec.entity == "workers" else validate_enterprises
    records, rejects = validate(todo, mapping=spec.mapping, default_crs=spec.default_crs, today=today)
    fresh = [r for r in records if known.get(r.source_record_id) != r.source_updated_at]
    n_fresh = len(fresh)
    placed = place_batch(
        [r.lon for r in fresh],
        [r.lat for r in fresh],
        [r.crs for r in fresh],
        [r.address for r in fresh],
        index=ctx.index,
        locator=ctx.locator,
        region=spec.city_code,
    )
    outside = [i for i, why in enumerate(placed.reason) if why == OUTSIDE_REGION]
    if outside:  # placed by address outside the source's city: quarantined, never loaded elsewhere
        id_field = spec.mapping["source_record_id"]
        by_id = {str(row.get(id_field, "")).strip(): row for row in todo}
        rejects = [
            *rejects,
            *(
                _outside_region(fresh[i].source_record_id, by_id.get(fresh[i].source_record_id, {}))
                for i in outside
            ),
        ]
        dropped = set(outside)
        keep = [i for i in range(len(fresh)) if i not in dropped]
        fresh, placed = [fresh[i] for i in keep], placed.take(keep)
    _unmapped_reasons(fresh, placed.reason, placed.cell_code, placed.division_code)
    rows_text, new_text, new_ids = "", "", []
    if spec.entity == "workers":
        # Records the store does not hold (by ``known``) go straight into the table; the rest
        # through the version-guarded upsert (grid.sync.store.write_page).
        lines = worker_lines(fresh, placed, ctx.vault)  # type: ignore[arg-type]
        ids = [r.source_record_id for r in fresh]
        if not known:  # a first night, or nothing of this chunk stored yet: all new
            new_text, new_ids = "\n".join(lines) + "\n" if lines else "", ids
        else:
            held = [i for i, rid in enumerate(ids) if rid in known]
            new = [i for i, rid in enumerate(ids) if rid not in known]
            rows_text = "".join(lines[i] + "\n" for i in held)
            new_text = "".join(lines[i] + "\n" for i in new)
            new_ids = [ids[i] for i in new]
    else:
        rows_text = enterprise_copy(fresh, placed, ctx.vault)  # type: ignore[arg-type]
    rejects_text = reject_copy(rejects, ctx.vault)  # type: ignore[arg-type]
    problems_text = field_problem_copy(fresh, ctx.vault)  # type: ignore[arg-type]
    seen: list[str] = []
    if spec.full:
        seen = [r.source_record_id for r in records] + [
            j.source_record_id for j in rejects if j.source_record_id
        ]
        seen += [rid for rid, _ in unchanged]
    return PreparedChunk(
        entity=spec.entity,
        rows_text=rows_text,
        n_rows=len(fresh),
        new_text=new_text,
        new_ids=new_ids,
        rejects_text=rejects_text,
        skipped=len(records) - n_fresh + len(unchanged),
        problems_text=problems_text,
        unmapped=sum(1 for c in placed.cell_code if c is None),
        high_water=newest_version([*(r.source_updated_at for r in records), *(t for _, t in unchanged)]),
        by_method=Counter(placed.method),
        by_reason=Counter(str(j.reason) for j in rejects),
        by_problem=Counter(str(p.reason) for r in fresh for p in r.problems),
        seen=seen,
        versions=[(r.source_record_id, r.source_updated_at) for r in fresh],
    )
