"""gridflow web app (FastAPI + Jinja2, server-rendered, Simplified Chinese first).

``/`` is the sync overview (aggregates only, no personal data) for a signed-in user, of the sources
in the user's scope, read as ``gridflow_app`` under row-level security. The officer
workspace (``/login``, ``/inbox``, ``/subtree``, ``/cases/{id}``, ``/ledger``) and the JSON API
(``/api/v1``, OpenAPI at ``/api/openapi.json``) work as the database role ``gridflow_app`` under
row-level security, with the scope filter in every query as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg2
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grid.cases.service import rules_from_settings
from grid.people import vault_from_settings
from grid.settings import get_settings
from grid.store.db import transaction
from grid.web import api, dashboard, health, views
from grid.web.config import WebSettings, get_web_settings
from grid.web.db import WebDatabase
from grid.web.deps import WebState, session_of
from grid.web.scope import Principal, apply_scope

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _recent_runs(db: WebDatabase, principal: Principal, limit: int = 20) -> list[dict[str, Any]]:
    """The last sync runs of the sources the principal's scope covers (as ``gridflow_app``: row-level
    security shows a scope the sources of its city only)."""
    with db.connection() as conn:
        apply_scope(conn, principal)
        with transaction(conn) as cur:
            cur.execute(
                """
                SELECT r.id, r.source, s.display_name, r.status, r.mode, r.started_at, r.finished_at,
                       r.received, r.loaded, r.unchanged, r.quarantined, r.unmapped, r.flow_run_id, r.error
                FROM sync_run r JOIN source s ON s.name = r.source
                ORDER BY r.id DESC LIMIT %s
                """,
                (limit,),
            )
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers (cheaper than an ``http`` middleware)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        extra = {**SECURITY_HEADERS, **({"Strict-Transport-Security": "max-age=31536000"} if hsts else {})}
        self.headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in self.headers if k not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(web: WebSettings | None = None) -> FastAPI:
    web = web or get_web_settings()
    settings = get_settings()
    db = WebDatabase(web)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        db.close()

    app = FastAPI(title="gridflow", docs_url="/api/docs", openapi_url="/api/openapi.json", lifespan=lifespan)
    app.state.gridflow = WebState(web=web, db=db, rules=rules_from_settings(), vault=vault_from_settings())

    app.add_middleware(SecurityHeaders, hsts=web.cookie_secure)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/", response_model=None)
    def index(request: Request, lang: str = "zh") -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        error = None
        try:
            runs = _recent_runs(db, session.principal)
        except psycopg2.OperationalError:
            runs, error = [], "database unavailable"
        return TEMPLATES.TemplateResponse(
            request,
            "index.html",
            {
                "runs": runs,
                "error": error,
                "session": session,
                "lang": "en" if lang == "en" else "zh",
                "prefect_ui": settings.prefect_ui,
            },
        )

    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    app.include_router(views.router)
    app.include_router(api.router)
    app.include_router(dashboard.router)
    app.include_router(health.router)
    return app
