"""The Prefect server as `scripts/run` starts it: its own PostgreSQL database, behind a password,
CORS for its own UI only, deployments from prefect.yaml on the locked-down work pool, and a real
worker process. The schedules are proven by the server's own scheduler creating the runs and the
worker completing one — no harness, no run started by hand.

One server and one worker for the module (a server takes ~10 s to start; the scheduler loops
every 60 s, so the module takes one to three minutes).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import yaml

from grid.settings import PROJECT_ROOT, Settings, get_settings
from gridflow_cli import prefect_status, services
from tests.flows.helpers import env as set_env
from tests.flows.helpers import prefect_database, service_passwords

pytestmark = [pytest.mark.db, pytest.mark.slow]

SWEEP = "escalation-sweep/every-15-minutes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scheduled_deployments() -> set[str]:
    """flow/deployment names of prefect.yaml that carry an active schedule."""
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    flow_names = {
        "flows/nightly_sync.py:nightly_sync": "nightly-sync",
        "flows/escalation_sweep.py:escalation_sweep": "escalation-sweep",
        "flows/coverage_report.py:coverage_report": "coverage-report",
        "flows/quarantine_reprocess.py:quarantine_reprocess": "quarantine-reprocess",
        "flows/nightly_sync.py:sync_city": "sync-city",
    }
    return {
        f"{flow_names[d['entrypoint']]}/{d['name']}"
        for d in spec["deployments"]
        if any(s.get("active", True) for s in d.get("schedules") or [])
    }


@dataclass
class Deployed:
    settings: Settings
    env: dict[str, str]
    api: str
    auth: str

    def client(self) -> Any:
        """A Prefect client of this server (also when the session's test harness is active)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        stack = ExitStack()
        stack.enter_context(
            temporary_settings({PREFECT_API_URL: self.api, PREFECT_API_AUTH_STRING: self.auth})
        )
        client = stack.enter_context(get_client(sync_client=True))
        client._gridflow_stack = stack  # closed by the caller through close()
        return client


def _close(client: Any) -> None:
    client._gridflow_stack.close()


@pytest.fixture(scope="module")
def deployed(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    state = tmp_path_factory.mktemp("prefect-state")
    stack = ExitStack()
    # The database is made by the same function `gridflow db up` uses; the worker's own state
    # folder would make up other database passwords, so it is handed the session's through the
    # environment, as a worker on another host gets them.
    values = {
        **service_passwords(),
        "GRIDFLOW_STATE_DIR": str(state),
        "GRIDFLOW_PREFECT_PORT": str(_free_port()),
        "GRIDFLOW_PREFECT_DATABASE_URL": stack.enter_context(prefect_database(database_url, "prefect_t")),
    }
    stack.enter_context(set_env(**values))
    settings = get_settings()
    env = {**os.environ, **services.prefect_env(settings)}
    try:
        services.start(settings, "prefect")
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("gridflow")), "deploy"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        services.start(settings, "worker")
        yield Deployed(settings, env, settings.prefect_api_url, settings.prefect_auth())
    finally:
        for svc in ("worker", "prefect"):
            services.stop(settings, svc)
        stack.close()


def _runs(client: Any, deployment_id: Any, *types: str) -> list[Any]:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return list(
        client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in types]))
            ),
            limit=200,
        )
    )


def test_server_keeps_its_state_in_postgresql(deployed: Deployed) -> None:
    """Rule: Prefect's state is in the project's PostgreSQL (with pg_trgm), never SQLite."""
    url = (
        deployed.env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
        or services.prefect_server_env(deployed.settings)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    )
    assert url.startswith("postgresql+asyncpg://")
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM deployment")
            assert cur.fetchone()[0] >= 4  # the deployments of prefect.yaml live here
            cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
            assert cur.fetchone() is not None
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone()[0] is False
    finally:
        conn.close()
    assert not list((deployed.settings.state_dir / "prefect").glob("*.db"))


def test_scheduler_creates_runs_for_every_scheduled_deployment(deployed: Deployed) -> None:
    """Rule: the server's own scheduler (not a test, not a person) creates scheduled runs for every
    deployment of prefect.yaml that has an active schedule."""
    wanted = _scheduled_deployments()
    assert wanted == {"nightly-sync/nightly", SWEEP, "coverage-report/after-nightly"}
    client = deployed.client()
    try:
        deadline = time.monotonic() + 150
        missing = set(wanted)
        while missing and time.monotonic() < deadline:
            for name in sorted(missing):
                d = client.read_deployment_by_name(name)
                if any(r.auto_scheduled for r in _runs(client, d.id, "SCHEDULED")):
                    missing.discard(name)
            if missing:
                time.sleep(3)
        assert not missing, f"no run created by the scheduler for {sorted(missing)}"
    finally:
        _close(client)


