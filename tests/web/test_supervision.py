"""Supervisor views: subtree filters, reassigning within the subtree (and not outside it), the
ledger of the units below, reveal refusals that leave no audit row. Cases here are opened by the
test itself so the shared sample cases of the matrix keep their owners."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from connectors.kinds import CaseKind
from grid.cases.actions import escalate
from grid.cases.intake import CaseReport, open_case
from grid.cases.store import CaseRules
from tests.web.conftest import Tree, client, login, version_of

pytestmark = pytest.mark.db


def _town_case(database_url: str, tree: Tree, rules: CaseRules, kind: CaseKind = CaseKind.DISMISSAL) -> int:
    """A case in cell 4 (county 1, town 2), escalated once: owned by town 2."""
    conn = psycopg2.connect(database_url)
    try:
        res = open_case(
            conn,
            report=CaseReport(kind=kind, channel="officer", cell_code=tree.cells[3]),
            rules=rules,
            actor="test",
        )
        escalate(
            conn, case_id=res.case_id, expected_version=res.version, actor="test", reason="协调", rules=rules
        )
        return res.case_id
    finally:
        conn.close()


def test_county_reassigns_within_its_subtree_only(
    tree: Tree, web_app: Any, owner_conn: Any, database_url: str, rules: CaseRules
) -> None:
    case_id = _town_case(database_url, tree, rules)
    c = client(web_app)
    csrf = login(c, next(u for u in tree.users if u.startswith("cty1")))
    h = {"X-CSRF-Token": csrf}
    outside = c.post(
        f"/api/v1/cases/{case_id}/actions/reassign",
        json={
            "version": version_of(owner_conn, case_id),
            "to_owner": tree.towns[2],
            "reason": "改派到别的县",
        },
        headers=h,
    )
    assert outside.status_code == 403
    ok = c.post(
        f"/api/v1/cases/{case_id}/actions/reassign",
        json={"version": version_of(owner_conn, case_id), "to_owner": tree.towns[0], "reason": "属地调整"},
        headers=h,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["owner_code"] == tree.towns[0]
    # the town that lost it no longer sees it; the new town does
    t2 = client(web_app)
    login(t2, next(u for u in tree.users if u.startswith("town2")))
    assert t2.get(f"/api/v1/cases/{case_id}").status_code == 404
    t1 = client(web_app)
    login(t1, next(u for u in tree.users if u.startswith("town1")))
    mine = t1.get("/api/v1/cases", params={"view": "mine"}).json()["cases"]
    assert case_id in {r["id"] for r in mine}


def test_subtree_filters_and_counts(tree: Tree, web_app: Any, database_url: str, rules: CaseRules) -> None:
    case_id = _town_case(database_url, tree, rules, kind=CaseKind.WORK_INJURY)
    c = client(web_app)
    login(c, next(u for u in tree.users if u.startswith("city")))
    r = c.get("/api/v1/cases", params={"view": "subtree", "kind": "work_injury", "owner": tree.towns[1][:9]})
    body = r.json()
    assert case_id in {x["id"] for x in body["cases"]}
    assert all(
        x["kind"] == "work_injury" and x["owner_code"].startswith(tree.towns[1][:9]) for x in body["cases"]
    )
    assert body["total"] == sum(body["counts"].values()) >= 1
    deadlines = [x["resolve_by"] for x in body["cases"]]
    assert deadlines == sorted(deadlines)
    assert c.get("/api/v1/cases", params={"kind": "nonsense"}).status_code == 400
    page = c.get(f"/subtree?kind=work_injury&owner={tree.towns[1][:9]}")
    assert page.status_code == 200 and f'data-case="{case_id}"' in page.text and "辖区案件" in page.text


def test_case_lists_page_through_every_matching_case_in_deadline_order(
    tree: Tree, web_app: Any, database_url: str, rules: CaseRules, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paging rule: consecutive pages of a list, in the API and on the web page, hold every
    matching case exactly once, in the list's order; the page says where it is and links on."""
    for _ in range(3):
        _town_case(database_url, tree, rules)
    c = client(web_app)
    login(c, next(u for u in tree.users if u.startswith("city")))
    params = {"view": "subtree", "status": "all"}
    whole = c.get("/api/v1/cases", params={**params, "limit": 1000}).json()
    assert whole["matched"] == len(whole["cases"]) == whole["total"] >= 4
    paged: list[int] = []
    for offset in range(0, whole["matched"] + 2, 2):
        body = c.get("/api/v1/cases", params={**params, "limit": 2, "offset": offset}).json()
        assert body["matched"] == whole["matched"] and body["offset"] == offset
        paged += [x["id"] for x in body["cases"]]
    assert paged == [x["id"] for x in whole["cases"]]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert c.get("/api/v1/cases", params={**params, **bad}).status_code == 422

    from grid.web import casework

    first = c.get("/subtree?status=all")
    assert first.status_code == 200 and "合计" in first.text
    if whole["matched"] <= casework.PAGE:
        assert 'data-testid="pager"' not in first.text  # one page: no pager
    monkeypatch.setattr(casework, "PAGE", 2)  # a small page shows the links without 200+ cases
    second = c.get("/subtree?status=all&page=2")
    last = c.get(f"/subtree?status=all&page={(whole['matched'] + 1) // 2}")
    ids = [x["id"] for x in whole["cases"]]
    assert f'data-case="{ids[2]}"' in second.text and f'data-case="{ids[1]}"' not in second.text
    assert 'href="?status=all&amp;page=1" rel="prev"' in second.text
    assert 'href="?status=all&amp;page=3" rel="next"' in second.text
    assert f"第 3–4 件，共 {whole['matched']} 件" in second.text
    assert 'rel="next"' not in last.text and 'rel="prev"' in last.text


