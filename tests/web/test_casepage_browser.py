"""The case page says what to do, a returned case is re-dispatched from a pick-list, and the lists
work at phone width: headless Chromium at 390 px against real uvicorn on loopback.

Cases are opened by the test in the shared tree (conftest) through the real intake, the sync's
sealed details included (``grid.cases.details.seal``), and moved with the real actions and sweep.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from stdnum.cn import uscc as _uscc

from connectors.kinds import CaseKind, HardshipGrade, Outcome
from grid.cases.actions import accept, return_to_parent
from grid.cases.details import CaseDetails, masked_address, seal
from grid.cases.intake import CaseReport, open_case
from grid.cases.store import CaseRules
from grid.cases.sweep import sweep
from grid.people import vault_from_settings
from tests.web.conftest import LiveServer, Tree, sign_in

pytestmark = pytest.mark.db

PHONE = {"width": 390, "height": 844}
RED = "rgb(183, 28, 28)"  # --accent


@pytest.fixture(scope="module")
def base_url(app_factory: Any, tree: Tree) -> Iterator[str]:
    with LiveServer(app_factory(cookie_secure=False)) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport=PHONE, locale="zh-CN")
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(database_url)
    yield conn
    conn.close()


def _uscc_code() -> str:
    body = "91420500" + "".join(secrets.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(9))
    return body + _uscc.calc_check_digit(body)


def _one(conn: Any, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        assert row is not None
        return tuple(row)


def _fits(page: Page, loc: Locator) -> dict[str, float]:
    """The element is visible and lies inside the phone's width; its box."""
    expect(loc).to_be_visible()
    box = loc.bounding_box()
    assert box is not None and box["width"] > 0
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, box
    return box


def _no_sideways_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_officer_case_page_shows_sealed_description_after_audited_reveal_deadlines_and_chinese_outcome(
    page: Page, base_url: str, tree: Tree, rules: CaseRules, db: Any, owner_conn: Any
) -> None:
    """Rule: the case page shows, Chinese first, the employer's name, the masked address, the
    deadlines with time left, the mediation window; the description and amount claimed only after
    a reveal with a reason that is audited; after each action a sentence naming what was done and
    by when; the outcome and the recovered amount in Chinese; why each other action is refused."""
    vault = vault_from_settings()
    code = _uscc_code()
    firm = f"宜昌长阳土家族自治县测试建筑有限公司{secrets.token_hex(2)}"
    with db, db.cursor() as cur:
        cur.execute(
            "INSERT INTO enterprise (source, source_record_id, source_updated_at, uscc, name, union_established,"
            " placement_method, row_hash) VALUES (%s, %s, now(), %s, %s, false, 'cell', %s)",
            (f"webtest{tree.city[2:4]}", f"e-{code}", code, firm, secrets.token_bytes(32)),
        )
    description = "工人反映公司拖欠三个月工资共12345.50元，联系电话13900001111"
    details = CaseDetails(description, Decimal("12345.50"), "湖北省宜昌市西陵区夷陵大道88号3单元")
    case_id = open_case(
        db,
        report=CaseReport(
            kind=CaseKind.WAGE_ARREARS,
            channel="sync",
            cell_code=tree.cells[3],
            amount=Decimal("12345.50"),
            enterprise_uscc=code,
            details_enc=seal(vault, details),
            address_masked=masked_address(details),
        ),
        rules=rules,
        actor="test",
    ).case_id
    # the free text is stored only sealed: no column of the case holds it
    stored = _one(owner_conn, "SELECT row_to_json(c)::text FROM case_file c WHERE id = %s", (case_id,))[0]
    assert "拖欠三个月" not in stored and "13900001111" not in stored and "88号" not in stored

    user = next(u for u in tree.users if u.startswith("off4"))
    sign_in(page, base_url, user)
    page.goto(f"{base_url}/cases/{case_id}")
    expect(page.locator("[data-testid=enterprise]")).to_contain_text(firm)
    expect(page.locator("[data-testid=address-masked]")).to_have_text("湖北省宜昌市西陵区****")
    expect(page.locator("[data-testid=owner]")).to_contain_text("网格3")  # the cell's name, not a bare code
    expect(page.locator("[data-testid=respond-by]")).to_contain_text(re.compile(r"剩余\d+(天|小时)"))
    _fits(page, page.locator("[data-testid=resolve-left]"))
    expect(page.locator("[data-testid=resolve-left]")).to_contain_text(re.compile(r"剩余\d+天\d+小时"))
    expect(page.locator("[data-testid=mediation]")).to_contain_text("调解期限")
    sealed = page.locator("[data-testid=case_description]")
    expect(sealed).to_contain_text("已加密保存")
    expect(page.locator("body")).not_to_contain_text("拖欠三个月")
    # why the officer cannot urge or reassign its own case
    page.locator("[data-testid=why-not] summary").click()
    expect(page.locator("[data-testid=why-not] li[data-refused=urge]")).to_contain_text("上级单位")

    form = page.locator("form[data-reveal=case_description]")
    form.locator("input[name=reason]").fill("核实欠薪诉求内容")
    form.locator("button").click()
    expect(page.locator("[data-testid=case_description]")).to_contain_text(description)
    expect(page.locator("[data-testid=case_description]")).to_contain_text("已查看")
    _fits(page, page.locator("[data-testid=case_description] strong"))
    assert _one(
        owner_conn,
        "SELECT login, field, reason FROM reveal_audit WHERE case_id = %s ORDER BY id DESC LIMIT 1",
        (case_id,),
    ) == (user, "case_description", "核实欠薪诉求内容")
    form = page.locator("form[data-reveal=case_amount]")
    form.locator("input[name=reason]").fill("核实诉求金额")
    form.locator("button").click()
    expect(page.locator("[data-testid=case_amount]")).to_contain_text("12,345.50")

    resolve_by = _one(
        owner_conn, "SELECT resolve_by AT TIME ZONE 'Asia/Shanghai' FROM case_file WHERE id = %s", (case_id,)
    )[0]
    page.locator("form[data-action=accept] button").click()
    expect(page.locator("[data-testid=message]")).to_have_text(
        f"已受理，请于{resolve_by.month}月{resolve_by.day}日前办结。"
    )
    page.locator("form[data-action=resolve] select[name=outcome]").select_option(Outcome.AGREEMENT.value)
    page.locator("form[data-action=resolve] input[name=amount_recovered]").fill("5000")
    page.locator("form[data-action=resolve] button").click()
    expect(page.locator("[data-testid=message]")).to_have_text("已办结（达成调解协议），核实后可归档。")
    expect(page.locator("[data-testid=outcome]")).to_have_text("达成调解协议")
    expect(page.locator("[data-testid=recovered]")).to_have_text("5,000.00")
    expect(page.locator("[data-testid=timeline]")).to_contain_text(f"办理人: {user}")
    assert "agreement" not in page.locator("main").inner_text()
    _no_sideways_scroll(page)