def test_worker_completes_a_scheduled_run(deployed: Deployed) -> None:
    """Rule: a run the scheduler creates is picked up by the real worker process and completes
    (the sweep gets an extra schedule one minute apart; the production crons stay)."""
    from prefect.client.schemas.schedules import IntervalSchedule

    client = deployed.client()
    try:
        d = client.read_deployment_by_name(SWEEP)
        anchor = datetime.now(UTC) + timedelta(seconds=5)
        client.create_deployment_schedules(
            d.id, [(IntervalSchedule(interval=timedelta(seconds=60), anchor_date=anchor), True)]
        )
        deadline = time.monotonic() + 240
        done: list[Any] = []
        while not done and time.monotonic() < deadline:
            done = [r for r in _runs(client, d.id, "COMPLETED") if r.auto_scheduled]
            failed = [r for r in _runs(client, d.id, "FAILED", "CRASHED") if r.auto_scheduled]
            assert not failed, f"scheduled sweep run ended {failed[0].state}"
            if not done:
                time.sleep(3)
        assert done, "no scheduled sweep run completed within 4 minutes"
    finally:
        _close(client)


def test_every_api_route_but_health_needs_the_password(deployed: Deployed) -> None:
    """Rule: without the password (or with a wrong one) every Prefect API route answers 401;
    only GET /health and /ready are open, for probes."""
    good = {"Authorization": "Basic " + base64.b64encode(deployed.auth.encode()).decode()}
    spec = httpx.get(f"{deployed.api}/openapi.json", headers=good, timeout=30).json()
    assert httpx.get(f"{deployed.api}/openapi.json", timeout=10).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"gridflow:not-the-password").decode()}
    open_routes, checked = [], 0
    fake_id = "00000000-0000-0000-0000-000000000000"
    with httpx.Client(timeout=10) as http:
        for path, methods in spec["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", fake_id, path)
            for method in methods:
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                for headers in ({}, wrong):
                    r = http.request(method.upper(), f"{deployed.api}{concrete}", headers=headers, json={})
                    checked += 1
                    if r.status_code != 401:
                        open_routes.append(f"{method.upper()} {path} -> {r.status_code}")
    assert checked > 200
    assert open_routes == [
        "GET /health -> 200",
        "GET /health -> 200",
        "GET /ready -> 200",
        "GET /ready -> 200",
    ]


def test_cors_allows_only_the_ui_origin(deployed: Deployed) -> None:
    """Rule: a cross-origin preflight from another origin gets no Access-Control-Allow-Origin
    (a web page elsewhere cannot drive the API); the UI's own origin does."""

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{deployed.api}/deployments/filter",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )

    evil = preflight("http://evil.example")
    assert "access-control-allow-origin" not in evil.headers
    for method in ("DELETE", "POST"):
        r = httpx.options(
            f"{deployed.api}/variables/",
            headers={"Origin": "http://127.0.0.1:9", "Access-Control-Request-Method": method},
            timeout=10,
        )
        assert "access-control-allow-origin" not in r.headers
    own = preflight(deployed.settings.prefect_ui)
    assert own.headers.get("access-control-allow-origin") == deployed.settings.prefect_ui


def test_server_listens_on_loopback_only(deployed: Deployed) -> None:
    """Rule: the server binds 127.0.0.1 unless GRIDFLOW_PREFECT_HOST says otherwise."""
    port = deployed.settings.prefect_port
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                listening.add(local.rsplit(":", 1)[0])
    assert listening == {"0100007F"}  # 127.0.0.1, little-endian hex


@pytest.mark.parametrize(
    ("job_variables", "allowed"),
    [
        pytest.param({"command": "id > /tmp/owned"}, False, id="command override refused"),
        pytest.param({"working_dir": "/tmp"}, False, id="working_dir override refused"),
        pytest.param({"env": {"LD_PRELOAD": "/tmp/x.so"}}, False, id="env outside the allow-list refused"),
        pytest.param({"env": {"PREFECT_LOGGING_LEVEL": "shell"}}, False, id="allow-listed env, bad value"),
        pytest.param({"env": {"PREFECT_LOGGING_LEVEL": "DEBUG"}}, True, id="allow-listed env accepted"),
        pytest.param({"stream_output": False}, True, id="stream_output accepted"),
    ],
)
def test_runs_cannot_override_the_workers_command(
    deployed: Deployed, job_variables: dict[str, Any], allowed: bool
) -> None:
    """Rule: the work pool's job template lets a flow run set no command, no working directory and
    no environment variable beyond its allow-list; the server refuses such a run (422)."""
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import Scheduled

    client = deployed.client()
    try:
        d = client.read_deployment_by_name(SWEEP)
        if allowed:  # scheduled a day ahead and deleted: the worker never runs it
            later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1))
            run = client.create_flow_run_from_deployment(d.id, job_variables=job_variables, state=later)
            client.delete_flow_run(run.id)
        else:
            with pytest.raises(PrefectHTTPStatusError) as exc:
                client.create_flow_run_from_deployment(d.id, job_variables=job_variables)
            assert exc.value.response.status_code == 422
    finally:
        _close(client)


