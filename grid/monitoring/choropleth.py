"""Server-rendered SVG for the dashboards: the choropleth of a division's children, trend lines.

Geometry comes from PostGIS already simplified and projected to canvas units, so a page ships a
few kilobytes of path data whatever the size of the real boundaries:

* the frame is the extent of the shapes drawn (the children tile their parent, so this is the
  parent's extent); its longest side becomes :data:`CANVAS` units;
* x is scaled by cos(mid latitude) so that shapes keep their proportions at that latitude, and
  y is flipped (north up): ``ST_AsSVG`` writes ``-y``, the affine transform is chosen for it;
* polygons are simplified with ``ST_SimplifyPreserveTopology`` at a tolerance of
  :data:`SIMPLIFY_UNITS` canvas units converted back to degrees - relative to the parent's
  extent, so a province and a community both keep about one canvas unit of detail.

The projected shapes of a division's children are cached in process (LRU) under the division,
the caller's scope prefix and a fingerprint of the current rows (``xmin``/``ctid`` of every child
row: any update or re-insert of a boundary changes it), so a new boundary version is drawn at
once while a page view costs one small fingerprint query. Colours are applied per request.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from math import cos, radians
from typing import Final

import psycopg2.extensions

Conn = psycopg2.extensions.connection

CANVAS: Final = 1000.0
SIMPLIFY_UNITS: Final = 0.7
CACHE_SIZE: Final = 256
# Class breaks of a rate (the four fulls aim at 100%, so the classes are finer near the top).
BREAKS: Final = (0.5, 0.7, 0.85, 0.95)
CLASSES: Final = ("q0", "q1", "q2", "q3", "q4")
NO_DATA: Final = "q-nodata"  # the division has no snapshot row
NOT_APPLICABLE: Final = "q-na"  # a snapshot row with denominator 0: the rate is undefined


@dataclass(frozen=True, slots=True)
class Shape:
    code: str
    name: str
    path: str  # SVG path data in canvas units
    label_x: float
    label_y: float


@dataclass(frozen=True, slots=True)
class MapGeometry:
    width: float
    height: float
    shapes: tuple[Shape, ...]
    missing: tuple[str, ...]  # units without a polygon (not drawn)


# What can be drawn: the children of a division, or the current cells of a community.
_SOURCES: Final = {
    "children": (
        "SELECT code::text, name, geom{extra} FROM division "
        "WHERE parent_code = %(code)s AND valid_to IS NULL AND code LIKE %(like)s"
    ),
    "cells": (
        "SELECT code::text, name, geom{extra} FROM grid_cell "
        "WHERE community_code = %(code)s AND valid_to IS NULL AND code LIKE %(like)s"
    ),
}


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str, str, str], MapGeometry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str, str]) -> MapGeometry | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, str, str, str], value: MapGeometry) -> None:
        with self._lock:
            # one entry per (source, code, prefix): an older fingerprint is dead weight
            for old in [k for k in self._data if k[:3] == key[:3]]:
                del self._data[old]
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


CACHE: Final = _Lru(CACHE_SIZE)


def _fingerprint(cur: psycopg2.extensions.cursor, source: str, params: dict[str, str]) -> str:
    sql = _SOURCES[source].format(extra=", xmin::text AS x, ctid::text AS t")
    cur.execute(
        f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(code || x || t, ',' ORDER BY code)), '') "
        f"FROM ({sql}) s",
        params,
    )
    row = cur.fetchone()
    return str(row[0]) if row else ""


def _project(cur: psycopg2.extensions.cursor, source: str, params: dict[str, str]) -> MapGeometry:
    base = _SOURCES[source].format(extra="")
    cur.execute(
        f"SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (SELECT ST_Extent(geom) AS b FROM ({base}) s) e",
        params,
    )
    row = cur.fetchone()
    if row is None or row[0] is None:
        cur.execute(f"SELECT code FROM ({base}) s ORDER BY code", params)
        return MapGeometry(0.0, 0.0, (), tuple(str(r[0]) for r in cur.fetchall()))
    x0, y0, x1, y1 = (float(v) for v in row)
    c = cos(radians((y0 + y1) / 2))
    span = max((x1 - x0) * c, y1 - y0, 1e-9)
    k = CANVAS / span
    # canvas X = (lon - x0) * c * k;  canvas Y = (y1 - lat) * k, and ST_AsSVG writes -y
    a, xoff, e, yoff = c * k, -x0 * c * k, k, -y1 * k
    tol = SIMPLIFY_UNITS / k
    cur.execute(
        f"""
        SELECT code, name,
               ST_AsSVG(ST_Affine(ST_SimplifyPreserveTopology(geom, %(tol)s), %(a)s, 0, 0, %(e)s, %(xoff)s, %(yoff)s),
                        0, 1),
               ST_X(p) * %(a)s + %(xoff)s, -(ST_Y(p) * %(e)s + %(yoff)s), geom IS NULL
        FROM ({base}) s, LATERAL (SELECT ST_PointOnSurface(geom) AS p) q
        ORDER BY code
        """,
        {**params, "tol": tol, "a": a, "e": e, "xoff": xoff, "yoff": yoff},
    )
    shapes: list[Shape] = []
    missing: list[str] = []
    for code, name, path, lx, ly, no_geom in cur.fetchall():
        if no_geom or not path:
            missing.append(str(code))
            continue
        shapes.append(Shape(str(code), str(name), str(path), round(float(lx), 1), round(float(ly), 1)))
    return MapGeometry(round((x1 - x0) * a, 1), round((y1 - y0) * k, 1), tuple(shapes), tuple(missing))


def geometry(conn: Conn, *, source: str, code: str, prefix: str) -> MapGeometry:
    """The projected shapes of a division's children (``source="children"``) or of a community's
    current cells (``source="cells"``), inside the caller's ``prefix``; cached."""
    if source not in _SOURCES:
        raise ValueError(f"unknown map source {source!r}")
    params = {"code": code, "like": prefix + "%"}
    with conn.cursor() as cur:
        fp = _fingerprint(cur, source, params)
        key = (source, code, prefix, fp)
        hit = CACHE.get(key)
        if hit is not None:
            return hit
        value = _project(cur, source, params)
    CACHE.put(key, value)
    return value


