"""The escalation sweep flow through the Prefect harness: sweep, deliver, publish its counts."""

from __future__ import annotations

import json

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
