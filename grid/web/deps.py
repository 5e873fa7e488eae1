"""Request plumbing shared by the HTML views and the JSON API: sessions, CSRF, language."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import HTTPException, Request, Response

from grid.accounts import sessions
from grid.accounts.config import WebSettings
from grid.cases.store import CaseRules
from grid.people import Vault
from grid.web.db import WebDatabase

MAX_FORM = 64_000


@dataclass
class WebState:
    web: WebSettings
    db: WebDatabase
    rules: CaseRules
    vault: Vault


def state_of(request: Request) -> WebState:
    st: WebState = request.app.state.gridflow
    return st


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def lang_of(request: Request) -> str:
    q = request.query_params.get("lang")
    if q in ("zh", "en"):
        return q
    return "en" if request.cookies.get("gridflow_lang") == "en" else "zh"


def page_of(request: Request) -> int:
    """The 1-based ``?page=`` of a paged list; anything else (missing, not a number, < 1) is 1."""
    raw = request.query_params.get("page") or ""
    return max(1, int(raw)) if raw.isdigit() else 1


def remember_lang(request: Request, response: Response) -> None:
    q = request.query_params.get("lang")
    if q in ("zh", "en"):
        response.set_cookie("gridflow_lang", q, max_age=365 * 86400, samesite="lax", httponly=True)


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form body (no multipart: nothing here uploads files)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise HTTPException(413, "form too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)
    return {k: v[0] for k, v in parsed.items()}


def session_of(request: Request) -> sessions.Session | None:
    """The live session of the request's cookie (runs in a worker thread)."""
    st = state_of(request)
    token = request.cookies.get(st.web.cookie_name, "")
    if not token:
        return None
    with st.db.connection() as conn:
        return sessions.resume(conn, token=token, web=st.web)


def set_session_cookie(response: Response, web: WebSettings, token: str) -> None:
    response.set_cookie(
        web.cookie_name,
        token,
        max_age=web.session_absolute_hours * 3600,
        path="/",
        secure=web.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, web: WebSettings) -> None:
    response.delete_cookie(web.cookie_name, path="/", secure=web.cookie_secure, httponly=True, samesite="lax")