# ----------------------------------------------------------------------------- colours


def colour_class(rate: float | None, *, has_data: bool) -> str:
    """The CSS class of a shape: ``q0``..``q4`` by :data:`BREAKS`, or no data / not applicable."""
    if not has_data:
        return NO_DATA
    if rate is None:
        return NOT_APPLICABLE
    return CLASSES[bisect_right(BREAKS, rate)]


def legend() -> list[tuple[str, str]]:
    """(class, range) for each colour class, lowest first."""
    edges = [f"{round(b * 100)}%" for b in BREAKS]
    out = [(CLASSES[0], f"< {edges[0]}")]
    out += [(CLASSES[i], f"{edges[i - 1]}–{edges[i]}") for i in range(1, len(BREAKS))]
    out.append((CLASSES[-1], f"≥ {edges[-1]}"))
    return out


def render_map(
    g: MapGeometry,
    *,
    classes: Mapping[str, str],
    titles: Mapping[str, str],
    href: Callable[[str], str] | None,
    label: str,
    labels: bool,
    testid: str = "choropleth",
    show_codes: bool = True,
) -> str:
    """The SVG of ``g``: one ``path`` per shape with its colour class, an optional link per shape,
    a ``title`` per shape for hover, and name labels when ``labels``. Each path carries its
    division code (unless ``show_codes`` is off: a 15-digit cell code reads like a legacy ID
    number to a data-loss scanner, so cell maps leave them out) and a point inside it."""
    pad = 4.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="choropleth" data-testid="{escape(testid)}" role="img" '
        f'aria-label="{escape(label)}" viewBox="{-pad} {-pad} {g.width + 2 * pad:.1f} {g.height + 2 * pad:.1f}" '
        f'preserveAspectRatio="xMidYMid meet">'
    ]
    for s in g.shapes:
        cls = classes.get(s.code, "")
        ident = f'data-code="{s.code}" ' if show_codes else ""
        path = (
            f'<path d="{s.path}" class="shape {escape(cls)}" {ident}data-testid="shape" '
            f'data-lx="{s.label_x}" data-ly="{s.label_y}" vector-effect="non-scaling-stroke">'
            f"<title>{escape(titles.get(s.code, s.name))}</title></path>"
        )
        if href is None:
            out.append(path)
        else:
            out.append(f'<a href="{escape(href(s.code))}" {ident.rstrip()}>{path}</a>')
    if labels and g.shapes:
        size = max(g.width, g.height) / 45
        out.append(f'<g class="labels" font-size="{size:.1f}" aria-hidden="true">')
        out.extend(
            f'<text x="{s.label_x}" y="{s.label_y}" text-anchor="middle">{escape(s.name)}</text>'
            for s in g.shapes
        )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- trend lines

_TW, _TH = 300.0, 120.0
_PLOT = (34.0, 8.0, 294.0, 98.0)  # left, top, right, bottom


def trend_svg(
    points: Sequence[tuple[date, Sequence[float | None]]],
    *,
    start: date,
    end: date,
    series: Sequence[str],
    label: str,
    testid: str,
) -> str:
    """A small line chart of rates (0-100 %) over [start, end]: one polyline per run of defined
    values of each series (an undefined rate breaks the line), an isolated value as a dot."""
    left, top, right, bottom = _PLOT
    span = max((end - start).days, 1)

    def xy(d: date, v: float) -> str:
        x = left + (right - left) * (d - start).days / span
        y = bottom - (bottom - top) * min(max(v, 0.0), 1.0)
        return f"{x:.1f},{y:.1f}"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" data-testid="{escape(testid)}" role="img" '
        f'aria-label="{escape(label)}" viewBox="0 0 {_TW:.0f} {_TH:.0f}">',
        f"<title>{escape(label)}</title>",
    ]
    for frac, text in ((1.0, "100%"), (0.5, "50%"), (0.0, "0%")):
        y = bottom - (bottom - top) * frac
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{text}</text>')
    out.append(f'<text class="axis" x="{left}" y="{_TH - 6:.0f}">{start.isoformat()}</text>')
    out.append(f'<text class="axis" x="{right}" y="{_TH - 6:.0f}" text-anchor="end">{end.isoformat()}</text>')
    for i, name in enumerate(series):
        runs: list[list[str]] = [[]]
        for d, values in points:
            v = values[i]
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(xy(d, v))
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle class="s{i}" data-series="{escape(name)}" cx="{cx}" cy="{cy}" r="2"/>')
            elif run:
                out.append(f'<polyline class="s{i}" data-series="{escape(name)}" points="{" ".join(run)}"/>')
    out.append("</svg>")
    return "".join(out)
