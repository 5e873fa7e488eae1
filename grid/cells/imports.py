"""Grid cell versions in the store: dry run, commit, and reading the grid as of any date.

(Over 500 lines on purpose: the dry run is the commit rolled back, so both paths and the lock
they share stay in one file.)

A committed import is one ``cell_version``. Committing it (:func:`commit_import`):

* closes every current row of the versions it supersedes (``valid_to`` = the new version's
  ``valid_from``) and inserts the new rows with that ``valid_from``. Old rows stay, so the grid of
  any date is still there: :func:`cells_at`.
* The superseded versions are those with a current row under the import's **scope** (a division
  code: given, or the lowest division holding every code of the file). A superseded version may
  reach beyond the scope (a city-wide version, a county's import): its rows outside the scope are
  **carried over** unchanged into the new version, so a version always covers whole scopes and
  every open case riding a superseded version finds its cell again in the new one.
* Open cases are never moved silently. The commit runs, in the same database transaction as the
  cell rows, :func:`grid.cases.store.reroute_for_cell_version` for each superseded version
  with a reason naming the import: moved cases get an event carrying the reason and the move,
  cases whose cell keeps its code are relabelled to the new version. (With several superseded
  versions, each further re-route is its own transaction after the first.) Where to each case
  goes is decided by :func:`grid.cases.reroute_plan.plan` — cases of cells the import did not
  change stay; the others go by their point, else the same code, else the new cell over the old
  cell's interior, else the old cell's community.
* Re-importing the same grid is a no-op (:attr:`geodata.diff.GridDiff.is_noop`): no version.

The dry run (:func:`plan_import`) is the same commit **rehearsed** in a transaction that is then
rolled back: the new rows are written under the placeholder version id
:data:`REHEARSAL_VERSION_ID` (so no sequence value is spent), the re-route plan is read from them,
and nothing remains. The diff and the moves a dry run prints are therefore exactly those a commit
would apply to the same database state. The rehearsal leaves the current rows open and writes its
rows already closed (``valid_to`` = infinity, so they never collide with the current ones): the
plan joins versions by id only, and closing 50,000 rows that the rollback reopens cost a
province-size dry run ~1 s and as many dead row versions (bench_reroute).

Imports take one transaction-scoped advisory lock, so two imports never interleave.
The case table (``case_file``) is optional: without it there are no cases to move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import psycopg2.extensions
import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry

from geodata.codes import Level, own_prefix, subtree_like, within
from geodata.diff import DEFAULT_TOLERANCE_M, GridDiff, diff_cells
from geodata.divisions import Division
from geodata.imports import CellFeature, common_scope
from grid.store.copy import copy_rows
from grid.store.db import fetch_one

if TYPE_CHECKING:
    from grid.cases.store import CaseRules

Conn = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

REHEARSAL_VERSION_ID: Final = -1
"""The id a dry run writes its rolled-back version under (serial ids start at 1)."""
_LOCK_KEY: Final = 0x67726964_63656C6C  # "gridcell": one advisory lock for all cell imports


class ImportRefused(RuntimeError):
    """The import cannot be applied as asked (one sentence saying why and what to do)."""


@dataclass(frozen=True)
class StoredCell:
    code: str
    community_code: str
    name: str
    geometry: BaseGeometry
    version_id: int
    valid_from: date
    valid_to: date | None
    generated: bool


@dataclass(frozen=True)
class CaseMove:
    """An open case that would move (``to_chain`` differs from ``from_chain``)."""

    case_id: int
    from_chain: str
    to_chain: str
    how: str  # point | same_code | overlap | community (grid.cases.reroute_plan)
    old_version: int


@dataclass(frozen=True)
class ImportPlan:
    """What an import does to the stored grid (the dry run's answer)."""

    scope: str
    version_scope: str  # the new version's scope: ``scope`` or wider when rows are carried over
    valid_from: date
    diff: GridDiff
    superseded: tuple[int, ...]  # version ids whose current rows are closed
    carried_over: int  # rows outside the scope copied unchanged into the new version
    moves: tuple[CaseMove, ...]
    staying: int  # open cases on superseded versions that keep their cell (only relabelled)
    cases_checked: bool  # False when the database has no case table
    refused: str | None = None  # why the import cannot be applied as asked (dry run only; commit raises)

    @property
    def noop(self) -> bool:
        return self.diff.is_noop


@dataclass(frozen=True)
class CommitResult:
    plan: ImportPlan
    version_id: int | None  # None: nothing to commit (same grid)
    rerouted: int = 0
    reassigned: int = 0
    relabelled: int = 0
    rerouted_cases: tuple[int, ...] = field(default=())


# --- reading ------------------------------------------------------------------------------------


_CELL_COLUMNS: Final = (
    "code::text, community_code::text, name, ST_AsBinary(geom), version_id, valid_from, valid_to, generated"
)


def _cells(rows: Sequence[tuple[Any, ...]]) -> list[StoredCell]:
    geoms = shapely.from_wkb([bytes(r[3]) for r in rows]) if rows else []
    return [
        StoredCell(r[0], r[1], r[2], g, int(r[4]), r[5], r[6], bool(r[7]))
        for r, g in zip(rows, geoms, strict=True)
    ]


def current_cells(cur: Cursor, *, scope: str, lock: bool = False) -> list[StoredCell]:
    """The current cells under ``scope`` (a division code), by code; ``lock`` takes row locks."""
    cur.execute(
        f"SELECT {_CELL_COLUMNS} FROM grid_cell WHERE valid_to IS NULL AND code LIKE %s ORDER BY code"
        + (" FOR UPDATE" if lock else ""),
        (subtree_like(scope),),
    )
    return _cells(cur.fetchall())


def cells_at(cur: Cursor, *, scope: str, on: date) -> list[StoredCell]:
    """The cells under ``scope`` as they were valid on ``on`` (``valid_from <= on < valid_to``)."""
    cur.execute(
        f"SELECT {_CELL_COLUMNS} FROM grid_cell WHERE code LIKE %s AND valid_from <= %s"
        " AND (valid_to IS NULL OR valid_to > %s) ORDER BY code",
        (subtree_like(scope), on, on),
    )
    return _cells(cur.fetchall())


@dataclass(frozen=True)
class GridSnapshot:
    """Current and retired cells (optionally only near a point) and the area the grid covers."""

    codes: list[str]
    geoms: list[BaseGeometry]
    retired: list[tuple[str, BaseGeometry]]
    area: BaseGeometry | None  # union of the current versions' scope polygons; None: no grid at all


def _envelope(bbox: tuple[float, float, float, float] | None) -> tuple[str, tuple[float, ...]]:
    if bbox is None:
        return "", ()
    return " AND g.geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)", bbox


def grid_snapshot(cur: Cursor, *, bbox: tuple[float, float, float, float] | None = None) -> GridSnapshot:
    """The whole current grid, or only what intersects ``bbox`` (min lon, min lat, max lon, max lat).

    Retired cells are codes with no current row (their last geometry). The area is the union of
    the scope polygons of the versions that have current rows, clipped to nothing: an empty
    geometry when no scope is near ``bbox``, None when no version exists at all.
    """
    near, args = _envelope(bbox)
    cur.execute(
        f"SELECT g.code::text, ST_AsBinary(g.geom) FROM grid_cell g WHERE g.valid_to IS NULL{near} ORDER BY g.code",
        args,
    )
    current = cur.fetchall()
    cur.execute(
        f"""
        SELECT DISTINCT ON (g.code) g.code::text, ST_AsBinary(g.geom) FROM grid_cell g
        WHERE g.valid_to IS NOT NULL{near}
          AND NOT EXISTS (SELECT 1 FROM grid_cell c WHERE c.code = g.code AND c.valid_to IS NULL)
        ORDER BY g.code, g.valid_to DESC
        """,
        args,
    )
    retired = cur.fetchall()
    cur.execute(
        "SELECT DISTINCT v.scope_code::text FROM cell_version v"
        " WHERE EXISTS (SELECT 1 FROM grid_cell c WHERE c.version_id = v.id AND c.valid_to IS NULL)"
    )
    scopes = sorted(str(r[0]) for r in cur.fetchall())
    area: BaseGeometry | None = None
    if scopes:
        outer = [s for s in scopes if not any(o != s and within(s, o) for o in scopes)]
        near_d = near.replace("g.geom", "d.geom")
        cur.execute(
            f"SELECT ST_AsBinary(d.geom) FROM division d WHERE d.valid_to IS NULL AND d.geom IS NOT NULL"
            f" AND d.code = ANY(%s){near_d}",
            (outer, *args),
        )
        polys = [shapely.from_wkb(bytes(r[0])) for r in cur.fetchall()]
        area = shapely.union_all(polys) if polys else MultiPolygon()
    return GridSnapshot(
        codes=[str(r[0]) for r in current],
        geoms=list(shapely.from_wkb([bytes(r[1]) for r in current])) if current else [],
        retired=[(str(c), shapely.from_wkb(bytes(w))) for c, w in retired],
        area=area,
    )


def _division_rows(rows: Sequence[tuple[Any, ...]]) -> list[Division]:
    return [
        Division(
            code=str(code),
            name=name,
            level=Level(level),
            parent_code=None if parent is None else str(parent),
            geometry=None if wkb is None else shapely.from_wkb(bytes(wkb)),
            generated=bool(generated),
            source=source,
        )
        for code, name, level, parent, wkb, generated, source in rows
    ]


_DIVISION_COLUMNS: Final = "code::text, name, level, parent_code::text, ST_AsBinary(geom), generated, source"


def division_polygons(
    cur: Cursor, *, bbox: tuple[float, float, float, float] | None = None
) -> list[Division]:
    """Current divisions that have a polygon (all, or those whose box meets ``bbox``)."""
    near, args = _envelope(bbox)
    cur.execute(
        f"SELECT {_DIVISION_COLUMNS} FROM division g WHERE g.valid_to IS NULL AND g.geom IS NOT NULL{near}",
        args,
    )
    return _division_rows(cur.fetchall())


def divisions_by_code(cur: Cursor, codes: Sequence[str] | set[str]) -> dict[str, Division]:
    """Current divisions among ``codes``, with polygons."""
    cur.execute(
        f"SELECT {_DIVISION_COLUMNS} FROM division WHERE valid_to IS NULL AND code = ANY(%s)",
        (sorted(codes),),
    )
    return {d.code: d for d in _division_rows(cur.fetchall())}


def names_of(cur: Cursor, codes: Sequence[str]) -> dict[str, str]:
    """Names of current divisions and cells among ``codes`` (12 or 15 digits)."""
    cur.execute(
        "SELECT code::text, name FROM division WHERE valid_to IS NULL AND code = ANY(%s)"
        " UNION ALL SELECT code::text, name FROM grid_cell WHERE valid_to IS NULL AND code = ANY(%s)",
        (list(codes), list(codes)),
    )
    return {str(c): str(n) for c, n in cur.fetchall()}


# --- writing ------------------------------------------------------------------------------------


def _ewkb_all(geoms: Sequence[BaseGeometry]) -> list[str]:
    """Hex EWKB (SRID 4326, MultiPolygon) of every geometry, in one vectorised call."""
    if not geoms:
        return []
    array = np.empty(len(geoms), dtype=object)
    array[:] = list(geoms)
    kind = shapely.get_type_id(array)
    polygons = kind == shapely.GeometryType.POLYGON
    if polygons.any():
        array[polygons] = shapely.multipolygons(array[polygons], indices=np.arange(int(polygons.sum())))
    other = ~polygons & (kind != shapely.GeometryType.MULTIPOLYGON)
    array[other] = [MultiPolygon() for _ in range(int(other.sum()))]
    return [str(h) for h in shapely.to_wkb(shapely.set_srid(array, 4326), hex=True, include_srid=True)]


def _case_table(cur: Cursor) -> bool:
    cur.execute("SELECT to_regclass('public.case_file') IS NOT NULL")
    return bool(fetch_one(cur)[0])


@dataclass(frozen=True)
class _Written:
    version_id: int
    superseded: tuple[int, ...]
    carried_over: int
    version_scope: str


def _write_version(
    cur: Cursor,
    cells: Sequence[CellFeature],
    *,
    scope: str,
    valid_from: date,
    label: str,
    note: str,
    version_id: int | None,
) -> _Written:
    """Close the superseded versions' rows and write the new version (see the module docstring)."""
    prefix = own_prefix(scope)
    cur.execute(
        "SELECT DISTINCT g.version_id, v.scope_code::text FROM grid_cell g JOIN cell_version v ON v.id = g.version_id"
        " WHERE g.valid_to IS NULL AND g.code LIKE %s ORDER BY 1",
        (prefix + "%",),
    )
    old = cur.fetchall()
    superseded = tuple(int(v) for v, _ in old)
    version_scope = common_scope([scope, *(str(s) for _, s in old)]) or scope
    if superseded:
        cur.execute(
            "SELECT max(valid_from) FROM grid_cell WHERE valid_to IS NULL AND version_id = ANY(%s)",
            (list(superseded),),
        )
        latest = fetch_one(cur)[0]
        if latest is not None and valid_from <= latest:
            raise ImportRefused(
                f"the current grid under {scope} is valid from {latest}; a new version must start "
                f"later (--valid-from after {latest})"
            )
    if version_id is None:
        cur.execute(
            "INSERT INTO cell_version (label, scope_code, valid_from, generated, note)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (label, version_scope, valid_from, any(c.generated for c in cells), note),
        )
        version_id = int(fetch_one(cur)[0])
    else:
        cur.execute(
            "INSERT INTO cell_version (id, label, scope_code, valid_from, generated, note)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (version_id, label, version_scope, valid_from, any(c.generated for c in cells), note),
        )
    cur.execute(
        "CREATE TEMP TABLE stage_cell (code char(15), community_code char(12), name text,"
        " geom geometry(MultiPolygon, 4326), generated boolean) ON COMMIT DROP"
    )
    copy_rows(
        cur,
        "stage_cell",
        ["code", "community_code", "name", "geom", "generated"],
        (
            (c.code, c.community_code, c.name, hexwkb, c.generated)
            for c, hexwkb in zip(cells, _ewkb_all([c.geometry for c in cells]), strict=True)
        ),
    )
    carried = 0
    rehearsal = version_id == REHEARSAL_VERSION_ID  # rolled back: current rows stay open (module docstring)
    if superseded:
        cur.execute(
            "INSERT INTO stage_cell SELECT code, community_code, name, geom, generated FROM grid_cell"
            " WHERE valid_to IS NULL AND version_id = ANY(%s) AND code NOT LIKE %s",
            (list(superseded), prefix + "%"),
        )
        carried = cur.rowcount
        if not rehearsal:
            cur.execute(
                "UPDATE grid_cell SET valid_to = %s WHERE valid_to IS NULL AND version_id = ANY(%s)",
                (valid_from, list(superseded)),
            )
    cur.execute(
        "INSERT INTO grid_cell (code, community_code, name, geom, version_id, generated, valid_from, valid_to)"
        " SELECT code, community_code, name, geom, %s, generated, %s, %s FROM stage_cell",
        (version_id, valid_from, "infinity" if rehearsal else None),
    )
    cur.execute("DROP TABLE stage_cell")
    # The re-route plan joins the new rows at once: without fresh statistics the planner takes the
    # new version for one row and nests a whole-version scan inside every spatial probe (~200 s
    # instead of ~4 s for 50,000 cells, bench_reroute). ANALYZE sees this transaction's rows.
    cur.execute("ANALYZE grid_cell")
    return _Written(version_id, superseded, carried, version_scope)


def _moves(cur: Cursor, superseded: Sequence[int], new_version: int) -> tuple[list[CaseMove], int, bool]:
    """(open cases that would move, open cases that stay, whether there is a case table)."""
    if not _case_table(cur):
        return [], 0, False
    from grid.cases import reroute_plan

    moves: list[CaseMove] = []
    staying = 0
    for old in superseded:
        planned = reroute_plan.plan(cur, old_version=old, new_version=new_version)
        staying += planned.staying
        moves.extend(CaseMove(m.case_id, m.from_chain, m.to_chain, m.how, old) for m in planned.moves)
    return moves, staying, True


def _diff(
    cur: Cursor, cells: Sequence[CellFeature], *, scope: str, tolerance_m: float, lock: bool
) -> GridDiff:
    outside = [c.code for c in cells if not within(c.code, scope)]
    if outside:
        raise ImportRefused(f"{len(outside)} cell(s) are not under the scope {scope}, e.g. {outside[0]}")
    return diff_cells(current_cells(cur, scope=scope, lock=lock), cells, tolerance_m=tolerance_m)


def _noop_plan(cur: Cursor, scope: str, valid_from: date, diff: GridDiff) -> ImportPlan:
    """Nothing changes, so no case moves (whether or not there is a case table)."""
    return ImportPlan(scope, scope, valid_from, diff, (), 0, (), 0, cases_checked=_case_table(cur))


def plan_import(
    conn: Conn,
    cells: Sequence[CellFeature],
    *,
    scope: str,
    valid_from: date,
    tolerance_m: float = DEFAULT_TOLERANCE_M,
) -> ImportPlan:
    """The dry run: the diff and the open cases that would move. Writes nothing (rolled back).

    An import that could not be committed as asked (its ``valid_from`` is not after the current
    version's) still gets its diff, with :attr:`ImportPlan.refused` saying why; cells outside
    ``scope`` raise :class:`ImportRefused`.
    """
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            diff = _diff(cur, cells, scope=scope, tolerance_m=tolerance_m, lock=False)
            if diff.is_noop:
                return _noop_plan(cur, scope, valid_from, diff)
            try:
                written = _write_version(
                    cur,
                    cells,
                    scope=scope,
                    valid_from=valid_from,
                    label="dry run",
                    note="",
                    version_id=REHEARSAL_VERSION_ID,
                )
            except ImportRefused as exc:
                return ImportPlan(scope, scope, valid_from, diff, (), 0, (), 0, False, refused=str(exc))
            moves, staying, checked = _moves(cur, written.superseded, REHEARSAL_VERSION_ID)
            return ImportPlan(
                scope,
                written.version_scope,
                valid_from,
                diff,
                written.superseded,
                written.carried_over,
                tuple(moves),
                staying,
                checked,
            )
    finally:
        conn.rollback()


def reroute_reason(label: str, old_version: int, new_version: int) -> str:
    """The reason recorded on every re-routed case (codes and labels only, no personal data)."""
    return (
        f"网格调整：{label}（网格版本 {old_version} → {new_version}）"
        f" / grid change: {label} (cell version {old_version} -> {new_version})"
    )


def commit_import(
    conn: Conn,
    cells: Sequence[CellFeature],
    *,
    scope: str,
    valid_from: date,
    label: str,
    note: str = "",
    rules: CaseRules | None = None,
    actor: str = "system:cells-import",
    tolerance_m: float = DEFAULT_TOLERANCE_M,
) -> CommitResult:
    """Apply the import as a new version and re-route open cases explicitly (module docstring).

    ``rules`` are the case rules for re-routing (default: the configured policy, loaded only
    when there are open cases to re-route). A no-op import returns ``version_id=None``.
    """
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            diff = _diff(cur, cells, scope=scope, tolerance_m=tolerance_m, lock=True)
            if diff.is_noop:
                plan = _noop_plan(cur, scope, valid_from, diff)
                conn.rollback()
                return CommitResult(plan, None)
            written = _write_version(
                cur, cells, scope=scope, valid_from=valid_from, label=label, note=note, version_id=None
            )
            moves, staying, checked = _moves(cur, written.superseded, written.version_id)
            counts = diff.counts()
            summary = (
                f"{'; '.join(f'{n} {k.value}' for k, n in counts.items())}; {written.carried_over} carried over;"
                f" open cases: {len(moves)} to move, {staying} staying"
            )
            cur.execute(
                "UPDATE cell_version SET note = %s WHERE id = %s",
                ((note + "\n" if note else "") + summary, written.version_id),
            )
        plan = ImportPlan(
            scope,
            written.version_scope,
            valid_from,
            diff,
            written.superseded,
            written.carried_over,
            tuple(moves),
            staying,
            checked,
        )
        if not moves and not staying:
            conn.commit()
            return CommitResult(plan, written.version_id)
        from grid.cases.reroute import reroute_for_cell_version
        from grid.cases.store import rules_from_settings

        use_rules = rules if rules is not None else rules_from_settings()
        rerouted = reassigned = relabelled = 0
        ids: list[int] = []
        for old in written.superseded:
            # The first call commits the cell rows together with its re-routes (one transaction).
            report = reroute_for_cell_version(
                conn,
                old_version=old,
                new_version=written.version_id,
                reason=reroute_reason(label, old, written.version_id),
                rules=use_rules,
                actor=actor,
            )
            rerouted += report.moved
            reassigned += report.reassigned
            relabelled += report.relabelled
            ids.extend(m.case_id for m in report.moves)
        conn.commit()
        return CommitResult(plan, written.version_id, rerouted, reassigned, relabelled, tuple(sorted(ids)))
    except BaseException:
        conn.rollback()
        raise
