"""Several hosts on loopback, on the engines that exist: one Prefect server (its own PostgreSQL
database, behind its password, deployments from prefect.yaml), two Prefect worker processes each
in its own working directory and state folder (so nothing but the environment is shared: keys,
database URL, Prefect API URL and auth string), and a Dask cluster started with the `dask` CLI
(`dask scheduler` + two `dask worker` processes, not a LocalCluster) that both hosts' sync runs
prepare their chunks on (GRIDFLOW_DASK_ADDRESS).

Three cities are synced at once — a nightly run of all three and, at the same moment, one
`sync-city/one-city` run per city, so the same city is asked for twice and whichever worker
takes a run may find it being synced elsewhere. Proved: each city's records were synced by one
run at a time (sync_run intervals never overlap; the advisory lock made the other a no-op or a
later incremental run that loaded nothing), and the stored tables equal a single-machine run
(`gridflow sync --local`, threads, no Dask) of the same data under another name.

Takes two to four minutes (a server, a deploy, five processes, four syncs).
"""

from __future__ import annotations

import base64
import itertools
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grid.settings import PROJECT_ROOT, Settings, get_settings
from gridflow_cli import services
from tests.conftest import write_sources
from tests.flows.helpers import env as set_env
from tests.flows.helpers import fingerprint, prefect_database, query, service_passwords

pytestmark = [pytest.mark.db, pytest.mark.slow]

CITIES = ("hosts_a", "hosts_b", "hosts_c")
SOLO = "hosts_solo"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass
class Hosts:
    settings: Settings
    env: dict[str, str]  # what every host shares (keys, database, sources, Prefect API + auth)
    dask_address: str
    workers: list[subprocess.Popen[bytes]]
    logs: list[Path]


