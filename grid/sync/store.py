"""Store side of the nightly sync: sources, cursors, run records and one-transaction pages.

(Over 500 lines on purpose: everything one page's transaction touches — staging, upsert,
quarantine, cursor, run counters, the version map — is here, so its lock and write order read
in one file.)

A page is written in ONE transaction together with the advance of its source cursor: workers the
store did not hold COPYed straight into the table (:func:`_copy_new`), the rest COPYed into a
staging table and upserted with a version guard keyed on (source, source_record_id) — an older
version never overwrites a newer one and a replay changes nothing — the page's rejects into
quarantine (once per record and reason), the field problems of the records it loaded (a field
that failed its rule and was stored empty: ``connectors.problems``; once per record and field,
settled when a newer stored version no longer has it), the cursor, and the run's counters.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg2.errors
import psycopg2.extensions

from connectors.validate import CHINA_TZ
from grid.cases.store import rules_from_settings
from grid.roster.store import OFFICER_COLUMNS, release_departed, upsert_officers
from grid.store.copy import ESCAPES, copy_from_text, copy_text, parse_copy_text, unescape_field
from grid.store.db import fetch_one, transaction
from grid.store.failpoints import failpoint

WORKER_COLUMNS = (
    "source_record_id",
    "source_updated_at",
    "id_hmac",
    "id_masked",
    "name_masked",
    "gender",
    "birth_year",
    "phone_hmac",
    "phone_masked",
    "pii_enc",
    "enterprise_uscc",
    "geom",  # hex EWKB (grid.ingest.ewkb_points): the row COPYs straight into the table
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
FIELD_PROBLEM_COLUMNS = ("source_record_id", "field", "reason_code", "detail", "raw_enc")
_TABLES = {
    "workers": ("worker", WORKER_COLUMNS),
    "enterprises": ("enterprise", ENTERPRISE_COLUMNS),
    "grid_officers": ("officer", OFFICER_COLUMNS),  # the roster: grid.roster.store
}
ROSTER = "grid_officers"
_STAGE_TYPES = {
    "source_updated_at": "timestamptz",
    "birth_year": "smallint",
    "employee_count": "integer",
    "union_established": "boolean",
    "active": "boolean",
    "lon": "double precision",
    "lat": "double precision",
    "geom": "geometry(Point, 4326)",
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
    missing: int = 0
    soft_deleted: int = 0
    field_problems: int = 0
    released: int = 0  # open cases an officer who left handed to the community (roster pages)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    #: field problems of loaded records by reason code (the records are in ``loaded``/``unchanged``)
    by_problem: Counter[str] = field(default_factory=Counter)


@dataclass
class RunTotals:
    pages: int = 0
    received: int = 0
    loaded: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unmapped: int = 0
    missing: int = 0
    soft_deleted: int = 0
    field_problems: int = 0
    by_entity: dict[str, Counter[str]] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    by_problem: Counter[str] = field(default_factory=Counter)

    def add(self, entity: str, page: PageResult) -> None:
        self.pages += 1
        self.received += page.received
        self.loaded += page.loaded
        self.unchanged += page.unchanged
        self.quarantined += page.quarantined
        self.unmapped += page.unmapped
        self.missing += page.missing
        self.soft_deleted += page.soft_deleted
        self.field_problems += page.field_problems
        self.by_reason.update(page.by_reason)
        self.by_method.update(page.by_method)
        self.by_problem.update(page.by_problem)
        ent = self.by_entity.setdefault(entity, Counter())
        ent.update(
            received=page.received,
            loaded=page.loaded,
            unchanged=page.unchanged,
            quarantined=page.quarantined,
            unmapped=page.unmapped,
            missing=page.missing,
            soft_deleted=page.soft_deleted,
            field_problems=page.field_problems,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "by_entity": {k: dict(v) for k, v in self.by_entity.items()},
            "quarantined_by_reason": dict(self.by_reason),
            "placed_by_method": dict(self.by_method),
            "field_problems_by_reason": dict(self.by_problem),
            "missing": self.missing,
            "soft_deleted": self.soft_deleted,
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
    """Where a (source, entity) stream resumes: a keyset cursor mid-stream, the watermark, and the
    run whose full snapshot is in progress (a resumed full resync keeps its snapshot)."""

    cursor: str | None
    since: datetime | None
    full_run_id: int | None = None


@dataclass(frozen=True)
class StreamPlan:
    """How a run reads one stream: from ``cursor`` (None: the first page), records changed since
    ``since`` (None: all of them), as part of the full snapshot of run ``snapshot`` (or none)."""

    cursor: str | None
    since: datetime | None
    snapshot: int | None

    @property
    def whole(self) -> bool:
        """The run fetches the whole stream (no watermark yet, or a full snapshot): every stored
        record comes back, so their versions are worth reading once."""
        return self.since is None or self.snapshot is not None


def plan_stream(pos: StreamPosition, *, full: bool, run_id: int) -> StreamPlan:
    """Resume, full or incremental — the one rule: a full snapshot in progress is resumed where it
    stopped (keeping its snapshot run); else ``full`` starts one from the top; else the stream
    continues from its cursor and watermark."""
    if pos.cursor is not None and pos.full_run_id is not None:
        return StreamPlan(pos.cursor, pos.since, pos.full_run_id)
    if full:
        return StreamPlan(None, None, run_id)
    return StreamPlan(pos.cursor, pos.since, None)


def get_position(cur: psycopg2.extensions.cursor, *, source: str, entity: str) -> StreamPosition:
    cur.execute(
        "SELECT cursor, since, full_run_id FROM source_cursor WHERE source = %s AND entity = %s",
        (source, entity),
    )
    row = cur.fetchone()
    return StreamPosition(None, None) if row is None else StreamPosition(row[0], row[1], row[2])


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
    snapshot_run_id: int | None,
) -> None:
    """Record a committed page: the next cursor, or — when the stream ended — the new watermark."""
    cur.execute(
        "SELECT high_water FROM source_cursor WHERE source = %s AND entity = %s FOR UPDATE", (source, entity)
    )
    row = cur.fetchone()
    old_hw = row[0] if row else None
    hw = max((t for t in (old_hw, high_water) if t is not None), default=None)
    ended = cursor_after is None
    cur.execute(
        """
        INSERT INTO source_cursor AS c (source, entity, cursor, since, high_water, full_run_id)
        VALUES (%(source)s, %(entity)s, %(cursor)s, %(since)s, %(hw)s, %(snap)s)
        ON CONFLICT (source, entity) DO UPDATE SET cursor = EXCLUDED.cursor, since = EXCLUDED.since,
            high_water = EXCLUDED.high_water, full_run_id = EXCLUDED.full_run_id, updated_at = now()
        WHERE (c.cursor, c.since, c.high_water, c.full_run_id)
              IS DISTINCT FROM (EXCLUDED.cursor, EXCLUDED.since, EXCLUDED.high_water, EXCLUDED.full_run_id)
        """,
        {
            "source": source,
            "entity": entity,
            "cursor": cursor_after,
            "since": (hw or since) if ended else since,
            "hw": hw,
            "snap": None if ended else snapshot_run_id,
        },
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
    at: datetime | None = None,
) -> int:
    """A new ``sync_run``, started now — or at ``at``, the run's clock (:mod:`grid.clock`)."""
    with transaction(conn) as cur:
        cursors = all_cursors(cur, source=source)
        cur.execute(
            "INSERT INTO sync_run (source, mode, flow_run_id, parent_flow_run_id, cursor_before, started_at)"
            " VALUES (%s, %s, %s, %s, %s, coalesce(%s, now())) RETURNING id",
            (source, mode, flow_run_id, parent_flow_run_id, json.dumps(cursors), at),
        )
        return int(fetch_one(cur)[0])


