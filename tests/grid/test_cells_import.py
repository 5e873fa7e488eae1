"""Cell imports on the real database: the dry run's diff and moved open cases, commit as a new
version with old versions still queryable, explicit re-routes, no-op re-imports, carry-over.

Every test gets its own database, cloned from a template that holds Hubei's and Beijing's real
divisions and the generated Yichang grid (version 1, valid from 2026-01-01): imports rewrite the
grid, and other test modules share the session database. :func:`template_database`,
:func:`cloned_database` and :func:`scenario` are reused by tests/test_cli_geo.py.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import psycopg2
import pytest
import shapely
from shapely.geometry import MultiPolygon, box
from shapely.geometry.base import BaseGeometry

from connectors.kinds import Outcome
from geodata.diff import ChangeKind
from geodata.imports import CellFeature
from grid.cases.actions import accept, resolve
from grid.cases.intake import CaseReport, open_case
from grid.cases.policy import ProvincePolicy, build_calendar
from grid.cases.queries import events_of, get_case
from grid.cases.store import CaseRules
from grid.cells import imports as store
from grid.store.db import transaction

pytestmark = pytest.mark.db

CITY = "420500000000"
XILING = "420502000000"
V1_FROM = date(2026, 1, 1)
V2_FROM = date(2026, 10, 1)
T0 = datetime(2026, 9, 28, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
RULES = CaseRules(ProvincePolicy(), build_calendar(ProvincePolicy()))


# ----------------------------------------------------------------------------- databases


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _admin(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def _drop(admin_url: str, name: str) -> None:
    conn = _admin(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        conn.close()


_TEMPLATES: dict[str, str] = {}


def _build_template(database_url: str, sample_world: Any) -> str:
    """Create (once per session database) and load the template database; returns its name."""
    if database_url in _TEMPLATES:
        return _TEMPLATES[database_url]
    from geodata.divisions import load_national_divisions
    from grid.cases.owners import ensure_units
    from grid.store import migrate
    from grid.store import world as store_world

    name = f"{urlsplit(database_url).path.lstrip('/')}_geo"
    admin = _admin(database_url)
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    url = _with_db(database_url, name)
    migrate.upgrade(url)
    sample_codes = {d.code for d in sample_world.divisions}
    national = [
        d for d in load_national_divisions() if d.code[:2] in ("42", "11") and d.code not in sample_codes
    ]
    conn = psycopg2.connect(url)
    try:
        with transaction(conn) as cur:
            store_world.load_divisions(cur, [*national, *sample_world.divisions], valid_from=V1_FROM)
            store_world.load_cells(
                cur, sample_world.cells, scope_code=CITY, label="sample", valid_from=V1_FROM, generated=True
            )
        ensure_units(conn, scope=CITY)
    finally:
        conn.close()
    _TEMPLATES[database_url] = name
    return name


@contextmanager
def template_database(database_url: str, sample_world: Any) -> Iterator[str]:
    """The session's geo template (built once, shared by test modules); dropped on exit."""
    name = _build_template(database_url, sample_world)
    try:
        yield name
    finally:
        _TEMPLATES.pop(database_url, None)
        _drop(database_url, name)