@pytest.fixture(scope="module")
def hosts(
    database_url: str, loaded_world: Any, sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hosts]:

    root = tmp_path_factory.mktemp("hosts")
    sources = root / "sources"
    sources.mkdir()
    write_sources(sources, **{name: sandbox_url for name in (*CITIES, SOLO)})
    stack = ExitStack()
    dask_port = _free_port()
    # Every host gets the database roles' passwords from the environment (README "Running on
    # several machines"), as the keys: a host's own state folder would make up different ones.
    shared = {
        **service_passwords(),
        "GRIDFLOW_DATABASE_URL": database_url,
        "GRIDFLOW_SOURCES_DIR": str(sources),
        "GRIDFLOW_HMAC_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "GRIDFLOW_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "GRIDFLOW_PREFECT_AUTH_STRING": f"gridflow:{secrets.token_urlsafe(16)}",
        "GRIDFLOW_PREFECT_PORT": str(_free_port()),
        "GRIDFLOW_PREFECT_DATABASE_URL": stack.enter_context(prefect_database(database_url, "prefect_h")),
    }
    stack.enter_context(set_env(**shared, GRIDFLOW_STATE_DIR=str(root / "server")))
    settings = get_settings()
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def spawn(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            p = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        procs.append(p)
        return p

    try:
        services.start(settings, "prefect")
        env = {**os.environ, **services.prefect_env(settings)}
        deploy = subprocess.run(
            [_bin("gridflow"), "deploy"], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert deploy.returncode == 0, deploy.stderr
        dask_address = f"tcp://127.0.0.1:{dask_port}"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDFLOW_", "PREFECT_"))}
        # A deployment's flow run loads flows/nightly_sync.py as the top-level module `nightly_sync`,
        # and Prefect ships its flow with each task: the Dask processes import it from flows/.
        dask_path = {"PYTHONPATH": str(PROJECT_ROOT / "flows")}
        spawn(
            [_bin("dask"), "scheduler", "--host", "127.0.0.1", "--port", str(dask_port), "--no-dashboard"],
            root / "dask-scheduler",
            {**base_env, **dask_path},
            root / "dask-scheduler.log",
        )
        for host in ("a", "b"):
            home = root / f"host-{host}"
            # A Dask worker prepares chunks: it needs the same keys (HMAC, AES-GCM) and reports its
            # task runs to the Prefect API, like the Prefect worker of its host.
            dask_env = {
                **base_env,
                **dask_path,
                **shared,
                "GRIDFLOW_STATE_DIR": str(home / "dask-state"),
                "PREFECT_HOME": str(home / "dask-prefect"),
                "PREFECT_API_URL": settings.prefect_api_url,
                "PREFECT_API_AUTH_STRING": shared["GRIDFLOW_PREFECT_AUTH_STRING"],
            }
            spawn(
                [_bin("dask"), "worker", dask_address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                 "--name", f"dask-{host}", "--local-directory", str(home / "dask")],
                home,
                dask_env,
                root / f"dask-worker-{host}.log",
            )  # fmt: skip
        from distributed import Client

        with Client(dask_address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        for host in ("a", "b"):
            home = root / f"host-{host}"
            host_env = {
                **base_env,
                **shared,
                "GRIDFLOW_STATE_DIR": str(home / "state"),  # its own: dev keys there would differ per host
                "GRIDFLOW_DASK_ADDRESS": dask_address,
                "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_API_URL": settings.prefect_api_url,
                "PREFECT_API_AUTH_STRING": shared["GRIDFLOW_PREFECT_AUTH_STRING"],
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "GRIDFLOW_PROJECT_DIR": str(PROJECT_ROOT),
            }
            log = root / f"worker-{host}.log"
            logs.append(log)
            workers.append(
                spawn(
                    [_bin("prefect"), "worker", "start", "--pool", "gridflow", "--type", "process",
                     "--name", f"host-{host}"],
                    home,
                    host_env,
                    log,
                )
            )  # fmt: skip
        yield Hosts(settings, env, dask_address, workers, logs)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        services.stop(settings, "prefect")
        stack.close()


def _client(h: Hosts) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(
        {PREFECT_API_URL: h.settings.prefect_api_url, PREFECT_API_AUTH_STRING: h.settings.prefect_auth()}
    ), get_client


def test_three_cities_on_two_hosts_sync_once_each_and_equal_a_single_machine(hosts: Hosts) -> None:
    """Rule: with workers on two hosts polling the `gridflow` pool and chunk preparation on a
    `dask scheduler`/`dask worker` cluster, each city is synced by one run at a time (advisory
    lock: runs of a city never overlap, the records are loaded once) and what is stored equals a
    single-machine run of the same data."""
    settings_cm, get_client = _client(hosts)
    with settings_cm, get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly-sync/nightly")
        one = client.read_deployment_by_name("sync-city/one-city")
        runs = [client.create_flow_run_from_deployment(nightly.id, parameters={"sources": list(CITIES)})]
        runs += [
            client.create_flow_run_from_deployment(one.id, parameters={"source_name": c}) for c in CITIES
        ]
        deadline = time.monotonic() + 480
        states: dict[Any, str] = {}
        while time.monotonic() < deadline:
            states = {r.id: client.read_flow_run(r.id).state_type.value for r in runs}
            if set(states.values()) <= FINAL:
                break
            assert all(w.poll() is None for w in hosts.workers), "a worker process exited"
            time.sleep(3)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in hosts.logs)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs}"

    from distributed import Client

    with Client(hosts.dask_address, timeout=60) as dask:
        executed = dask.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and sum(executed.values()) > 0, executed  # chunks were prepared on Dask

    solo = subprocess.run(
        [_bin("gridflow"), "sync", SOLO, "--local"],
        env={**hosts.env, "GRIDFLOW_STATE_DIR": str(hosts.settings.state_dir)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert solo.returncode == 0, solo.stdout + solo.stderr
    (solo_loaded,) = query("SELECT sum(loaded) FROM sync_run WHERE source = %s", SOLO)[0]
    assert solo_loaded and solo_loaded > 0
    expected = fingerprint(SOLO)
    for city in CITIES:
        rows = query(
            "SELECT status, started_at, finished_at, loaded FROM sync_run WHERE source = %s ORDER BY started_at",
            city,
        )
        assert rows and {r[0] for r in rows} == {"completed"}, (city, rows)
        for earlier, later in itertools.pairwise(rows):
            assert earlier[2] <= later[1], f"{city}: two runs overlapped"
        assert sum(r[3] for r in rows) == solo_loaded, (city, rows)  # every record loaded exactly once
        assert fingerprint(city) == expected, city
