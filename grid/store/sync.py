"""Store side of the nightly sync: sources, cursors, run records and one-transaction pages.

A page is written in ONE transaction together with the advance of its source cursor: COPY into
a staging table, a version-guarded upsert keyed on (source, source_record_id) — an older
version never overwrites a newer one and a replay changes nothing — the page's rejects into
quarantine (once per record and reason), the cursor, and the run's counters.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2.extensions

from grid.store.copy import copy_rows
from grid.store.db import fetch_one, transaction

WORKER_COLUMNS = (
    "source_record_id",
    "source_updated_at",
    "id_hmac",
    "id_enc",
    "id_masked",
    "name_enc",
    "name_masked",
    "gender",
    "birth_year",
    "phone_hmac",
    "phone_enc",
    "phone_masked",
    "address_enc",
    "enterprise_uscc",
    "lon",
    "lat",
    "cell_code",
    "division_code",
    "placement_method",
    "unmapped_reason",
    "row_hash",
)
ENTERPRISE_COLUMNS = (
    "source_record_id",
    "source_updated_at",
    "uscc",
    "name",
    "union_established",
    "employee_count",
    "address",
    "legal_rep_phone_hmac",
    "legal_rep_phone_enc",
    "legal_rep_phone_masked",
    "lon",
    "lat",
    "cell_code",
    "division_code",
    "placement_method",
    "unmapped_reason",
    "row_hash",
)
QUARANTINE_COLUMNS = (
    "source_record_id",
    "reason_code",
    "field",
    "detail",
    "raw_hmac",
    "raw_enc",
)
_TABLES = {"workers": ("worker", WORKER_COLUMNS), "enterprises": ("enterprise", ENTERPRISE_COLUMNS)}
_STAGE_TYPES = {
    "source_updated_at": "timestamptz",
    "birth_year": "smallint",
    "employee_count": "integer",
    "union_established": "boolean",
    "lon": "double precision",
    "lat": "double precision",
}


@dataclass
class PageResult:
    """What one committed page did (all counts are of records)."""

    received: int = 0
    loaded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unmapped: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)


@dataclass
class RunTotals:
    pages: int = 0
    received: int = 0
    loaded: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unmapped: int = 0
    by_entity: dict[str, Counter[str]] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)

    def add(self, entity: str, page: PageResult) -> None:
        self.pages += 1
        self.received += page.received
        self.loaded += page.loaded
        self.unchanged += page.unchanged
        self.quarantined += page.quarantined
        self.unmapped += page.unmapped
        self.by_reason.update(page.by_reason)
        self.by_method.update(page.by_method)
        ent = self.by_entity.setdefault(entity, Counter())
        ent.update(
            received=page.received,
            loaded=page.loaded,
            unchanged=page.unchanged,
            quarantined=page.quarantined,
            unmapped=page.unmapped,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "by_entity": {k: dict(v) for k, v in self.by_entity.items()},
            "quarantined_by_reason": dict(self.by_reason),
            "placed_by_method": dict(self.by_method),
        }


# -- sources and cursors ---------------------------------------------------------------------


def register_source(
    cur: psycopg2.extensions.cursor,
    *,
    name: str,
    display_name: str,
    city_code: str,
    kind: str,
    crs: str,
    enabled: bool,
    config: Mapping[str, Any],
) -> None:
    """Insert or refresh a source row from its config file (no secrets in ``config``)."""
    cur.execute(
        """
        INSERT INTO source (name, display_name, city_code, kind, crs, enabled, config)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (name) DO UPDATE SET display_name = EXCLUDED.display_name,
            city_code = EXCLUDED.city_code, kind = EXCLUDED.kind, crs = EXCLUDED.crs,
            enabled = EXCLUDED.enabled, config = EXCLUDED.config, updated_at = now()
        WHERE (source.display_name, source.city_code, source.kind, source.crs, source.enabled, source.config)
              IS DISTINCT FROM
              (EXCLUDED.display_name, EXCLUDED.city_code, EXCLUDED.kind, EXCLUDED.crs, EXCLUDED.enabled,
               EXCLUDED.config)
        """,
        (name, display_name, city_code, kind, crs, enabled, json.dumps(dict(config), sort_keys=True)),
    )


@dataclass(frozen=True)
class StreamPosition:
    """Where a (source, entity) stream resumes: a keyset cursor mid-stream, and the watermark."""

    cursor: str | None
    since: datetime | None


def get_position(cur: psycopg2.extensions.cursor, *, source: str, entity: str) -> StreamPosition:
    cur.execute("SELECT cursor, since FROM source_cursor WHERE source = %s AND entity = %s", (source, entity))
    row = cur.fetchone()
    return StreamPosition(None, None) if row is None else StreamPosition(row[0], row[1])


def get_cursor(cur: psycopg2.extensions.cursor, *, source: str, entity: str) -> str | None:
    return get_position(cur, source=source, entity=entity).cursor


def _advance(
    cur: psycopg2.extensions.cursor,
    *,
    source: str,
    entity: str,
    since: datetime | None,
    cursor_after: str | None,
    high_water: datetime | None,
) -> None:
    """Record a committed page: the next cursor, or — when the stream ended — the new watermark."""
    cur.execute(
        "SELECT high_water FROM source_cursor WHERE source = %s AND entity = %s FOR UPDATE", (source, entity)
    )
    row = cur.fetchone()
    old_hw = row[0] if row else None
    hw = max((t for t in (old_hw, high_water) if t is not None), default=None)
    new_since = since if cursor_after is not None else (hw or since)
    cur.execute(
        """
        INSERT INTO source_cursor AS c (source, entity, cursor, since, high_water)
        VALUES (%(source)s, %(entity)s, %(cursor)s, %(since)s, %(hw)s)
        ON CONFLICT (source, entity) DO UPDATE SET
            cursor = EXCLUDED.cursor, since = EXCLUDED.since, high_water = EXCLUDED.high_water, updated_at = now()
        WHERE (c.cursor, c.since, c.high_water) IS DISTINCT FROM (EXCLUDED.cursor, EXCLUDED.since, EXCLUDED.high_water)
        """,
        {"source": source, "entity": entity, "cursor": cursor_after, "since": new_since, "hw": hw},
    )


def all_cursors(cur: psycopg2.extensions.cursor, *, source: str) -> dict[str, dict[str, str | None]]:
    """Every stream's position of a source, JSON-ready (for the run record)."""
    cur.execute(
        "SELECT entity, cursor, since FROM source_cursor WHERE source = %s ORDER BY entity", (source,)
    )
    return {e: {"cursor": c, "since": t.isoformat() if t else None} for e, c, t in cur.fetchall()}


