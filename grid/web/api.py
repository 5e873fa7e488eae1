"""JSON API (OpenAPI at /api/openapi.json): the same operations under the same authorisation.

Authentication is the session cookie (``POST /api/v1/session`` opens one and returns the CSRF
token); every state-changing call must send that token in ``X-CSRF-Token``. The document states
both as security schemes (``session``, ``csrf``), the actions as an enum, and every status code an
operation answers with, with its body.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, Security
from fastapi.security import APIKeyCookie, APIKeyHeader
from pydantic import BaseModel, Field

from grid.accounts import access, sessions
from grid.cases.queries import CaseListRow, LedgerRow
from grid.cases.states import Action
from grid.cases.store import ActionResult
from grid.web import casework
from grid.web.deps import client_of, session_of, set_session_cookie, state_of
from grid.web.i18n_deadlines import AWAITING_STATES, seconds_left

router = APIRouter(prefix="/api/v1", tags=["cases"])


#: The session cookie (its name is set per deployment in ``grid.web.app``: ``__Host-gridflow``
#: when cookies are secure). Checked by ``require_session``; declared here for the document.
SESSION_COOKIE = APIKeyCookie(
    name="__Host-gridflow",
    scheme_name="session",
    description="The session cookie set by POST /api/v1/session (HttpOnly, SameSite=Lax).",
    auto_error=False,
)
CSRF_HEADER = APIKeyHeader(
    name="X-CSRF-Token",
    scheme_name="csrf",
    description="The csrf_token of POST /api/v1/session or GET /api/v1/me; required on every POST but the "
    "sign-in.",
    auto_error=False,
)


class ErrorOut(BaseModel):
    detail: str


class ConflictDetail(BaseModel):
    message: str
    stale: bool = Field(description="true: the case changed since `version`; false: not allowed in its state")
    current_version: int | None = None


class ConflictOut(BaseModel):
    detail: ConflictDetail


_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed input (a field or filter that is not one)."},
    401: {"model": ErrorOut, "description": "Not signed in (no live session), or the sign-in failed."},
    403: {
        "model": ErrorOut,
        "description": "CSRF token missing or wrong, or not allowed for the role and scope.",
    },
    404: {
        "model": ErrorOut,
        "description": "No such case in the caller's scope (the two are never told apart).",
    },
    409: {
        "model": ConflictOut,
        "description": "The case changed since `version`, or the action is not allowed now.",
    },
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: _RESPONSES[code] for code in codes}


#: The deepest page a case list may start at (an offset past every case PostgreSQL could count).
MAX_OFFSET = 2**31 - 1


class LoginIn(BaseModel):
    login: str = Field(max_length=64)
    password: str = Field(max_length=256)


class Me(BaseModel):
    login: str
    role: str
    scope_code: str
    cells: list[str]
    csrf_token: str


class InboxOut(BaseModel):
    cases: list[CaseListRow]
    counts: dict[str, int]
    overdue: int
    total: int
    matched: int = Field(description="cases matching every filter; `cases` is the page from `offset`")
    offset: int
    limit: int


class EventOut(BaseModel):
    seq: int
    action: str
    from_state: str | None
    to_state: str
    actor: str
    at: datetime
    payload: dict[str, Any]
    owner_after: str


class ChainOut(BaseModel):
    code: str
    level: int
    name: str | None
    active: bool
    is_owner: bool


class PartyOut(BaseModel):
    id_masked: str | None
    name_masked: str | None
    phone_masked: str | None


class RefusalOut(BaseModel):
    action: str
    code: str = Field(description="why not: a rule of grid.accounts.access (REFUSALS) or `state`")
    allowed: list[str] = Field(description="with `state`: the actions the caller may take now")


class DispatchOut(BaseModel):
    code: str
    name: str | None
    level: int
    open_cases: int
    officers: list[str]


class CaseOut(BaseModel):
    id: int
    kind: str
    severity: str
    state: str
    level: int
    owner_code: str
    chain_code: str
    cell_code: str | None
    version: int
    opened_at: datetime
    respond_by: datetime
    resolve_by: datetime
    deadlines_provisional: bool
    resolve_seconds_left: int
    respond_seconds_left: int | None
    overdue: bool
    workers_affected: int
    enterprise_uscc: str | None
    routing: dict[str, Any]
    timeline: list[EventOut]
    chain: list[ChainOut]
    party: PartyOut | None
    owner_actions: list[str]
    supervisor_actions: list[str]
    may_reveal: bool
    owner_name: str | None
    no_officer: bool = Field(description="the case's cell has no active grid officer: its community owns it")
    names: dict[str, str] = Field(description="display names of the unit and cell codes in this document")
    hardship_grade: str | None
    enterprise_name: str | None
    address_masked: str | None
    has_details: bool = Field(description="a sealed description / amount claimed / address to reveal")
    outcome: str | None
    amount_recovered: Decimal | None
    mediation_window_ends: datetime | None
    refusals: list[RefusalOut]
    dispatch: list[DispatchOut] = Field(description="the pick-list of a reassign (改派), when offered")


class ActionIn(BaseModel):
    version: int
    text: str | None = Field(default=None, max_length=2000)
    reason: str | None = Field(default=None, max_length=2000)
    outcome: str | None = None
    amount_recovered: str | None = None
    assistance: str | None = Field(default=None, max_length=2000)
    to_owner: str | None = Field(default=None, max_length=15)


class ActionOut(BaseModel):
    case_id: int
    version: int
    state: str
    level: int
    owner_code: str


class RevealIn(BaseModel):
    field: Literal[
        "worker_id", "worker_phone", "worker_name", "case_description", "case_amount", "case_address"
    ]
    reason: str = Field(min_length=access.REVEAL_REASON_MIN, max_length=access.REVEAL_REASON_MAX)


class RevealOut(BaseModel):
    field: str
    value: str


def require_session(
    request: Request,
    _cookie: str | None = Security(SESSION_COOKIE),
) -> sessions.Session:
    session = session_of(request)
    if session is None:
        raise HTTPException(401, "not signed in")
    return session


def require_csrf(
    request: Request,
    session: sessions.Session = Depends(require_session),  # noqa: B008
    _token: str | None = Security(CSRF_HEADER),
) -> sessions.Session:
    if not sessions.csrf_ok(session, request.headers.get("X-CSRF-Token")):
        raise HTTPException(403, "CSRF token missing or wrong")
    return session


def _http(exc: Exception) -> HTTPException:
    if isinstance(exc, casework.Unprocessable):
        # the shape FastAPI documents for 422 (HTTPValidationError), the message in Chinese first
        return HTTPException(
            422, [{"loc": ["body", exc.field], "msg": f"{exc.zh}（{exc}）", "type": "value_error"}]
        )
    if isinstance(exc, casework.NotFound):
        return HTTPException(404, "no such case in your scope")
    if isinstance(exc, casework.Forbidden):
        return HTTPException(403, "not allowed for your role and scope")
    if isinstance(exc, casework.Conflict):
        detail: dict[str, Any] = {"message": str(exc), "stale": exc.stale}
        if exc.stale:
            detail["current_version"] = exc.actual_version
        return HTTPException(409, detail)
    return HTTPException(400, str(exc))


_ERRORS = (casework.NotFound, casework.Forbidden, casework.Conflict, casework.BadRequest)


@router.post("/session", response_model=Me, responses=_responses(401))
def open_session(body: LoginIn, request: Request, response: Response) -> Me:
    st = state_of(request)
    with st.db.connection() as conn:
        try:
            s = sessions.login(
                conn, login=body.login, password=body.password, client=client_of(request), web=st.web
            )
        except sessions.LoginFailed:
            raise HTTPException(401, "wrong login or password, or too many attempts") from None
    set_session_cookie(response, st.web, s.token)
    p = s.principal
    return Me(
        login=p.login, role=p.role.value, scope_code=p.scope_code, cells=list(p.cells), csrf_token=s.csrf
    )


@router.get("/me", response_model=Me, responses=_responses(401))
def me(session: sessions.Session = Depends(require_session)) -> Me:  # noqa: B008
    p = session.principal
    return Me(
        login=p.login,
        role=p.role.value,
        scope_code=p.scope_code,
        cells=list(p.cells),
        csrf_token=session.csrf,
    )


@router.get("/cases", response_model=InboxOut, responses=_responses(400, 401))
def list_cases(
    request: Request,
    view: Literal["mine", "subtree"] = "mine",
    kind: str | None = None,
    status: str = "open",
    owner: str | None = None,
    limit: int = Query(casework.PAGE, ge=1, le=casework.MAX_PAGE),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    session: sessions.Session = Depends(require_session),  # noqa: B008
) -> InboxOut:
    st = state_of(request)
    try:
        with st.db.connection() as conn:
            box = casework.inbox(
                conn,
                session.principal,
                view=view,
                kind=kind,
                status=status,
                owner_prefix=owner,
                limit=limit,
                offset=offset,
            )
    except _ERRORS as exc:
        raise _http(exc) from None
    return InboxOut(
        cases=box.rows,
        counts=box.counts,
        overdue=box.overdue,
        total=box.total,
        matched=box.matched,
        offset=offset,
        limit=limit,
    )


def _slots(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


@router.get("/cases/{case_id}", response_model=CaseOut, responses=_responses(401, 404))
def get_case(request: Request, case_id: int, session: sessions.Session = Depends(require_session)) -> CaseOut:  # noqa: B008
    st = state_of(request)
    try:
        with st.db.connection() as conn:
            page = casework.case_page(conn, session.principal, case_id)
    except _ERRORS as exc:
        raise _http(exc) from None
    c = page.case
    return CaseOut(
        id=c.id,
        kind=c.kind.value,
        severity=c.severity.value,
        state=c.state.value,
        level=int(c.level),
        owner_code=c.owner_code,
        chain_code=c.chain_code,
        cell_code=c.cell_code,
        version=c.version,
        opened_at=c.opened_at,
        respond_by=c.respond_by,
        resolve_by=c.resolve_by,
        deadlines_provisional=c.deadlines_provisional,
        resolve_seconds_left=seconds_left(c.resolve_by),
        respond_seconds_left=seconds_left(c.respond_by) if c.state.value in AWAITING_STATES else None,
        overdue=page.overdue,
        workers_affected=c.workers_affected,
        enterprise_uscc=c.enterprise_uscc,
        routing=c.routing,
        timeline=[EventOut(**_slots(e)) for e in page.timeline],
        chain=[ChainOut(**_slots(u)) for u in page.chain],
        party=None if page.party is None else PartyOut(**_slots(page.party)),
        owner_actions=page.owner_actions,
        supervisor_actions=page.supervisor_actions,
        may_reveal=page.may_reveal,
        owner_name=page.names.get(c.owner_code),
        no_officer=page.no_officer,
        names=page.names,
        hardship_grade=c.hardship_grade,
        enterprise_name=c.enterprise_name,
        address_masked=c.address_masked,
        has_details=c.has_details,
        outcome=c.outcome,
        amount_recovered=c.amount_recovered,
        mediation_window_ends=c.mediation_window_ends,
        refusals=[RefusalOut(action=r.action, code=r.code, allowed=list(r.allowed)) for r in page.refusals],
        dispatch=[
            DispatchOut(
                code=t.code,
                name=t.name,
                level=int(t.level),
                open_cases=t.open_cases,
                officers=list(t.officers),
            )
            for t in page.dispatch
        ],
    )


def _result(r: ActionResult) -> ActionOut:
    return ActionOut(
        case_id=r.case_id, version=r.version, state=r.state.value, level=int(r.level), owner_code=r.owner_code
    )


@router.post(
    "/cases/{case_id}/actions/{action}",
    response_model=ActionOut,
    responses=_responses(400, 401, 403, 404, 409),
)
def case_action(
    request: Request,
    case_id: int,
    action: Action,
    body: ActionIn,
    session: sessions.Session = Depends(require_csrf),  # noqa: B008
) -> ActionOut:
    st = state_of(request)
    form = {k: ("" if v is None else str(v)) for k, v in body.model_dump().items()}
    try:
        with st.db.connection() as conn:
            res = casework.act(conn, session.principal, case_id, action, form, rules=st.rules)
    except _ERRORS as exc:
        raise _http(exc) from None
    return _result(res)


@router.post("/cases/{case_id}/reveal", response_model=RevealOut, responses=_responses(400, 401, 403, 404))
def reveal(
    request: Request,
    case_id: int,
    body: RevealIn,
    session: sessions.Session = Depends(require_csrf),  # noqa: B008
) -> RevealOut:
    st = state_of(request)
    try:
        with st.db.connection() as conn:
            value = casework.reveal(conn, session.principal, case_id, body.field, body.reason, vault=st.vault)
    except _ERRORS as exc:
        raise _http(exc) from None
    return RevealOut(field=body.field, value=value)


@router.get("/ledger", response_model=list[LedgerRow], responses=_responses(400, 401, 403))
def ledger(
    request: Request,
    period: str | None = None,
    session: sessions.Session = Depends(require_session),  # noqa: B008
) -> list[LedgerRow]:
    st = state_of(request)
    try:
        with st.db.connection() as conn:
            lines = casework.child_ledger(conn, session.principal, period=period)
    except _ERRORS as exc:
        raise _http(exc) from None
    return lines
