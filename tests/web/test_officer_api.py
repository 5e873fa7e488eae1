"""Officer ownership over the JSON API: the first cell of the seeded tree has two officers on the
roster; a new case there goes to the one with fewer open cases, and only that officer (through
its account tied to the roster) may accept, start, note, escalate, return or resolve it."""

from __future__ import annotations

from typing import Any

import pytest

from grid.cases.intake import CaseReport, open_case
from grid.cases.store import CaseRules
from tests.web.conftest import Tree, client, login

pytestmark = pytest.mark.db


def _owner_officer(owner_conn: Any, case_id: int) -> int | None:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT owner_officer FROM case_file WHERE id = %s", (case_id,))
        return cur.fetchone()[0]


def _open_counts(owner_conn: Any, officers: list[int]) -> dict[int, int]:
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT o, (SELECT count(*) FROM case_file c WHERE c.owner_officer = o AND c.state NOT IN "
            "('resolved', 'closed')) FROM unnest(%s::bigint[]) o",
            (officers,),
        )
        return {int(o): int(n) for o, n in cur.fetchall()}


def test_the_shared_cells_officers_work_only_the_cases_the_roster_gave_them(
    tree: Tree, web_app: Any, owner_conn: Any, database_url: str, rules: CaseRules
) -> None:
    import psycopg2

    first = next(u for u in tree.users if u.startswith("off1"))
    second = next(u for u in tree.users if u.startswith("offb"))
    ids = [tree.officer_of[first], tree.officer_of[second]]
    conn = psycopg2.connect(database_url)
    try:

        def new_case(ref: str) -> int:
            loads = _open_counts(owner_conn, ids)
            res = open_case(
                conn,
                report=CaseReport(
                    kind="dismissal", channel="officer", cell_code=tree.cells[0], source_ref=ref
                ),
                rules=rules,
                actor="t",
            )
            # the tie-break: fewest open cases, then the lowest id
            assert _owner_officer(owner_conn, res.case_id) == min(ids, key=lambda o: (loads[o], o))
            return res.case_id

        case_a = new_case(f"api-a-{tree.city}")
        case_b = new_case(f"api-b-{tree.city}")
    finally:
        conn.close()
    owner_of = {tree.officer_of[first]: first, tree.officer_of[second]: second}
    sessions = {}
    for user in (first, second):
        c = client(web_app)
        sessions[user] = (c, {"X-CSRF-Token": login(c, user)})

    def act(user: str, case_id: int, action: str, **body: Any) -> Any:
        c, h = sessions[user]
        with owner_conn.cursor() as cur:
            cur.execute("SELECT version FROM case_file WHERE id = %s", (case_id,))
            v = cur.fetchone()[0]
        return c.post(f"/api/v1/cases/{case_id}/actions/{action}", json={"version": v, **body}, headers=h)

    for case_id in (case_a, case_b):
        owner = owner_of[_owner_officer(owner_conn, case_id)]
        other = first if owner == second else second
        # the other officer of the same cell sees the case but may not act on it
        assert sessions[other][0].get(f"/api/v1/cases/{case_id}").json()["owner_actions"] == []
        assert act(other, case_id, "note", text="不是我的案件").status_code == 403
        assert act(other, case_id, "accept").status_code == 403
        # its owner works it
        assert act(owner, case_id, "note", text="已联系职工").status_code == 200
        assert act(owner, case_id, "accept").status_code == 200
    owner_a = owner_of[_owner_officer(owner_conn, case_a)]
    owner_b = owner_of[_owner_officer(owner_conn, case_b)]
    assert act(owner_a, case_a, "start").status_code == 200
    assert act(owner_a, case_a, "resolve", outcome="agreement").status_code == 200
    r = act(owner_b, case_b, "escalate", reason="需要街道协调")
    assert r.status_code == 200 and r.json()["owner_code"] == tree.towns[0]
    assert _owner_officer(owner_conn, case_b) is None
    assert act(owner_b, case_b, "note", text="已上报").status_code == 403  # no longer its case
    with owner_conn.cursor() as cur:
        cur.execute("SELECT state FROM case_file WHERE id = %s", (case_a,))
        assert cur.fetchone() == ("resolved",)


def test_an_officer_returns_a_misrouted_case_to_its_community(
    tree: Tree, web_app: Any, owner_conn: Any, database_url: str, rules: CaseRules
) -> None:
    import psycopg2

    officer = next(u for u in tree.users if u.startswith("off4"))
    conn = psycopg2.connect(database_url)
    try:
        res = open_case(
            conn,
            report=CaseReport(
                kind="wage_arrears", channel="officer", cell_code=tree.cells[3], source_ref=f"ret-{tree.city}"
            ),
            rules=rules,
            actor="t",
        )
    finally:
        conn.close()
    assert _owner_officer(owner_conn, res.case_id) == tree.officer_of[officer]
    c = client(web_app)
    h = {"X-CSRF-Token": login(c, officer)}
    r = c.post(
        f"/api/v1/cases/{res.case_id}/actions/return_to_parent",
        json={"version": res.version, "reason": "不属于本网格"},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["owner_code"] == tree.communities[2]
    assert r.json()["state"] == "returned"
    assert _owner_officer(owner_conn, res.case_id) is None