# -- runs -----------------------------------------------------------------------------------


def start_run(
    conn: psycopg2.extensions.connection,
    *,
    source: str,
    mode: str,
    flow_run_id: str | None,
    parent_flow_run_id: str | None = None,
) -> int:
    with transaction(conn) as cur:
        cursors = all_cursors(cur, source=source)
        cur.execute(
            "INSERT INTO sync_run (source, mode, flow_run_id, parent_flow_run_id, cursor_before)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (source, mode, flow_run_id, parent_flow_run_id, json.dumps(cursors)),
        )
        return int(fetch_one(cur)[0])


def finish_run(
    conn: psycopg2.extensions.connection, *, run_id: int, totals: RunTotals, error: str | None = None
) -> None:
    with transaction(conn) as cur:
        cur.execute("SELECT source FROM sync_run WHERE id = %s", (run_id,))
        source = fetch_one(cur)[0]
        cursors = all_cursors(cur, source=source)
        cur.execute(
            """
            UPDATE sync_run SET status = %s, finished_at = now(), pages = %s, received = %s, loaded = %s,
                unchanged = %s, quarantined = %s, unmapped = %s, counts = %s, cursor_after = %s, error = %s
            WHERE id = %s
            """,
            (
                "failed" if error else "completed",
                totals.pages,
                totals.received,
                totals.loaded,
                totals.unchanged,
                totals.quarantined,
                totals.unmapped,
                json.dumps(totals.as_json()),
                json.dumps(cursors),
                error,
                run_id,
            ),
        )


