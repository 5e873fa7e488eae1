"""gridflow web app (FastAPI + Jinja2, server-rendered, Simplified Chinese first).

This first page is the province staff's sync overview: the last runs per source with their
counts. It shows aggregates only — no personal data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.templating import Jinja2Templates

from grid.settings import get_settings
from grid.store.db import DatabaseUnavailable, connect, transaction

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _recent_runs(limit: int = 20) -> list[dict[str, Any]]:
    conn = connect()
    try:
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
    finally:
        conn.close()


def create_app() -> FastAPI:
    app = FastAPI(title="gridflow", docs_url="/api/docs", openapi_url="/api/openapi.json")
    settings = get_settings()

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, lang: str = "zh") -> HTMLResponse:
        error = None
        try:
            runs = _recent_runs()
        except DatabaseUnavailable as exc:
            runs, error = [], str(exc)
        return TEMPLATES.TemplateResponse(
            request,
            "index.html",
            {
                "runs": runs,
                "error": error,
                "lang": "en" if lang == "en" else "zh",
                "prefect_ui": f"http://127.0.0.1:{settings.prefect_port}",
            },
        )

    return app
