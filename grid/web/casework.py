"""Case queries and commands for the web, always within a principal's scope.

Every function takes a connection working as ``gridflow_app`` and first states the principal's
scope for the transaction (:func:`apply_scope`, the database lock); the queries carry the same
scope filter themselves (the application lock). ``unscoped=True`` is for the authorisation test
only: it drops the application filter so that row-level security alone decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg2.extensions

from connectors.kinds import CaseKind, Outcome
from geodata.codes import chain_codes, level_of
from grid.accounts.access import (
    OWNER_ACTIONS,
    SUPERVISOR_ACTIONS,
    Principal,
    Role,
    apply_scope,
    reveal_reason,
)
from grid.cases import actions, queries, store
from grid.cases.amounts import AmountError, parse_yuan
from grid.cases.owners import units_exist
from grid.cases.queries import CASE_LIST_COLUMNS, CaseDetail, CaseListRow
from grid.cases.routing import RoutingError
from grid.cases.states import (
    DONE_STATES,
    SQL_OPEN,
    Action,
    State,
    TransitionError,
    allowed_actions,
    transition,
)
from grid.cases.store import CaseRules
from grid.ingest import decrypt_worker_pii
from grid.people import Vault
from grid.store.db import transaction

Conn = psycopg2.extensions.connection

REVEAL_FIELDS: Final = {"worker_id": "id_number", "worker_phone": "phone", "worker_name": "name"}


class NotFound(LookupError):
    """No such case, or not within the caller's scope (the two are never told apart)."""


class Forbidden(PermissionError):
    """The case is visible but the caller may not do this to it."""


class Conflict(RuntimeError):
    """The case changed since the form was loaded (``stale``), or the action is not allowed in its state."""

    def __init__(
        self, message: str, *, actual_version: int | None = None, allowed: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.actual_version = actual_version
        self.allowed = allowed or []

    @property
    def stale(self) -> bool:
        return self.actual_version is not None


class BadRequest(ValueError):
    """Missing or malformed input."""


class Unprocessable(BadRequest):
    """Input of the right shape that is no acceptable value (an amount that is no amount): 422,
    with a sentence in Chinese for the officer (``zh``) and one in English (the message)."""

    def __init__(self, message: str, *, zh: str, field: str) -> None:
        super().__init__(message)
        self.zh = zh
        self.field = field


def _filter(p: Principal, *, unscoped: bool, column: str = "chain_code") -> tuple[str, list[Any]]:
    if unscoped:
        return "true", []
    if p.role is Role.GRID_OFFICER:
        return f"{column} = ANY(%s)", [list(p.cells)]
    return f"{column} LIKE %s", [p.prefix + "%"]


# ----------------------------------------------------------------------------- inbox


#: Rows per page of a case list on the web pages; the API takes a ``limit`` of up to ``MAX_PAGE``.
PAGE = 200
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Inbox:
    rows: list[CaseListRow]
    counts: dict[str, int] = field(default_factory=dict)
    overdue: int = 0
    total: int = 0
    #: Cases matching the status filter too (``rows`` is the page of them from ``offset``).
    matched: int = 0
    offset: int = 0

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.rows) < self.matched