@dataclass
class Run:
    """A ``sync_run`` in progress: its id, its counters, the error that ended it (if one did)."""

    id: int
    totals: RunTotals = field(default_factory=RunTotals)
    error: str | None = None


@contextmanager
def run(
    conn: psycopg2.extensions.connection,
    *,
    source: str,
    mode: str,
    flow_run_id: str | None,
    parent_flow_run_id: str | None = None,
    on_finish: Callable[[Run], None] | None = None,
    at: datetime | None = None,
) -> Iterator[Run]:
    """One run's life, for the nightly sync and reprocessing alike: started on entry; on exit —
    whatever happened — what an error left open is rolled back, the run is finished with its
    counters and the first line of that error, and ``on_finish`` sees it (artifacts)."""
    t0 = time.monotonic()
    the_run = Run(start_run(conn, source=source, mode=mode, flow_run_id=flow_run_id,
                            parent_flow_run_id=parent_flow_run_id, at=at))  # fmt: skip
    try:
        yield the_run
    except Exception as exc:
        the_run.error = error_line(exc)
        raise
    finally:
        conn.rollback()
        end = None if at is None else at + timedelta(seconds=time.monotonic() - t0)
        finish_run(conn, run_id=the_run.id, totals=the_run.totals, error=the_run.error, at=end)
        if on_finish is not None:
            on_finish(the_run)


