"""The roster as a fourth synced entity: officers from the city's grid system own the cases of their
cells after the nightly sync, bad roster rows are quarantined with their reason, and an officer who
leaves hands their open cases to the community union in the roster page's transaction."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, expect
from typer.testing import CliRunner

from connectors.reasons import Reason
from connectors.sandbox.app import SandboxServer, correct_record, create_app
from connectors.sandbox.data import SandboxDataset
from grid.store.db import connect
from tests.conftest import SAMPLE_CITY, SANDBOX_AS_OF, write_sources
from tests.flows.helpers import query, sources_env
from tests.web.conftest import PASSWORD, LiveServer, app_factory, browser, client, sign_in

__all__ = ["app_factory", "browser"]  # fixtures of the web tests, used here

pytestmark = [pytest.mark.db, pytest.mark.flow]

SOURCE = "roster_city"


@dataclass
class Synced:
    dataset: SandboxDataset
    app: FastAPI
    sources: Path
    labels: dict[str, str]
    bad: dict[str, str]
    staffed: list[tuple[Any, ...]]  # (case id, owner, this source's officer, cell, active officers)


@pytest.fixture(scope="module")
def synced(prefect_harness: Any, loaded_world: Any, tmp_path_factory: Any) -> Iterator[Synced]:
    """The sandbox with a roster and case reports, synced once by the nightly-sync flow (the path
    ``scripts/run`` takes), the sandbox kept up for the tests that change the roster."""
    from flows.nightly_sync import sync_source
    from grid.cases.owners import ensure_units

    dataset = SandboxDataset(
        [(c.code, c.geometry) for c in loaded_world.cells],
        city_code=SAMPLE_CITY,
        n_workers=400,
        n_enterprises=60,
        n_cases=150,
        seed=23,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in loaded_world.divisions},
        roster=True,
    )
    conn = connect()
    try:
        ensure_units(conn, scope=SAMPLE_CITY)
        ensure_units(conn, scope="420000000000")
    finally:
        conn.close()
    labels = dataset.labels("grid_officers")
    reasons = {str(r) for r in Reason}
    bad = {rid: lab for rid, lab in labels.items() if lab in reasons}
    tmp = tmp_path_factory.mktemp("roster_sources")
    app = create_app(dataset)
    with SandboxServer(app) as server:
        write_sources(tmp, with_cases=True, with_roster=True, **{SOURCE: server.base_url})
        with sources_env(tmp):
            first = sync_source(SOURCE)
        assert first["status"] == "completed"
        rows = query(
            """
            SELECT c.id, c.owner_code, c.owner_officer, c.cell_code,
                   ARRAY(SELECT oc.officer_id FROM officer_cell oc JOIN officer o ON o.id = oc.officer_id
                         WHERE o.active AND oc.cell_code = c.cell_code ORDER BY 1)
            FROM case_file c JOIN case_intake i ON i.case_id = c.id
            WHERE i.source_ref LIKE %s AND c.level = 5 AND c.cell_code IS NOT NULL
            ORDER BY c.id
            """,
            f"{SOURCE}:%",
        )
        # other tests of the session may have synced another source's roster over the same sample
        # cells; this module's cases are the ones its own officers own
        own = {i for (i,) in query("SELECT id FROM officer WHERE source = %s", SOURCE)}
        yield Synced(dataset, app, tmp, labels, bad, [r for r in rows if r[4] and r[2] in own])


def test_the_synced_roster_owns_the_cases_of_its_cells(synced: Synced) -> None:
    """Every good roster row is loaded (in post or not), every bad one quarantined with its reason;
    a case in a cell with an active officer is owned by one of them, in a cell without one by the
    community union; the phone is protected; a replay of the unchanged night changes nothing."""
    from flows.nightly_sync import sync_source

    labels, bad = synced.labels, synced.bad
    assert set(bad.values()) == {"missing_record_id", "bad_phone", "unknown_cell", "missing_field"}
    loaded = dict(query("SELECT source_record_id, active FROM officer WHERE source = %s", SOURCE))
    assert loaded == {rid: lab == "ok" for rid, lab in labels.items() if lab not in bad.values()}
    quarantined = query(
        "SELECT coalesce(source_record_id, ''), reason_code FROM quarantine "
        "WHERE source = %s AND entity = 'grid_officers'",
        SOURCE,
    )
    assert sorted(r for _, r in quarantined) == sorted(bad.values())
    assert {rid for rid, _ in quarantined if rid} == {
        rid for rid, lab in bad.items() if lab != "missing_record_id"
    }
    phones = query(
        "SELECT phone_masked, phone_hmac IS NOT NULL, phone_enc IS NOT NULL FROM officer "
        "WHERE source = %s AND active LIMIT 5",
        SOURCE,
    )
    assert phones and all("****" in m and h and e for m, h, e in phones)
    rows = query(
        """
        SELECT c.owner_code, c.owner_officer, c.cell_code,
               ARRAY(SELECT oc.officer_id FROM officer_cell oc JOIN officer o ON o.id = oc.officer_id
                     WHERE o.active AND oc.cell_code = c.cell_code ORDER BY 1)
        FROM case_file c JOIN case_intake i ON i.case_id = c.id
        WHERE i.source_ref LIKE %s AND c.level = 5 AND c.cell_code IS NOT NULL
        """,
        f"{SOURCE}:%",
    )
    staffed = [r for r in rows if r[3]]
    unstaffed = [r for r in rows if not r[3]]
    assert staffed, "no case landed in a cell with an officer: the test proves nothing"
    assert all(owner == cell and officer in officers for owner, officer, cell, officers in staffed)
    assert all(owner == cell[:12] and officer is None for owner, officer, cell, _ in unstaffed)
    with sources_env(synced.sources):
        again = sync_source(SOURCE)
    assert again["status"] == "completed" and again["loaded"] == 0


def test_an_account_tied_to_a_synced_officer_resolves_its_case_at_phone_width(
    synced: Synced, app_factory: Any, browser: Browser, monkeypatch: Any
) -> None:
    """``gridflow users add --officer ID`` after the sync: the account signs in in headless Chromium
    at 390 px, resolves one of its own cases, and is refused another cell's case (not in its scope:
    404) and a case of its own cell it no longer owns (403), over HTTP."""
    from grid.cases.actions import escalate
    from grid.cases.intake import CaseReport, open_case
    from grid.cases.store import rules_from_settings
    from gridflow_cli.main import app as cli

    case_id, _owner, officer_id, cell, _ = next(r for r in synced.staffed
                                                if query("SELECT state FROM case_file WHERE id = %s", r[0])
                                                == [("new",)])  # fmt: skip
    code = query("SELECT source_record_id FROM officer WHERE id = %s", officer_id)[0][0]
    served = {c for (c,) in query("SELECT cell_code FROM officer_cell WHERE officer_id = %s", officer_id)}
    neighbour = next(r[0] for r in synced.staffed if r[3] not in served)
    login_name = f"wg-{code.lower()}"
    monkeypatch.setenv("GRIDFLOW_NEW_USER_PASSWORD", PASSWORD)
    added = CliRunner().invoke(cli, ["users", "add", login_name, "--officer", code, "--source", SOURCE])
    assert added.exit_code == 0, added.output

    with LiveServer(app_factory(cookie_secure=False)) as base_url:
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")
        page = ctx.new_page()
        try:
            sign_in(page, base_url, login_name)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            page.goto(f"{base_url}/cases/{case_id}")
            expect(page.locator("h1")).to_contain_text(f"案件 #{case_id}")
            for action in ("accept", "start"):
                page.locator(f"form[data-action={action}] button").click()
                expect(page.locator("[data-testid=message]")).to_be_visible()
            page.locator("form[data-action=resolve] select[name=outcome]").select_option("agreement")
            page.locator("form[data-action=resolve] button").click()
            expect(page.locator("[data-testid=state]")).to_have_text(re.compile("已办结"))
        finally:
            ctx.close()
    assert query("SELECT state, outcome FROM case_file WHERE id = %s", case_id) == [("resolved", "agreement")]

    # a case this officer no longer owns, in its own cell (escalated to the town): refused with 403
    rules = rules_from_settings()
    conn = connect()
    try:
        report = CaseReport(kind="dismissal", channel="officer", cell_code=cell, source_ref=f"e2e-{case_id}")
        mine = open_case(conn, report=report, rules=rules, actor=login_name)
        up = escalate(conn, case_id=mine.case_id, expected_version=mine.version, actor=login_name,
                      reason="需要街道协调", rules=rules)  # fmt: skip
    finally:
        conn.close()
    web = client(app_factory())
    r = web.post("/api/v1/session", json={"login": login_name, "password": PASSWORD})
    assert r.status_code == 200
    h = {"X-CSRF-Token": r.json()["csrf_token"]}
    r = web.post(f"/api/v1/cases/{mine.case_id}/actions/note", json={"version": up.version, "text": "试图办理"},
                 headers=h)  # fmt: skip
    assert r.status_code == 403, r.text
    v = query("SELECT version FROM case_file WHERE id = %s", neighbour)[0][0]
    r = web.post(
        f"/api/v1/cases/{neighbour}/actions/note", json={"version": v, "text": "试图办理"}, headers=h
    )
    assert r.status_code == 404, r.text  # another cell's case: not in this officer's scope at all
    assert query("SELECT version FROM case_file WHERE id = %s", neighbour) == [(v,)]


def test_an_officer_who_leaves_hands_open_cases_to_the_community(synced: Synced) -> None:
    """The city marks an officer 离岗: the next sync makes them inactive and moves each of their open
    cases to the community union with a reassign event that says why, in the roster page's
    transaction."""
    from flows.nightly_sync import sync_source

    officer_id = next(r[2] for r in synced.staffed
                      if query("SELECT count(*) FROM case_file WHERE owner_officer = %s AND state NOT IN "
                               "('resolved', 'closed')", r[2])[0][0] >= 1)  # fmt: skip
    code = query("SELECT source_record_id FROM officer WHERE id = %s", officer_id)[0][0]
    cases = [(i, cell) for (i, cell) in query(
        "SELECT id, owner_code FROM case_file WHERE owner_officer = %s AND state NOT IN ('resolved', 'closed')",
        officer_id)]  # fmt: skip
    row = dict(next(r.row for r in synced.dataset.rows("grid_officers") if r.record_id == code))
    later = datetime.fromisoformat(SANDBOX_AS_OF) + timedelta(hours=1)
    row.update(zgzt="0", gxsj=later.strftime("%Y-%m-%d %H:%M:%S"))
    correct_record(synced.app, "grid_officers", code, row, updated_at=later)
    with sources_env(synced.sources):
        third = sync_source(SOURCE)
    assert third["status"] == "completed"
    assert query("SELECT active FROM officer WHERE id = %s", officer_id) == [(False,)]
    assert query(
        "SELECT count(*) FROM case_file WHERE owner_officer = %s AND state NOT IN ('resolved', 'closed')",
        officer_id,
    ) == [(0,)]
    moved = query(
        """
        SELECT e.case_id, e.actor, e.payload->>'roster', e.payload->>'officer', e.owner_after
        FROM case_event e WHERE e.action = 'reassign' AND e.payload->>'officer' = %s
        """,
        code,
    )
    assert sorted(moved) == sorted((i, f"roster:{SOURCE}", "left", code, cell[:12]) for i, cell in cases)