def inbox(
    conn: Conn,
    p: Principal,
    *,
    view: str = "mine",
    kind: str | None = None,
    status: str = "open",
    owner_prefix: str | None = None,
    limit: int = PAGE,
    offset: int = 0,
    unscoped: bool = False,
) -> Inbox:
    """Cases sorted by deadline (open first), overdue marked; counts by state for the same filter.

    ``view='mine'``: cases the principal owns (an officer: its cells); ``'subtree'``: everything in
    scope, optionally under ``owner_prefix``. One page of ``limit`` rows from ``offset`` (the
    order is total: deadline, then case id)."""
    if limit < 1:
        raise BadRequest("limit must be at least 1")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    where, args = _filter(p, unscoped=unscoped)
    clauses, params = [where], list(args)
    if view == "mine" and not unscoped and p.role is not Role.GRID_OFFICER:
        clauses.append("owner_code = %s")
        params.append(p.scope_code)
    elif view == "mine" and not unscoped:  # an officer: its cells' cases the roster gave it (or nobody)
        clauses.append("(owner_officer IS NULL OR owner_officer = %s)")
        params.append(p.officer_id or 0)
    if owner_prefix:
        if not owner_prefix.isdigit():
            raise BadRequest("owner filter must be digits")
        clauses.append("owner_code LIKE %s")
        params.append(owner_prefix + "%")
    if kind:
        try:
            CaseKind(kind)
        except ValueError:
            raise BadRequest(f"unknown kind {kind!r}") from None
        clauses.append("kind = %s")
        params.append(kind)
    base = " AND ".join(clauses)
    state_clause, state_params = "true", []
    if status == "open":
        state_clause = SQL_OPEN
    elif status != "all":
        try:
            State(status)
        except ValueError:
            raise BadRequest(f"unknown status {status!r}") from None
        state_clause, state_params = "state = %s", [status]
    apply_scope(conn, p)
    with transaction(conn) as cur:
        cur.execute(
            f"""
            SELECT {CASE_LIST_COLUMNS}
            FROM case_file WHERE {base} AND {state_clause}
            ORDER BY NOT ({SQL_OPEN}), resolve_by, id LIMIT %s OFFSET %s
            """,
            [*params, *state_params, limit, offset],
        )
        rows = [CaseListRow(*r) for r in cur.fetchall()]
        cur.execute(
            f"""
            SELECT state, count(*), count(*) FILTER (WHERE {SQL_OPEN} AND resolve_by < now())
            FROM case_file WHERE {base} GROUP BY state
            """,
            params,
        )
        counts: dict[str, int] = {}
        overdue = 0
        for st, n, od in cur.fetchall():
            counts[str(st)] = int(n)
            overdue += int(od)
    if status == "open":
        matched = sum(n for st, n in counts.items() if State(st) not in DONE_STATES)
    elif status == "all":
        matched = sum(counts.values())
    else:
        matched = counts.get(status, 0)
    return Inbox(rows, counts, overdue, sum(counts.values()), matched, offset)


# ----------------------------------------------------------------------------- case page


@dataclass(frozen=True, slots=True)
class Party:
    id_masked: str | None
    name_masked: str | None
    phone_masked: str | None


@dataclass(frozen=True, slots=True)
class TimelineItem:
    seq: int
    action: str
    from_state: str | None
    to_state: str
    actor: str
    at: datetime
    payload: dict[str, Any]
    owner_after: str


@dataclass(frozen=True, slots=True)
class ChainUnit:
    code: str
    level: int
    name: str | None
    active: bool
    is_owner: bool


@dataclass(frozen=True, slots=True)
class CasePage:
    case: CaseDetail
    timeline: list[TimelineItem]
    chain: list[ChainUnit]
    party: Party | None
    svg: str | None
    owner_actions: list[str]
    supervisor_actions: list[str]
    may_reveal: bool
    overdue: bool


def _visible_case(conn: Conn, p: Principal, case_id: int, *, unscoped: bool = False) -> CaseDetail:
    apply_scope(conn, p)
    try:
        detail = queries.get_case(conn, case_id=case_id)
    except store.CaseNotFound:
        raise NotFound(case_id) from None
    if not unscoped and not p.sees(detail.chain_code):
        raise NotFound(case_id)
    return detail


def _svg(cur: psycopg2.extensions.cursor, case_id: int, cell_code: str | None) -> str | None:
    """A small map: the cell's outline and the case's point, as SVG built by PostGIS (numbers only)."""
    if cell_code is None:
        return None
    cur.execute(
        """
        SELECT ST_AsSVG(g.geom, 0, 6), ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b),
               (SELECT ST_AsSVG(c.geom, 0, 6) FROM case_file c WHERE c.id = %s AND c.geom IS NOT NULL)
        FROM grid_cell g, LATERAL (SELECT ST_Expand(ST_Envelope(g.geom), 0.0005)::box2d AS b) e
        WHERE g.code = %s AND g.valid_to IS NULL
        """,
        (case_id, cell_code),
    )
    row = cur.fetchone()
    if row is None:
        return None
    path, x0, y0, x1, y1, point = row
    w, h = float(x1) - float(x0), float(y1) - float(y0)
    r = max(w, h) / 60
    dot = f'<circle {point} r="{r:.6f}" class="pt"/>' if point else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{float(x0):.6f} {-float(y1):.6f} {w:.6f} {h:.6f}" '
        f'preserveAspectRatio="xMidYMid meet" role="img" class="cellmap">'
        f'<path d="{path}" class="cell" vector-effect="non-scaling-stroke"/>{dot}</svg>'
    )


