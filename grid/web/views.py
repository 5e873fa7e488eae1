"""Server-rendered pages: login, inbox, case page with actions and reveal, subtree, ledger."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from connectors.kinds import CaseKind, Outcome
from grid.accounts import sessions
from grid.accounts.access import Role
from grid.cases.states import State
from grid.web import casework
from grid.web.deps import (
    clear_session_cookie,
    client_of,
    form_of,
    lang_of,
    page_of,
    remember_lang,
    session_of,
    set_session_cookie,
    state_of,
)
from grid.web.i18n import label, translator
from grid.web.i18n_casepage import month_day
from grid.web.i18n_deadlines import AWAITING_STATES, time_left

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
LOGIN_CSRF_COOKIE = "gridflow_login_csrf"
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> HTMLResponse:
    lang = lang_of(request)
    full = {
        "lang": lang,
        "t": translator(lang),
        "label": lambda v: label(lang, v),
        "left": lambda at: time_left(lang, at),
        "awaiting": AWAITING_STATES,
        "kinds": list(CaseKind),
        "states": list(State),
        "outcomes": list(Outcome),
        "now": datetime.now(UTC),
        **ctx,
    }
    session = ctx.get("session")
    if isinstance(session, sessions.Session):
        from grid.web.notices import unread_for  # the notices module renders through here

        full["unread_notices"] = unread_for(request, session)
    resp = TEMPLATES.TemplateResponse(request, name, full, status_code=status)
    remember_lang(request, resp)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def message(request: Request, session: sessions.Session | None, key: str, status: int) -> HTMLResponse:
    """A page with one translated sentence (``key`` in the interface strings)."""
    return render(
        request,
        "message.html",
        {"session": session, "message": translator(lang_of(request))(key)},
        status=status,
    )


def gate(
    request: Request, allowed: Collection[Role], *, forbidden: str = "forbidden"
) -> sessions.Session | Response:
    """The session of a signed-in user whose role is in ``allowed``; otherwise the answer to send
    instead: the login page, or 403 with the ``forbidden`` sentence."""
    session = session_of(request)
    if session is None:
        return _to_login()
    if session.principal.role not in allowed:
        return message(request, session, forbidden, 403)
    return session


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", {"login_csrf": token, "failed": False})
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        max_age=3600,
        secure=state_of(request).web.cookie_secure,
    )
    return resp


@router.post("/login", response_model=None)
async def login_submit(request: Request) -> Response:
    form = await form_of(request)
    st = state_of(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, form.get("csrf", "")):
        return render(request, "login.html", {"login_csrf": cookie, "failed": True}, status=400)

    def work() -> sessions.Session | None:
        with st.db.connection() as conn:
            try:
                return sessions.login(
                    conn,
                    login=form.get("login", ""),
                    password=form.get("password", ""),
                    client=client_of(request),
                    web=st.web,
                )
            except sessions.LoginFailed:
                return None

    session = await run_in_threadpool(work)
    if session is None:
        return render(request, "login.html", {"login_csrf": cookie, "failed": True}, status=401)
    resp = RedirectResponse("/inbox", status_code=303)
    set_session_cookie(resp, st.web, session.token)
    resp.delete_cookie(LOGIN_CSRF_COOKIE)
    return resp


@router.post("/logout", response_model=None)
async def logout(request: Request) -> Response:
    await form_of(request)  # bounded read of the body; the CSRF token does not matter here
    st = state_of(request)
    token = request.cookies.get(st.web.cookie_name, "")
    # Ending a session needs no CSRF token: the worst a forged logout does is sign a user out, and
    # a logout that only cleared the cookie would leave a stolen token valid.
    if token and len(token) <= 100:

        def work() -> None:
            with st.db.connection() as conn:
                sessions.logout(conn, token=token)

        await run_in_threadpool(work)
    resp = _to_login()
    clear_session_cookie(resp, st.web)
    return resp


def _inbox(request: Request, view: str) -> Response:
    session = session_of(request)
    if session is None:
        return _to_login()
    p = session.principal
    q = request.query_params
    st = state_of(request)
    if view == "subtree" and not p.is_supervisor:
        view = "mine"
    page = page_of(request)
    try:
        with st.db.connection() as conn:
            box = casework.inbox(
                conn,
                p,
                view=view,
                kind=q.get("kind") or None,
                status=q.get("status") or "open",
                owner_prefix=q.get("owner") or None,
                limit=casework.PAGE,
                offset=(page - 1) * casework.PAGE,
            )
    except casework.BadRequest as exc:
        return render(request, "message.html", {"session": session, "message": str(exc)}, status=400)
    filters = {k: v for k, v in q.items() if k != "page"}
    return render(
        request,
        "inbox.html",
        {
            "session": session,
            "box": box,
            "view": view,
            "q": dict(q),
            "page": page,
            "prev_url": f"?{urlencode({**filters, 'page': page - 1})}" if page > 1 else None,
            "next_url": f"?{urlencode({**filters, 'page': page + 1})}" if box.has_more else None,
        },
    )


@router.get("/inbox", response_model=None)
def inbox_page(request: Request) -> Response:
    return _inbox(request, "mine")


@router.get("/subtree", response_model=None)
def subtree_page(request: Request) -> Response:
    return _inbox(request, "subtree")


def _case(
    request: Request,
    case_id: int,
    *,
    message: str | None = None,
    revealed: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    session = session_of(request)
    if session is None:
        return _to_login()
    st = state_of(request)
    t = translator(lang_of(request))
    try:
        with st.db.connection() as conn:
            page = casework.case_page(conn, session.principal, case_id)
    except casework.NotFound:
        return render(request, "message.html", {"session": session, "message": t("not_found")}, status=404)
    done = request.query_params.get("done")
    lang = lang_of(request)
    return render(
        request,
        "case.html",
        {
            "session": session,
            "page": page,
            "c": page.case,
            "message": message or (_done_message(lang, page, done) if done else None),
            "revealed": revealed or {},
            "unit": lambda code: unit_label(page.names, code),
            "why": lambda r: _why(lang, page, r),
        },
        status=status,
    )


def unit_label(names: dict[str, str], code: str) -> str:
    """A unit or cell as the pages name it: ``宜昌市西陵区工会（420502000000）``, or the bare code
    when no name is known."""
    name = names.get(code)
    return f"{name}（{code}）" if name else code


def _done_message(lang: str, page: casework.CasePage, done: str) -> str:
    """The sentence after an action: what was done and what comes next (``done_<action>``)."""
    t = translator(lang)
    key = f"done_{done}"
    if t(key) == key:
        return t("done")
    c = page.case
    return t(key).format(
        resolve=month_day(lang, c.resolve_by),
        owner=unit_label(page.names, c.owner_code),
        outcome=label(lang, c.outcome) if c.outcome else "—",
    )


def _why(lang: str, page: casework.CasePage, r: casework.Refusal) -> str:
    t = translator(lang)
    if r.code == "state":
        return t("why_state").format(state=label(lang, page.case.state.value))
    return t(f"why_{r.code}").format(owner=unit_label(page.names, page.case.owner_code))


@router.get("/cases/{case_id}", response_model=None)
def case_view(request: Request, case_id: int) -> Response:
    return _case(request, case_id)


@router.post("/cases/{case_id}/actions/{action}", response_model=None)
async def case_action(request: Request, case_id: int, action: str) -> Response:
    form = await form_of(request)
    st = state_of(request)

    def work() -> Response:
        session = session_of(request)
        if session is None:
            return _to_login()
        if not sessions.csrf_ok(session, form.get("csrf")):
            return Response("CSRF token missing or wrong", status_code=403)
        t = translator(lang_of(request))
        try:
            with st.db.connection() as conn:
                casework.act(conn, session.principal, case_id, action, form, rules=st.rules)
        except casework.NotFound:
            return render(
                request, "message.html", {"session": session, "message": t("not_found")}, status=404
            )
        except casework.Forbidden:
            return _case(request, case_id, message=t("forbidden"), status=403)
        except casework.Conflict as exc:
            if exc.stale:
                msg = t("conflict").replace("{actual}", str(exc.actual_version))
            else:
                lang = lang_of(request)
                now_ok = "、".join(label(lang, a) for a in exc.allowed) or "—"
                msg = t("not_allowed") + t("allowed_now") + now_ok
                if lang == "en":
                    msg += f" ({exc})"
            return _case(request, case_id, message=msg, status=409)
        except casework.Unprocessable as exc:
            text = exc.zh if lang_of(request) == "zh" else str(exc)
            return _case(request, case_id, message=t("bad_request") + text, status=422)
        except casework.BadRequest as exc:
            return _case(request, case_id, message=t("bad_request") + str(exc), status=400)
        return RedirectResponse(f"/cases/{case_id}?done={action}", status_code=303)

    return await run_in_threadpool(work)


@router.post("/cases/{case_id}/reveal", response_model=None)
async def case_reveal(request: Request, case_id: int) -> Response:
    form = await form_of(request)
    st = state_of(request)

    def work() -> Response:
        session = session_of(request)
        if session is None:
            return _to_login()
        if not sessions.csrf_ok(session, form.get("csrf")):
            return Response("CSRF token missing or wrong", status_code=403)
        t = translator(lang_of(request))
        field = form.get("field", "")
        try:
            with st.db.connection() as conn:
                value = casework.reveal(
                    conn, session.principal, case_id, field, form.get("reason", ""), vault=st.vault
                )
        except casework.NotFound:
            return render(
                request, "message.html", {"session": session, "message": t("not_found")}, status=404
            )
        except casework.Forbidden:
            return _case(request, case_id, message=t("forbidden"), status=403)
        except casework.BadRequest as exc:
            return _case(request, case_id, message=t("bad_request") + str(exc), status=400)
        return _case(request, case_id, revealed={field: value})

    return await run_in_threadpool(work)


@router.get("/ledger", response_model=None)
def ledger_page(request: Request, period: str | None = None) -> Response:
    session = session_of(request)
    if session is None:
        return _to_login()
    st = state_of(request)
    page = page_of(request)
    size = casework.LEDGER_PAGE
    try:
        with st.db.connection() as conn:
            lines = casework.child_ledger(
                conn, session.principal, period=period or None, limit=size + 1, offset=(page - 1) * size
            )
    except casework.Forbidden:
        t = translator(lang_of(request))
        return render(request, "message.html", {"session": session, "message": t("forbidden")}, status=403)
    except casework.BadRequest as exc:
        return render(request, "message.html", {"session": session, "message": str(exc)}, status=400)
    more = len(lines) > size
    keep = {"period": period} if period else {}
    return render(
        request,
        "ledger.html",
        {
            "session": session,
            "lines": lines[:size],
            "period": period or "",
            "first": (page - 1) * size + 1,
            "prev_url": f"?{urlencode({**keep, 'page': page - 1})}" if page > 1 else None,
            "next_url": f"?{urlencode({**keep, 'page': page + 1})}" if more else None,
        },
    )
