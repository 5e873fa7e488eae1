"""Administration pages (``管理``): the notice outbox and the reveal log.

* ``GET /admin`` — the administration index (links to the pages below and to the accounts page).
* ``GET /admin/outbox?status=failed|pending|delivered|all&case=&page=`` — admin and province: every
  notice of their scope with its delivery state (attempts, next attempt, last error, the route it
  took); ``POST /admin/outbox/{id}/retry`` (CSRF) puts a failed notice back in the queue.
* ``GET /admin/reveals?since=&user=&case=&page=`` — admin only (the privacy officer; see
  ``grid.accounts.reveals`` for why not the province role): the reveal log of their scope.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from grid.accounts import sessions
from grid.accounts.access import Role
from grid.accounts.reveals import REVEAL_LOG_ROLES, list_reveals
from grid.cases import notices
from grid.web.deps import form_of, lang_of, page_of, state_of
from grid.web.i18n import translator
from grid.web.views import gate, message, render

router = APIRouter(include_in_schema=False)
ADMIN_ROLES: Final = notices.OUTBOX_ROLES | REVEAL_LOG_ROLES
PAGE: Final = 50
#: Deeper pages are clamped (an offset PostgreSQL could not count would be a 500).
MAX_PAGE_NO: Final = 100_000


def _pager(request: Request, page: int, has_more: bool) -> tuple[str | None, str | None]:
    filters = {k: v for k, v in request.query_params.items() if k != "page"}
    prev_url = f"?{urlencode({**filters, 'page': page - 1})}" if page > 1 else None
    next_url = f"?{urlencode({**filters, 'page': page + 1})}" if has_more else None
    return prev_url, next_url


@router.get("/admin", response_model=None)
def admin_index(request: Request) -> Response:
    session = gate(request, ADMIN_ROLES)
    if not isinstance(session, sessions.Session):
        return session
    role = session.principal.role
    return render(
        request,
        "admin_index.html",
        {
            "session": session,
            "outbox": role in notices.OUTBOX_ROLES,
            "reveals": role in REVEAL_LOG_ROLES,
            "users": role is Role.ADMIN,
        },
    )


@router.get("/admin/outbox", response_model=None)
def outbox_page(request: Request) -> Response:
    session = gate(request, notices.OUTBOX_ROLES)
    if not isinstance(session, sessions.Session):
        return session
    status = request.query_params.get("status") or "failed"
    if status not in notices.OUTBOX_STATUSES:
        status = "failed"
    page = min(page_of(request), MAX_PAGE_NO)
    st = state_of(request)
    with st.db.connection() as conn:
        box = notices.outbox_page(
            conn,
            session.principal,
            status=status,
            case_id=_case_param(request),
            limit=PAGE,
            offset=(page - 1) * PAGE,
        )
    prev_url, next_url = _pager(request, page, box.has_more)
    return render(
        request,
        "admin_outbox.html",
        {
            "session": session,
            "box": box,
            "status": status,
            "statuses": notices.OUTBOX_STATUSES,
            "requeued": request.query_params.get("requeued"),
            "case_id": _case_param(request),
            "prev_url": prev_url,
            "next_url": next_url,
        },
    )


@router.post("/admin/outbox/{notice_id}/retry", response_model=None)
async def outbox_retry(request: Request, notice_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> Response:
    form = await form_of(request)
    st = state_of(request)

    def work() -> Response:
        session = gate(request, notices.OUTBOX_ROLES)
        if not isinstance(session, sessions.Session):
            return session
        if not sessions.csrf_ok(session, form.get("csrf")):
            return Response("CSRF token missing or wrong", status_code=403)
        try:
            with st.db.connection() as conn:
                notices.requeue(conn, session.principal, notice_id)
        except notices.NoticeNotFound:
            return message(request, session, "outbox_none", 404)
        return RedirectResponse(f"/admin/outbox?status=pending&requeued={notice_id}", status_code=303)

    return await run_in_threadpool(work)


def _case_param(request: Request) -> int | None:
    """``?case=`` as a case id (None when empty or not one)."""
    raw = request.query_params.get("case") or ""
    return int(raw) if raw.isdigit() and len(raw) < 18 else None


def _since(raw: str) -> datetime | None:
    """A ``since`` date (YYYY-MM-DD, local midnight) or ISO time; None when empty or malformed."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time())
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


@router.get("/admin/reveals", response_model=None)
def reveals_page(request: Request) -> Response:
    session = gate(request, REVEAL_LOG_ROLES)
    if not isinstance(session, sessions.Session):
        return session
    q = request.query_params
    st = state_of(request)
    since = _since(q.get("since") or "")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=st.rules.policy.calendar.tz)
    case_id = _case_param(request)
    login = (q.get("user") or "").strip()[:64] or None
    page = min(page_of(request), MAX_PAGE_NO)
    with st.db.connection() as conn:
        result = list_reveals(
            conn,
            principal=session.principal,
            since=since,
            login=login,
            case_id=case_id,
            limit=PAGE,
            offset=(page - 1) * PAGE,
        )
    t = translator(lang_of(request))
    prev_url, next_url = _pager(request, page, result.has_more)
    return render(
        request,
        "admin_reveals.html",
        {
            "session": session,
            "rows": result.rows,
            "q": dict(q),
            "field_label": lambda f: t(f),
            "prev_url": prev_url,
            "next_url": next_url,
        },
    )