def case_page(conn: Conn, p: Principal, case_id: int) -> CasePage:
    detail = _visible_case(conn, p, case_id)
    apply_scope(conn, p)
    with transaction(conn) as cur:
        cur.execute(
            "SELECT seq, action, from_state, to_state, actor, at, payload, owner_after "
            "FROM case_event_scoped WHERE case_id = %s ORDER BY seq",
            (case_id,),
        )
        timeline = [TimelineItem(*r) for r in cur.fetchall()]
        codes = chain_codes(detail.chain_code)
        cur.execute("SELECT code, level, name, active FROM unit WHERE code = ANY(%s)", (codes,))
        units = {str(r[0]): r for r in cur.fetchall()}
        officers = {c for c, ok in units_exist(cur, [c for c in codes if len(c) == 15]).items() if ok}
        chain = []
        for c in codes:
            u = units.get(c)
            lv = int(level_of(c))
            chain.append(
                ChainUnit(
                    c,
                    lv,
                    None if u is None else str(u[2]),
                    bool(u and u[3]) or c in officers,
                    c == detail.owner_code,
                )
            )
        party = None
        if detail.has_worker and p.may_reveal:
            cur.execute(
                """
                SELECT w.id_masked, w.name_masked, w.phone_masked FROM worker w
                WHERE w.id_hmac = (SELECT worker_hmac FROM case_file WHERE id = %s)
                ORDER BY w.updated_at DESC LIMIT 1
                """,
                (case_id,),
            )
            r = cur.fetchone()
            party = Party(*r) if r else Party(detail.worker_masked, None, None)
        svg = _svg(cur, case_id, detail.cell_code)
    state = detail.state

    def may(a: Action) -> bool:
        return p.may(
            a, chain_code=detail.chain_code, owner_code=detail.owner_code, owner_officer=detail.owner_officer
        )

    owner_actions = [a.value for a in OWNER_ACTIONS if may(a) and _allowed(state, a)]
    sup = [a.value for a in SUPERVISOR_ACTIONS if may(a) and state not in DONE_STATES]
    overdue = state not in DONE_STATES and detail.resolve_by < datetime.now(UTC)
    return CasePage(detail, timeline, chain, party, svg, owner_actions, sup, p.may_reveal, overdue)


# ----------------------------------------------------------------------------- commands


def _reason(form: dict[str, str], key: str = "reason") -> str:
    text = (form.get(key) or "").strip()
    if len(text) < 2:
        raise BadRequest(f"{key} is required")
    return text[:2000]