@contextmanager
def cloned_database(database_url: str, template: str) -> Iterator[str]:
    """A fresh clone of ``template``; GRIDFLOW_DATABASE_URL points at it meanwhile."""
    from grid.settings import get_settings

    name = f"{template}_{secrets.token_hex(3)}"
    admin = _admin(database_url)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        admin.close()
    url = _with_db(database_url, name)
    previous = os.environ.get("GRIDFLOW_DATABASE_URL")
    os.environ["GRIDFLOW_DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("GRIDFLOW_DATABASE_URL", None)
        else:
            os.environ["GRIDFLOW_DATABASE_URL"] = previous
        get_settings.cache_clear()
        _drop(database_url, name)


@pytest.fixture(scope="session")
def geo_template(database_url: str, sample_world: Any) -> Iterator[str]:
    with template_database(database_url, sample_world) as name:
        yield name


@pytest.fixture
def geo_db(database_url: str, geo_template: str) -> Iterator[str]:
    """A database of its own for one test (imports rewrite the grid)."""
    with cloned_database(database_url, geo_template) as url:
        yield url


@pytest.fixture
def db(geo_db: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(geo_db)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


# ----------------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class Scenario:
    """The sample grid with one community reworked, and points to file cases at.

    a is split: its west part keeps the code, the east part becomes ``a_east`` (a new code);
    c is merged into b; d is removed without a successor (a gap); ``renamed`` gets a new name.
    """

    cells: list[CellFeature]
    a: str
    a_east: str
    b: str
    c: str
    d: str
    renamed: str
    west_point: tuple[float, float]
    east_point: tuple[float, float]
    d_point: tuple[float, float]


def _feature(code: str, name: str, geom: BaseGeometry, i: int) -> CellFeature:
    multi = geom if isinstance(geom, MultiPolygon) else MultiPolygon(shapely.get_parts(geom).tolist())
    return CellFeature(code=code, community_code=code[:12], name=name, geometry=multi, feature=i)


def scenario(sample_world: Any) -> Scenario:
    by_community: dict[str, list[Any]] = {}
    for c in sample_world.cells:
        by_community.setdefault(c.community_code, []).append(c)
    community = next(k for k in sorted(by_community) if k.startswith("420502") and len(by_community[k]) >= 4)
    a, b, c, d = sorted(by_community[community], key=lambda x: x.code)[:4]
    a_east_code = f"{community}{max(int(x.code[12:]) for x in by_community[community]) + 1:03d}"
    x0, y0, x1, y1 = a.geometry.bounds
    cx = a.geometry.centroid.x
    west = shapely.intersection(a.geometry, box(x0 - 1, y0 - 1, cx, y1 + 1))
    east = shapely.intersection(a.geometry, box(cx, y0 - 1, x1 + 1, y1 + 1))
    other = next(x for x in sample_world.cells if x.community_code != community)
    cells: list[CellFeature] = []
    for i, cell in enumerate(sample_world.cells):
        if cell.code == a.code:
            cells.append(_feature(a.code, a.name, west, i))
            cells.append(_feature(a_east_code, "新网格", east, i))
        elif cell.code == b.code:
            cells.append(_feature(b.code, b.name, shapely.union(b.geometry, c.geometry), i))
        elif cell.code in (c.code, d.code):
            continue
        elif cell.code == other.code:
            cells.append(_feature(cell.code, cell.name + "（调整）", cell.geometry, i))
        else:
            cells.append(_feature(cell.code, cell.name, cell.geometry, i))
    wp, ep, dp = west.representative_point(), east.representative_point(), d.geometry.representative_point()
    return Scenario(
        cells,
        a.code,
        a_east_code,
        b.code,
        c.code,
        d.code,
        other.code,
        (wp.x, wp.y),
        (ep.x, ep.y),
        (dp.x, dp.y),
    )


@pytest.fixture(scope="module")
def sc(sample_world: Any) -> Scenario:
    return scenario(sample_world)


def file_case(
    conn: psycopg2.extensions.connection, cell: str, point: tuple[float, float] | None = None
) -> int:
    lon, lat = point if point else (None, None)
    report = CaseReport(kind="wage_arrears", channel="officer", cell_code=cell, lon=lon, lat=lat)  # type: ignore[arg-type]
    return open_case(conn, report=report, rules=RULES, actor="t", at=T0).case_id


@dataclass(frozen=True)
class Cases:
    moving: int  # in a, its point in the east half: to a_east by its point
    staying: int  # in a, its point in the west half: keeps a
    merged: int  # in c, no point: to b, the new cell over c's interior
    gone: int  # in d, which is removed: back to d's community
    done: int  # resolved: never moves


def open_cases(conn: psycopg2.extensions.connection, s: Scenario) -> Cases:
    done = file_case(conn, s.a, s.east_point)
    v = accept(conn, case_id=done, expected_version=1, actor="officer:t", rules=RULES, at=T0).version
    resolve(
        conn,
        case_id=done,
        expected_version=v,
        actor="officer:t",
        outcome=Outcome.AGREEMENT,
        amount_recovered=Decimal("100"),
        rules=RULES,
        at=T0,
    )
    return Cases(
        moving=file_case(conn, s.a, s.east_point),
        staying=file_case(conn, s.a, s.west_point),
        merged=file_case(conn, s.c),
        gone=file_case(conn, s.d, s.d_point),
        done=done,
    )


def state_of(conn: psycopg2.extensions.connection) -> tuple[Any, ...]:
    """Everything an import may touch, summed up."""
    with transaction(conn) as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM grid_cell), (SELECT count(*) FROM grid_cell WHERE valid_to IS NULL),"
            " (SELECT count(*) FROM cell_version), (SELECT last_value FROM cell_version_id_seq),"
            " (SELECT coalesce(sum(version), 0) FROM case_file), (SELECT count(*) FROM case_event),"
            " (SELECT string_agg(chain_code || ':' || coalesce(chain_version_id, 0), ',' ORDER BY id) FROM case_file)"
        )
        row = cur.fetchone()
    assert row is not None
    return tuple(row)


# ----------------------------------------------------------------------------- tests