def error_line(exc: BaseException) -> str:
    """What a run records of the error that ended it: its first line (the exception's name when it
    has no message). Our errors say in one sentence what went wrong, without personal data."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def finish_run(
    conn: psycopg2.extensions.connection,
    *,
    run_id: int,
    totals: RunTotals,
    error: str | None = None,
    at: datetime | None = None,
) -> None:
    with transaction(conn) as cur:
        cur.execute("SELECT source FROM sync_run WHERE id = %s", (run_id,))
        source = fetch_one(cur)[0]
        cursors = all_cursors(cur, source=source)
        cur.execute(
            """
            UPDATE sync_run SET status = %s, finished_at = coalesce(%s, now()), pages = %s, received = %s, loaded = %s,
                unchanged = %s, quarantined = %s, unmapped = %s, counts = %s, cursor_after = %s, error = %s
            WHERE id = %s
            """,
            (
                "failed" if error else "completed",
                at,
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
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({cols}) ON COMMIT DROP")
    cur.execute(f"TRUNCATE {name}")


def _upsert_sql(table: str, columns: Sequence[str]) -> str:
    data_cols = [c for c in columns if c not in ("lon", "lat")]
    point = [] if "geom" in columns else ["geom"]  # from lon/lat, else staged as it is
    insert_cols = ["source", *data_cols, *point, "first_run_id", "last_run_id"]
    select_cols = [
        "%(source)s",
        *[f"s.{c}" for c in data_cols],
        *[
            "CASE WHEN s.lon IS NULL OR s.lat IS NULL THEN NULL"
            " ELSE ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326) END"
            for _ in point
        ],
        "%(run)s",
        "%(run)s",
    ]
    updates = [f"{c} = EXCLUDED.{c}" for c in [*data_cols, *point] if c != "source_record_id"]
    updates += [
        "last_run_id = EXCLUDED.last_run_id",
        "updated_at = now()",
        "deleted_at = NULL",
        "missed_full_runs = 0",
    ]
    # Version guard: only a newer version with other content replaces a row; a soft-deleted
    # record that comes back (any version) is restored.
    return f"""
        WITH up AS (
            INSERT INTO {table} AS t ({", ".join(insert_cols)})
            SELECT {", ".join(select_cols)} FROM stage_{table} s
            ON CONFLICT (source, source_record_id) DO UPDATE SET {", ".join(updates)}
            WHERE (t.source_updated_at < EXCLUDED.source_updated_at AND t.row_hash <> EXCLUDED.row_hash)
               OR (t.deleted_at IS NOT NULL AND t.source_updated_at <= EXCLUDED.source_updated_at)
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
    """


@dataclass
class PreparedChunk:
    """A chunk of one page, validated, placed and protected, ready to COPY (built off the DB path).

    ``rows_text`` / ``rejects_text`` are COPY text in ``*_COLUMNS`` / ``QUARANTINE_COLUMNS``
    order. ``skipped`` counts records the store already holds at this version (not rebuilt).
    ``seen`` lists every source record id the chunk carried (full snapshots).
    """

    entity: str
    rows_text: str = ""
    #: rows in ``rows_text`` plus rows in ``new_text``
    n_rows: int = 0
    #: COPY text of rows whose record the store did not hold when the chunk was prepared (not in
    #: ``rows_text``): written straight into the table (:func:`_copy_new`), through the upsert if
    #: one of them exists after all. ``new_ids`` are their source record ids.
    new_text: str = ""
    new_ids: list[str] = field(default_factory=list)
    rejects_text: str = ""
    #: COPY text (``FIELD_PROBLEM_COLUMNS``) of the field problems of the records in ``rows_text``
    problems_text: str = ""
    skipped: int = 0
    unmapped: int = 0
    high_water: datetime | None = None
    by_method: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_problem: Counter[str] = field(default_factory=Counter)
    seen: list[str] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)  # case reports, taken in by ``on_reports``
    #: (source record id, update time) of each row in ``rows_text``: once the page commits the
    #: store holds that version or a newer one (the version guard keeps the newer).
    versions: list[tuple[str, datetime]] = field(default_factory=list)


def existing_versions(
    cur: psycopg2.extensions.cursor, *, source: str, entity: str, ids: Sequence[str]
) -> dict[str, datetime]:
    """The stored source update time of each id the store holds (not soft-deleted)."""
    if not ids or entity not in _TABLES:
        return {}
    table = _TABLES[entity][0]
    cur.execute(
        f"SELECT source_record_id, source_updated_at FROM {table}"
        " WHERE source = %s AND source_record_id = ANY(%s) AND deleted_at IS NULL",
        (source, list(ids)),
    )
    return dict(cur.fetchall())


#: A stored version as :func:`stored_versions` reads it: the local Beijing wall time as
#: PostgreSQL prints it ("2026-11-20 08:00:00", fractions only when there are some) for a version
#: from 1992 on, a tz-aware datetime otherwise and for every version a run notes itself.
StoredVersion = datetime | str
#: From 1992 Asia/Shanghai is UTC+8 all year (it kept summer time 1986-1991): a wall time then
#: names exactly one instant, the one a naive source time means.
_FIXED_OFFSET_FROM = "1992-01-01 00:00:00+08"
_LOCAL_VERSIONS = (
    "COPY (SELECT source_record_id, CASE WHEN source_updated_at >= %(fixed)s"
    " THEN (source_updated_at AT TIME ZONE 'Asia/Shanghai')::text"
    " ELSE to_char(source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"') END"
    " FROM {table} WHERE source = %(source)s AND deleted_at IS NULL LIMIT %(limit)s) TO STDOUT"
)


def stored_version(value: StoredVersion) -> datetime:
    """A stored version (see :data:`StoredVersion`) as a tz-aware datetime."""
    if type(value) is str:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else datetime.combine(parsed, parsed.time(), CHINA_TZ)
    return value  # type: ignore[return-value]


def newest_version(values: Sequence[StoredVersion]) -> datetime | None:
    """The latest of some stored versions (None if there are none)."""
    if not values:
        return None
    try:
        return stored_version(max(values))  # all text (a re-run) or all datetimes: at C speed
    except TypeError:
        return max(map(stored_version, values))


def stored_versions(
    conn: psycopg2.extensions.connection,
    *,
    source: str,
    entity: str,
    limit: int,
) -> dict[str, StoredVersion] | None:
    """Every stored (not soft-deleted) record of a stream with its source update time, read once
    when a run will fetch the whole stream (a first or rewound run, a full resync); None when the
    stream holds more than ``limit`` records (the map would cost ~150 bytes a record).

    The run holds the source lock, so only it adds versions to the stream meanwhile and keeps this
    map up to date as pages commit (:func:`note_versions`). One COPY of (id, Beijing wall time as
    text) replaces a lookup per page (:func:`existing_versions`: ~6–11 µs per id, so a
    10,000-id page took 60–110 ms against a million rows), and costs a third of reading the same
    rows as datetimes (bench_sync: 0.6 s against 1.9 s for a million). The text is what a source
    sends for an unchanged record, so a re-run compares strings (:func:`flows.pipeline.skip_unchanged`).
    An incremental night fetches only what changed and keeps the per-page lookup. Reprocessing
    may store a newer version meanwhile; the map then only under-skips, and the version guard
    keeps the store right.
    """
    if entity not in _TABLES:
        return {}
    table = _TABLES[entity][0]
    buffer = io.BytesIO()
    with transaction(conn) as cur:
        cur.execute("SET LOCAL DateStyle = 'ISO, YMD'")  # the text form a source's time is compared with
        query = cur.mogrify(
            _LOCAL_VERSIONS.format(table=table),
            {"fixed": _FIXED_OFFSET_FROM, "source": source, "limit": limit + 1},
        )
        cur.copy_expert(query.decode(), buffer)
    text = buffer.getvalue().decode()
    del buffer
    escaped = "\\" in text  # an id with a tab, newline or backslash, escaped by COPY
    lines = text.split("\n")
    del text
    lines.pop()  # after the last row's newline
    if len(lines) > limit:
        return None
    texts: dict[str, str]
    if escaped:
        texts = {}
        for line in lines:
            rid, version = line.split("\t")
            texts[unescape_field(rid) or ""] = version
    else:
        texts = dict(line.split("\t") for line in lines)
    del lines
    before_1992 = [rid for rid, version in texts.items() if version.endswith("+00:00")]  # instants
    versions: dict[str, StoredVersion] = texts  # type: ignore[assignment]
    for rid in before_1992:
        versions[rid] = datetime.fromisoformat(texts[rid])
    return versions


def note_versions(versions: dict[str, StoredVersion], chunks: Iterable[PreparedChunk]) -> None:
    """Fold a committed page's stored versions into a stream's map (see :func:`stored_versions`).
    A record is noted only when the store now holds that version or a newer one, so a later page
    that skips it as unchanged is right."""
    for chunk in chunks:
        versions.update(chunk.versions)


def _finish_snapshot(
    cur: psycopg2.extensions.cursor, *, source: str, entity: str, snapshot_run_id: int, result: PageResult
) -> None:
    """End of a full snapshot: records it did not contain miss one more snapshot; a record missing
    from two consecutive full snapshots is soft-deleted. Seen records reset their count."""
    table = _TABLES[entity][0]
    args = {"source": source, "entity": entity, "snap": snapshot_run_id}
    seen = "SELECT 1 FROM full_seen f WHERE f.run_id = %(snap)s AND f.entity = %(entity)s"
    cur.execute(
        f"UPDATE {table} t SET missed_full_runs = 0 WHERE t.source = %(source)s AND t.missed_full_runs > 0"
        f" AND EXISTS ({seen} AND f.source_record_id = t.source_record_id)",
        args,
    )
    cur.execute(
        f"""
        WITH missed AS (
            UPDATE {table} t SET missed_full_runs = t.missed_full_runs + 1,
                deleted_at = CASE WHEN t.missed_full_runs + 1 >= 2 THEN now() ELSE NULL END
            WHERE t.source = %(source)s AND t.deleted_at IS NULL
              AND NOT EXISTS ({seen} AND f.source_record_id = t.source_record_id)
            RETURNING t.deleted_at IS NOT NULL AS deleted
        )
        SELECT count(*), count(*) FILTER (WHERE deleted) FROM missed
        """,
        args,
    )
    missing, deleted = fetch_one(cur)
    result.missing, result.soft_deleted = int(missing), int(deleted)
    cur.execute("DELETE FROM full_seen WHERE run_id = %(snap)s AND entity = %(entity)s", args)


def _copy_new(
    cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], source: str, run_id: int, text: str
) -> bool:
    """COPY rows of records the store did not hold straight into ``table`` (no staging, no
    conflict check: a COPY costs the database about a third less than staging and the upsert).
    If one of them is there after all (soft-deleted, or twice in a page), the unique key refuses
    the COPY: it is undone to its savepoint and False sends the rows through the upsert instead.
    Only tables whose COPY text carries the point as ``geom`` (the table's own column)."""
    if "geom" not in columns:
        return False
    prefix = f"{source.translate(ESCAPES)}\t{run_id}\t{run_id}\t"
    body = prefix + text[:-1].replace("\n", "\n" + prefix) + "\n"  # text ends with one newline
    cur.execute("SAVEPOINT new_rows")
    try:
        copy_from_text(cur, table, ("source", "first_run_id", "last_run_id", *columns), body)
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT new_rows")
        return False
    cur.execute("RELEASE SAVEPOINT new_rows")
    return True


def _field_problems(
    cur: psycopg2.extensions.cursor,
    *,
    table: str,
    source: str,
    entity: str,
    run_id: int,
    chunk: PreparedChunk,
    fresh: frozenset[str] = frozenset(),
) -> None:
    """After a chunk's upsert (``stage_<table>`` still holds its rows): record the field problems of
    the versions the store now holds — once per record and field; a problem seen again by another
    run takes the new reason, detail and raw value and counts one more sighting (a replay in the
    same run changes nothing) — and settle as ``fixed`` the open problems of records whose
    newly stored version no longer has them. An older staged version changes nothing here; a newer
    one the guard did not rewrite because its content is the same counts as the stored one (its
    problems are the record's problems now: a fix that leaves the stored content as it was, such as
    a birth date corrected to what the resident ID already gave, still settles the problem).

    Every lookup is by key (``= ANY`` of the chunk's record ids on a unique index), never a join
    of the staged chunk with a table: without fresh statistics the planner scanned the growing
    table once per chunk (a first night went from ~30 to ~140 µs of database CPU per record).
    ``fresh`` records were just inserted by :func:`_copy_new`: a record the store never held has
    no open problem (worker and enterprise rows are never deleted, only soft-deleted), so they
    are not looked up."""
    args: dict[str, Any] = {"source": source, "entity": entity, "run": run_id}
    problems = [parts for parts in parse_copy_text(chunk.problems_text) if parts != [""]]
    versions = dict(chunk.versions)
    if len(versions) < chunk.n_rows:  # a chunk built without its versions: read them from the stage
        cur.execute(f"SELECT source_record_id, source_updated_at FROM stage_{table}")
        versions = dict(cur.fetchall())
    known = [rid for rid in versions if rid not in fresh]
    open_ids: set[str] = set()
    if known:
        cur.execute(
            "SELECT DISTINCT source_record_id FROM field_problem WHERE source = %(source)s"
            " AND entity = %(entity)s AND settled_at IS NULL AND source_record_id = ANY(%(ids)s)",
            {**args, "ids": known},
        )
        open_ids = {r[0] for r in cur.fetchall()}
    candidates = sorted((open_ids | {str(p[0]) for p in problems}) & versions.keys())
    if not candidates:
        return
    cur.execute(
        f"SELECT source_record_id, source_updated_at FROM {table}"
        " WHERE source = %(source)s AND source_record_id = ANY(%(ids)s) AND deleted_at IS NULL",
        {**args, "ids": candidates},
    )
    # The record as stored now is this chunk's version - or an older one with the same content (the
    # version guard does not rewrite a newer version whose content is unchanged, e.g. a birth date
    # fixed to what the resident ID already gave): either way this version's problems are the
    # record's problems now, and a problem it no longer has is settled.
    stored = sorted(rid for rid, version in cur.fetchall() if rid in versions and versions[rid] >= version)
    if not stored:
        return
    if problems:
        _stage(cur, "stage_field_problem", FIELD_PROBLEM_COLUMNS)
        copy_from_text(cur, "stage_field_problem", FIELD_PROBLEM_COLUMNS, chunk.problems_text)
        cols = ", ".join(FIELD_PROBLEM_COLUMNS)
        cur.execute(
            f"""
            INSERT INTO field_problem AS f (source, entity, run_id, last_run_id, {cols})
            SELECT %(source)s, %(entity)s, %(run)s, %(run)s, {", ".join("p." + c for c in FIELD_PROBLEM_COLUMNS)}
            FROM stage_field_problem p WHERE p.source_record_id = ANY(%(stored)s)
            ON CONFLICT (source, entity, source_record_id, field) WHERE settled_at IS NULL
            DO UPDATE SET reason_code = EXCLUDED.reason_code, detail = EXCLUDED.detail,
                raw_enc = EXCLUDED.raw_enc, last_run_id = EXCLUDED.last_run_id, seen_count = f.seen_count + 1
            WHERE f.last_run_id <> EXCLUDED.last_run_id
               OR (f.reason_code, f.detail) IS DISTINCT FROM (EXCLUDED.reason_code, EXCLUDED.detail)
            """,
            {**args, "stored": stored},
        )
    settle = sorted(open_ids.intersection(stored))
    if settle:
        cur.execute(
            """
            UPDATE field_problem f SET settled_at = now(), resolution = 'fixed', last_run_id = %(run)s
            WHERE f.source = %(source)s AND f.entity = %(entity)s AND f.settled_at IS NULL
              AND f.source_record_id = ANY(%(ids)s)
              AND NOT (f.source_record_id || E'\\x1f' || f.field = ANY(%(still)s))
            """,
            {**args, "ids": settle, "still": [f"{p[0]}\x1f{p[1]}" for p in problems]},
        )


def write_page(
    conn: psycopg2.extensions.connection,
    *,
    run_id: int,
    source: str,
    entity: str,
    chunks: Iterable[PreparedChunk],
    received: int,
    since: datetime | None,
    cursor_after: str | None,
    snapshot_run_id: int | None = None,
    on_reports: Callable[[psycopg2.extensions.cursor, list[Any]], int] | None = None,
    after_write: Callable[[psycopg2.extensions.cursor], None] | None = None,
    rules: Any = None,
    advance: bool = True,
) -> PageResult:
    """Write one page and advance the cursor, all in ONE transaction.

    ``chunks`` may be a lazy iterable (futures being prepared elsewhere): each chunk is COPYed and
    upserted as it arrives, so the database works while the next chunk is prepared, and nothing
    is committed until the last one. ``since`` is the watermark the stream was fetched from;
    ``cursor_after`` None means this is the stream's last page: the watermark moves to the newest
    update time committed and, for a full snapshot, missing records are counted (and soft-deleted
    after two snapshots). ``after_write`` runs in the same transaction once the rows are written
    (reprocessing settles the quarantine rows it re-took there, so both commit or neither does).
    A roster page (``grid_officers``) also releases the open cases of officers who left
    (:func:`grid.roster.store.release_departed`, under ``rules`` or the configured policy).
    ``advance=False`` leaves the stream's cursor alone (a roster imported from a spreadsheet is
    no page of the city's API stream).
    """
    table, columns = _TABLES.get(entity, ("", ()))
    result = PageResult(received=received)
    high_water: datetime | None = None
    with transaction(conn) as cur:
        if table == "worker":  # the foreign key a worker row no longer checks itself (migration 0015)
            cur.execute("SELECT 1 FROM source WHERE name = %s FOR KEY SHARE", (source,))
            if cur.fetchone() is None:
                raise ValueError(f"source {source} is not registered: no page of it can be written")
        # Staging tables are made when a chunk needs one: a page of unchanged records makes none.
        for chunk in chunks:
            result.by_method.update(chunk.by_method)
            result.by_reason.update(chunk.by_reason)
            result.by_problem.update(chunk.by_problem)
            result.field_problems += sum(chunk.by_problem.values())
            result.unmapped += chunk.unmapped
            result.quarantined += sum(chunk.by_reason.values())
            result.unchanged += chunk.skipped
            if chunk.high_water is not None and (high_water is None or chunk.high_water > high_water):
                high_water = chunk.high_water
            if chunk.reports:
                if on_reports is None:
                    raise ValueError("a page of case reports needs on_reports")
                taken = on_reports(cur, chunk.reports)
                result.inserted += taken
                result.unchanged += len(chunk.reports) - taken
            if chunk.n_rows and entity == ROSTER:
                _stage(cur, f"stage_{table}", columns)
                inserted, updated = upsert_officers(
                    cur, source=source, run_id=run_id, rows_text=chunk.rows_text
                )
                result.inserted += inserted
                result.updated += updated
                result.unchanged += chunk.n_rows - inserted - updated
            elif chunk.n_rows:
                upsert_text, fresh = chunk.rows_text, frozenset[str]()
                if chunk.new_text and _copy_new(cur, table, columns, source, run_id, chunk.new_text):
                    result.inserted += len(chunk.new_ids)
                    fresh = frozenset(chunk.new_ids)
                else:
                    upsert_text += chunk.new_text
                if upsert_text:
                    _stage(cur, f"stage_{table}", columns)
                    copy_from_text(cur, f"stage_{table}", columns, upsert_text)
                    cur.execute(_upsert_sql(table, columns), {"source": source, "run": run_id})
                    inserted, updated = fetch_one(cur)
                    result.inserted += int(inserted)
                    result.updated += int(updated)
                    result.unchanged += chunk.n_rows - len(fresh) - int(inserted) - int(updated)
                _field_problems(
                    cur, table=table, source=source, entity=entity, run_id=run_id, chunk=chunk, fresh=fresh
                )
            if chunk.rejects_text:
                _stage(cur, "stage_quarantine", QUARANTINE_COLUMNS)
                copy_from_text(cur, "stage_quarantine", QUARANTINE_COLUMNS, chunk.rejects_text)
                cur.execute(
                    f"""
                    INSERT INTO quarantine (source, entity, run_id, last_run_id, {", ".join(QUARANTINE_COLUMNS)})
                    SELECT %(source)s, %(entity)s, %(run)s, %(run)s, {", ".join("s." + c for c in QUARANTINE_COLUMNS)}
                    FROM stage_quarantine s
                    ON CONFLICT (source, entity, raw_hmac, reason_code) WHERE resolved_at IS NULL DO NOTHING
                    """,
                    {"source": source, "entity": entity, "run": run_id},
                )
            if snapshot_run_id is not None and chunk.seen:
                copy_from_text(
                    cur,
                    "full_seen",
                    ("run_id", "entity", "source_record_id"),
                    copy_text((snapshot_run_id, entity, rid) for rid in chunk.seen),
                )
        result.loaded = result.inserted + result.updated
        if after_write is not None:
            after_write(cur)
        failpoint("before_commit")
        if advance:
            _advance(
                cur,
                source=source,
                entity=entity,
                since=since,
                cursor_after=cursor_after,
                high_water=high_water,
                snapshot_run_id=snapshot_run_id,
            )
        if cursor_after is None and snapshot_run_id is not None:
            _finish_snapshot(
                cur, source=source, entity=entity, snapshot_run_id=snapshot_run_id, result=result
            )
        if entity == ROSTER:  # officers who left hand their open cases on, in this transaction
            result.released = len(
                release_departed(
                    cur, source=source, rules=rules or rules_from_settings(), actor=f"roster:{source}"
                )
            )
    failpoint("after_commit")
    return result


# -- one run per source at a time --------------------------------------------------------------


def try_lock_source(conn: psycopg2.extensions.connection, source: str) -> bool:
    """Take the source's session advisory lock on ``conn`` (held until it closes or unlocks).

    A process that dies loses its connection and with it the lock, so a crashed run never
    blocks the next night.
    """
    with transaction(conn) as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext('gridflow.sync'), hashtext(%s))", (source,))
        return bool(fetch_one(cur)[0])


def mark_crashed_runs(conn: psycopg2.extensions.connection, *, source: str) -> int:
    """Runs left 'running' by a process that died (call only while holding the source lock)."""
    with transaction(conn) as cur:
        cur.execute(
            "UPDATE sync_run SET status = 'crashed', finished_at = now(),"
            " error = 'the sync process stopped before finishing; the next run resumed from its last committed page'"
            " WHERE source = %s AND status = 'running'",
            (source,),
        )
        return cur.rowcount


def recent_volumes(
    cur: psycopg2.extensions.cursor, *, source: str, entity: str, mode: str, limit: int = 7
) -> list[int]:
    """Records received per completed run of this source/entity/mode, newest first (for the
    suspicious-volume check)."""
    cur.execute(
        """
        SELECT (counts -> 'by_entity' -> %(entity)s ->> 'received')::int FROM sync_run
        WHERE source = %(source)s AND mode = %(mode)s AND status = 'completed'
          AND counts -> 'by_entity' ? %(entity)s
        ORDER BY id DESC LIMIT %(limit)s
        """,
        {"source": source, "entity": entity, "mode": mode, "limit": limit},
    )
    return [int(r[0]) for r in cur.fetchall()]
