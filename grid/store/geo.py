"""Reading the stored geography back: current cells, retired cells and divisions of a scope."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
import shapely
from shapely.geometry.base import BaseGeometry

from geodata.codes import Level, ancestor, subtree_like
from geodata.divisions import Division


@dataclass(frozen=True)
class StoredCells:
    codes: list[str]
    geoms: list[BaseGeometry]
    retired: list[tuple[str, BaseGeometry]]
    outline: BaseGeometry | None


def current_version(cur: psycopg2.extensions.cursor, *, scope_code: str) -> int:
    """The newest committed grid version with a current cell under ``scope_code`` (0: none)."""
    cur.execute(
        "SELECT coalesce(max(version_id), 0) FROM grid_cell WHERE valid_to IS NULL AND code LIKE %s",
        (subtree_like(scope_code),),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def load_cells(cur: psycopg2.extensions.cursor, *, scope_code: str) -> StoredCells:
    """Current and retired cells under a division, and the division's own polygon."""
    like = subtree_like(scope_code)
    cur.execute(
        "SELECT code, ST_AsBinary(geom) FROM grid_cell WHERE valid_to IS NULL AND code LIKE %s ORDER BY code",
        (like,),
    )
    current = cur.fetchall()
    cur.execute(
        """
        SELECT DISTINCT ON (code) code, ST_AsBinary(geom) FROM grid_cell g
        WHERE valid_to IS NOT NULL AND code LIKE %s
          AND NOT EXISTS (SELECT 1 FROM grid_cell c WHERE c.code = g.code AND c.valid_to IS NULL)
        ORDER BY code, valid_to DESC
        """,
        (like,),
    )
    retired = cur.fetchall()
    cur.execute("SELECT ST_AsBinary(geom) FROM division WHERE code = %s AND valid_to IS NULL", (scope_code,))
    row = cur.fetchone()
    outline = shapely.from_wkb(bytes(row[0])) if row and row[0] is not None else None
    return StoredCells(
        codes=[c for c, _ in current],
        geoms=list(shapely.from_wkb([bytes(w) for _, w in current])) if current else [],
        retired=[(c, shapely.from_wkb(bytes(w))) for c, w in retired],
        outline=outline,
    )


def load_divisions(cur: psycopg2.extensions.cursor, *, scope_code: str | None = None) -> list[Division]:
    """Current divisions (without polygons) — enough for address matching by name."""
    if scope_code is None:
        cur.execute(
            "SELECT code, name, level, parent_code, generated, source FROM division WHERE valid_to IS NULL"
        )
    else:
        prov = ancestor(scope_code, Level.PROVINCE)
        cur.execute(
            "SELECT code, name, level, parent_code, generated, source FROM division"
            " WHERE valid_to IS NULL AND (code LIKE %s OR level <= 2 OR code = %s)",
            (subtree_like(scope_code), prov),
        )
    return [
        Division(
            code=code,
            name=name,
            level=Level(level),
            parent_code=parent,
            geometry=None,
            generated=generated,
            source=source,
        )
        for code, name, level, parent, generated, source in cur.fetchall()
    ]
