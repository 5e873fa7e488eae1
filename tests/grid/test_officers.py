"""Officer ownership on the real database: which officer of a cell owns a case (the tie-break),
the owner kinds through escalation, return and reassignment, and ``officers_of_units``."""

from __future__ import annotations

import psycopg2.extensions
import pytest

from grid.cases.actions import escalate, reassign
from grid.cases.intake import open_case
from grid.cases.owners import PICK_RULE, case_officer, officers_of_units, units_exist
from grid.store.db import transaction
from tests.grid.test_case_store import RULES, T0, World, make_world, report

pytestmark = pytest.mark.db


def add_officer(
    conn: psycopg2.extensions.connection, code: str, cells: list[str], *, active: bool = True
) -> int:
    with transaction(conn) as cur:
        cur.execute(
            "INSERT INTO officer (source_record_id, name, active) VALUES (%s, %s, %s) RETURNING id",
            (code, f"网格员{code[-4:]}", active),
        )
        row = cur.fetchone()
        assert row is not None
        for c in cells:
            cur.execute("INSERT INTO officer_cell (officer_id, cell_code) VALUES (%s, %s)", (row[0], c))
    return int(row[0])


def owner_officer(conn: psycopg2.extensions.connection, case_id: int) -> int | None:
    with transaction(conn) as cur:
        cur.execute("SELECT owner_officer FROM case_file WHERE id = %s", (case_id,))
        row = cur.fetchone()
        assert row is not None
        return None if row[0] is None else int(row[0])