def test_overdue_deadline_is_red_and_hardship_grade_shown(
    page: Page, base_url: str, tree: Tree, rules: CaseRules, db: Any
) -> None:
    """Rule: a deadline that has passed reads 超期… in red; a hardship case shows its grade."""
    case_id = open_case(
        db,
        report=CaseReport(
            kind=CaseKind.HARDSHIP,
            channel="officer",
            cell_code=tree.cells[3],
            hardship_grade=HardshipGrade.DEEP,
            worker_hmac=secrets.token_bytes(32),
        ),
        rules=rules,
        actor="test",
        at=datetime.now(UTC) - timedelta(days=60),
    ).case_id
    sign_in(page, base_url, next(u for u in tree.users if u.startswith("off4")))
    page.goto(f"{base_url}/cases/{case_id}")
    left = page.locator("[data-testid=resolve-left]")
    expect(left).to_contain_text(re.compile(r"^超期\d+天"))
    assert left.evaluate("e => getComputedStyle(e).color") == RED
    expect(page.locator("[data-testid=hardship-grade]")).to_have_text("深度困难")
    expect(page.locator("[data-testid=no-details]")).to_be_visible()


def test_town_redispatches_a_returned_case_from_the_pick_list(
    page: Page, base_url: str, tree: Tree, rules: CaseRules, db: Any, owner_conn: Any
) -> None:
    """Rule: a case returned to a unit (已退回待重新派单) offers that unit 改派 with a pick-list of
    its children (names and open-case counts), no free-text code; the routing explanation then
    names the re-dispatch and the new owner, not the community that returned it."""
    res = open_case(
        db,
        report=CaseReport(
            kind=CaseKind.DISMISSAL,
            channel="officer",
            cell_code=tree.cells[1],
            worker_hmac=secrets.token_bytes(32),
        ),
        rules=rules,
        actor="test",
    )
    v = return_to_parent(
        db, case_id=res.case_id, expected_version=res.version, actor="test", reason="不属本网格", rules=rules
    ).version
    v = accept(db, case_id=res.case_id, expected_version=v, actor="test", rules=rules).version
    return_to_parent(
        db, case_id=res.case_id, expected_version=v, actor="test", reason="不属本社区", rules=rules
    )
    town, old, new = tree.towns[0], tree.communities[0], tree.communities[1]
    assert _one(owner_conn, "SELECT owner_code, state FROM case_file WHERE id = %s", (res.case_id,)) == (
        town,
        "returned",
    )
    open_new = _one(
        owner_conn,
        "SELECT count(*) FROM case_file WHERE owner_code LIKE %s AND state NOT IN ('resolved', 'closed')",
        (new + "%",),
    )[0]

    sign_in(page, base_url, next(u for u in tree.users if u.startswith("town1")))
    page.goto(f"{base_url}/cases/{res.case_id}")
    expect(page.locator("[data-testid=state]")).to_have_text("已退回待重新派单")
    form = page.locator("form[data-action=reassign]")
    _fits(page, form.locator("button"))
    assert form.locator("input[name=to_owner]").count() == 0  # no free-text code box
    picks = form.locator("select[name=to_owner] option:not([value=''])")
    assert picks.evaluate_all("os => os.map(o => o.value)") == [old, new]
    expect(picks.nth(1)).to_contain_text(f"测试工会{new}")
    expect(picks.nth(1)).to_contain_text(f"在办{open_new}件")
    # a community's entry names its roster officers with their open cases (tie-break order)
    expect(picks.nth(0)).to_contain_text(re.compile(r"网格员 网格员\S*（\d+）、网格员\S*（\d+）"))
    form.locator("select[name=to_owner]").select_option(new)
    form.locator("input[name=reason]").fill("属第二社区辖区")
    form.locator("button").click()
    expect(page.locator("[data-testid=message]")).to_have_text(
        f"已改派至测试工会{new}（{new}），等待其受理。"
    )
    expect(page.locator("[data-testid=owner]")).to_contain_text(f"测试工会{new}")
    routing = page.locator("[data-testid=routing]")
    expect(routing).to_contain_text(f"改派至测试工会{new}")
    assert f"测试工会{old}" not in routing.inner_text().split("退回后")[-1]
    _no_sideways_scroll(page)  # the pick-list's long entries stay inside the phone's width
    owner, rule, by = _one(
        owner_conn,
        "SELECT owner_code, routing->>'rule', routing->'redispatch'->>'by_unit' FROM case_file WHERE id = %s",
        (res.case_id,),
    )
    assert (owner, rule, by) == (new, "redispatch", town)

    # a supervisor's reassign uses the same pick-list (the county's towns), not a code box
    page.context.clear_cookies()
    sign_in(page, base_url, next(u for u in tree.users if u.startswith("cty1")))
    page.goto(f"{base_url}/cases/{res.case_id}")
    sup = page.locator("form[data-action=reassign]")
    assert sup.locator("input[name=to_owner]").count() == 0
    assert sup.locator("select[name=to_owner] option:not([value=''])").evaluate_all(
        "os => os.map(o => o.value)"
    ) == [tree.towns[0], tree.towns[1]]


