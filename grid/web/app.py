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
from importlib.resources import files
from pathlib import Path
from typing import Any

import psycopg2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from grid.accounts.access import Principal, apply_scope
from grid.accounts.config import WebSettings, get_web_settings
from grid.cases.store import rules_from_settings
from grid.people import vault_from_settings
from grid.settings import get_settings
from grid.store.db import transaction
from grid.web import admin_users, api, dashboard, health, views
from grid.web.db import WebDatabase
from grid.web.deps import WebState, session_of

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
SWAGGER_UI = Path(str(files("swagger_ui") / "static"))
API_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gridflow API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body></html>
"""
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

    app = FastAPI(
        title="gridflow", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json", lifespan=lifespan
    )
    document = app.openapi

    def openapi() -> dict[str, Any]:
        """The document, with the session cookie under the name this deployment uses."""
        if app.openapi_schema is None:
            schema = document()
            schema["components"]["securitySchemes"]["session"]["name"] = web.cookie_name
            # FastAPI lists each scheme as its own requirement (meaning "either"); a POST needs the
            # session cookie AND the CSRF header: one requirement with both.
            for operations in schema["paths"].values():
                for op in operations.values():
                    if len(op.get("security", [])) > 1:
                        op["security"] = [{k: v for req in op["security"] for k, v in req.items()}]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.gridflow = WebState(web=web, db=db, rules=rules_from_settings(), vault=vault_from_settings())

    app.add_middleware(SecurityHeaders, hsts=web.cookie_secure)

    @app.middleware("http")
    async def refuse_nul(request: Request, call_next: Any) -> Any:
        """A NUL in a query parameter fits no field and PostgreSQL text cannot hold it: 422 for
        every route, before any query (found by the API fuzzing)."""
        if any("\x00" in k or "\x00" in v for k, v in request.query_params.multi_items()):
            return JSONResponse({"detail": "a query parameter contains a NUL character"}, status_code=422)
        return await call_next(request)

    @app.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
    def healthz() -> str:
        return "ok"

    @app.get("/", response_model=None, include_in_schema=False)
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
    # The API docs from files installed with the project (swagger-ui-py), not a CDN: they work
    # offline and under the CSP (no inline script: the page starts Swagger UI from /static).
    app.mount("/api/docs/assets", StaticFiles(directory=str(SWAGGER_UI)), name="swagger-ui")

    @app.get("/api/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return HTMLResponse(API_DOCS_HTML)

    app.include_router(views.router)
    app.include_router(api.router)
    app.include_router(dashboard.router)
    app.include_router(health.router)
    app.include_router(admin_users.router)
    proxies = [h.strip() for h in web.trusted_proxies.split(",") if h.strip()]
    if proxies:
        # Outermost: the client address (login throttle, login history) is taken from
        # X-Forwarded-For only when the peer is one of the configured proxies.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    return app