def test_ledger_shows_units_below(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    login(c, next(u for u in tree.users if u.startswith("cty2")))
    rows = c.get("/api/v1/ledger").json()
    codes = {r["unit_code"] for r in rows}
    assert codes and all(code.startswith(tree.counties[1][:6]) for code in codes)
    assert tree.cells[4] in codes  # the cell officer received its case
    page = c.get("/ledger")
    assert page.status_code == 200 and "督办台账" in page.text


def test_refused_reveals_leave_no_audit_row(tree: Tree, web_app: Any, owner_conn: Any) -> None:
    case_id = tree.cases["c2"]
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reveal_audit WHERE case_id = %s", (case_id,))
        before = cur.fetchone()
    officer = client(web_app)
    h = {"X-CSRF-Token": login(officer, next(u for u in tree.users if u.startswith("com1")))}
    assert (
        officer.post(
            f"/cases/{case_id}/reveal", data={"csrf": h["X-CSRF-Token"], "field": "worker_id", "reason": "无"}
        ).status_code
        == 400
    )
    city = client(web_app)
    hc = {"X-CSRF-Token": login(city, next(u for u in tree.users if u.startswith("city")))}
    r = city.post(
        f"/api/v1/cases/{case_id}/reveal", json={"field": "worker_id", "reason": "统计需要查看"}, headers=hc
    )
    assert r.status_code == 403
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reveal_audit WHERE case_id = %s", (case_id,))
        assert cur.fetchone() == before
    # city and province pages show no people
    page = city.get(f"/cases/{case_id}")
    assert page.status_code == 200 and 'data-testid="worker_id"' not in page.text


def test_case_page_in_english(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    login(c, next(u for u in tree.users if u.startswith("off1")))
    page = c.get(f"/cases/{tree.cases['c1']}?lang=en")
    assert page.status_code == 200
    for text in ("Timeline", "Why it was routed here", "Chain of units", "wage arrears", "<svg"):
        assert text in page.text, text


def test_action_not_allowed_in_state_names_what_is(
    tree: Tree, web_app: Any, owner_conn: Any, database_url: str, rules: CaseRules
) -> None:
    conn = psycopg2.connect(database_url)
    try:
        res = open_case(
            conn,
            report=CaseReport(kind=CaseKind.DISMISSAL, channel="officer", cell_code=tree.cells[0]),
            rules=rules,
            actor="test",
        )
    finally:
        conn.close()
    c = client(web_app)
    with owner_conn.cursor() as cur:  # the first cell has two officers: the roster's tie-break chose one
        cur.execute("SELECT owner_officer FROM case_file WHERE id = %s", (res.case_id,))
        officer = cur.fetchone()[0]
    csrf = login(c, next(u for u, o in tree.officer_of.items() if o == officer))
    r = c.post(
        f"/cases/{res.case_id}/actions/close",
        data={"csrf": csrf, "version": str(version_of(owner_conn, res.case_id))},
    )
    assert r.status_code == 409
    assert "此操作当前不可执行" in r.text and "当前可执行的操作：" in r.text and "受理" in r.text
    assert version_of(owner_conn, res.case_id) == res.version