def act(
    conn: Conn,
    p: Principal,
    case_id: int,
    action: str,
    form: dict[str, str],
    *,
    rules: CaseRules,
) -> store.ActionResult:
    """Run one case action for ``p`` with the form's expected version; a stale form is a Conflict."""
    try:
        a = Action(action)
    except ValueError:
        raise NotFound(action) from None
    if a not in OWNER_ACTIONS and a not in SUPERVISOR_ACTIONS:
        raise NotFound(action)
    try:
        expected = int(form.get("version", ""))
    except ValueError:
        raise BadRequest("version is required") from None
    detail = _visible_case(conn, p, case_id)
    if not p.may(
        a, chain_code=detail.chain_code, owner_code=detail.owner_code, owner_officer=detail.owner_officer
    ):
        what = "own" if a in OWNER_ACTIONS else "supervise"
        raise Forbidden(f"{p.login} does not {what} case {case_id}")
    common: dict[str, Any] = {
        "case_id": case_id,
        "expected_version": expected,
        "actor": p.login,
        "rules": rules,
    }
    apply_scope(conn, p)
    try:
        match a:
            case Action.ACCEPT:
                return actions.accept(conn, **common)
            case Action.START:
                return actions.start(conn, **common)
            case Action.CLOSE:
                return actions.close(conn, **common)
            case Action.NOTE:
                return actions.note(conn, text=_reason(form, "text"), **common)
            case Action.ESCALATE:
                return actions.escalate(conn, reason=_reason(form), **common)
            case Action.RETURN_TO_PARENT:
                return actions.return_to_parent(conn, reason=_reason(form), **common)
            case Action.REOPEN:
                return actions.reopen(conn, reason=_reason(form), **common)
            case Action.RESOLVE:
                try:
                    outcome = Outcome(form.get("outcome", ""))
                except ValueError:
                    raise BadRequest("outcome is invalid") from None
                try:
                    amount = parse_yuan(form.get("amount_recovered"))
                except AmountError as exc:
                    raise Unprocessable(exc.detail, zh=exc.zh, field="amount_recovered") from None
                return actions.resolve(
                    conn,
                    outcome=outcome,
                    amount_recovered=amount,
                    assistance=(form.get("assistance") or "").strip() or None,
                    **common,
                )
            case Action.URGE:
                return actions.urge(conn, scope=p.scope_code, text=_reason(form, "text"), **common)
            case Action.REASSIGN:
                return actions.reassign(
                    conn,
                    scope=p.scope_code,
                    to_owner=(form.get("to_owner") or "").strip(),
                    reason=_reason(form),
                    **common,
                )
            case _:
                raise NotFound(action)
    except store.StaleCase as exc:
        raise Conflict(str(exc), actual_version=exc.actual) from None
    except TransitionError as exc:
        raise Conflict(str(exc), allowed=[x.value for x in allowed_actions(detail.state)]) from None
    except store.ScopeError as exc:
        raise Forbidden(str(exc)) from None
    except store.CaseNotFound:
        raise NotFound(case_id) from None
    except RoutingError as exc:
        raise BadRequest(str(exc)) from None


def _allowed(state: State, action: Action) -> bool:
    try:
        transition(state, action)
    except TransitionError:
        return False
    return True


def reveal(conn: Conn, p: Principal, case_id: int, field_name: str, reason: str, *, vault: Vault) -> str:
    """Decrypt one masked field of the case's worker; the audit row commits with the read or not at all."""
    if field_name not in REVEAL_FIELDS:
        raise BadRequest(f"unknown field {field_name!r}")
    try:
        reason = reveal_reason(reason)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    detail = _visible_case(conn, p, case_id)
    if not p.may_reveal:
        raise Forbidden(f"role {p.role.value} may not reveal personal data")
    if not detail.has_worker:
        raise NotFound(case_id)
    apply_scope(conn, p)
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT w.pii_enc FROM case_file c JOIN worker w ON w.id_hmac = c.worker_hmac
            WHERE c.id = %s ORDER BY w.updated_at DESC LIMIT 1
            """,
            (case_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise NotFound(case_id)
        cur.execute(
            "INSERT INTO reveal_audit (user_id, login, case_id, field, reason) VALUES (%s, %s, %s, %s, %s)",
            (p.user_id, p.login, case_id, field_name, reason),
        )
        value = decrypt_worker_pii(bytes(row[0]), vault)[REVEAL_FIELDS[field_name]]
    return value or ""


def child_ledger(conn: Conn, p: Principal, *, period: str | None = None) -> list[queries.LedgerRow]:
    """The supervision ledger of the principal's unit and each unit below it, by month."""
    if not p.is_supervisor and p.role is not Role.GRID_OFFICER:
        raise Forbidden("no ledger for this role")
    where, args = _filter(p, unscoped=False, column="l.unit_code")
    apply_scope(conn, p)
    with transaction(conn) as cur:
        return queries.read_ledger(
            cur, where=where, args=args, period=period, order="l.period DESC, l.unit_code", limit=500
        )