def test_ui_links_still_open(deployed: Deployed) -> None:
    """Rule: the web app's links into the Prefect UI (Settings.flow_run_url) still open a page: the
    UI is served, and its settings tell the browser to ask for the password."""
    url = deployed.settings.flow_run_url("00000000-0000-0000-0000-000000000001")
    assert url is not None
    page = httpx.get(url, headers={"Accept": "text/html"}, timeout=30)  # as a browser navigates
    assert page.status_code == 200 and "<html" in page.text.lower()
    ui_settings = httpx.get(f"{deployed.settings.prefect_ui}/ui-settings", timeout=10).json()
    assert ui_settings["auth"] == "BASIC"
    assert ui_settings["api_url"] == f"{deployed.settings.prefect_ui}/api"


def test_status_lists_schedules_and_next_runs(deployed: Deployed) -> None:
    """Rule: `gridflow status` prints, under column headers, each deployment's schedule, whether it
    is active and its next scheduled run from the Prefect API, and no server problem."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("gridflow")), "status"],
        env=deployed.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("deployment "))
    assert re.search(r"schedule\s+active\s+next scheduled run", header)
    for name in _scheduled_deployments():
        row = next(line for line in lines if line.startswith(name + " "))
        assert re.search(r"\byes\b\s+20\d\d-\d\d-\d\d \d\d:\d\d$", row), row
    assert re.search(r"^quarantine-reprocess/on-demand\s+none", proc.stdout, re.M)
    assert "Prefect server services: no errors logged" in proc.stdout


def test_zz_server_log_has_no_traceback(deployed: Deployed) -> None:
    """Rule: after deploying, scheduling and running, the server's log holds no traceback and no
    ERROR from any server service (the SQLAlchemy 2.1 scheduler failure would show here).
    Named to run last in the module."""
    log = services.current_log(deployed.settings, "prefect")
    assert "Uvicorn running" in log or "Check out the dashboard" in log
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 500) : at + 2000]
    assert prefect_status.server_problems(log) == []


# -- reading the server log (pure) ----------------------------------------------------------------

FAILED_LOOP = "| ERROR   | prefect.server.services.scheduler - Unexpected error in: InvalidRequestError()"
SCHEDULER_FAILURE = f"""\
21:00:01.000 | INFO    | prefect.server.services.scheduler - Scheduler started
21:00:02.000 {FAILED_LOOP}
Traceback (most recent call last):
  File "/x/prefect/server/services/base.py", line 250, in start
    await self.run_once()
sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement
21:01:02.000 {FAILED_LOOP}
Traceback (most recent call last):
  File "/x/prefect/server/services/base.py", line 250, in start
    await self.run_once()
sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        pytest.param("21:00 | INFO | prefect.server - started\n", [], id="a quiet log has no problem"),
        pytest.param(
            SCHEDULER_FAILURE,
            [
                (
                    "prefect.server.services.scheduler",
                    "sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement",
                    2,
                )
            ],
            id="the scheduler failing every loop is one problem counted twice",
        ),
        pytest.param(
            "Traceback (most recent call last):\n  File 'a.py', line 1\nRuntimeError: boom\n",
            [("prefect server", "RuntimeError: boom", 1)],
            id="a bare traceback is a problem too",
        ),
        pytest.param(
            "21:00 | ERROR   | prefect.server.services.foreman - lost contact\n",
            [("prefect.server.services.foreman", "lost contact", 1)],
            id="an ERROR line without traceback",
        ),
    ],
)
def test_server_problems_are_read_from_the_log(log: str, expected: list[tuple[str, str, int]]) -> None:
    """Rule: `gridflow status` flags a failing server service: tracebacks and ERROR lines of the
    server's log, grouped by the logger that wrote them and the exception."""
    assert [(p.where, p.error, p.count) for p in prefect_status.server_problems(log)] == expected


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        pytest.param(None, "GRIDFLOW_PREFECT_AUTH_STRING must be set", id="missing"),
        pytest.param("changeme", "GRIDFLOW_PREFECT_AUTH_STRING must be set", id="placeholder"),
        pytest.param("just-a-password", "must have the form user:password", id="no user"),
    ],
)
def test_production_refuses_a_prefect_api_without_a_real_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str | None, message: str
) -> None:
    """Rule: outside development the Prefect API's password comes from the environment; without a
    real one gridflow refuses to start (no development file is made up in production)."""
    from grid.settings import ConfigError

    monkeypatch.delenv("GRIDFLOW_PREFECT_AUTH_STRING", raising=False)
    with pytest.raises(ConfigError, match=message):
        Settings(
            env="production",
            state_dir=tmp_path,
            hmac_key="a" * 44,
            encryption_key="b" * 44,
            prefect_auth_string=auth,
        ).prefect_auth()
    assert not (tmp_path / "keys").exists()


def test_lock_pins_sqlalchemy_below_2_1() -> None:
    """Rule: the lock installs an SQLAlchemy that Prefect 3.8.8's scheduler works with (< 2.1)."""
    lock = (PROJECT_ROOT / "requirements.lock").read_text(encoding="utf-8")
    version = re.search(r"^sqlalchemy==(\S+)", lock, re.M)
    assert version is not None
    major, minor = (int(x) for x in version.group(1).split(".")[:2])
    assert (major, minor) < (2, 1)
    prefect = re.search(r"^prefect==(\S+)", lock, re.M)
    assert prefect is not None and prefect.group(1) == "3.8.8"
    assert tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["name"] == "gridflow"
