"""Alerts: the automations of config/alerts.toml, installed by `gridflow alerts install` against a
real Prefect server (the session harness runs Prefect's event, trigger and action services — the
reactive and proactive trigger evaluators and the actions service run in ephemeral servers too),
post to a real HTTP receiver on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows import alerts
from grid.monitoring import alert_rules
from tests.conftest import write_sources
from tests.flows.helpers import env, query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow]


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                text = self.rfile.read(int(self.headers.get("content-length") or 0)).decode(
                    "utf-8", "replace"
                )
                outer.raw.append(text)
                with contextlib.suppress(ValueError):
                    outer.bodies.append(json.loads(text))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, pred: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if pred(body):
                    return body
            time.sleep(0.5)
        raise AssertionError(f"no matching webhook call within {timeout:g} s; got {self.raw!r}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def prefect_api(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The harness's API URL in the environment (the CLI honours PREFECT_API_URL); gridflow
    automations are removed afterwards so no other test's failures post anywhere."""
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", url)
    yield url
    alerts.remove()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_alerts_config_declares_failure_and_stale_automations_without_personal_data() -> None:
    """Rule: the automations are declared in the repository; payload templates name only the
    source, flow run id, state and UI link."""
    config = alert_rules.load_alerts()
    specs = alerts.automation_specs(
        config, webhook_block_id="00000000-0000-0000-0000-000000000001", ui_url="http://ui"
    )
    by_kind = {s["trigger"]["posture"]: s for s in specs}
    failed, stale = by_kind["Reactive"], by_kind["Proactive"]
    assert set(failed["trigger"]["expect"]) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert "sync-source" in failed["trigger"]["match_related"]["prefect.resource.name"]
    assert (
        stale["trigger"]["expect"] == [alert_rules.SYNCED_EVENT] and stale["trigger"]["within"] == 48 * 3600
    )
    for spec in specs:
        payload = spec["actions"][0]["payload"]
        assert 'parameters.get("source_name")' in payload or "labels" in payload
        for forbidden in ("state.message", "description", "event.payload"):
            assert forbidden not in payload


def test_bad_alerts_file_is_a_clear_error(tmp_path: Path) -> None:
    """Rule: bad configuration gives one clear sentence naming the file and the field."""
    bad = tmp_path / "alerts.toml"
    bad.write_text("[freshness]\nwarn_hours = 50\nalarm_hours = 48\n", encoding="utf-8")
    with pytest.raises(alert_rules.AlertsConfigError, match="alarm_hours must not be below warn_hours"):
        alert_rules.load_alerts(bad)
    bad.write_text('[[automations]]\nname = "x"\nkind = "flow-run-failed"\n', encoding="utf-8")
    with pytest.raises(alert_rules.AlertsConfigError, match="needs flows"):
        alert_rules.load_alerts(bad)


def test_failing_sync_run_posts_to_the_webhook_within_a_minute(
    prefect_api: str, receiver: Receiver, loaded_world: Any, tmp_path: Path
) -> None:
    """Rule (issue #8 done-when): a failing sync run produces a webhook call to a local receiver
    within a minute, carrying source, flow run id, state and UI link — no personal data. The
    install command is idempotent."""
    from flows.nightly_sync import SyncFailed, nightly_sync
    from gridflow_cli.main import app

    runner = CliRunner()
    first = runner.invoke(app, ["alerts", "install", "--webhook", receiver.url, "--ui-url", "http://ui.test"])
    assert first.exit_code == 0, first.output
    assert "gridflow-sync-run-failed: created" in first.output
    again = runner.invoke(app, ["alerts", "install", "--webhook", receiver.url, "--ui-url", "http://ui.test"])
    assert again.exit_code == 0, again.output
    assert "gridflow-sync-run-failed: unchanged" in again.output
    assert "gridflow-source-stale: unchanged" in again.output
    listed = runner.invoke(app, ["alerts", "list"])
    assert "gridflow-sync-run-failed: enabled, reactive" in listed.output
    assert "gridflow-source-stale: enabled, proactive" in listed.output
    time.sleep(2)  # the trigger service loads new automations on its next event/refresh

    conf = tmp_path / "sources"
    conf.mkdir()
    with sources_env(conf):
        write_sources(conf, alert_city=f"http://127.0.0.1:{_closed_port()}")
        started = time.monotonic()
        with pytest.raises(SyncFailed, match="alert_city"):
            nightly_sync(sources=["alert_city"])
    (flow_run_id,) = query(
        "SELECT flow_run_id::text FROM sync_run WHERE source = 'alert_city' AND status = 'failed'"
        " ORDER BY id DESC LIMIT 1"
    )[0]
    body = receiver.wait_for(
        lambda b: b.get("flow") == "sync-source" and b.get("flow_run_id") == flow_run_id,
        timeout=60 - (time.monotonic() - started),
    )
    assert body == {
        "alert": "gridflow-sync-run-failed",
        "source": "alert_city",
        "flow": "sync-source",
        "flow_run_id": flow_run_id,
        "flow_run_name": "sync-alert_city",
        "state": "Failed",
        "ui_url": f"http://ui.test/runs/flow-run/{flow_run_id}",
    }
    # the parent nightly run fails too and is reported without a single source
    parent = receiver.wait_for(lambda b: b.get("flow") == "nightly-sync", timeout=30)
    assert parent["state"] == "Failed" and parent["source"] == ""


def test_stale_source_posts_to_the_webhook(prefect_api: str, receiver: Receiver, tmp_path: Path) -> None:
    """Rule (issue #8): a source without a successful sync (event gridflow.source.synced) within
    the stale threshold produces a webhook call naming the source (Prefect proactive trigger;
    the threshold is shortened to 12 s here)."""
    from prefect.events import emit_event
    from prefect.events.clients import get_events_client  # noqa: F401  (the client flushes on exit)

    short = tmp_path / "alerts.toml"
    short.write_text(
        '[freshness]\nwarn_hours = 26\nalarm_hours = 48\n[webhook]\nblock_name = "gridflow-alerts-test"\n'
        '[[automations]]\nname = "gridflow-source-stale"\nkind = "source-stale"\nstale_hours = 0.0034\n',
        encoding="utf-8",
    )
    with env(GRIDFLOW_ALERTS_FILE=str(short)):
        done = alerts.install(alert_rules.load_alerts(), webhook_url=receiver.url, ui_url="http://ui.test")
    assert done["gridflow-source-stale"] in ("created", "updated")
    time.sleep(2)
    emit_event(
        event=alert_rules.SYNCED_EVENT,
        resource={"prefect.resource.id": "gridflow.source.stale_city", "prefect.resource.name": "stale_city"},
    )
    body = receiver.wait_for(lambda b: b.get("alert") == "gridflow-source-stale", timeout=75)
    assert body["source"] == "stale_city" and body["stale_hours"] == pytest.approx(0.0034)
