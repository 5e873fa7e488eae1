"""Store side of quarantine reprocessing: which rows to re-take, their raw records, and settling
each row once the re-taken records went through the sync's page write.

The flow (``flows/quarantine_reprocess.py``) fetches the current version of each record from its
source (or falls back to the stored raw record), prepares it with the sync's own chunk pipeline
and writes it with :func:`grid.sync.store.write_page`, leaving the source cursor where it was.
Then :func:`settle` decides per quarantine row, in one transaction:

========================  =====================================================================
outcome                   what happens to the quarantine row(s) of the record
========================  =====================================================================
``reprocessed``           the record is now in the store (worker / enterprise row, or a case
                          taken in): ``resolved_at`` set, ``resolution = 'reprocessed'``
``still_quarantined``     still invalid: the newest row of the record takes the new reason,
                          field, detail and (encrypted) raw version; ``seen_count`` + 1
``superseded``            still invalid, and another open row already holds exactly that
                          version and reason: that row's ``seen_count`` + 1, this one resolved
                          as ``superseded``
``no_record_id``          a row without a source record id cannot be re-fetched or upserted:
                          it stays, ``seen_count`` + 1
========================  =====================================================================

Every re-taken row gets ``reprocessed_at`` and ``reprocess_count`` + 1. Rows already resolved are
skipped, so a second reprocess of the same ids changes no content (only bookkeeping of rows that
are still quarantined). Quarantine ids are the only thing flow parameters carry.

Field problems (``field_problem``, records loaded with one field empty) are reprocessed the same
way, by their own ids: the record is re-fetched from the source by its id and written through the
same page path, which settles the problem as ``fixed`` when the newer version has a valid value
(:func:`grid.sync.store.write_page`). Outcomes: ``field_fixed``, ``field_still_bad`` (the source
still sends a bad value, or no newer version), ``field_not_refetchable`` (the source cannot answer
by id: a loaded record keeps no raw row to re-read, so the problem waits for the next version).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions

from grid.ingest import RAW_PURPOSE
from grid.people import Vault
from grid.store.copy import bytea_field, parse_copy_text
from grid.sync.store import QUARANTINE_COLUMNS

MAX_IDS = 1000
_TABLES = {"workers": "worker", "enterprises": "enterprise", "grid_officers": "officer"}


class ReprocessError(RuntimeError):
    """A reprocess request that cannot be carried out (one clear sentence, no personal data)."""


@dataclass(frozen=True)
class QuarantinedRow:
    id: int
    source: str
    entity: str
    source_record_id: str | None
    reason_code: str
    raw_enc: bytes
    last_run_id: int


@dataclass(frozen=True)
class RejectRow:
    """One reject of a prepared chunk, read back from its COPY text (``QUARANTINE_COLUMNS``)."""

    source_record_id: str | None
    reason_code: str
    field: str | None
    detail: str
    raw_hmac: bytes
    raw_enc: bytes


def check_ids(ids: Iterable[Any], *, allow_empty: bool = False) -> list[int]:
    """Distinct positive quarantine (or field problem) ids in order; a clear error for anything
    else (and for none, unless ``allow_empty``)."""
    out: list[int] = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ReprocessError("quarantine ids must be whole numbers")
        try:
            n = int(value)
        except ValueError:
            raise ReprocessError("quarantine ids must be whole numbers") from None
        if n <= 0:
            raise ReprocessError("quarantine ids must be positive")
        if n not in out:
            out.append(n)
    if not out and not allow_empty:
        raise ReprocessError("choose at least one quarantined record")
    if len(out) > MAX_IDS:
        raise ReprocessError(f"at most {MAX_IDS} records can be reprocessed at once")
    return out


def load_open(cur: psycopg2.extensions.cursor, *, ids: Sequence[int]) -> list[QuarantinedRow]:
    """The still-open quarantine rows among ``ids`` (resolved ones are skipped), by source/entity."""
    cur.execute(
        "SELECT id, source, entity, source_record_id, reason_code, raw_enc, last_run_id FROM quarantine"
        " WHERE id = ANY(%s) AND resolved_at IS NULL ORDER BY source, entity, id",
        (list(ids),),
    )
    return [
        QuarantinedRow(int(i), s, e, rid, reason, bytes(raw), int(last))
        for i, s, e, rid, reason, raw, last in cur.fetchall()
    ]


def raw_record(vault: Vault, raw_enc: bytes) -> dict[str, Any]:
    """The raw source record of a quarantine row (for re-validation only; never log it)."""
    value = json.loads(vault.decrypt(raw_enc, purpose=RAW_PURPOSE))
    if not isinstance(value, dict):
        raise ReprocessError("a stored raw record is not an object")
    return value


def _bytea(field: str | None) -> bytes:
    try:
        return bytea_field(field)
    except ValueError:
        raise ReprocessError("a reject line has no bytea value where one is expected") from None


def parse_rejects(text: str) -> list[RejectRow]:
    """The rejects of a :class:`grid.sync.store.PreparedChunk` (``rejects_text``)."""
    rows: list[RejectRow] = []
    for parts in parse_copy_text(text):
        if parts == [""]:
            continue  # a blank line holds no reject
        if len(parts) != len(QUARANTINE_COLUMNS):
            raise ReprocessError("a reject line does not have the quarantine columns")
        rid, reason, field, detail, mac, enc = parts
        rows.append(RejectRow(rid, reason or "", field, detail or "", _bytea(mac), _bytea(enc)))
    return rows


def present_records(
    cur: psycopg2.extensions.cursor, *, source: str, entity: str, ids: Sequence[str]
) -> set[str]:
    """Record ids the store now holds (live worker/enterprise rows, or case reports taken in)."""
    if not ids:
        return set()
    if entity == "cases":
        cur.execute(
            "SELECT source_ref FROM case_intake WHERE source_ref = ANY(%s)",
            ([f"{source}:{i}" for i in ids],),
        )
        return {str(r[0]).split(":", 1)[1] for r in cur.fetchall()}
    table = _TABLES.get(entity)
    if table is None:
        raise ReprocessError(f"unknown entity {entity!r}")
    cur.execute(
        f"SELECT source_record_id FROM {table} WHERE source = %s AND source_record_id = ANY(%s)"
        " AND deleted_at IS NULL",
        (source, list(ids)),
    )
    return {r[0] for r in cur.fetchall()}


def settle(
    cur: psycopg2.extensions.cursor,
    *,
    run_id: int,
    rows: Sequence[QuarantinedRow],
    rejects: Sequence[RejectRow],
    present: set[str],
) -> Counter[str]:
    """Resolve or update each quarantine row of one source/entity after the page write (see the
    module table). Returns counts by outcome."""
    outcome: Counter[str] = Counter()
    by_rid: dict[str, list[QuarantinedRow]] = {}
    for q in rows:
        if q.source_record_id is None:
            cur.execute(
                "UPDATE quarantine SET seen_count = seen_count + 1, last_run_id = %s, reprocessed_at = now(),"
                " reprocess_count = reprocess_count + 1 WHERE id = %s AND resolved_at IS NULL",
                (run_id, q.id),
            )
            outcome["no_record_id"] += 1
            continue
        by_rid.setdefault(q.source_record_id, []).append(q)
    rejected: dict[str, RejectRow] = {}
    for r in rejects:
        if r.source_record_id is not None:
            rejected.setdefault(r.source_record_id, r)
    for rid, group in by_rid.items():
        ids = [q.id for q in group]
        rej = rejected.get(rid)
        if rej is None and rid in present:
            cur.execute(
                "UPDATE quarantine SET resolved_at = now(), resolution = 'reprocessed', reprocessed_at = now(),"
                " reprocess_count = reprocess_count + 1 WHERE id = ANY(%s) AND resolved_at IS NULL",
                (ids,),
            )
            outcome["reprocessed"] += len(group)
            continue
        cur.execute(
            "UPDATE quarantine SET reprocessed_at = now(), reprocess_count = reprocess_count + 1"
            " WHERE id = ANY(%s) AND resolved_at IS NULL",
            (ids,),
        )
        if rej is None:  # neither loaded nor rejected (cannot happen with a well-formed input)
            outcome["still_quarantined"] += len(group)
            continue
        primary = max(group, key=lambda q: (q.last_run_id, q.id))
        q0 = group[0]
        cur.execute(
            "SELECT id FROM quarantine WHERE source = %s AND entity = %s AND raw_hmac = %s AND reason_code = %s"
            " AND resolved_at IS NULL AND id <> %s",
            (q0.source, q0.entity, rej.raw_hmac, rej.reason_code, primary.id),
        )
        twin = cur.fetchone()
        if twin is not None:
            cur.execute(
                "UPDATE quarantine SET seen_count = seen_count + 1, last_run_id = %s WHERE id = %s",
                (run_id, twin[0]),
            )
            cur.execute(
                "UPDATE quarantine SET resolved_at = now(), resolution = 'superseded' WHERE id = %s",
                (primary.id,),
            )
            outcome["superseded"] += 1
        else:
            cur.execute(
                """
                UPDATE quarantine SET reason_code = %s, field = %s, detail = %s, raw_hmac = %s, raw_enc = %s,
                    seen_count = seen_count + 1, last_run_id = %s
                WHERE id = %s
                """,
                (rej.reason_code, rej.field, rej.detail, rej.raw_hmac, rej.raw_enc, run_id, primary.id),
            )
            outcome["still_quarantined"] += 1
        outcome["still_quarantined"] += len(group) - 1
    return outcome


def record_request(
    cur: psycopg2.extensions.cursor, *, source: str, ids: Sequence[int], requested_by: str
) -> int:
    """A reprocess request row (ids only); returns its id."""
    cur.execute(
        "INSERT INTO reprocess_request (source, quarantine_ids, requested_by) VALUES (%s, %s, %s) RETURNING id",
        (source, list(ids), requested_by),
    )
    row = cur.fetchone()
    if row is None:
        raise ReprocessError("the reprocess request was not recorded")
    return int(row[0])


def request_started(cur: psycopg2.extensions.cursor, *, request_id: int, flow_run_id: str) -> None:
    cur.execute(
        "UPDATE reprocess_request SET flow_run_id = %s, status = 'running' WHERE id = %s AND status = 'requested'",
        (flow_run_id, request_id),
    )


def request_finished(
    cur: psycopg2.extensions.cursor,
    *,
    request_id: int,
    outcome: Mapping[str, int],
    error: str | None = None,
    flow_run_id: str | None = None,
) -> None:
    result: dict[str, Any] = dict(outcome)
    if error:
        result["error"] = error
    cur.execute(
        "UPDATE reprocess_request SET status = %s, result = %s, finished_at = now(),"
        " flow_run_id = coalesce(flow_run_id, %s) WHERE id = %s",
        ("failed" if error else "completed", json.dumps(result), flow_run_id, request_id),
    )


REPROCESS_DEPLOYMENT = "quarantine-reprocess/on-demand"


def start_flow_run(*, quarantine_ids: Sequence[int], request_id: int) -> str:
    """Start a run of the ``quarantine-reprocess/on-demand`` deployment through the Prefect API
    (parameters: quarantine row ids and the request id — no personal data); its id."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(REPROCESS_DEPLOYMENT)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"quarantine_ids": list(quarantine_ids), "request_id": request_id},
            tags=["gridflow", "reprocess"],
        )
    return str(run.id)