def test_dry_run_shows_the_diff_and_the_open_cases_that_would_move_and_writes_nothing(
    db: psycopg2.extensions.connection, sc: Scenario
) -> None:
    """Rule: the dry run prints added/removed/changed cells and every open case whose point (or
    filed cell) falls in another current cell under the new grid; it writes nothing."""
    cases = open_cases(db, sc)
    before = state_of(db)
    plan = store.plan_import(db, sc.cells, scope=CITY, valid_from=V2_FROM)
    assert state_of(db) == before

    counts = plan.diff.counts()
    assert (counts[ChangeKind.ADDED], counts[ChangeKind.REMOVED], counts[ChangeKind.CHANGED]) == (1, 2, 2)
    assert counts[ChangeKind.RENAMED] == 1
    kinds = {c.code: c.kind for c in plan.diff.changes if c.kind is not ChangeKind.UNCHANGED}
    assert kinds == {
        sc.a_east: ChangeKind.ADDED,
        sc.c: ChangeKind.REMOVED,
        sc.d: ChangeKind.REMOVED,
        sc.a: ChangeKind.CHANGED,
        sc.b: ChangeKind.CHANGED,
        sc.renamed: ChangeKind.RENAMED,
    }
    assert plan.superseded == (1,) and plan.carried_over == 0 and plan.cases_checked
    assert {m.case_id: (m.to_chain, m.how) for m in plan.moves} == {
        cases.moving: (sc.a_east, "point"),
        cases.merged: (sc.b, "overlap"),
        cases.gone: (sc.d[:12], "community"),
    }
    assert all(m.from_chain == (sc.a if m.case_id == cases.moving else m.from_chain) for m in plan.moves)
    assert plan.staying == 1  # the case in a's west half keeps its cell


@pytest.mark.parametrize(
    ("valid_from", "scope", "message"),
    [
        pytest.param(
            V1_FROM, CITY, "must start later", id="a version starting the same day as the current one"
        ),
        pytest.param(
            date(2025, 6, 1), CITY, "must start later", id="a version starting before the current one"
        ),
        pytest.param(V2_FROM, XILING, "not under the scope", id="cells outside the scope given"),
    ],
)
def test_an_import_that_cannot_apply_is_refused_and_writes_nothing(
    db: psycopg2.extensions.connection, sc: Scenario, valid_from: date, scope: str, message: str
) -> None:
    """Rule: a refused import (dates that would overlap the current version, cells outside the
    scope) writes nothing: the commit raises ImportRefused with the reason; the dry run still
    shows the diff and says why it could not be committed (cells outside the scope: raises)."""
    before = state_of(db)
    with pytest.raises(store.ImportRefused, match=message):
        store.commit_import(db, sc.cells, scope=scope, valid_from=valid_from, label="x")
    if scope == CITY:
        plan = store.plan_import(db, sc.cells, scope=scope, valid_from=valid_from)
        assert plan.refused is not None and message in plan.refused
        assert plan.diff.counts()[ChangeKind.ADDED] == 1 and plan.moves == ()
    else:
        with pytest.raises(store.ImportRefused, match=message):
            store.plan_import(db, sc.cells, scope=scope, valid_from=valid_from)
    assert state_of(db) == before


def test_commit_creates_a_version_closes_old_rows_and_keeps_the_old_grid_queryable(
    db: psycopg2.extensions.connection, sc: Scenario, sample_world: Any
) -> None:
    """Rule: --commit writes a new version valid from its date, closes the old rows on that date,
    and the old grid stays queryable by date; re-importing the same grid is a no-op."""
    result = store.commit_import(
        db, sc.cells, scope=CITY, valid_from=V2_FROM, label="2026年10月网格调整", rules=RULES
    )
    assert result.version_id == 2
    with transaction(db) as cur:
        before = store.cells_at(cur, scope=CITY, on=date(2026, 9, 30))
        after = store.cells_at(cur, scope=CITY, on=V2_FROM)
        current = store.current_cells(cur, scope=CITY)
        cur.execute("SELECT DISTINCT valid_to FROM grid_cell WHERE version_id = 1")
        closed_on = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT label, scope_code, valid_from, note FROM cell_version WHERE id = 2")
        label, scope, valid_from, note = cur.fetchone() or (None, None, None, None)
    assert [c.code for c in before] == sorted(c.code for c in sample_world.cells)
    assert {c.version_id for c in before} == {1} and {c.valid_to for c in before} == {V2_FROM}
    assert [c.code for c in after] == sorted(c.code for c in sc.cells) == [c.code for c in current]
    assert {c.version_id for c in after} == {2}
    assert closed_on == {V2_FROM}
    assert (label, scope, valid_from) == ("2026年10月网格调整", CITY, V2_FROM)
    assert "1 added; 2 removed; 2 changed; 1 renamed" in note
    old_a = next(c for c in before if c.code == sc.a)
    orig_a = next(c for c in sample_world.cells if c.code == sc.a)
    assert shapely.equals_exact(
        shapely.normalize(old_a.geometry), shapely.normalize(MultiPolygon([orig_a.geometry])), 0
    )

    with transaction(db) as cur:
        snap = store.grid_snapshot(cur)
    assert {code for code, _ in snap.retired} == {sc.c, sc.d}

    again = store.commit_import(
        db, sc.cells, scope=CITY, valid_from=date(2026, 11, 1), label="again", rules=RULES
    )
    assert again.version_id is None and again.plan.noop
    with transaction(db) as cur:
        cur.execute("SELECT count(*) FROM cell_version")
        assert (cur.fetchone() or [0])[0] == 2


