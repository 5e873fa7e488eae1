"""Browser test of the sync health page: headless Debian Chromium (Playwright) against real
uvicorn, a real sync against the sandbox over HTTP, and reprocessing through the Prefect API —
the ``quarantine-reprocess/on-demand`` deployment served by a real Prefect runner process
(``flow.serve``) against the session's Prefect server."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from playwright.sync_api import Browser, Page, expect

from connectors.sandbox.app import SandboxServer, correct_record, create_app
from connectors.sandbox.fixes import fixed_row
from connectors.validate import CHINA_TZ
from grid.accounts.access import Role
from grid.accounts.users import add_user
from grid.settings import PROJECT_ROOT, get_settings
from tests.conftest import SAMPLE_CITY, write_sources
from tests.flows.helpers import query, sources_env
from tests.sandbox_labels import quarantined_labels
from tests.web.conftest import PASSWORD, LiveServer, sign_in

pytestmark = [pytest.mark.db, pytest.mark.flow]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture
def world(
    prefect_harness: None,
    loaded_world: Any,
    sandbox_dataset: Any,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """Two Yichang sources — one served by a private sandbox, one whose API is down — synced once;
    a city-level account; and the reprocess deployment served by a runner process."""
    from prefect.settings import PREFECT_API_URL

    from flows.nightly_sync import SyncFailed, nightly_sync

    api = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", api)
    monkeypatch.setenv("GRIDFLOW_PREFECT_UI_URL", "http://prefect-ui.test")
    get_settings.cache_clear()  # settings are cached per process; re-read the environment
    app = create_app(sandbox_dataset)
    tag = secrets.token_hex(2)
    good, down = f"ui_city{tag}", f"ui_down{tag}"
    with SandboxServer(app) as server, sources_env(tmp_path):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
        s.close()
        write_sources(tmp_path, **{good: server.base_url, down: f"http://127.0.0.1:{closed}"})
        assert nightly_sync(sources=[good])[0]["status"] == "completed"
        with pytest.raises(SyncFailed):
            nightly_sync(sources=[down])
        login = f"yc{tag}"
        conn = psycopg2.connect(database_url)
        try:
            add_user(conn, login=login, password=PASSWORD, role=Role.CITY, scope_code=SAMPLE_CITY)
        finally:
            conn.close()
        runner_env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        code = (
            "from flows.quarantine_reprocess import quarantine_reprocess as f; "
            "f.serve(name='on-demand', print_starting_message=False)"
        )
        runner = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            env=runner_env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "runner.log").open("wb"),
        )
        try:
            _wait_for_deployment()
            yield {"app": app, "good": good, "down": down, "login": login, "log": tmp_path / "runner.log"}
        finally:
            monkeypatch.delenv("GRIDFLOW_PREFECT_UI_URL")
            get_settings.cache_clear()
            runner.terminate()
            try:
                runner.wait(timeout=20)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()


def _wait_for_deployment(timeout: float = 60) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                client.read_deployment_by_name("quarantine-reprocess/on-demand")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def test_health_page_shows_failed_run_masked_drill_down_and_reprocess_moves_fixed_records(
    page: Page, app_factory: Any, world: dict[str, Any], sandbox_dataset: Any
) -> None:
    """Rule (issue #8 done-when): the sync health page shows a failed run (with its error and its
    Prefect link) and a quarantine drill-down (masked); reprocessing chosen records through the
    Prefect API moves the fixed ones out of quarantine, and the page shows the outcome."""
    good, down = world["good"], world["down"]
    labels = sandbox_dataset.labels("workers")
    # Issue #21: only record problems are quarantined (a bad phone or CRS is a field problem of a
    # loaded worker now), so the three chosen records all have a bad resident ID check digit.
    bad_ids = [rid for rid, lab in labels.items() if lab == "bad_id_checksum"]
    fixed, broken = bad_ids[:2], bad_ids[2:3]
    whole = len(quarantined_labels("workers", labels)) + len(
        quarantined_labels("enterprises", sandbox_dataset.labels("enterprises"))
    )
    with LiveServer(app_factory(cookie_secure=False)) as base_url:
        sign_in(page, base_url, world["login"])
        page.click("a[href='/health']")
        expect(page.locator("h1")).to_have_text("同步健康")
        failed = page.locator(f"section[data-source={down}]")
        expect(failed.locator("tr[data-status=failed]")).to_have_count(1)
        expect(failed.locator("[data-testid=run-error]")).to_contain_text("错误")
        expect(failed.locator("[data-testid=freshness]")).to_have_attribute("data-status", "never")
        link = failed.locator("tr[data-status=failed] a[data-testid=prefect-link]")
        (frid,) = query("SELECT flow_run_id::text FROM sync_run WHERE source = %s", down)[0]
        expect(link).to_have_attribute("href", f"http://prefect-ui.test/runs/flow-run/{frid}")
        ok = page.locator(f"section[data-source={good}]")
        expect(ok.locator("[data-testid=freshness]")).to_have_attribute("data-status", "ok")
        expect(ok.locator("svg[data-testid=trend] rect").first).to_be_visible()

        ok.locator("a[data-testid=drill]").click()
        expect(page.locator("h1")).to_contain_text("待处理隔离记录")
        rows = page.locator("table[data-testid=quarantine] tbody tr")
        assert rows.count() == whole
        ids = page.locator("[data-testid=id-masked]").all_inner_texts()
        assert any("*" * 11 in t for t in ids)
        html = page.content()
        for rid in fixed + broken:
            expect(page.locator(f"tr[data-record='{rid}']")).to_have_count(1)
        # the city fixes two of the records; the third stays broken
        now = datetime.now(CHINA_TZ)
        for rid in fixed:
            correct_record(
                world["app"],
                "workers",
                rid,
                fixed_row(sandbox_dataset, "workers", rid, updated_at=now),
                updated_at=now,
            )
        for rid in fixed + broken:
            page.locator(f"tr[data-record='{rid}'] input[type=checkbox]").check()
        page.click("button[data-testid=reprocess]")
        page.wait_for_url(f"{base_url}/health/reprocess/*")
        expect(page.locator("[data-testid=request-status]")).to_have_attribute(
            "data-status", "completed", timeout=120_000
        )
        expect(page.locator("[data-outcome=reprocessed]")).to_contain_text("2")
        expect(page.locator("[data-outcome=still_quarantined]")).to_contain_text("1")
        expect(page.locator("[data-testid=prefect-link]")).to_have_attribute(
            "href", re.compile(r"^http://prefect-ui\.test/runs/flow-run/[0-9a-f-]{36}$")
        )
        page.click("a:has-text('返回隔离记录')")
        for rid in fixed:
            expect(page.locator(f"tr[data-record='{rid}']")).to_have_count(0)
        expect(page.locator(f"tr[data-record='{broken[0]}']")).to_have_count(1)
    assert query(
        "SELECT count(*) FROM worker WHERE source = %s AND source_record_id = ANY(%s)", good, fixed
    ) == [(2,)]
    assert query(
        "SELECT resolution FROM quarantine WHERE source = %s AND source_record_id = ANY(%s)", good, fixed
    ) == [("reprocessed",), ("reprocessed",)]
    assert html.count("data-qid=") >= len(fixed + broken)
