"""Province and city monitoring pages: the four fulls, trends, choropleth, ranking, exports.

``/dashboard`` sends a user to the division of their scope. ``/dashboard/{code}`` shows the
division's four fulls and supervision rates on the latest snapshot, their trend lines, a table of
its children and a choropleth of the children coloured by a chosen metric; every child links to
its own page, down to a community (its cells drawn without metrics). ``/ranking`` ranks units by
on-time rate; ``/export.csv`` and ``/export.xlsx`` carry the same numbers for the monthly report.

Who sees what: any signed-in role except grid officers, for divisions whose code starts with
the user's scope prefix (an administrator sees all). Anything else is answered 404 exactly like
a division that does not exist; grid officers get 403. Aggregates only: the tables read here
hold counts, and the pages show no person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from geodata.codes import is_division_code
from grid.accounts.access import Conn, Principal, Role, apply_scope
from grid.accounts.sessions import Session
from grid.monitoring import choropleth, exports
from grid.monitoring.coverage import RATE_BY_NAME, RATES, percent
from grid.monitoring.dashboard_data import (
    FOUR_FULLS,
    SUPERVISION,
    TREND_CHARTS,
    DivisionData,
    division,
    division_data,
    rank,
    ranking_data,
)
from grid.monitoring.pending import notes
from grid.web.deps import lang_of, page_of, state_of
from grid.web.i18n import label, translator
from grid.web.views import gate, message, render

router = APIRouter(include_in_schema=False)

DAYS: Final = (30, 90, 180, 365)
DEFAULT_DAYS: Final = 90
DEFAULT_METRIC: Final = "union"
MAX_LABELLED: Final = 30  # name labels on the map only when there are few shapes
RANK_PAGE: Final = 300  # units per ranking page (the full ranking is in the XLSX export)
DASHBOARD_ROLES: Final = frozenset(Role) - {Role.GRID_OFFICER}


def pct(v: float | None) -> str:
    """A rate for display: one decimal, or an em dash when undefined."""
    return percent(v, undefined="—")


@dataclass(frozen=True, slots=True)
class Query:
    metric: str
    days: int
    on: date | None

    def params(self, **override: Any) -> str:
        q: dict[str, Any] = {"metric": self.metric, "days": self.days}
        if self.on:
            q["on"] = self.on.isoformat()
        q.update(override)
        return urlencode({k: v for k, v in q.items() if v is not None})


def _query(request: Request) -> Query:
    q = request.query_params
    metric = q.get("metric") or DEFAULT_METRIC
    if metric not in RATE_BY_NAME:
        metric = DEFAULT_METRIC
    try:
        days = int(q.get("days") or DEFAULT_DAYS)
    except ValueError:
        days = DEFAULT_DAYS
    if days not in DAYS:
        days = DEFAULT_DAYS
    try:
        on = date.fromisoformat(q["on"]) if q.get("on") else None
    except ValueError:
        on = None
    return Query(metric, days, on)


def _gate(request: Request) -> Session | Response:
    """The session of a user who may open dashboards, or the response to send instead."""
    return gate(request, DASHBOARD_ROLES, forbidden="dash_forbidden")


def _not_found(request: Request, session: Session) -> Response:
    return message(request, session, "dash_not_found", 404)


def _load(conn: Conn, p: Principal, code: str, q: Query) -> DivisionData | None:
    if not is_division_code(code):
        return None
    apply_scope(conn, p)
    return division_data(conn, code=code, prefix=p.aggregate_prefix, on_or_before=q.on, days=q.days)


@router.get("/dashboard", response_model=None)
def dashboard_root(request: Request) -> Response:
    session = _gate(request)
    if not isinstance(session, Session):
        return session
    return RedirectResponse(f"/dashboard/{session.principal.scope_code}", status_code=303)


def _titles(data: DivisionData, metric: str, lang: str) -> dict[str, str]:
    t = translator(lang)
    m = RATE_BY_NAME[metric]
    out: dict[str, str] = {}
    for ch in data.children:
        c = ch.counts
        value = t("dash_no_data") if c is None else f"{pct(c.rate(m))} ({c.ratio(m)})"
        out[ch.unit.code] = f"{ch.unit.name} · {m.label(lang)} {value}"
    return out


def _trend_charts(data: DivisionData, lang: str) -> list[tuple[str, str, list[str]]]:
    if data.run is None:
        return []
    end = data.run.snapshot_date
    start = end - timedelta(days=data.days - 1)
    charts = []
    for keys in TREND_CHARTS:
        ms = [RATE_BY_NAME[k] for k in keys]
        points = [(d, [c.rate(m) for m in ms]) for d, c in data.trend]
        title = " / ".join(m.label(lang) for m in ms)
        svg = choropleth.trend_svg(
            points, start=start, end=end, series=keys, label=title, testid=f"trend-{keys[0]}"
        )
        charts.append((title, svg, [m.label(lang) for m in ms]))
    return charts


@router.get("/dashboard/{code}", response_model=None)
def dashboard_page(request: Request, code: str) -> Response:
    session = _gate(request)
    if not isinstance(session, Session):
        return session
    q = _query(request)
    lang = lang_of(request)
    p = session.principal
    prefix = p.aggregate_prefix
    st = state_of(request)
    map_svg = None
    missing: list[str] = []
    m = RATE_BY_NAME[q.metric]
    with st.db.connection() as conn:
        data = _load(conn, p, code, q)
        if data is None:
            return _not_found(request, session)
        if data.children:
            g = choropleth.geometry(conn, source="children", code=code, prefix=prefix)
            classes = {
                ch.unit.code: choropleth.colour_class(
                    None if ch.counts is None else ch.counts.rate(m), has_data=ch.counts is not None
                )
                for ch in data.children
            }
            map_svg = choropleth.render_map(
                g,
                classes=classes,
                titles=_titles(data, q.metric, lang),
                href=lambda c: f"/dashboard/{c}?{q.params()}",
                label=f"{data.division.name} · {m.label(lang)}",
                labels=len(g.shapes) <= MAX_LABELLED,
            )
            named = {ch.unit.code: ch.unit.name for ch in data.children}
            missing = [named.get(c, c) for c in g.missing]
        elif data.division.level == 5:
            g = choropleth.geometry(conn, source="cells", code=code, prefix=prefix)
            if g.shapes:
                map_svg = choropleth.render_map(
                    g,
                    classes={s.code: "cell" for s in g.shapes},
                    titles={s.code: s.name for s in g.shapes},
                    href=None,
                    label=f"{data.division.name} · {translator(lang)('dash_cells')}",
                    labels=False,
                    testid="cellmap",
                    show_codes=False,
                )
        own_notes = (
            notes(conn, codes=[code], snapshot_date=data.run.snapshot_date, prefix=prefix)[code]
            if data.run is not None
            else None
        )
    return render(
        request,
        "dashboard.html",
        {
            "session": session,
            "d": data,
            "own_notes": own_notes,
            "q": q,
            "metric": m,
            "metrics": RATES,
            "four_fulls": FOUR_FULLS,
            "supervision": SUPERVISION,
            "days_options": DAYS,
            "map_svg": map_svg,
            "missing": missing,
            "legend": choropleth.legend(),
            "trends": _trend_charts(data, lang),
            "pct": pct,
            "level_label": lambda v: label(lang, int(v)),
            "generated_children": any(ch.unit.generated for ch in data.children) or data.division.generated,
        },
    )


@router.get("/dashboard/{code}/ranking", response_model=None)
def ranking_page(request: Request, code: str) -> Response:
    session = _gate(request)
    if not isinstance(session, Session):
        return session
    q = _query(request)
    if not is_division_code(code):
        return _not_found(request, session)
    p = session.principal
    st = state_of(request)
    with st.db.connection() as conn:
        apply_scope(conn, p)
        own = division(conn, code=code, prefix=p.aggregate_prefix)
        if own is None:
            return _not_found(request, session)
        level = _level(request, own.level)
        if level is False:
            return message(request, session, "dash_bad_level", 400)
        run, rows = ranking_data(conn, unit=own, prefix=p.aggregate_prefix, level=level, on_or_before=q.on)
    d, lvl = own, level
    pages = max(1, -(-len(rows) // RANK_PAGE))
    page = min(page_of(request), pages)
    first = (page - 1) * RANK_PAGE
    base = {"level": lvl, "on": q.on.isoformat() if q.on else None}
    return render(
        request,
        "dashboard_ranking.html",
        {
            "session": session,
            "division": d,
            "run": run,
            "level": lvl,
            "levels": list(range(d.level + 1, 6)),
            "rows": rows[first : first + RANK_PAGE],
            "total": len(rows),
            "first": first + 1,
            "page": page,
            "pages": pages,
            "page_link": lambda n: urlencode({k: v for k, v in {**base, "page": n}.items() if v is not None}),
            "export_link": urlencode({k: v for k, v in base.items() if v is not None}),
            "q": q,
            "pct": pct,
            "level_label": lambda v: label(lang_of(request), int(v)),
        },
    )


def _level(request: Request, own_level: int) -> int | bool | None:
    """The ``level`` query parameter: None when absent (the children), False when not a level
    below ``own_level``."""
    raw = request.query_params.get("level") or ""
    if not raw:
        return None
    if not raw.isdigit() or not own_level < int(raw) <= 5:
        return False
    return int(raw)


def _export(request: Request, code: str, kind: str) -> Response:
    session = _gate(request)
    if not isinstance(session, Session):
        return session
    q = _query(request)
    lang = lang_of(request)
    st = state_of(request)
    p = session.principal
    with st.db.connection() as conn:
        data = _load(conn, p, code, q)
        if data is None:
            return _not_found(request, session)
        level = _level(request, data.division.level)
        if level is False:
            return Response(translator(lang)("dash_bad_level"), status_code=400, media_type="text/plain")
        children_ranking = rank(
            [ch.unit for ch in data.children], {ch.unit.code: ch.counts for ch in data.children if ch.counts}
        )
        ranking = children_ranking
        if level is not None:
            _, ranking = ranking_data(
                conn, unit=data.division, prefix=p.aggregate_prefix, level=level, on_or_before=q.on
            )
    day = data.run.snapshot_date.isoformat() if data.run else "none"
    name = f"gridflow-{code}-{day}.{kind}"
    if kind == "csv":
        body, media = exports.to_csv(data, children_ranking, lang), "text/csv; charset=utf-8"
    else:
        body = exports.to_xlsx(data, children_ranking, lang, ranking=ranking)
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@router.get("/dashboard/{code}/export.csv", response_model=None)
def export_csv(request: Request, code: str) -> Response:
    return _export(request, code, "csv")


@router.get("/dashboard/{code}/export.xlsx", response_model=None)
def export_xlsx(request: Request, code: str) -> Response:
    return _export(request, code, "xlsx")