def test_commit_reroutes_open_cases_explicitly_with_the_reason(
    db: psycopg2.extensions.connection, sc: Scenario
) -> None:
    """Rule: open cases never move silently: the commit re-routes each moved case with an event
    carrying the reason and the move, relabels cases that keep their cell, leaves resolved
    cases alone, and the cells and the re-routes commit together."""
    cases = open_cases(db, sc)
    result = store.commit_import(db, sc.cells, scope=CITY, valid_from=V2_FROM, label="网格调整", rules=RULES)
    assert result.version_id == 2
    assert (result.rerouted, result.relabelled) == (3, 1)
    assert set(result.rerouted_cases) == {cases.moving, cases.merged, cases.gone}
    reason = store.reroute_reason("网格调整", 1, 2)
    for case_id, to in ((cases.moving, sc.a_east), (cases.merged, sc.b), (cases.gone, sc.d[:12])):
        detail = get_case(db, case_id=case_id)
        assert detail.chain_code == to
        last = events_of(db, case_id=case_id)[-1].event
        assert last.payload["reason"] == reason
        assert last.payload["reroute"]["to_chain"] == to
    with transaction(db) as cur:
        cur.execute(
            "SELECT id, chain_code, chain_version_id, cell_code, cell_version_id FROM case_file ORDER BY id"
        )
        rows = {r[0]: r[1:] for r in cur.fetchall()}
    assert rows[cases.staying] == (sc.a, 2, sc.a, 1)  # same cell, now on version 2; filed under version 1
    assert rows[cases.done] == (sc.a, 1, sc.a, 1)  # resolved: untouched
    assert rows[cases.moving][2:] == (sc.a, 1)  # the cell it was filed under never changes


def test_a_county_import_carries_the_rest_of_the_city_over(
    db: psycopg2.extensions.connection, sc: Scenario, sample_world: Any
) -> None:
    """Rule: importing one county supersedes the city-wide version; the other counties' cells
    are carried over unchanged into the new version, so the whole city stays current."""
    county_cells = [c for c in sc.cells if c.code.startswith(XILING[:6])]
    others = [c for c in sample_world.cells if not c.code.startswith(XILING[:6])]
    plan = store.plan_import(db, county_cells, scope=XILING, valid_from=V2_FROM)
    assert (plan.scope, plan.version_scope, plan.carried_over) == (XILING, CITY, len(others))
    result = store.commit_import(
        db, county_cells, scope=XILING, valid_from=V2_FROM, label="西陵区", rules=RULES
    )
    with transaction(db) as cur:
        current = store.current_cells(cur, scope=CITY)
    assert result.version_id == 2
    assert len(current) == len(county_cells) + len(others)
    assert {c.version_id for c in current} == {2}
    kept = {c.code: c.geometry for c in current}
    assert all(shapely.equals(kept[c.code], c.geometry) for c in others)


def test_a_first_import_into_a_scope_without_cells_supersedes_nothing(
    db: psycopg2.extensions.connection,
) -> None:
    """Rule: a scope with no current cells gets its first version; other grids are untouched."""
    county = "420602000000"  # 襄城区, 襄阳: real divisions, no grid yet
    with transaction(db) as cur:
        cur.execute("SELECT ST_AsBinary(ST_PointOnSurface(geom)) FROM division WHERE code = %s", (county,))
        p = shapely.from_wkb(bytes((cur.fetchone() or [b""])[0]))
    cell = box(p.x - 0.001, p.y - 0.001, p.x + 0.001, p.y + 0.001)
    cells = [_feature("420602001001001", "第1网格", cell, 0)]
    result = store.commit_import(db, cells, scope=county, valid_from=V2_FROM, label="襄城区")
    assert (result.version_id, result.plan.superseded, result.plan.cases_checked) == (2, (), True)
    with transaction(db) as cur:
        assert len(store.current_cells(cur, scope=CITY)) > 1000
        assert [c.code for c in store.cells_at(cur, scope=county, on=V1_FROM)] == []
        assert [c.code for c in store.cells_at(cur, scope=county, on=V2_FROM)] == ["420602001001001"]