# -- pages ----------------------------------------------------------------------------------


def _stage(cur: psycopg2.extensions.cursor, name: str, columns: Sequence[str]) -> None:
    cols = ", ".join(
        f"{c} {_STAGE_TYPES.get(c, 'bytea' if c.endswith(('_hmac', '_enc', '_hash')) else 'text')}"
        for c in columns
    )
    cur.execute(f"CREATE TEMP TABLE {name} ({cols}) ON COMMIT DROP")


def _upsert_sql(table: str, columns: Sequence[str]) -> str:
    data_cols = [c for c in columns if c not in ("lon", "lat")]
    insert_cols = ["source", *data_cols, "geom", "first_run_id", "last_run_id"]
    select_cols = [
        "%(source)s",
        *[f"s.{c}" for c in data_cols],
        "CASE WHEN s.lon IS NULL OR s.lat IS NULL THEN NULL"
        " ELSE ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326) END",
        "%(run)s",
        "%(run)s",
    ]
    updates = [f"{c} = EXCLUDED.{c}" for c in [*data_cols, "geom"] if c != "source_record_id"]
    updates += ["last_run_id = EXCLUDED.last_run_id", "updated_at = now()", "deleted_at = NULL"]
    return f"""
        WITH up AS (
            INSERT INTO {table} AS t ({", ".join(insert_cols)})
            SELECT {", ".join(select_cols)} FROM stage_{table} s
            ON CONFLICT (source, source_record_id) DO UPDATE SET {", ".join(updates)}
            WHERE t.source_updated_at < EXCLUDED.source_updated_at AND t.row_hash <> EXCLUDED.row_hash
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
    """


def write_page(
    conn: psycopg2.extensions.connection,
    *,
    run_id: int,
    source: str,
    entity: str,
    rows: Sequence[Sequence[Any]],
    rejects: Sequence[Sequence[Any]],
    received: int,
    since: datetime | None,
    cursor_after: str | None,
    high_water: datetime | None,
) -> PageResult:
    """Write one page and advance the cursor, all in one transaction.

    ``rows`` follow ``WORKER_COLUMNS`` / ``ENTERPRISE_COLUMNS``; ``rejects`` follow
    ``QUARANTINE_COLUMNS``. ``since`` is the watermark the stream was fetched from;
    ``cursor_after`` None means this was the stream's last page, so the watermark moves to the
    newest update time committed (``high_water``: this page's newest accepted record).
    """
    table, columns = _TABLES[entity]
    result = PageResult(received=received)
    method_i = columns.index("placement_method")
    cell_i = columns.index("cell_code")
    for row in rows:
        result.by_method[row[method_i]] += 1
        if row[cell_i] is None:
            result.unmapped += 1
    for rej in rejects:
        result.by_reason[rej[1]] += 1
    result.quarantined = len(rejects)
    with transaction(conn) as cur:
        if rows:
            _stage(cur, f"stage_{table}", columns)
            copy_rows(cur, f"stage_{table}", columns, rows)
            cur.execute(_upsert_sql(table, columns), {"source": source, "run": run_id})
            inserted, updated = fetch_one(cur)
            result.inserted, result.updated = int(inserted), int(updated)
        result.loaded = result.inserted + result.updated
        result.unchanged = len(rows) - result.loaded
        if rejects:
            _stage(cur, "stage_quarantine", QUARANTINE_COLUMNS)
            copy_rows(cur, "stage_quarantine", QUARANTINE_COLUMNS, rejects)
            cur.execute(
                f"""
                INSERT INTO quarantine (source, entity, run_id, last_run_id, {", ".join(QUARANTINE_COLUMNS)})
                SELECT %(source)s, %(entity)s, %(run)s, %(run)s, {", ".join("s." + c for c in QUARANTINE_COLUMNS)}
                FROM stage_quarantine s
                ON CONFLICT (source, entity, raw_hmac, reason_code) WHERE resolved_at IS NULL DO NOTHING
                """,
                {"source": source, "entity": entity, "run": run_id},
            )
        _advance(
            cur, source=source, entity=entity, since=since, cursor_after=cursor_after, high_water=high_water
        )
    return result
