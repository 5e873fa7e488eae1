"""A roster a city sends as a spreadsheet (CSV or XLSX): the same validation, quarantine and
versioned write as the nightly sync's ``grid_officers`` stream, in one transaction.

Plain functions, no Prefect (``gridflow officers import`` calls :func:`import_roster`): the file is
read with :func:`connectors.file.read_rows` (damaged lines become rows with a reason, never lost),
prepared by :func:`flows.pipeline.prepare_chunk` and written by :func:`grid.sync.store.write_page`
under a ``sync_run`` of its own. The spreadsheet is the whole roster unless ``partial``: an officer
missing from two complete imports (or full syncs) in a row is soft-deleted, like any record, and
their open cases go to the community union. The stream's cursor is left alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

from connectors.checks import check_schema
from connectors.config import SourceConfig
from connectors.file import read_rows
from connectors.reasons import Reason
from flows.nightly_sync import register_config
from flows.pipeline import ChunkSpec, current_cell_version, prepare_chunk
from grid.store.copy import parse_copy_text
from grid.store.db import connect, transaction
from grid.sync import store as sync

ENTITY: Final = "grid_officers"
LINE_KEY: Final = "\x00line"  # the spreadsheet line of each row (header = line 1)


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str
    field: str | None
    detail: str  # names the rule and the city's field, never the value


@dataclass
class ImportResult:
    run_id: int
    received: int = 0
    loaded: int = 0
    unchanged: int = 0
    quarantined: int = 0
    missing: int = 0
    soft_deleted: int = 0
    released: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    bad: list[BadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _bad_rows(rejects_text: str, rows: list[dict[str, object]], id_field: str) -> list[BadRow]:
    """Each quarantined row with its line: rejects are matched to rows by record id (or, for a row
    without one, in order among the rows without one)."""
    lines_by_id: dict[str, list[int]] = {}
    for row in rows:
        rid = str(row.get(id_field) or "").strip()
        lines_by_id.setdefault(rid, []).append(int(str(row[LINE_KEY])))
    out: list[BadRow] = []
    for parts in parse_copy_text(rejects_text):
        if parts == [""]:
            continue
        rid, reason, fld, detail = parts[0] or "", str(parts[1]), parts[2], str(parts[3])
        lines = lines_by_id.get(rid) or [0]
        line = lines.pop(0) if len(lines) > 1 else lines[0]
        out.append(BadRow(line, reason, fld, detail))
    return sorted(out, key=lambda b: (b.line, b.reason))


def import_roster(
    config: SourceConfig, path: Path, *, partial: bool = False, today: date | None = None
) -> ImportResult:
    """Validate and load the roster in ``path`` for ``config``'s city; see the module docstring."""
    mapping = config.mapping.get(ENTITY)
    if mapping is None:
        raise ValueError(f"source {config.name} has no [mapping.{ENTITY}] (the roster's field names)")
    rows, _, _ = read_rows(path, encoding=config.encoding, number_key=LINE_KEY)
    rows = [r for r in rows if len(r) > 1]  # a line that is only its number is blank
    plain = [{k: v for k, v in r.items() if k != LINE_KEY} for r in rows]
    notes = check_schema(ENTITY, plain, mapping) if plain else []  # a missing required column raises
    conn = connect()
    try:
        register_config(conn, config)
        with transaction(conn) as cur:
            ids = [
                str(v).strip() for r in plain if (v := r.get(mapping["source_record_id"])) not in (None, "")
            ]
            known = sync.existing_versions(cur, source=config.name, entity=ENTITY, ids=ids)
        spec = ChunkSpec(
            source=config.name,
            entity=ENTITY,
            city_code=config.city_code,
            cell_version=current_cell_version(config.city_code),
            mapping=dict(mapping),
            default_crs=config.crs,
            full=not partial,
        )
        with sync.run(conn, source=config.name, mode="incremental" if partial else "full",
                      flow_run_id=None) as the_run:  # fmt: skip
            chunk = prepare_chunk(spec, plain, known, today or date.today())
            page = sync.write_page(
                conn,
                run_id=the_run.id,
                source=config.name,
                entity=ENTITY,
                chunks=[chunk],
                received=len(rows),
                since=None,
                cursor_after=None,
                snapshot_run_id=None if partial else the_run.id,
                advance=False,
            )
            the_run.totals.add(ENTITY, page)
    finally:
        conn.close()
    return ImportResult(
        run_id=the_run.id,
        received=page.received,
        loaded=page.loaded,
        unchanged=page.unchanged,
        quarantined=page.quarantined,
        missing=page.missing,
        soft_deleted=page.soft_deleted,
        released=page.released,
        by_reason=page.by_reason,
        bad=_bad_rows(chunk.rejects_text, rows, mapping["source_record_id"]),
        notes=notes,
    )


def reason_label(code: str) -> str:
    """``unknown_cell (网格编码无效)``: the code and its Chinese label, for the import's summary."""
    try:
        return f"{code} ({Reason(code).label_zh})"
    except ValueError:
        return code