def test_ledger_and_subtree_at_phone_width_show_owner_and_counts(
    page: Page, base_url: str, tree: Tree, rules: CaseRules, db: Any
) -> None:
    """Rule: at 390 px the ledger shows 上报/催办/通报 for each unit and the subtree the owner of
    each case, as cards inside the screen; names and the navigation never break per character."""
    county = tree.counties[1]
    open_case(
        db,
        report=CaseReport(
            kind=CaseKind.SOCIAL_INSURANCE,
            channel="officer",
            cell_code=tree.cells[4],
            worker_hmac=secrets.token_bytes(32),
        ),
        rules=rules,
        actor="test",
        at=datetime.now(UTC) - timedelta(days=90),
    )
    sweep(db, now=datetime.now(UTC), rules=rules, scope=county)  # the overdue case: 催办, 通报, …

    sign_in(page, base_url, next(u for u in tree.users if u.startswith("cty2")))
    page.goto(f"{base_url}/ledger")
    rows = page.locator("[data-testid=ledger] tbody tr")
    expect(rows.first).to_be_visible()
    expect(page.locator("[data-testid=ledger] thead")).to_be_hidden()  # cards, each cell labelled
    totals = {"escalated": 0, "reminded": 0, "criticised": 0}
    for i in range(rows.count()):
        row = rows.nth(i)
        name = row.locator("[data-testid=unit] .name")
        box = _fits(page, name)
        line = float(name.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))
        assert box["height"] < 1.5 * line, "a unit name wraps"
        for metric in totals:
            cell = row.locator(f"[data-metric={metric}]")
            _fits(page, cell)
            totals[metric] += int(cell.inner_text())
        label = row.locator("[data-metric=reminded]").evaluate("e => getComputedStyle(e, '::before').content")
        assert "催办" in label
    assert totals["reminded"] >= 1 and totals["criticised"] >= 1, totals
    _no_sideways_scroll(page)

    health = page.locator("nav.main a[href='/health']")
    box = _fits(page, health)
    assert box["height"] < 1.5 * float(health.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))

    page.goto(f"{base_url}/subtree?status=all")
    cards = page.locator("tr[data-case]")
    expect(cards.first).to_be_visible()
    for i in range(min(cards.count(), 10)):
        owner = cards.nth(i).locator("[data-testid=owner]")
        _fits(page, owner)
        expect(owner.locator(".name")).not_to_be_empty()
    # a case owned by a cell names the roster officer the tie-break gave it to
    officer_owned = page.locator(
        "tr[data-case]", has=page.locator("[data-testid=owner] .name", has_text="网格员")
    )
    expect(officer_owned.first).to_be_visible()
    _no_sideways_scroll(page)


