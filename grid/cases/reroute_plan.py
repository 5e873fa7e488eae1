"""Re-routing open cases onto a new cell version by set operations.

A grid change touches a few hundred cells of a province; the open cases of every other cell keep
their cell. So the plan has two parts, each one statement:

* **Untouched cells** — an old cell whose code is in the new version with exactly the same
  geometry (PostGIS ``=``: same coordinates in the same order; carried-over rows always are). Its
  open cases stay: they are only **relabelled** to the new version, in one ``UPDATE``, with no
  event (nothing about the case changes but the version id of the cell it rides).
* **Changed cells** — an old cell whose code is gone from the new version or whose geometry
  differs. Where each of their open cases goes is decided in one indexed spatial join, by the
  rule that has always decided it (most specific first): the new cell covering the **case's own
  point** (lowest code on a shared edge); else the new cell of the **same code**; else the new
  cell covering a point inside the old cell (``ST_PointOnSurface``, computed once per cell, not
  per case: **overlap**); else the old cell's **community** (the case leaves the cell grid).

A case of a changed cell whose answer is its own code (an edge moved but not across its point)
is relabelled like the untouched ones. Every other case moves: in batches, each batch's rows
locked in id order, and each moved case recorded through the case store's own event-append path
(:func:`grid.cases.store.append_event`: one hash-chained event carrying the reason and the move, a
reassignment with fresh deadlines when its owner changes, else a note).

The one difference from planning every case by its point: a case whose cell did not change never
moves, even when its point lies outside its cell (it was filed against that cell by an officer or
an address). A grid change moves only what it changed.

Indexes used: ``grid_cell_version_code`` (version, code) for both joins on code,
``grid_cell_geom`` (GiST) for the point and overlap joins, ``case_file_chain_version_open`` for
the cases riding the old version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import psycopg2.extensions

from grid.cases.owners import owner_at, owner_candidates, units_exist
from grid.cases.reroute import RerouteMove, RerouteReport
from grid.cases.states import DONE_STATES, SQL_OPEN, Action
from grid.cases.store import CASE_HEAD_COLUMNS, CaseHead, CaseRules
from grid.cases.store import append_event as _append

Cursor = psycopg2.extensions.cursor

BATCH: Final = 1000
"""Moved cases locked and written per batch."""

# Old cells whose code is gone from the new version or whose geometry differs.
_CHANGED: Final = """
    SELECT o.code::text AS code, o.geom FROM grid_cell o
    WHERE o.version_id = %(old)s
      AND NOT EXISTS (
          SELECT 1 FROM grid_cell n
          WHERE n.version_id = %(new)s AND n.code = o.code AND n.geom = o.geom
      )
"""

_PLAN_CHANGED: Final = f"""
    WITH changed AS MATERIALIZED ({_CHANGED}),
    moving AS MATERIALIZED (
        SELECT c.id, c.chain_code, c.geom FROM case_file c JOIN changed ch ON ch.code = c.chain_code
        WHERE c.chain_version_id = %(old)s AND c.{SQL_OPEN}
    ),
    by_point AS (
        SELECT DISTINCT ON (m.id) m.id, g.code::text AS code
        FROM moving m JOIN grid_cell g ON g.version_id = %(new)s AND ST_Covers(g.geom, m.geom)
        WHERE m.geom IS NOT NULL
        ORDER BY m.id, g.code
    ),
    by_overlap AS (
        SELECT DISTINCT ON (ch.code) ch.code AS old_code, g.code::text AS code
        FROM changed ch JOIN grid_cell g
            ON g.version_id = %(new)s AND ST_Covers(g.geom, ST_PointOnSurface(ch.geom))
        WHERE ch.code IN (SELECT chain_code FROM moving)
        ORDER BY ch.code, g.code
    )
    SELECT m.id, m.chain_code,
           COALESCE(p.code, s.code::text, o.code),
           CASE WHEN p.code IS NOT NULL THEN 'point'
                WHEN s.code IS NOT NULL THEN 'same_code'
                WHEN o.code IS NOT NULL THEN 'overlap' END
    FROM moving m
    LEFT JOIN by_point p ON p.id = m.id
    LEFT JOIN grid_cell s ON s.version_id = %(new)s AND s.code = m.chain_code::char(15)
    LEFT JOIN by_overlap o ON o.old_code = m.chain_code
    ORDER BY m.id
"""

_UNTOUCHED_CASES: Final = f"""
    FROM case_file c
    WHERE c.chain_version_id = %(old)s AND c.{SQL_OPEN}
      AND c.chain_code NOT IN (SELECT code FROM changed)
