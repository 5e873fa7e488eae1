"""The 通知 list in headless Chromium at phone width: the unread badge in the navigation, the list,
marking one notice read (the badge goes down), no sideways scrolling; the admin outbox page too."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from playwright.sync_api import Browser, Page, expect

from grid.accounts.access import Role
from grid.accounts.users import add_user
from tests.web.conftest import PASSWORD, LiveServer, Tree, sign_in

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def base_url(app_factory: Any, tree: Tree) -> Iterator[str]:
    with LiveServer(app_factory(cookie_secure=False)) as url:
        yield url


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")
    pg = ctx.new_page()
    yield pg
    ctx.close()


def test_an_officer_reads_its_notices_on_a_phone(
    page: Page, base_url: str, tree: Tree, database_url: str, owner_conn: Any
) -> None:
    """In-app rule: the navigation shows the unread count; 通知 lists the officer's notices in
    Chinese; 标为已读 marks one and the count goes down; the page fits 390 px."""
    login = f"offn{secrets.token_hex(3)}"
    conn = psycopg2.connect(database_url)
    try:
        add_user(
            conn,
            login=login,
            password=PASSWORD,
            role=Role.GRID_OFFICER,
            scope_code=tree.communities[0],
            cells=[tree.cells[0]],
        )
    finally:
        conn.close()
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM notification_outbox WHERE recipient_code = %s", (tree.cells[0],))
        total = int(cur.fetchone()[0])
    assert total >= 2
    sign_in(page, base_url, login)
    expect(page.locator("[data-testid=unread]")).to_have_text(str(total))
    page.click("[data-testid=nav-notices]")
    expect(page.locator("h1")).to_have_text("通知")
    rows = page.locator("table[data-testid=notices] tr[data-notice]")
    expect(rows).to_have_count(total)
    expect(rows.filter(has_text="新案件派单").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    rows.first.locator("button").click()
    expect(page.locator("[data-testid=unread]")).to_have_text(str(total - 1))
    expect(page.locator("table[data-testid=notices] tr.notice-read")).to_have_count(1)
    page.click("[data-testid=read-all]")
    expect(page.locator("[data-testid=unread]")).to_have_count(0)
    expect(page.locator("table[data-testid=notices] tr.notice-unread")).to_have_count(0)


def test_the_admin_outbox_page_fits_a_phone(page: Page, base_url: str, tree: Tree) -> None:
    admin = next(u for u, (r, *_) in tree.users.items() if r is Role.ADMIN)
    sign_in(page, base_url, admin)
    page.goto(f"{base_url}/admin")
    expect(page.locator("h1")).to_have_text("管理")
    page.click("a[href='/admin/outbox']")
    expect(page.locator("h1")).to_have_text("通知投递")
    page.click("text=全部")
    assert re.search(r"status=all", page.url)
    expect(page.locator("table[data-testid=outbox] tr[data-notice]").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
