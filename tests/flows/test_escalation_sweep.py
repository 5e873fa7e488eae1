"""The escalation sweep flow through the Prefect harness: sweep, deliver, publish its counts."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest

from grid.settings import get_settings
from tests.grid.test_case_store import RULES, T0, _only_case, _Receiver, make_world, open_case, report, rows

pytestmark = [pytest.mark.db, pytest.mark.flow]


def test_the_flow_sweeps_delivers_and_publishes_its_counts(
    prefect_harness: None, conn: psycopg2.extensions.connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flow rule: one run at a replayed time fires the due steps (reminder, criticism and
    escalation), delivers the queued notices to the configured webhook and publishes a table
    artifact of its counts; a second run at the same time fires nothing more."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.escalation_sweep import escalation_sweep

    world = make_world(conn)
    cid = open_case(conn, report=report(world), rules=RULES, actor="t", at=T0).case_id
    _only_case(conn, cid)  # other tests' pending notices wait, so the counts below are this case's
    receiver = _Receiver(fail=0)
    receiver.thread.start()
    try:
        monkeypatch.setenv("GRIDFLOW_WEBHOOKS", json.dumps({"union": receiver.url}))
        get_settings.cache_clear()
        first = escalation_sweep(now="2026-10-14T09:30:00+08:00", scope=world.town)
        second = escalation_sweep(now="2026-10-14T09:30:00+08:00", scope=world.town)
    finally:
        monkeypatch.delenv("GRIDFLOW_WEBHOOKS")
        get_settings.cache_clear()
        receiver.server.shutdown()
        receiver.server.server_close()

    assert (first["reminded"], first["criticised"], first["escalated"]) == (1, 1, 1)
    assert (
        first["outbox_delivered"] >= 6
    )  # assigned at opening, 2 reminders, 2 criticisms, assigned on escalation
    assert (second["steps"], second["events"]) == (0, 0)
    assert {"purged_sessions", "purged_login_attempts"} <= set(first)  # housekeeping ran too
    pending = rows(
        conn,
        "SELECT count(*) FROM notification_outbox WHERE case_id = %s AND delivered_at IS NULL",
        cid,
    )
    assert pending == [(0,)]
    delivered = [body for _, body in receiver.received if body["case_id"] == cid]
    topics = sorted(b["topic"] for b in delivered)
    assert topics == ["assigned", "assigned", "criticise", "criticise", "remind", "remind"]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["escalation-sweep"]))
        )
    assert arts, "no artifact with key escalation-sweep"


def test_the_flow_delivers_to_the_wecom_robot_of_the_notify_file(
    prefect_harness: None,
    conn: psycopg2.extensions.connection,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Flow rule: the sweep's delivery reads the notify file (GRIDFLOW_NOTIFY_FILE) and the robot's
    URL from the environment, and posts WeCom markdown to the town's robot for the notices of the
    community and cells below it (the route stored as the unit above)."""
    from flows.escalation_sweep import escalation_sweep
    from tests.grid.test_notify import WECOM_KEY, Receiver

    world = make_world(conn)
    cid = open_case(conn, report=report(world), rules=RULES, actor="t", at=T0).case_id
    _only_case(conn, cid)
    notify = tmp_path / "notify.toml"
    notify.write_text(f'[robots.town_group]\nkind = "wecom"\ncodes = ["{world.town}"]\n', encoding="utf-8")
    receiver = Receiver()
    receiver.thread.start()
    try:
        monkeypatch.setenv("GRIDFLOW_NOTIFY_FILE", str(notify))
        monkeypatch.setenv(
            "GRIDFLOW_NOTIFY_TOWN_GROUP_URL", f"{receiver.base}/cgi-bin/webhook/send?key={WECOM_KEY}"
        )
        monkeypatch.delenv("GRIDFLOW_WEBHOOKS", raising=False)
        get_settings.cache_clear()
        first = escalation_sweep(now="2026-10-14T09:30:00+08:00", scope=world.town)
    finally:
        monkeypatch.delenv("GRIDFLOW_NOTIFY_FILE")
        get_settings.cache_clear()
        receiver.server.shutdown()
        receiver.server.server_close()
    assert first["outbox_delivered"] >= 6
    vias = rows(
        conn,
        "SELECT DISTINCT delivered_via FROM notification_outbox WHERE case_id = %s AND recipient_code <> %s",
        cid,
        world.town,
    )
    assert vias == [(f"robot:town_group (unit above {world.town})",)]
    contents = [b["markdown"]["content"] for _, b in receiver.got]
    assert any(c.startswith("### 逾期催办") for c in contents) and any(
        c.startswith("### 新案件派单") for c in contents
    )
