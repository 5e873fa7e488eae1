"""Browser test of the dashboards: a province user signs in, sees the choropleth and drills down to
a community by clicking the map (headless Debian Chromium, Playwright, real uvicorn on loopback).

A shape is clicked at a point inside it (the ``ST_PointOnSurface`` the server writes on each path,
mapped to the screen through the SVG's own transform), as a user would click it: the middle of a
concave shape's bounding box can lie in a neighbour.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import LiveServer, sign_in
from tests.web.test_dashboard import CITY, LATEST, PROVINCE, DashWorld, dash

pytestmark = [pytest.mark.db, pytest.mark.browser]
__all__ = ["dash"]  # the fixture, imported so pytest finds it


@pytest.fixture(scope="module")
def base_url(app_factory: Any, dash: DashWorld) -> Iterator[str]:
    with LiveServer(app_factory(cookie_secure=False)) as url:
        yield url


def _page(browser: Browser, width: int, height: int) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    yield ctx.new_page()
    ctx.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _page(browser, 1280, 900)


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    yield from _page(browser, 390, 844)


def _click_shape(page: Page, code: str) -> None:
    """Click the map at the point inside ``code``'s shape."""
    path = page.locator(f'svg[data-testid=choropleth] path[data-code="{code}"]')
    expect(path).to_be_visible()
    path.scroll_into_view_if_needed()
    point = path.evaluate(
        """p => {
            const svg = p.ownerSVGElement;
            const pt = svg.createSVGPoint();
            pt.x = parseFloat(p.dataset.lx); pt.y = parseFloat(p.dataset.ly);
            const s = pt.matrixTransform(svg.getScreenCTM());
            return [s.x, s.y];
        }"""
    )
    hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('path')?.dataset.code", point)
    assert hit == code, f"the point inside {code} is covered by {hit}"
    page.mouse.click(point[0], point[1])


def test_province_user_sees_the_choropleth_and_drills_down_to_a_community(
    page: Page, base_url: str, dash: DashWorld
) -> None:
    user = dash.users["province"]
    sign_in(page, base_url, user)
    page.click("a[href='/dashboard']")
    page.wait_for_url(f"{base_url}/dashboard/{PROVINCE}")
    expect(page.locator("h1")).to_contain_text("湖北省")
    choropleth = page.locator("svg[data-testid=choropleth]")
    expect(choropleth).to_be_visible()
    assert choropleth.locator("path[data-testid=shape]").count() >= 13  # Hubei's cities and more
    expect(page.locator("[data-testid=legend]")).to_be_visible()
    # province -> city -> county -> town -> community, each by clicking its shape on the map
    chain = [CITY, dash.counties[0], dash.town, dash.community]
    for code in chain:
        _click_shape(page, code)
        page.wait_for_url(f"{base_url}/dashboard/{code}?*")
        expect(page.locator("h1")).to_contain_text(dash.names[code])
        expect(page.locator("h1")).to_contain_text(code)
    # the community: its numbers and its cells, no further map to click
    expect(page.locator("svg[data-testid=cellmap]")).to_be_visible()
    expect(page.locator("svg[data-testid=choropleth]")).to_have_count(0)
    expect(page.locator("[data-testid=rate-union]")).to_have_text("100.0%")
    expect(page.locator("[data-testid=snapshot-date]")).to_have_text(LATEST.isoformat())
    # and the breadcrumbs lead back up to the city
    page.locator("[data-testid=crumbs] a", has_text=dash.names[CITY]).click()
    page.wait_for_url(f"{base_url}/dashboard/{CITY}?*")
    expect(page.locator("tr[data-testid=child-row]")).to_have_count(len(dash.counties))


def test_choosing_a_metric_recolours_the_map_and_the_table_drills_down_at_phone_width(
    phone: Page, base_url: str, dash: DashWorld
) -> None:
    page = phone
    sign_in(page, base_url, dash.users["city"])
    page.goto(f"{base_url}/dashboard/{CITY}?on={LATEST.isoformat()}")
    k1 = page.locator(f'svg[data-testid=choropleth] path[data-code="{dash.counties[1]}"]')
    expect(k1).to_have_class("shape q0")  # 40% union coverage
    page.select_option("form[data-testid=metric-form] select[name=metric]", "on_time")
    page.click("form[data-testid=metric-form] button")
    expect(k1).to_have_class("shape q3")  # 90% on time
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.locator(f'tr[data-code="{dash.counties[0]}"] a').click()
    expect(page.locator("h1")).to_contain_text(dash.names[dash.counties[0]])