def first_officer(conn: psycopg2.extensions.connection, cell: str) -> int:
    with transaction(conn) as cur:
        cur.execute("SELECT min(officer_id) FROM officer_cell WHERE cell_code = %s", (cell,))
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def test_a_case_in_a_cell_with_an_officer_is_owned_by_that_officer(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: owner kind officer — the cell owns the case and the roster's officer is recorded."""
    w = make_world(conn)
    res = open_case(conn, report=report(w), rules=RULES, actor="t", at=T0)
    assert res.owner_code == w.cells[0]
    assert owner_officer(conn, res.case_id) == first_officer(conn, w.cells[0])
    with transaction(conn) as cur:
        who = case_officer(cur, res.case_id)
    assert who is not None and who.officer_id == first_officer(conn, w.cells[0]) and who.open_cases >= 1


def test_a_cell_without_an_active_officer_gives_the_case_to_the_community_and_says_so(
    conn: psycopg2.extensions.connection,
) -> None:
    w = make_world(conn)
    add_officer(conn, f"gone-{w.bare_cell}", [w.bare_cell], active=False)
    res = open_case(conn, report=report(w, cell_code=w.bare_cell), rules=RULES, actor="t", at=T0)
    assert res.owner_code == w.community
    assert owner_officer(conn, res.case_id) is None
    with transaction(conn) as cur:
        cur.execute("SELECT routing FROM case_file WHERE id = %s", (res.case_id,))
        routing = cur.fetchone()[0]
    assert f"网格{w.bare_cell}无网格员" in routing["text_zh"]


def test_several_officers_tie_break_fewest_open_cases_then_lowest_id(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule (grid.cases.owners.PICK_RULE): the active officer with the fewest open cases, then the lowest id."""
    assert PICK_RULE == "fewest open cases, then lowest officer id"
    w = make_world(conn)
    cell = w.bare_cell
    a = add_officer(conn, f"a-{cell}", [cell])
    b = add_officer(conn, f"b-{cell}", [cell])
    # b already carries an open case elsewhere (its other cell)
    other = w.community[:12] + "099"
    with transaction(conn) as cur:
        cur.execute("INSERT INTO officer_cell (officer_id, cell_code) VALUES (%s, %s)", (b, other))
    first = open_case(conn, report=report(w, cell_code=cell, source_ref="t1"), rules=RULES, actor="t", at=T0)
    assert owner_officer(conn, first.case_id) == a  # both at 0 open: lowest id
    second = open_case(
        conn,
        report=report(w, cell_code=cell, kind="dismissal", source_ref="t2"),
        rules=RULES,
        actor="t",
        at=T0,
    )
    assert owner_officer(conn, second.case_id) == b  # a has 1 open, b 0
    third = open_case(
        conn,
        report=report(w, cell_code=cell, kind="labour_contract", source_ref="t3"),
        rules=RULES,
        actor="t",
        at=T0,
    )
    assert owner_officer(conn, third.case_id) == a  # 1 and 1: lowest id
    with transaction(conn) as cur:
        officers = officers_of_units(cur, [w.community, w.town[:12]])
    loads = [o for o in officers[w.community] if o.officer_id in (a, b)]
    assert [(o.officer_id, o.open_cases) for o in loads] == [(b, 1), (a, 2)]  # the tie-break's order
    assert loads[0].cells == (cell, other) and loads[1].cells == (cell,)
    assert {o.code for o in officers[w.community]} >= {f"wg{i}-{c}" for i, c in enumerate(w.cells)}
    assert officers[w.town[:12]] == []


def test_the_officer_owner_kind_through_escalation_and_reassignment(
    conn: psycopg2.extensions.connection,
) -> None:
    """Escalation hands the case to the town union (no officer); the county reassigning it to a cell
    gives it to that cell's officer by the tie-break."""
    w = make_world(conn)
    res = open_case(conn, report=report(w), rules=RULES, actor="t", at=T0)
    up = escalate(
        conn,
        case_id=res.case_id,
        expected_version=res.version,
        actor="wg",
        rules=RULES,
        reason="需要社区协调",
        at=T0,
    )
    assert up.owner_code == w.town and owner_officer(conn, res.case_id) is None
    back = reassign(
        conn,
        case_id=res.case_id,
        expected_version=up.version,
        actor="com",
        rules=RULES,
        scope=w.county,
        to_owner=w.cells[1],
        reason="派给网格员",
        at=T0,
    )
    assert back.owner_code == w.cells[1]
    assert owner_officer(conn, res.case_id) == first_officer(conn, w.cells[1])
    with transaction(conn) as cur:
        assert units_exist(cur, [w.cells[1], w.bare_cell]) == {w.cells[1]: True, w.bare_cell: False}


def test_an_officer_not_serving_the_cell_cannot_be_named_owner(conn: psycopg2.extensions.connection) -> None:
    """The database keeps ``owner_officer`` an active officer of the owning cell: naming another is
    replaced by the tie-break's choice."""
    w: World = make_world(conn)
    res = open_case(conn, report=report(w), rules=RULES, actor="t", at=T0)
    stranger = add_officer(conn, f"x-{w.cells[1]}", [w.cells[1]])
    with transaction(conn) as cur:
        cur.execute("UPDATE case_file SET owner_officer = %s WHERE id = %s", (stranger, res.case_id))
    assert owner_officer(conn, res.case_id) == first_officer(conn, w.cells[0])


def test_an_officer_who_leaves_or_stops_serving_the_cell_hands_open_cases_to_the_community(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule (grid.roster.store.release_departed): an officer soft-deleted by the sync is no longer in
    post (trigger), and each open case of an officer who left — or who no longer serves the case's
    cell — moves to the community union with a ``reassign`` event saying why; resolved cases stay."""
    from grid.cases.actions import accept, resolve
    from grid.roster.store import release_departed

    w = make_world(conn)
    gone = open_case(conn, report=report(w), rules=RULES, actor="t", at=T0)
    done = open_case(conn, report=report(w, kind="dismissal"), rules=RULES, actor="t", at=T0)
    a = accept(conn, case_id=done.case_id, expected_version=done.version, actor="t", rules=RULES, at=T0)
    resolve(
        conn,
        case_id=done.case_id,
        expected_version=a.version,
        actor="t",
        rules=RULES,
        outcome="agreement",
        at=T0,
    )
    moved_cell = open_case(conn, report=report(w, cell_code=w.cells[1]), rules=RULES, actor="t", at=T0)
    first, second = owner_officer(conn, gone.case_id), owner_officer(conn, moved_cell.case_id)
    with transaction(conn) as cur:
        cur.execute("UPDATE officer SET deleted_at = now() WHERE id = %s RETURNING active", (first,))
        assert cur.fetchone() == (False,)  # gone from two full snapshots: no longer in post
        cur.execute("UPDATE officer_cell SET cell_code = %s WHERE officer_id = %s", (w.bare_cell, second))
        released = release_departed(cur, source=None, rules=RULES, actor="roster:test")
    mine = {r.case_id: (r.why, r.to_owner) for r in released}
    assert mine[gone.case_id] == ("left", w.community)
    assert mine[moved_cell.case_id] == ("left_cell", w.community)
    assert done.case_id not in mine
    with transaction(conn) as cur:
        cur.execute(
            "SELECT owner_code, owner_officer, state FROM case_file WHERE id = ANY(%s) ORDER BY id",
            ([gone.case_id, moved_cell.case_id],),
        )
        assert cur.fetchall() == [(w.community, None, "new"), (w.community, None, "new")]
        cur.execute(
            "SELECT action, actor, payload->>'roster' FROM case_event WHERE case_id = %s ORDER BY seq DESC LIMIT 1",
            (gone.case_id,),
        )
        assert cur.fetchone() == ("reassign", "roster:test", "left")