"""


@dataclass(frozen=True)
class ReroutePlan:
    """The cases of changed cells and where they go; the untouched cells' cases only counted.

    ``planned`` holds every open case of a changed cell (a ``to_chain`` equal to its
    ``from_chain`` only relabels); ``untouched`` counts the open cases of untouched cells, listed
    in ``untouched_cases`` when asked for (``how`` is ``point`` or ``same_code``, as the
    case-by-case rule would say of a case whose cell did not change).
    """

    old_version: int
    new_version: int
    planned: tuple[RerouteMove, ...]
    untouched: int
    untouched_cases: tuple[RerouteMove, ...] = ()

    @property
    def moves(self) -> list[RerouteMove]:
        """The cases that change cell."""
        return [m for m in self.planned if m.to_chain != m.from_chain]

    @property
    def staying(self) -> int:
        """Open cases riding ``old_version`` that keep their cell (only relabelled)."""
        return self.untouched + sum(m.to_chain == m.from_chain for m in self.planned)


def plan(cur: Cursor, *, old_version: int, new_version: int, list_untouched: bool = False) -> ReroutePlan:
    """Where each open case riding a cell of ``old_version`` goes in ``new_version``; read-only."""
    args = {"old": old_version, "new": new_version}
    cur.execute(_PLAN_CHANGED, args)
    planned = []
    for case_id, chain, code, how in cur.fetchall():
        if code is None:
            planned.append(RerouteMove(int(case_id), str(chain), str(chain)[:12], "community"))
        else:
            planned.append(RerouteMove(int(case_id), str(chain), str(code), str(how)))
    listed: tuple[RerouteMove, ...] = ()
    if list_untouched:
        cur.execute(
            f"WITH changed AS ({_CHANGED}) SELECT c.id, c.chain_code,"
            f" CASE WHEN c.geom IS NOT NULL THEN 'point' ELSE 'same_code' END {_UNTOUCHED_CASES}",
            args,
        )
        listed = tuple(RerouteMove(int(i), str(ch), str(ch), str(how)) for i, ch, how in cur.fetchall())
        untouched = len(listed)
    else:
        cur.execute(f"WITH changed AS ({_CHANGED}) SELECT count(*) {_UNTOUCHED_CASES}", args)
        row = cur.fetchone()
        untouched = int(row[0]) if row else 0
    return ReroutePlan(old_version, new_version, tuple(planned), untouched, listed)


def _relabel_untouched(cur: Cursor, *, old_version: int, new_version: int) -> int:
    cur.execute(
        f"WITH changed AS ({_CHANGED}) UPDATE case_file SET chain_version_id = %(new)s WHERE id IN"
        f" (SELECT c.id {_UNTOUCHED_CASES})",
        {"old": old_version, "new": new_version},
    )
    return int(cur.rowcount)


def _lock_heads(cur: Cursor, ids: Sequence[int], *, old_version: int) -> list[CaseHead]:
    """Lock the batch's case rows in id order; cases closed or re-routed meanwhile drop out."""
    cur.execute(
        f"SELECT {CASE_HEAD_COLUMNS} FROM case_file WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (list(ids),),
    )
    heads = [CaseHead.from_row(r) for r in cur.fetchall()]
    return [h for h in heads if h.state not in DONE_STATES and h.chain_version_id == old_version]


def apply(
    cur: Cursor,
    *,
    old_version: int,
    new_version: int,
    reason: str,
    rules: CaseRules,
    actor: str,
    at: datetime | None = None,
    batch: int = BATCH,
) -> RerouteReport:
    """Relabel the untouched cells' cases in bulk and move the changed cells' cases in batches.

    Runs inside the caller's transaction (``cur``); see the module docstring for the rule.
    """
    if not reason.strip():
        raise ValueError("a re-route needs a reason")
    when = at or datetime.now(UTC)
    report = RerouteReport()
    the_plan = plan(cur, old_version=old_version, new_version=new_version)
    report.relabelled += _relabel_untouched(cur, old_version=old_version, new_version=new_version)
    planned = {m.case_id: m for m in the_plan.planned}
    ids = sorted(planned)
    for start in range(0, len(ids), batch):
        heads = _lock_heads(cur, ids[start : start + batch], old_version=old_version)
        stay = [h.id for h in heads if planned[h.id].to_chain == h.chain_code]
        if stay:
            cur.execute("UPDATE case_file SET chain_version_id = %s WHERE id = ANY(%s)", (new_version, stay))
            report.relabelled += len(stay)
        movers = [h for h in heads if planned[h.id].to_chain != h.chain_code]
        wanted = {
            code
            for h in movers
            for code in owner_candidates(planned[h.id].to_chain, h.level, max_level=rules.max_level)
        }
        units = units_exist(cur, wanted)
        for head in movers:
            mv = planned[head.id]
            to_version = None if mv.how == "community" else new_version
            codes = owner_candidates(mv.to_chain, head.level, max_level=rules.max_level)
            owner, alerts = owner_at(
                mv.to_chain, head.level, {c: units[c] for c in codes}, max_level=rules.max_level
            )
            move = {
                "from_chain": head.chain_code,
                "to_chain": mv.to_chain,
                "old_version": old_version,
                "new_version": new_version,
                "how": mv.how,
            }
            payload: dict[str, object] = {"reason": reason, "reroute": move, "chain_code": mv.to_chain}
            if alerts:
                payload["alerts"] = alerts
            if owner != head.owner_code:
                payload["to_owner"] = owner
                action = Action.REASSIGN
                report.reassigned += 1
            else:
                payload["text"] = reason
                action = Action.NOTE
            _append(
                cur,
                head,
                action=action,
                actor=actor,
                at=when,
                payload=payload,
                rules=rules,
                chain_code=mv.to_chain,
                chain_version_id=to_version,
            )
            report.moved += 1
            report.moves.append(mv)
    return report
