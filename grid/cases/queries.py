"""Reading cases: one case with its events, lists of cases, the supervision ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import psycopg2.extensions

from connectors.kinds import CaseKind, Severity
from geodata.codes import (
    Level,
)
from grid.cases.owners import scope_prefix
from grid.cases.states import (
    SQL_AWAITING,
    SQL_OPEN,
    Action,
    Event,
    State,
    replay,
)
from grid.cases.store import CaseNotFound, Conn, Cursor
from grid.store.db import fetch_named, transaction


@dataclass(frozen=True, slots=True)
class CaseListRow:
    """One case in a list: the row of the officer inbox and subtree pages, the API's case list
    and ``gridflow cases list`` alike (read with :data:`CASE_LIST_COLUMNS`; times left by the
    database clock at the time of the query; ``respond_seconds_left`` only while the case waits to
    be accepted, else None)."""

    id: int
    kind: str
    severity: str
    state: str
    level: int
    owner_code: str
    chain_code: str
    version: int
    opened_at: datetime
    resolve_by: datetime
    overdue: bool
    respond_by: datetime
    deadlines_provisional: bool  # 暂定: counted on a year without the official holiday list
    resolve_seconds_left: int  # < 0 once overdue
    respond_seconds_left: int | None


#: The SELECT list of :class:`CaseListRow`, in its field order, on ``case_file``.
CASE_LIST_COLUMNS: Final = (
    "id, kind, severity, state, level, owner_code, chain_code, version, opened_at, resolve_by, "
    f"({SQL_OPEN} AND resolve_by < now()), respond_by, deadlines_provisional, "
    "floor(extract(epoch FROM resolve_by - now()))::int, "
    f"CASE WHEN {SQL_AWAITING} THEN floor(extract(epoch FROM respond_by - now()))::int END"
)


@dataclass(frozen=True, slots=True)
class CaseDetail:
    """A case for display: no raw personal data (the worker only as the masked ID, if known)."""

    id: int
    kind: CaseKind
    family: str
    severity: Severity
    hardship_grade: str | None
    workers_affected: int
    amount: Decimal | None
    channel: str
    cell_code: str | None
    cell_version_id: int | None
    division_code: str
    chain_code: str
    level: Level
    owner_code: str
    state: State
    version: int
    dual_report: bool
    routing: dict[str, Any]
    worker_masked: str | None
    has_worker: bool
    enterprise_uscc: str | None
    outcome: str | None
    opened_at: datetime
    respond_by: datetime
    resolve_by: datetime
    mediation_window_ends: datetime | None
    deadlines_provisional: bool
    head_hash: str
    amount_recovered: Decimal | None = None
    #: The enterprise's registered name (the ``enterprise`` row of its credit code, if loaded).
    enterprise_name: str | None = None
    #: The report's address, masked (``grid.people.mask_address``); the full one is sealed.
    address_masked: str | None = None
    #: A sealed description / amount claimed / address (``case_file.details_enc``) exists.
    has_details: bool = False
    owner_officer: int | None = None  # the roster's officer when a cell owns the case


def get_case(conn: Conn, *, case_id: int, scope: str | None = None) -> CaseDetail:
    """One case; with ``scope`` a case outside it is reported as not found."""
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT c.id, c.kind, c.family, c.severity, c.hardship_grade, c.workers_affected, c.amount,
                   c.channel, c.cell_code, c.cell_version_id, c.division_code, c.chain_code, c.level,
                   c.owner_code, c.state, c.version, c.dual_report, c.routing,
                   (SELECT w.id_masked FROM worker w WHERE w.id_hmac = c.worker_hmac
                     ORDER BY w.updated_at DESC LIMIT 1) AS worker_masked,
                   c.worker_hmac IS NOT NULL AS has_worker, c.enterprise_uscc, c.outcome, c.opened_at,
                   c.respond_by, c.resolve_by, c.mediation_window_ends, c.deadlines_provisional, c.head_hash,
                   c.amount_recovered,
                   c.enterprise_name,
                   c.address_masked, c.details_enc IS NOT NULL AS has_details,
                   c.owner_officer
            FROM case_file c WHERE c.id = %s
            """,
            (case_id,),
        )
        row = fetch_named(cur)
    if row is None or (scope is not None and not str(row["chain_code"]).startswith(scope_prefix(scope))):
        raise CaseNotFound(case_id)
    return CaseDetail(
        id=int(row["id"]),
        kind=CaseKind(row["kind"]),
        family=str(row["family"]),
        severity=Severity(row["severity"]),
        hardship_grade=row["hardship_grade"],
        workers_affected=int(row["workers_affected"]),
        amount=row["amount"],
        channel=str(row["channel"]),
        cell_code=row["cell_code"],
        cell_version_id=row["cell_version_id"],
        division_code=str(row["division_code"]),
        chain_code=str(row["chain_code"]),
        level=Level(int(row["level"])),
        owner_code=str(row["owner_code"]),
        state=State(row["state"]),
        version=int(row["version"]),
        dual_report=bool(row["dual_report"]),
        routing=dict(row["routing"]),
        worker_masked=row["worker_masked"],
        has_worker=bool(row["has_worker"]),
        enterprise_uscc=row["enterprise_uscc"],
        outcome=row["outcome"],
        opened_at=row["opened_at"],
        respond_by=row["respond_by"],
        resolve_by=row["resolve_by"],
        mediation_window_ends=row["mediation_window_ends"],
        deadlines_provisional=bool(row["deadlines_provisional"]),
        head_hash=str(row["head_hash"]),
        amount_recovered=row["amount_recovered"],
        enterprise_name=row["enterprise_name"],
        address_masked=row["address_masked"],
        has_details=bool(row["has_details"]),
        owner_officer=None if row["owner_officer"] is None else int(row["owner_officer"]),
    )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with the replayed owner columns kept beside it."""

    event: Event
    owner_before: str | None
    owner_after: str
    level_after: Level


_EVENT_COLUMNS = (
    "case_id, seq, action, from_state, to_state, actor, at, payload, prev_hash, hash, "
    "owner_before, owner_after, level_after"
)


def _stored(r: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        Event(
            case_id=str(r[0]),
            seq=int(r[1]),
            action=Action(r[2]),
            from_state=None if r[3] is None else State(r[3]),
            to_state=State(r[4]),
            actor=str(r[5]),
            at=r[6],
            payload=dict(r[7]),
            prev_hash=str(r[8]),
            hash=str(r[9]),
        ),
        r[10],
        str(r[11]),
        Level(int(r[12])),
    )


def events_of(conn_or_cur: Conn | Cursor, *, case_id: int) -> list[StoredEvent]:
    """A case's full history in order."""
    sql = f"SELECT {_EVENT_COLUMNS} FROM case_event WHERE case_id = %s ORDER BY seq"
    if isinstance(conn_or_cur, psycopg2.extensions.connection):
        with transaction(conn_or_cur) as cur:
            cur.execute(sql, (case_id,))
            rows = cur.fetchall()
    else:
        conn_or_cur.execute(sql, (case_id,))
        rows = conn_or_cur.fetchall()
    return [_stored(r) for r in rows]


