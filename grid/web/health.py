"""Sync health pages: per-source runs and freshness, quarantine trend and drill-down, reprocessing.

* ``GET /health`` — county, city, province and admin roles: every source of their city (province
  and admin: of their province) with its last runs, freshness badge, quarantine trend (SVG) and a
  link from every run to its Prefect flow-run page.
* ``GET /health/{source}/quarantine?reason=`` — city, province, admin: the open quarantined
  records, masked (ID, phone, name), with checkboxes.
* ``POST /health/{source}/reprocess`` — CSRF-protected: records the request (row ids only) and
  starts a run of ``quarantine-reprocess/on-demand`` through the Prefect API.
* ``GET /health/reprocess/{id}`` — the request's flow run (link, state) and outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from grid.monitoring import health as svc
from grid.monitoring import reprocess as rp
from grid.monitoring.alerts import AlertsConfigError, load_alerts
from grid.settings import get_settings
from grid.store.db import transaction
from grid.web import auth
from grid.web.deps import lang_of, session_of, state_of
from grid.web.i18n import translator
from grid.web.scope import Principal, Role, apply_scope
from grid.web.views import render

router = APIRouter(include_in_schema=False)

HEALTH_ROLES: Final = frozenset({Role.COUNTY, Role.CITY, Role.PROVINCE, Role.ADMIN})
DRILL_ROLES: Final = frozenset({Role.CITY, Role.PROVINCE, Role.ADMIN})
MAX_BODY = 128_000


def scope_prefix(p: Principal) -> str:
    """Sources are city-level: a county sees its city's sources; others their own prefix."""
    if p.role is Role.COUNTY:
        return p.scope_code[:4]
    return p.prefix


def _mappings() -> dict[str, dict[str, dict[str, str]]]:
    return svc.source_mappings(get_settings().sources_dir)


def _reason_label(lang: str) -> Any:
    t = translator(lang)

    def label(code: str) -> str:
        text = t(f"reason_{code}")
        return code if text == f"reason_{code}" else text

    return label


def _message(request: Request, session: auth.Session, key: str, status: int) -> HTMLResponse:
    t = translator(lang_of(request))
    return render(request, "message.html", {"session": session, "message": t(key)}, status=status)


def _guard(request: Request, roles: frozenset[Role]) -> tuple[auth.Session | None, Response | None]:
    session = session_of(request)
    if session is None:
        return None, RedirectResponse("/login", status_code=303)
    if session.principal.role not in roles:
        return session, _message(request, session, "forbidden", 403)
    return session, None


@router.get("/health", response_model=None)
def health_page(request: Request) -> Response:
    session, denied = _guard(request, HEALTH_ROLES)
    if denied is not None or session is None:
        return denied or RedirectResponse("/login", status_code=303)
    p = session.principal
    st = state_of(request)
    try:
        limits = load_alerts().freshness
    except AlertsConfigError as exc:
        return render(request, "message.html", {"session": session, "message": str(exc)}, status=500)
    with st.db.connection() as conn:
        apply_scope(conn, p)
        with transaction(conn) as cur:
            sources = svc.sources_health(
                cur,
                prefix=scope_prefix(p),
                now=datetime.now(UTC),
                limits=limits,
                with_quarantine=p.role in DRILL_ROLES,
            )
    ui = svc.prefect_ui_url()
    return render(
        request,
        "health.html",
        {
            "session": session,
            "sources": sources,
            "trends": {s.name: svc.quarantine_trend(s.runs) for s in sources},
            "limits": limits,
            "ui": ui,
            "run_url": lambda frid: svc.flow_run_url(ui, frid),
            "drill": p.role in DRILL_ROLES,
            "reason_label": _reason_label(lang_of(request)),
        },
    )


