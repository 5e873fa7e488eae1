"""`gridflow simulate`, CI-sized: a few simulated days through the REAL Prefect server and worker
(as `scripts/run` starts them), officers acting over HTTP on the real web app, the sweep at
simulated hours, the day's snapshot, and every invariant held every day; then the broken variant —
one record silently dropped in the write path — fails that day's invariants.

One server, worker, sandbox and web app for the module (~2 minutes on two cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.config import SourceConfig, load_all_sources
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import SandboxDataset
from connectors.sandbox.province import province_plans
from connectors.sandbox.sim import ProvinceSandbox
from grid.clock import local_day
from grid.settings import Settings, get_settings
from grid.store.db import connect, transaction
from grid.workdays import SHANGHAI
from gridflow_cli import services
from gridflow_cli.simulate import SWEEP_HOURS, Plan, day_dates, sandbox_start, simulate
from tests.conftest import SAMPLE_CITY, SANDBOX_AS_OF, fresh_database, load_world, write_sources
from tests.flows.helpers import env as set_env
from tests.flows.helpers import prefect_database, query, service_passwords
from tests.flows.test_prefect_server import _free_port

pytestmark = [pytest.mark.db, pytest.mark.slow]

DAYS = 3


@dataclass
class Province:
    settings: Settings
    sources: list[SourceConfig]
    web_url: str
    prefect: dict[str, str]
    broken_labels: dict[str, str]


def _dataset(world: Any, seed: int, cases: int) -> SandboxDataset:
    return SandboxDataset(
        [(c.code, c.geometry) for c in world.cells],
        city_code=SAMPLE_CITY,
        n_workers=300,
        n_enterprises=40,
        n_cases=cases,
        seed=seed,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in world.divisions},
    )


@pytest.fixture(scope="module")
def province(
    loaded_world: Any, sample_world: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Province]:
    # its own database: the simulation changes the sample city's grid and opens its cases, which the
    # later modules of the session must not read from the shared one
    with fresh_database("gridflow_sim") as url:
        load_world(url, loaded_world)
        yield from _province(url, loaded_world, sample_world, tmp_path_factory)


def _province(
    database_url: str, loaded_world: Any, sample_world: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Province]:
    from grid.cases.owners import ensure_units
    from tests.web.conftest import LiveServer

    conn = connect()
    try:
        ensure_units(conn, scope=SAMPLE_CITY)
        ensure_units(conn, scope="420000000000")
    finally:
        conn.close()
    state = tmp_path_factory.mktemp("sim-state")
    folder = tmp_path_factory.mktemp("sim-sources")
    stack = ExitStack()
    # the city on its timeline (docs/SANDBOX-TIMELINE.md), day 0 the day before the first simulated day
    port = _free_port()
    write_sources(folder, with_cases=True, with_roster=True, sim_city=f"http://127.0.0.1:{port}")
    today = local_day(datetime.now(UTC), SHANGHAI)
    stack.enter_context(
        ProvinceSandbox(
            province_plans(folder, ["sim_city"]),
            seed=41,
            volume=0.02,
            start_date=sandbox_start(DAYS, today=today),
            ports={"sim_city": port},
            worlds={"sim_city": sample_world},
        )
    )
    broken_data = _dataset(loaded_world, 43, 0)
    broken = stack.enter_context(SandboxServer(create_app(broken_data)))
    write_sources(folder, sim_broken=broken.base_url)
    # a backlog from before the simulated days (cases opened two weeks earlier, long overdue), so
    # three days are enough for the sweep to have due steps at its simulated hours
    backlog = stack.enter_context(SandboxServer(create_app(_dataset(loaded_world, 47, 40))))
    write_sources(folder, with_cases=True, sim_backlog=backlog.base_url)
    values = {
        **service_passwords(),
        "GRIDFLOW_STATE_DIR": str(state),
        "GRIDFLOW_SOURCES_DIR": str(folder),
        "GRIDFLOW_PREFECT_PORT": str(_free_port()),
        "GRIDFLOW_PREFECT_DATABASE_URL": stack.enter_context(prefect_database(database_url, "prefect_s")),
    }
    stack.enter_context(set_env(**values))
    settings = get_settings()
    prefect = services.prefect_env(settings)
    try:
        services.start(settings, "prefect")
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("gridflow")), "deploy"],
            env={**os.environ, **prefect},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        services.start(settings, "worker")
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        from flows.nightly_sync import sync_source

        before = datetime.combine(
            sandbox_start(DAYS, today=today) - timedelta(days=14), time(2), tzinfo=SHANGHAI
        )
        with temporary_settings(
            {
                PREFECT_API_URL: prefect["PREFECT_API_URL"],
                PREFECT_API_AUTH_STRING: prefect["PREFECT_API_AUTH_STRING"],
            }
        ):
            assert sync_source("sim_backlog", as_of=before.isoformat())["status"] == "completed"
        from grid.web.app import create_app as web_app

        web_url = stack.enter_context(LiveServer(web_app()))
        yield Province(
            settings, load_all_sources(folder), web_url, prefect, dict(broken_data.labels("workers"))
        )
    finally:
        for svc in ("worker", "prefect"):
            services.stop(settings, svc)
        stack.close()


def _run(
    p: Province, names: list[str], days: int, outage: tuple[int, ...] = (), boundary: int | None = None
) -> Any:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(
        {
            PREFECT_API_URL: p.prefect["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: p.prefect["PREFECT_API_AUTH_STRING"],
        }
    ):
        lines: list[str] = []
        result = simulate(
            Plan(
                days=days,
                sources=[c for c in p.sources if c.name in names],
                seed=5,
                officers_url=p.web_url,
                outage_source=names[0] if outage else None,
                outage_days=outage,
                boundary=(boundary, names[0]) if boundary else None,
                work_dir=p.settings.state_dir,
                log_files=tuple(services.logfile(p.settings, n) for n in ("prefect", "worker")),
            ),
            lines.append,
        )
        return result, lines


def test_a_ci_sized_simulation_holds_every_invariant_every_day(province: Province) -> None:
    """Three days of one city on its sandbox timeline: each night's sync is a run of the nightly-sync
    deployment taken by the worker with that night's ``as_of``; the city's system is down on night
    2 (that sync fails) and night 3 catches up; officers act over HTTP; steps fire at simulated
    hours; on day 2 the city redraws a few cells (``gridflow cells import --commit``); every
    invariant holds each day and one progress line is printed per day."""
    started = datetime.now(UTC)
    result, lines = _run(province, ["sim_city"], DAYS, outage=(2,), boundary=2)
    assert len(result) == DAYS
    for day in result:
        assert [(c.rule, c.examples) for c in day.checks if not c.ok] == [], day.line()
    assert [bool(d.failed_sources) for d in result] == [False, True, False], [
        d.failed_sources for d in result
    ]
    # the stale-source rule flags the city on the outage day (its last good night 39 h back) only
    assert [sorted(d.stale) for d in result] == [[], ["sim_city"], []]
    # the catch-up night loaded the outage day's records too (checked against the truth above)
    assert result[2].records > 0
    assert (result[1].boundary or "").startswith("merged "), result[1].boundary
    assert "committed cell version" in (result[1].boundary or ""), result[1].boundary
    assert f"valid from {result[1].date.isoformat()}" in (result[1].boundary or ""), result[1].boundary
    new_cell = result[1].boundary.split("; split ")[1].split(" into ")[1].split(",")[1].split()[0]
    assert query("SELECT count(*) FROM grid_cell WHERE code = %s AND valid_to IS NULL", new_cell)[0][0] == 1
    assert sum(1 for line in lines if line.startswith("day ") and "invariants" in line) == DAYS
    assert result[0].records > 0 and result[0].opened > 0
    # the syncs ran through the deployment, each with its night's as_of, never in the future
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(
            {
                PREFECT_API_URL: province.prefect["PREFECT_API_URL"],
                PREFECT_API_AUTH_STRING: province.prefect["PREFECT_API_AUTH_STRING"],
            }
        ),
        get_client(sync_client=True) as client,
    ):
        dep = client.read_deployment_by_name("nightly-sync/nightly")
        runs = [
            r
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)), limit=200
            )
            if r.deployment_id == dep.id and r.state is not None and not r.state.is_scheduled()
        ]
    assert all("as_of" in r.parameters for r in runs), [r.parameters for r in runs]
    stamps = sorted(datetime.fromisoformat(r.parameters["as_of"]) for r in runs)
    today = datetime.now(UTC).astimezone(SHANGHAI).date()
    assert [s.astimezone(SHANGHAI).date() for s in stamps] == day_dates(DAYS, today=today)
    assert [r.state.is_completed() for r in sorted(runs, key=lambda r: r.parameters["as_of"])] == [
        True,
        False,
        True,
    ]
    assert max(stamps) <= datetime.now(UTC)
    # officers acted through the API as their unit accounts; the sweep fired at simulated hours
    acted = dict(query("SELECT action, count(*) FROM case_event WHERE actor LIKE 'sim-%%' GROUP BY 1"))
    assert acted.get("accept", 0) > 0 and acted.get("resolve", 0) > 0, acted
    # the roster's grid officers acted over HTTP as their own accounts (made like `gridflow users
    # add --officer`), only on cases they owned: the event's owner before is a cell they serve
    by_officers = dict(query(
        "SELECT e.action, count(*) FROM case_event e JOIN app_user u ON u.login = e.actor"
        " WHERE e.actor LIKE 'sim-%%' AND u.officer_id IS NOT NULL GROUP BY 1"))  # fmt: skip
    assert by_officers.get("accept", 0) > 0 and by_officers.get("resolve", 0) > 0, by_officers
    not_theirs = query(
        "SELECT e.case_id, e.seq FROM case_event e JOIN app_user u ON u.login = e.actor"
        " WHERE e.actor LIKE 'sim-%%' AND u.officer_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
        " officer_cell oc WHERE oc.officer_id = u.officer_id AND oc.cell_code = e.owner_before)")  # fmt: skip
    assert not_theirs == [], not_theirs
    swept = query("SELECT DISTINCT at FROM case_event WHERE actor = 'system:sweep' AND at >= %s",
                  datetime.combine(day_dates(DAYS, today=today)[0], SWEEP_HOURS[0], tzinfo=SHANGHAI))  # fmt: skip
    assert swept, "no step fired at a simulated sweep hour"
    assert all(a.astimezone(SHANGHAI).time() in SWEEP_HOURS or a >= datetime.now(UTC) - timedelta(hours=1)
               for (a,) in swept)  # fmt: skip


def test_a_record_dropped_in_the_write_path_fails_the_day(province: Province) -> None:
    """The broken variant: a trigger silently discards one worker's insert; the sync through the
    deployment completes, and that day's records invariant names the lost record."""
    conn = connect()
    try:
        labels = province.broken_labels
        victim = sorted(rid for rid, label in labels.items() if label == "ok")[0]
        with transaction(conn) as cur:
            cur.execute(
                "CREATE FUNCTION test_sim_drop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.source = 'sim_broken' AND NEW.source_record_id = %s THEN RETURN NULL; END IF;"
                " RETURN NEW; END $$",
                (victim,),
            )
            cur.execute(
                "CREATE TRIGGER test_sim_drop BEFORE INSERT ON worker FOR EACH ROW EXECUTE FUNCTION test_sim_drop()"
            )
        try:
            result, lines = _run(province, ["sim_broken"], 1)
        finally:
            with transaction(conn) as cur:
                cur.execute("DROP TRIGGER IF EXISTS test_sim_drop ON worker")
                cur.execute("DROP FUNCTION IF EXISTS test_sim_drop()")
    finally:
        conn.close()
    (day,) = result
    assert not day.failed_sources
    broken = [c for c in day.checks if not c.ok]
    assert [c.rule for c in broken] == [day.checks[0].rule]
    assert broken[0].breaches >= 1
    assert any(victim in e and "lost" in e for e in broken[0].examples)
    assert any("BROKEN" in line for line in lines)