def events_by_case(cur: Cursor) -> dict[int, list[StoredEvent]]:
    """Every case's full history in order, in one query (what :func:`events_of` gives per case)."""
    cur.execute(f"SELECT {_EVENT_COLUMNS} FROM case_event ORDER BY case_id, seq")
    out: dict[int, list[StoredEvent]] = {}
    for r in cur.fetchall():
        out.setdefault(int(r[0]), []).append(_stored(r))
    return out


@dataclass(frozen=True, slots=True)
class Replayed:
    """The row fields the events determine."""

    state: State
    level: Level
    owner_code: str
    version: int
    head_hash: str
    chain_code: str


def fold(events: Sequence[Event]) -> Replayed:
    """Replay a history (verifying every hash) into the row fields it determines."""
    st = replay(events, verify=True)
    chain = ""
    for ev in events:
        if "chain_code" in ev.payload and ev.payload["chain_code"] is not None:
            chain = str(ev.payload["chain_code"])
    return Replayed(st.state, st.level, st.owner_code, st.version, st.last_hash, chain)


def list_cases(
    conn: Conn,
    *,
    scope: str,
    states: Sequence[State] | None = None,
    limit: int = 100,
) -> list[CaseListRow]:
    """Cases on chains within ``scope`` (the scope filter is part of the query), newest first."""
    prefix = scope_prefix(scope)
    wanted = [s.value for s in (states or list(State))]
    with transaction(conn) as cur:
        cur.execute(
            f"""
            SELECT {CASE_LIST_COLUMNS}
            FROM case_file
            WHERE chain_code LIKE %s AND state = ANY(%s)
            ORDER BY opened_at DESC, id DESC LIMIT %s
            """,
            (prefix + "%", wanted, limit),
        )
        return [CaseListRow(*r) for r in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One unit's month of the supervision ledger: the row of the service query, the ledger page
    and the API alike."""

    unit_code: str
    name: str | None
    period: str
    received: int
    responded: int
    resolved: int
    on_time: int
    escalated: int
    reminded: int
    criticised: int


def ledger(conn: Conn, *, scope: str, period: str | None = None) -> list[LedgerRow]:
    """The supervision ledger (received, responded, resolved, on time, escalated, reminded,
    criticised) per unit within ``scope`` and month ``YYYY-MM`` (local time)."""
    with transaction(conn) as cur:
        return read_ledger(
            cur,
            where="l.unit_code LIKE %s",
            args=[scope_prefix(scope) + "%"],
            period=period,
            order="l.unit_code, l.period",
        )


def read_ledger(
    cur: Cursor,
    *,
    where: str,
    args: Sequence[Any],
    period: str | None,
    order: str,
    limit: int | None = None,
    offset: int = 0,
) -> list[LedgerRow]:
    """Ledger rows matching ``where`` over ``supervision_ledger l``, with each unit's name (a
    cell's name for a grid officer's row)."""
    cur.execute(
        f"""
        SELECT l.unit_code, coalesce(u.name, g.name), l.period, l.received, l.responded, l.resolved,
               l.on_time, l.escalated, l.reminded, l.criticised
        FROM supervision_ledger l LEFT JOIN unit u ON u.code = l.unit_code
        LEFT JOIN grid_cell g ON g.code = l.unit_code AND g.valid_to IS NULL
        WHERE {where} AND (%s::text IS NULL OR l.period = %s)
        ORDER BY {order}{"" if limit is None else f" LIMIT {int(limit)}"}{f" OFFSET {int(offset)}" if offset else ""}
        """,
        [*args, period, period],
    )
    return [
        LedgerRow(str(r[0]), None if r[1] is None else str(r[1]), str(r[2]), *(int(x) for x in r[3:]))
        for r in cur.fetchall()
    ]
