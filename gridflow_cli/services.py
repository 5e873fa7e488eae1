"""Background services on one machine: Prefect server + worker, sandbox source, web app.

Each runs as a detached process with its pid in ``<state>/run`` and its log in ``<state>/logs``.
Prefect keeps its state in ``<state>/prefect`` (never ``~/.prefect``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from grid.settings import PROJECT_ROOT, Settings


class ServiceError(RuntimeError):
    """A service did not come up (one sentence, pointing at its log)."""


def prefect_env(settings: Settings) -> dict[str, str]:
    """Environment for every Prefect client of this project (CLI, worker and its flow runs, web
    app): this project's server, behind its password. No database credentials."""
    home = settings.state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": settings.prefect_api_url,
        "PREFECT_API_AUTH_STRING": settings.prefect_auth(),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "GRIDFLOW_PROJECT_DIR": str(PROJECT_ROOT),
    }


def prefect_server_env(settings: Settings) -> dict[str, str]:
    """Environment of the Prefect server alone: its PostgreSQL database (never SQLite), basic
    auth, CORS for the UI's own origin only, loopback unless configured, and the retention that
    Prefect's db vacuum service applies to old flow runs and events."""
    day = 86_400
    return {
        **prefect_env(settings),
        "PREFECT_SERVER_API_HOST": settings.prefect_host,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_SERVER_UI_API_URL": f"{settings.prefect_ui}/api",
        "PREFECT_SERVER_API_AUTH_STRING": settings.prefect_auth(),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": settings.prefect_db_url,
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": settings.prefect_ui,
        "PREFECT_SERVER_API_CORS_ALLOWED_METHODS": "GET,POST,PUT,PATCH,DELETE,OPTIONS",
        "PREFECT_SERVER_API_CORS_ALLOWED_HEADERS": "Authorization,Content-Type,X-Prefect-Ui",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(settings.prefect_retention_days * day),
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"P{settings.prefect_event_retention_days}D",
    }


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None
    start_timeout_s: float = 90.0
    server: bool = False  # gets prefect_server_env (the Prefect database URL and auth), not the client's


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def services(settings: Settings) -> dict[str, Service]:
    py = sys.executable
    return {
        "prefect": Service(
            "prefect",
            [
                _bin("prefect"),
                "server",
                "start",
                "--host",
                settings.prefect_host,
                "--port",
                str(settings.prefect_port),
            ],
            f"{settings.prefect_api_url}/health",
            start_timeout_s=180.0,
            server=True,
        ),
        "sandbox": Service(
            "sandbox",
            [
                py,
                "-m",
                "connectors.sandbox",
                "province",  # every sandboxed city of the source files, each on its own port
                "--sources-dir",
                str(settings.sources_dir),
                "--volume",
                str(settings.sandbox_volume),
                "--seed",
                str(settings.sandbox_seed),
                "--cells",
                str(settings.sample_cells),
            ],
            f"http://127.0.0.1:{settings.sandbox_port}/health",  # 宜昌's port (config/sources/yichang.toml)
            start_timeout_s=300.0,  # three cities' grids and records are generated first
        ),
        "web": Service(
            "web",
            [
                py,
                "-m",
                "uvicorn",
                "grid.web.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.web_port),
                # never believe X-Forwarded-For from whoever connects (uvicorn trusts loopback by
                # default); GRIDFLOW_WEB_TRUSTED_PROXIES names the proxies the app believes
                "--no-proxy-headers",
            ],
            f"http://127.0.0.1:{settings.web_port}/healthz",
        ),
        "worker": Service(
            "worker",
            [_bin("prefect"), "worker", "start", "--pool", "gridflow", "--type", "process"],
            None,
        ),
    }


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.state_dir / "run" / f"{name}.pid"


def logfile(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def log_offset(settings: Settings, name: str) -> Path:
    """Where the service's log stood when it was last started (its current run's lines follow)."""
    return settings.state_dir / "run" / f"{name}.logstart"


def current_log(settings: Settings, name: str) -> str:
    """The log lines written since the service was last started."""
    log = logfile(settings, name)
    if not log.exists():
        return ""
    marker = log_offset(settings, name)
    start = int(marker.read_text().strip() or 0) if marker.exists() else 0
    with open(log, "rb") as fh:
        fh.seek(start if start <= log.stat().st_size else 0)
        return fh.read().decode("utf-8", "replace")


def running_pid(settings: Settings, name: str) -> int | None:
    pf = _pidfile(settings, name)
    if not pf.exists():
        return None
    try:
        pid = int(pf.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        pf.unlink(missing_ok=True)
        return None
    return pid


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start(settings: Settings, name: str) -> str:
    svc = services(settings)[name]
    if running_pid(settings, name) is not None and (svc.health_url is None or _healthy(svc.health_url)):
        return "already running"
    if svc.health_url and _healthy(svc.health_url):
        raise ServiceError(
            f"{name}: something else already answers at {svc.health_url}; stop it or change the port"
        )
    log = logfile(settings, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _pidfile(settings, name).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(prefect_server_env(settings) if svc.server else prefect_env(settings))}
    log_offset(settings, name).write_text(str(log.stat().st_size if log.exists() else 0))
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            svc.argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=env,
            start_new_session=True,
        )
    _pidfile(settings, name).write_text(str(proc.pid))
    if svc.health_url is None:
        time.sleep(1.0)
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited at start; see {log}")
        return f"started (pid {proc.pid})"
    deadline = time.monotonic() + svc.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited at start; see {log}")
        if _healthy(svc.health_url):
            return f"started (pid {proc.pid})"
        time.sleep(0.5)
    raise ServiceError(
        f"{name} did not answer at {svc.health_url} within {svc.start_timeout_s:.0f} s; see {log}"
    )


def stop(settings: Settings, name: str) -> str:
    pid = running_pid(settings, name)
    if pid is None:
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _pidfile(settings, name).unlink(missing_ok=True)
    return "stopped"
