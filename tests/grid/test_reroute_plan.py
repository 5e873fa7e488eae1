"""Set-based re-routing (grid.cases.reroute_plan) on the real database: what a grid change moves,
what it only relabels, and that moves written in batches keep one event per moved case.

Cells are boxes in a fresh chain of union units (tests/grid/test_case_store.py's world helpers).
"""

from __future__ import annotations

import psycopg2
import pytest

from geodata.codes import Level
from grid.cases import reroute_plan
from grid.cases.queries import events_of, get_case
from grid.cases.states import Action
from grid.store.db import transaction
from tests.grid.test_case_store import RULES, T0, _open, case_violations, load_cells, make_world

pytestmark = pytest.mark.db


def _reroute_events(conn: psycopg2.extensions.connection, case_id: int) -> int:
    return sum("reroute" in s.event.payload for s in events_of(conn, case_id=case_id))


def test_a_grid_change_moves_only_the_cases_of_cells_it_changed(conn: psycopg2.extensions.connection) -> None:
    """Rule: the open cases of a cell the change left as it was (same code, same geometry) stay
    in it and are only relabelled to the new version — even one whose point lies outside its
    cell (filed against it by an officer); the cases of a changed cell go by their point; a case
    of a changed cell whose point is still inside it is relabelled, not moved."""
    world = make_world(conn, officers=5)
    a, b, c, d, e = world.cells
    old = load_cells(conn, world, {a: (0, 0, 2, 1), b: (2, 0, 3, 1), e: (3, 0, 4, 1)})
    in_a_east = _open(conn, world, cell_code=a, lon=1.5, lat=0.5)
    filed_in_b_point_in_a = _open(conn, world, cell_code=b, lon=1.5, lat=0.5)
    in_b = _open(conn, world, cell_code=b, lon=2.5, lat=0.5)
    in_e_west = _open(conn, world, cell_code=e, lon=3.1, lat=0.5)
    # a is split into c and d; b is untouched; e's west edge moves east, not across its case
    new = load_cells(
        conn,
        world,
        {c: (0, 0, 1, 1), d: (1, 0, 2, 1), b: (2, 0, 3, 1), e: (3.05, 0, 4, 1)},
        valid_from="2026-09-29",
    )
    with transaction(conn) as cur:
        plan = reroute_plan.plan(cur, old_version=old, new_version=new, list_untouched=True)
    assert {m.case_id: (m.to_chain, m.how) for m in plan.planned} == {
        in_a_east: (d, "point"),
        in_e_west: (e, "point"),
    }
    assert {m.case_id: (m.to_chain, m.how) for m in plan.untouched_cases} == {
        filed_in_b_point_in_a: (b, "point"),
        in_b: (b, "point"),
    }
    assert [m.case_id for m in plan.moves] == [in_a_east]
    assert (plan.untouched, plan.staying) == (2, 3)

    with transaction(conn) as cur:
        rep = reroute_plan.apply(
            cur, old_version=old, new_version=new, reason="网格调整", rules=RULES, actor="t", at=T0
        )
    assert (rep.moved, rep.reassigned, rep.relabelled) == (1, 1, 3)
    for cid in (filed_in_b_point_in_a, in_b, in_e_west):  # relabelled: no event, same case version
        assert (get_case(conn, case_id=cid).version, _reroute_events(conn, cid)) == (1, 0)
    with transaction(conn) as cur:
        cur.execute(
            "SELECT id, chain_code, chain_version_id FROM case_file WHERE id = ANY(%s)",
            ([filed_in_b_point_in_a, in_b, in_e_west, in_a_east],),
        )
        rows = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
    assert rows == {
        filed_in_b_point_in_a: (b, new),
        in_b: (b, new),
        in_e_west: (e, new),
        in_a_east: (d, new),
    }
    assert _reroute_events(conn, in_a_east) == 1


def test_moves_written_in_batches_get_exactly_one_event_each(conn: psycopg2.extensions.connection) -> None:
    """Rule: moved cases are locked and written a batch at a time; each gets exactly one
    hash-chained re-route event (replay = row, chain verifies), whatever the batch size; a
    second re-route of the same versions finds nothing to do."""
    world = make_world(conn, officers=4)
    a, b, c, _ = world.cells
    old = load_cells(conn, world, {a: (0, 0, 2, 1)})
    movers = [_open(conn, world, cell_code=a, lon=1.1 + 0.1 * i, lat=0.5) for i in range(5)]
    no_point = _open(conn, world, cell_code=a)
    new = load_cells(conn, world, {b: (0, 0, 1, 1), c: (1, 0, 2, 1)}, valid_from="2026-09-29")
    with transaction(conn) as cur:
        rep = reroute_plan.apply(
            cur, old_version=old, new_version=new, reason="网格调整", rules=RULES, actor="t", at=T0, batch=2
        )
    assert (rep.moved, rep.reassigned, rep.relabelled) == (6, 6, 0)
    assert sorted(m.case_id for m in rep.moves) == sorted([*movers, no_point])
    for cid in movers:
        assert get_case(conn, case_id=cid).chain_code == c
    assert get_case(conn, case_id=no_point).chain_code == b  # no point: the new cell over a's interior
    for cid in (*movers, no_point):
        assert _reroute_events(conn, cid) == 1
        last = events_of(conn, case_id=cid)[-1].event
        assert (last.action, last.payload["reason"]) == (Action.REASSIGN, "网格调整")
        assert case_violations(conn, cid, max_level=Level.PROVINCE) == []
    with transaction(conn) as cur:
        again = reroute_plan.apply(
            cur, old_version=old, new_version=new, reason="again", rules=RULES, actor="t", at=T0, batch=2
        )
    assert (again.moved, again.relabelled) == (0, 0)