def flow_run_state(flow_run_id: str) -> str | None:
    """The Prefect state name of a flow run (None if the API cannot say)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
    except Exception:
        return None
    return run.state.name if run.state else None


def rows_to_retake(
    group: Sequence[QuarantinedRow],
    ids: Sequence[str],
    fresh: Mapping[str, dict[str, Any]] | None,
    vault: Vault,
) -> tuple[list[dict[str, Any]], int]:
    """The raw row to re-take for each record id: the source's current version when it answered by
    id, else the stored raw record of the record's newest quarantine row (latest run, then id).
    Returns the rows, in ``ids`` order, and how many came from the source."""
    newest: dict[str, QuarantinedRow] = {}
    for q in group:
        if q.source_record_id is not None:
            best = newest.get(q.source_record_id)
            if best is None or (q.last_run_id, q.id) > (best.last_run_id, best.id):
                newest[q.source_record_id] = q
    rows: list[dict[str, Any]] = []
    fetched = 0
    for rid in ids:
        if fresh is not None and rid in fresh:
            rows.append(fresh[rid])
            fetched += 1
        else:
            rows.append(raw_record(vault, newest[rid].raw_enc))
    return rows, fetched


# -- field problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldProblemRow:
    id: int
    source: str
    entity: str
    source_record_id: str
    field: str
    reason_code: str


def load_open_field_problems(cur: psycopg2.extensions.cursor, *, ids: Sequence[int]) -> list[FieldProblemRow]:
    """The still-open field problems among ``ids`` (settled ones are skipped), by source/entity."""
    cur.execute(
        "SELECT id, source, entity, source_record_id, field, reason_code FROM field_problem"
        " WHERE id = ANY(%s) AND settled_at IS NULL ORDER BY source, entity, id",
        (list(ids),),
    )
    return [FieldProblemRow(int(i), s, e, rid, f, r) for i, s, e, rid, f, r in cur.fetchall()]


def settle_field_problems(
    cur: psycopg2.extensions.cursor, *, rows: Sequence[FieldProblemRow], refetched: set[str]
) -> Counter[str]:
    """After the page write that re-took the records (in its transaction): bookkeeping of each
    chosen row and its outcome (see the module docstring). The write itself settled the fixed ones."""
    outcome: Counter[str] = Counter()
    if not rows:
        return outcome
    cur.execute(
        "UPDATE field_problem SET reprocessed_at = now(), reprocess_count = reprocess_count + 1"
        " WHERE id = ANY(%s) RETURNING id, settled_at IS NOT NULL",
        ([r.id for r in rows],),
    )
    settled = {int(i): bool(done) for i, done in cur.fetchall()}
    for r in rows:
        if settled.get(r.id):
            outcome["field_fixed"] += 1
        elif r.source_record_id in refetched:
            outcome["field_still_bad"] += 1
        else:
            outcome["field_not_refetchable"] += 1
    return outcome
