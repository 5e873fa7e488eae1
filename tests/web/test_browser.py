"""Browser tests: headless Debian Chromium (Playwright) against real uvicorn on loopback.

The server runs with ``cookie_secure=False``: the browser talks plain HTTP to 127.0.0.1, and a
Secure cookie there depends on the browser's localhost exception; the flag itself is tested in
test_auth.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import LiveServer, Tree, sign_in

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def base_url(app_factory: Any, tree: Tree) -> Iterator[str]:
    with LiveServer(app_factory(cookie_secure=False)) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")  # phone width
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _listed(page: Page) -> set[int]:
    return {int(x) for x in page.locator("tr[data-case]").evaluate_all("rs => rs.map(r => r.dataset.case)")}


def test_officer_sees_only_own_cases_and_resolves_one(
    page: Page, base_url: str, tree: Tree, owner_conn: Any
) -> None:
    user = next(u for u in tree.users if u.startswith("off4"))
    sign_in(page, base_url, user)
    expect(page.locator("h1")).to_have_text("我的案件")
    mine = {i for i, chain in tree.chain.items() if chain == tree.cells[3]}
    assert _listed(page) & set(tree.cases.values()) == mine
    others = set(tree.cases.values()) - mine
    assert not (_listed(page) & others)
    # the phone-width page does not scroll sideways
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    case_id = tree.cases["c4"]
    page.click(f"a[href='/cases/{case_id}']")
    expect(page.locator("h1")).to_contain_text(f"案件 #{case_id}")
    expect(page.locator("svg.cellmap")).to_be_visible()
    expect(page.locator("[data-testid=worker_id]")).to_contain_text("***")
    # the message after an action names what was done and by when it must be resolved
    for action, said in (("accept", "已受理"), ("start", "已开始办理")):
        page.locator(f"form[data-action={action}] button").click()
        expect(page.locator("[data-testid=message]")).to_have_text(
            re.compile(rf"^{said}，请于\d+月\d+日前办结。$")
        )
    page.locator("form[data-action=resolve] select[name=outcome]").select_option("agreement")
    page.locator("form[data-action=resolve] button").click()
    expect(page.locator("[data-testid=state]")).to_have_text("已办结")
    with owner_conn.cursor() as cur:
        cur.execute("SELECT state, outcome FROM case_file WHERE id = %s", (case_id,))
        assert cur.fetchone() == ("resolved", "agreement")
    # a case of another cell is not there for this officer
    page.goto(f"{base_url}/cases/{tree.cases['c1']}")
    expect(page.locator("[role=alert]")).to_have_text("案件不存在或不在您的辖区内。")


def test_county_sees_subtree_and_urges_a_town(page: Page, base_url: str, tree: Tree, owner_conn: Any) -> None:
    user = next(u for u in tree.users if u.startswith("cty1"))
    sign_in(page, base_url, user)
    page.click("a[href='/subtree']")
    expect(page.locator("h1")).to_have_text("辖区案件")
    page.select_option("select[name=status]", "all")
    page.click("form.filters button")
    sample = set(tree.cases.values())
    want = {i for i, chain in tree.chain.items() if chain.startswith(tree.counties[0][:6])}
    assert _listed(page) & sample == want
    town_case = tree.cases["c7"]  # escalated to town 2 of county 1
    assert tree.owner[town_case] == tree.towns[1]
    page.goto(f"{base_url}/cases/{town_case}")
    page.fill("form[data-action=urge] textarea[name=text]", "请三日内办结")
    page.locator("form[data-action=urge] button").click()
    expect(page.locator("[data-testid=message]")).to_have_text(
        re.compile(rf"^已督办，承办单位.*{tree.towns[1]}")
    )
    expect(page.locator("[data-testid=timeline]")).to_contain_text("督办")
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT payload->>'by_unit' FROM case_event WHERE case_id = %s AND action = 'urge' "
            "ORDER BY seq DESC LIMIT 1",
            (town_case,),
        )
        assert cur.fetchone() == (tree.counties[0],)
        cur.execute(
            "SELECT count(*) FROM notification_outbox WHERE case_id = %s AND topic = 'urge' AND recipient_code = %s",
            (town_case, tree.towns[1]),
        )
        row = cur.fetchone()
        assert row is not None and row[0] >= 1
    page.goto(f"{base_url}/ledger")
    expect(page.locator("h1")).to_have_text("督办台账")
    expect(page.locator("[data-testid=ledger]")).to_contain_text(tree.towns[1])


def test_reveal_writes_an_audit_row(page: Page, base_url: str, tree: Tree, owner_conn: Any) -> None:
    user = next(u for u in tree.users if u.startswith("com1"))
    case_id = tree.cases["c6"]  # owned by community 1
    sign_in(page, base_url, user)
    page.goto(f"{base_url}/cases/{case_id}")
    cell = page.locator("[data-testid=worker_phone]")
    expect(cell).to_contain_text("****")
    form = page.locator("tr", has=cell).locator("form")
    form.locator("input[name=reason]").fill("核实欠薪情况需要联系本人")
    form.locator("button").click()
    expect(page.locator("[data-testid=worker_phone]")).to_contain_text(tree.plain[case_id]["phone"])
    expect(page.locator("[data-testid=worker_phone]")).to_contain_text("已查看")
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT login, field, reason FROM reveal_audit WHERE case_id = %s AND login = %s ORDER BY id DESC LIMIT 1",
            (case_id, user),
        )
        assert cur.fetchone() == (user, "worker_phone", "核实欠薪情况需要联系本人")
    # the revealed value is not kept in the address or history
    assert tree.plain[case_id]["phone"] not in page.url


def test_pages_render_in_chinese_and_switch_to_english(page: Page, base_url: str, tree: Tree) -> None:
    user = next(u for u in tree.users if u.startswith("town1"))
    sign_in(page, base_url, user)
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    expect(page.locator("header.top")).to_contain_text("工会网格工作台")
    page.goto(f"{base_url}/inbox?lang=en")
    expect(page.locator("h1")).to_have_text("My cases")
    page.goto(f"{base_url}/inbox?lang=zh")
    expect(page.locator("h1")).to_have_text("我的案件")
    assert re.search("待受理|已受理|办理中|没有符合条件的案件", page.content())
