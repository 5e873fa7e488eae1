"""The in-app 通知 list: ``GET /notices`` (HTML), ``GET /api/v1/notices`` (JSON), and marking
notices as read (``POST /notices/{id}/read``, ``POST /notices/read-all``, ``POST
/api/v1/notices/{id}/read``, ``POST /api/v1/notices/read-all``; CSRF like every other POST).

Which notices are the user's is :func:`grid.cases.notices.recipients` (its unit, or an officer's
cells); the nav shows the unread count (:func:`unread_for`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import psycopg2
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from grid.accounts import sessions
from grid.cases import notices
from grid.cases import notices as notices_svc
from grid.web.api import MAX_OFFSET, _responses, require_csrf, require_session
from grid.web.deps import form_of, page_of, session_of, state_of
from grid.web.views import message, render

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/v1", tags=["notices"])
MAX_PAGE_NO: Final = 100_000
NoticeId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def unread_for(request: Request, session: sessions.Session) -> int:
    """The nav's unread count (0 when the database does not answer: the page still renders)."""
    try:
        with state_of(request).db.connection() as conn:
            return notices.unread_count(conn, session)
    # no database, or no free connection within the pool's wait: a badge is not worth a failed page
    except (psycopg2.Error, RuntimeError):
        return 0


@router.get("/notices", response_model=None)
def notices_page(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    unread_only = request.query_params.get("unread") == "1"
    page = min(page_of(request), MAX_PAGE_NO)
    with state_of(request).db.connection() as conn:
        box = notices.list_notices(
            conn, session, unread_only=unread_only, limit=notices.PAGE, offset=(page - 1) * notices.PAGE
        )
    filters = {k: v for k, v in request.query_params.items() if k != "page"}
    return render(
        request,
        "notices.html",
        {
            "session": session,
            "box": box,
            "unread_only": unread_only,
            "unread_cap": notices.UNREAD_CAP,
            "prev_url": f"?{urlencode({**filters, 'page': page - 1})}" if page > 1 else None,
            "next_url": f"?{urlencode({**filters, 'page': page + 1})}" if box.has_more else None,
        },
    )


async def _mark(request: Request, notice_id: int | None) -> Response:
    form = await form_of(request)
    st = state_of(request)

    def work() -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        if not sessions.csrf_ok(session, form.get("csrf")):
            return Response("CSRF token missing or wrong", status_code=403)
        try:
            with st.db.connection() as conn:
                notices.mark_read(conn, session, notice_id)
        except notices.NoticeNotFound:
            return message(request, session, "notices_none", 404)
        back = form.get("back", "")
        return RedirectResponse(back if back.startswith("/notices") else "/notices", status_code=303)

    return await run_in_threadpool(work)


@router.post("/notices/read-all", response_model=None)
async def notices_read_all(request: Request) -> Response:
    return await _mark(request, None)


@router.post("/notices/{notice_id}/read", response_model=None)
async def notice_read(request: Request, notice_id: NoticeId) -> Response:
    return await _mark(request, notice_id)


class NoticeOut(BaseModel):
    id: int
    case_id: int
    topic: str
    topic_zh: str
    target: str
    recipient_code: str
    created_at: datetime
    read: bool
    details: dict[str, Any] = Field(
        description="allow-listed payload keys only (codes, kinds, times, counts)"
    )


class NoticesOut(BaseModel):
    notices: list[NoticeOut]
    unread: int = Field(description=f"unread notices, counted up to {notices_svc.UNREAD_CAP + 1}")
    offset: int
    limit: int
    has_more: bool


class MarkedOut(BaseModel):
    marked: int


@api_router.get("/notices", response_model=NoticesOut, responses=_responses(401))
def list_notices(
    request: Request,
    unread: bool = False,
    limit: int = Query(notices.PAGE, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    session: sessions.Session = Depends(require_session),  # noqa: B008
) -> NoticesOut:
    with state_of(request).db.connection() as conn:
        box = notices.list_notices(conn, session, unread_only=unread, limit=limit, offset=offset)
    return NoticesOut(
        notices=[NoticeOut(**{k: getattr(r, k) for k in r.__slots__}) for r in box.rows],
        unread=box.unread,
        offset=offset,
        limit=limit,
        has_more=box.has_more,
    )


@api_router.post("/notices/read-all", response_model=MarkedOut, responses=_responses(401, 403))
def api_read_all(
    request: Request,
    session: sessions.Session = Depends(require_csrf),  # noqa: B008
) -> MarkedOut:
    with state_of(request).db.connection() as conn:
        return MarkedOut(marked=notices.mark_read(conn, session, None))


@api_router.post("/notices/{notice_id}/read", response_model=MarkedOut, responses=_responses(401, 403, 404))
def api_read_one(
    request: Request,
    notice_id: NoticeId,
    session: sessions.Session = Depends(require_csrf),  # noqa: B008
) -> MarkedOut:
    try:
        with state_of(request).db.connection() as conn:
            return MarkedOut(marked=notices.mark_read(conn, session, notice_id))
    except notices.NoticeNotFound:
        raise HTTPException(404, "no such notice for you") from None
