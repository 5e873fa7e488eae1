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
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from grid.accounts import sessions
from grid.accounts.access import Role, apply_scope
from grid.monitoring.alert_rules import AlertsConfigError, load_alerts
from grid.settings import get_settings
from grid.store.db import transaction
from grid.sync import health as svc
from grid.sync import reprocess as rp
from grid.web.deps import lang_of, state_of
from grid.web.i18n import translator
from grid.web.views import gate, message, render

router = APIRouter(include_in_schema=False)

HEALTH_ROLES: Final = frozenset({Role.COUNTY, Role.CITY, Role.PROVINCE, Role.ADMIN})
DRILL_ROLES: Final = frozenset({Role.CITY, Role.PROVINCE, Role.ADMIN})
MAX_BODY = 128_000


def _reason_label(lang: str) -> Any:
    t = translator(lang)

    def label(code: str) -> str:
        text = t(f"reason_{code}")
        return code if text == f"reason_{code}" else text

    return label


@router.get("/health", response_model=None)
def health_page(request: Request) -> Response:
    session = gate(request, HEALTH_ROLES)
    if not isinstance(session, sessions.Session):
        return session
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
                prefix=p.source_prefix,
                now=datetime.now(UTC),
                limits=limits,
                with_quarantine=p.role in DRILL_ROLES,
            )
    settings = get_settings()
    return render(
        request,
        "health.html",
        {
            "session": session,
            "sources": sources,
            "trends": {s.name: svc.quarantine_trend(s.runs) for s in sources},
            "limits": limits,
            "ui": settings.prefect_ui,
            "run_url": settings.flow_run_url,
            "drill": p.role in DRILL_ROLES,
            "reason_label": _reason_label(lang_of(request)),
        },
    )


@router.get("/health/{source}/quarantine", response_model=None)
def quarantine_page(request: Request, source: str, reason: str = "") -> Response:
    session = gate(request, DRILL_ROLES)
    if not isinstance(session, sessions.Session):
        return session
    p = session.principal
    st = state_of(request)
    prefix = p.source_prefix
    with st.db.connection() as conn:
        apply_scope(conn, p)
        with transaction(conn) as cur:
            found = svc.sources_health(
                cur,
                prefix=prefix,
                now=datetime.now(UTC),
                limits=load_alerts().freshness,
                runs_per_source=1,
                source=source,
            )
            if not found:
                return message(request, session, "health_no_source", 404)
            items = svc.open_quarantine(
                cur,
                source=source,
                prefix=prefix,
                vault=st.vault,
                mappings=svc.source_mapping(get_settings().sources_dir, source),
                reason=reason or None,
            )
    (health,) = found
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
        session = gate(request, DRILL_ROLES)
        if not isinstance(session, sessions.Session):
            return session
        if not sessions.csrf_ok(session, (form.get("csrf") or [""])[0]):
            return Response("CSRF token missing or wrong", status_code=403)
        p = session.principal
        t = translator(lang_of(request))
        try:
            wanted = rp.check_ids(form.get("qid", []))
        except rp.ReprocessError:
            return message(request, session, "health_choose", 400)
        with st.db.connection() as conn:
            apply_scope(conn, p)
            with transaction(conn) as cur:
                ids = svc.open_ids_of(cur, source=source, prefix=p.source_prefix, ids=wanted)
                if not ids:
                    return message(request, session, "health_choose", 400)
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
    session = gate(request, DRILL_ROLES)
    if not isinstance(session, sessions.Session):
        return session
    p = session.principal
    st = state_of(request)
    with st.db.connection() as conn:
        apply_scope(conn, p)
        with transaction(conn) as cur:
            req = svc.get_request(cur, request_id=request_id, prefix=p.source_prefix)
    if req is None:
        return message(request, session, "health_no_request", 404)
    state = rp.flow_run_state(req.flow_run_id) if req.flow_run_id else None
    ctx: dict[str, Any] = {
        "session": session,
        "req": req,
        "state": state,
        "run_url": get_settings().flow_run_url(req.flow_run_id),
        "done": req.status in ("completed", "failed"),
        "back": f"/health/{req.source}/quarantine?" + urlencode({"lang": lang_of(request)}),
    }
    return render(request, "health_request.html", ctx)