@router.get("/health/{source}/quarantine", response_model=None)
def quarantine_page(request: Request, source: str, reason: str = "") -> Response:
    session, denied = _guard(request, DRILL_ROLES)
    if denied is not None or session is None:
        return denied or RedirectResponse("/login", status_code=303)
    p = session.principal
    st = state_of(request)
    prefix = scope_prefix(p)
    with st.db.connection() as conn:
        apply_scope(conn, p)
        with transaction(conn) as cur:
            if not svc.source_in_scope(cur, source=source, prefix=prefix):
                return _message(request, session, "health_no_source", 404)
            items = svc.open_quarantine(
                cur,
                source=source,
                prefix=prefix,
                vault=st.vault,
                mappings=_mappings().get(source, {}),
                reason=reason or None,
            )
            (health,) = [
                s
                for s in svc.sources_health(
                    cur,
                    prefix=prefix,
                    now=datetime.now(UTC),
                    limits=load_alerts().freshness,
                    runs_per_source=1,
                )
                if s.name == source
            ]
    return render(
        request,
        "health_quarantine.html",
        {
            "session": session,
            "source": health,
            "items": items,
            "reason": reason,
            "reason_label": _reason_label(lang_of(request)),
        },
    )


async def _multi_form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > MAX_BODY:
        return {}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=rp.MAX_IDS + 10)


@router.post("/health/{source}/reprocess", response_model=None)
async def reprocess_submit(request: Request, source: str) -> Response:
    form = await _multi_form(request)
    st = state_of(request)

    def work() -> Response:
        session, denied = _guard(request, DRILL_ROLES)
        if denied is not None or session is None:
            return denied or RedirectResponse("/login", status_code=303)
        if not auth.csrf_ok(session, (form.get("csrf") or [""])[0]):
            return Response("CSRF token missing or wrong", status_code=403)
        p = session.principal
        t = translator(lang_of(request))
        try:
            wanted = rp.check_ids(form.get("qid", []))
        except rp.ReprocessError:
            return _message(request, session, "health_choose", 400)
        with st.db.connection() as conn:
            apply_scope(conn, p)
            with transaction(conn) as cur:
                ids = svc.open_ids_of(cur, source=source, prefix=scope_prefix(p), ids=wanted)
                if not ids:
                    return _message(request, session, "health_choose", 400)
                request_id = rp.record_request(cur, source=source, ids=ids, requested_by=p.login)
            try:
                flow_run_id = rp.start_flow_run(quarantine_ids=ids, request_id=request_id)
            except Exception as exc:
                apply_scope(conn, p)
                with transaction(conn) as cur:
                    rp.request_finished(
                        cur, request_id=request_id, outcome={}, error=f"Prefect API: {type(exc).__name__}"
                    )
                msg = t("health_prefect_down")
                return render(request, "message.html", {"session": session, "message": msg}, status=503)
            apply_scope(conn, p)
            with transaction(conn) as cur:
                rp.request_started(cur, request_id=request_id, flow_run_id=flow_run_id)
        return RedirectResponse(f"/health/reprocess/{request_id}", status_code=303)

    return await run_in_threadpool(work)


@router.get("/health/reprocess/{request_id}", response_model=None)
def reprocess_page(request: Request, request_id: int) -> Response:
    session, denied = _guard(request, DRILL_ROLES)
    if denied is not None or session is None:
        return denied or RedirectResponse("/login", status_code=303)
    p = session.principal
    st = state_of(request)
    with st.db.connection() as conn:
        apply_scope(conn, p)
        with transaction(conn) as cur:
            req = svc.get_request(cur, request_id=request_id, prefix=scope_prefix(p))
    if req is None:
        return _message(request, session, "health_no_request", 404)
    state = rp.flow_run_state(req.flow_run_id) if req.flow_run_id else None
    ui = svc.prefect_ui_url()
    ctx: dict[str, Any] = {
        "session": session,
        "req": req,
        "state": state,
        "run_url": svc.flow_run_url(ui, req.flow_run_id),
        "done": req.status in ("completed", "failed"),
        "back": f"/health/{req.source}/quarantine?" + urlencode({"lang": lang_of(request)}),
    }
    return render(request, "health_request.html", ctx)