def test_api_case_document_carries_names_refusals_and_the_pick_list(
    tree: Tree, web_app: Any, rules: CaseRules, db: Any
) -> None:
    """Rule: the API's case document says what the page says: the owner's name, the names of the
    codes it shows, each refused action with its rule, and the re-dispatch pick-list when offered;
    a sealed field is revealed through the API with an audited reason."""
    from tests.web.conftest import client, login

    vault = vault_from_settings()
    details = CaseDetails("单位拖欠工资", Decimal("800"), "湖北省宜昌市点军区某路9号")
    res = open_case(
        db,
        report=CaseReport(
            kind=CaseKind.LABOUR_CONTRACT,
            channel="sync",
            cell_code=tree.cells[2],
            worker_hmac=secrets.token_bytes(32),
            details_enc=seal(vault, details),
            address_masked=masked_address(details),
        ),
        rules=rules,
        actor="test",
    )
    return_to_parent(
        db, case_id=res.case_id, expected_version=res.version, actor="test", reason="派错", rules=rules
    )
    community = tree.communities[1]
    c = client(web_app)
    csrf = login(c, next(u for u in tree.users if u.startswith("town1")))
    doc = c.get(f"/api/v1/cases/{res.case_id}").json()
    assert doc["owner_code"] == community and doc["owner_name"] == f"测试工会{community}"
    assert doc["address_masked"] == "湖北省宜昌市点军区****" and doc["has_details"] is True
    refused = {r["action"]: r["code"] for r in doc["refusals"]}
    assert refused == {a: "not_owner" for a in ("accept", "start", "note", "resolve", "close", "escalate",
                                                 "return_to_parent", "reopen")}  # fmt: skip
    assert doc["supervisor_actions"] == ["urge", "reassign"]
    assert [(d["code"], d["name"]) for d in doc["dispatch"]] == [
        (code, f"测试工会{code}") for code in tree.communities[:2]
    ]
    assert all(d["officers"] for d in doc["dispatch"])  # each community's roster officers
    csrf = login(c, next(u for u in tree.users if u.startswith("off1")))
    assert c.get(f"/api/v1/cases/{res.case_id}").status_code == 404  # another cell's officer
    csrf = login(c, next(u for u in tree.users if u.startswith("cty1")))
    r = c.post(
        f"/api/v1/cases/{res.case_id}/reveal",
        json={"field": "case_description", "reason": "核实诉求"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200 and r.json()["value"] == "单位拖欠工资"
    assert doc["no_officer"] is False  # returned by the cell's officer: the cell has one

    # a cell without an active grid officer: the community owns the case, and the document says so
    lone = open_case(
        db,
        report=CaseReport(kind=CaseKind.DISMISSAL, channel="officer", cell_code=tree.communities[3] + "009"),
        rules=rules,
        actor="test",
    )
    login(c, next(u for u in tree.users if u.startswith("cty2")))
    doc = c.get(f"/api/v1/cases/{lone.case_id}").json()
    assert doc["owner_code"] == tree.communities[3] and doc["no_officer"] is True
    page = c.get(f"/cases/{lone.case_id}").text
    assert 'data-testid="no-officer"' in page and "该网格无在岗网格员，由社区承办" in page


def test_ledger_pages_are_disjoint_in_order_and_a_page_past_the_end_is_refused(
    tree: Tree, web_app: Any
) -> None:
    """Rule: the ledger page is paged (a province has thousands of unit-months): pages of the
    service query concatenate to the whole ledger, and a page number past what PostgreSQL can
    count is a 400, never a 500."""
    from grid.accounts.config import WebSettings
    from grid.web import casework
    from grid.web.db import WebDatabase
    from tests.web.conftest import client, login

    p = tree.principal(next(u for u in tree.users if u.startswith("cty1")))
    db = WebDatabase(WebSettings())
    try:
        with db.connection() as conn:
            whole = casework.child_ledger(conn, p)
            pages = [casework.child_ledger(conn, p, limit=2, offset=o) for o in range(0, len(whole) + 2, 2)]
    finally:
        db.close()
    assert len(whole) > 2
    assert [row for page in pages for row in page] == whole
    c = client(web_app)
    login(c, p.login)
    assert c.get("/ledger?page=1").status_code == 200
    assert c.get(f"/ledger?page={10**12}").status_code == 400
