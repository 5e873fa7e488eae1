"""The ``gridflow`` command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from typing import Annotated

import typer

from grid.settings import PROJECT_ROOT, get_settings
from gridflow_cli.common import connect_or_fail, fail

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="gridflow: unions on the city governance grid"
)
db_app = typer.Typer(no_args_is_help=True, help="The PostgreSQL/PostGIS database.")
world_app = typer.Typer(no_args_is_help=True, help="Divisions and grid cells.")
services_app = typer.Typer(no_args_is_help=True, help="Background services (Prefect, sandbox, web, worker).")
app.add_typer(db_app, name="db")
app.add_typer(world_app, name="world")
app.add_typer(services_app, name="services")

ALL_SERVICES = ["prefect", "sandbox", "web", "worker"]


# -- db ---------------------------------------------------------------------------------------


@db_app.command("up")
def db_up() -> None:
    """Start the project-private cluster (unless GRIDFLOW_DATABASE_URL is set) and migrate."""
    from grid.store import migrate
    from grid.store.cluster import Cluster, ClusterError
    from grid.store.db import DatabaseUnavailable, connect, redact_dsn

    s = get_settings()
    try:
        if s.private_cluster:
            cluster = Cluster(s)
            cluster.start()
            cluster.ensure_database("gridflow")
            cluster.ensure_prefect_database()
        connect().close()
        migrate.upgrade(s.dsn)
    except (ClusterError, DatabaseUnavailable, migrate.WrongEncoding) as exc:
        fail(str(exc))
    typer.echo(f"database ready: {redact_dsn(s.dsn)}")


@db_app.command("down")
def db_down() -> None:
    """Stop the project-private cluster."""
    from grid.store.cluster import Cluster, ClusterError

    s = get_settings()
    if not s.private_cluster:
        typer.echo("GRIDFLOW_DATABASE_URL is set: the server is not ours to stop")
        return
    try:
        Cluster(s).stop()
    except ClusterError as exc:
        fail(str(exc))
    typer.echo("database stopped")


@db_app.command("url")
def db_url(
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Print the owner's password too (for psql).")
    ] = False,
) -> None:
    """Print the database URL gridflow uses (as the owner; password hidden unless asked)."""
    from grid.store.db import redact_dsn

    dsn = get_settings().dsn
    typer.echo(dsn if show_password else redact_dsn(dsn))


# -- world ------------------------------------------------------------------------------------


@world_app.command("load")
def world_load(
    city: Annotated[str, typer.Option(help="12-digit city code of the sample world")] = "",
    cells: Annotated[int, typer.Option(help="about how many generated grid cells")] = 0,
    valid_from: Annotated[
        str,
        typer.Option(help="first day of the loaded versions, YYYY-MM-DD (default: today; not after today)"),
    ] = "",
) -> None:
    """Load real divisions (whole country) and the sample city's generated towns' polygons,
    communities and grid cells. Idempotent."""
    from geodata.divisions import load_national_divisions
    from geodata.world import build_sample_world
    from grid.store import world as store_world
    from grid.store.db import connect, transaction
    from grid.workdays import today_local

    s = get_settings()
    city = city or s.sample_city
    t0 = time.monotonic()
    sample = build_sample_world(city, cells_target=cells or s.sample_cells)
    national = load_national_divisions()
    sample_codes = {d.code for d in sample.divisions}
    divisions = [d for d in national if d.code not in sample_codes] + list(sample.divisions)
    today = today_local()
    if valid_from:
        try:
            start = date.fromisoformat(valid_from)
        except ValueError:
            fail(f"--valid-from must be a date YYYY-MM-DD, got {valid_from!r}")
        if start > today:
            fail(f"--valid-from {start} is after today ({today})")
        today = start
    conn = connect_or_fail()
    try:
        with transaction(conn) as cur:
            added, changed, same = store_world.load_divisions(cur, divisions, valid_from=today)
            n_cells, version = store_world.load_cells(
                cur,
                sample.cells,
                scope_code=city,
                label=f"sample world {city}",
                valid_from=today,
                generated=True,
                note=sample.note,
            )
    except store_world.WorldConflict as exc:
        fail(str(exc))
    finally:
        conn.close()
    from geodata.codes import Level, ancestor
    from grid.cases.owners import ensure_units

    conn = connect()
    try:  # a union unit for every division of the city and for its province: cases route to them
        units = ensure_units(conn, scope=city) + ensure_units(conn, scope=ancestor(city, Level.PROVINCE))
    finally:
        conn.close()
    typer.echo(
        f"divisions: {added} added, {changed} changed, {same} unchanged; "
        f"cells: {n_cells} added{f' as version {version}' if version else ' (already loaded)'} "
        f"[{time.monotonic() - t0:.1f} s]; union units added: {units}"
    )
    typer.echo(sample.note)


# -- sandbox and services --------------------------------------------------------------------


@app.command()
def sandbox(
    port: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option()] = 0,
    enterprises: Annotated[int, typer.Option()] = 0,
) -> None:
    """Serve the simulated municipal grid system on loopback (foreground)."""
    s = get_settings()
    argv = [
        sys.executable,
        "-m",
        "connectors.sandbox",
        "--port",
        str(port or s.sandbox_port),
        "--workers",
        str(workers or s.sample_workers),
        "--enterprises",
        str(enterprises or s.sample_enterprises),
    ]
    raise typer.Exit(subprocess.call(argv, cwd=PROJECT_ROOT))


@services_app.command("up")
def services_up(names: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Start services in the background (default: all)."""
    from gridflow_cli import services

    s = get_settings()
    for name in names or ALL_SERVICES:
        if name == "worker":
            _ensure_deployed()
        try:
            typer.echo(f"{name}: {services.start(s, name)}")
        except services.ServiceError as exc:
            fail(str(exc))


@services_app.command("down")
def services_down(names: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Stop background services (default: all)."""
    from gridflow_cli import services

    s = get_settings()
    for name in reversed(names or ALL_SERVICES):
        typer.echo(f"{name}: {services.stop(s, name)}")


def _prefect(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    from gridflow_cli.services import prefect_env

    env = {**os.environ, **prefect_env(get_settings())}
    proc = subprocess.run(
        [
            str(PROJECT_ROOT / ".venv" / "bin" / "prefect")
            if (PROJECT_ROOT / ".venv").exists()
            else "prefect",
            *args,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        fail(f"prefect {' '.join(args)} failed: {tail}")
    return proc


JOB_TEMPLATE = PROJECT_ROOT / "config" / "prefect" / "process-job-template.json"


def _ensure_deployed() -> None:
    """The work pool with gridflow's locked-down job template (no `command` or `env` override
    beyond its allow-list), then every deployment of prefect.yaml. Idempotent."""
    template = str(JOB_TEMPLATE)
    if _prefect(["work-pool", "inspect", "gridflow"], check=False).returncode != 0:
        _prefect(["work-pool", "create", "gridflow", "--type", "process", "--base-job-template", template])
    else:
        _prefect(["work-pool", "update", "gridflow", "--base-job-template", template])
    _prefect(["--no-prompt", "deploy", "--all"])


@app.command()
def deploy() -> None:
    """Create the work pool and the deployments of prefect.yaml on the Prefect server."""
    _ensure_deployed()
    typer.echo("deployments applied from prefect.yaml (work pool 'gridflow')")


# -- sync -------------------------------------------------------------------------------------


@app.command()
def sync(
    sources: Annotated[list[str] | None, typer.Argument(help="source names (default: all enabled)")] = None,
    full: Annotated[bool, typer.Option(help="full resync instead of incremental")] = False,
    local: Annotated[
        bool, typer.Option(help="run in this process instead of through the Prefect API")
    ] = False,
    timeout: Annotated[int, typer.Option(help="seconds to wait for the run")] = 3600,
) -> None:
    """Run the nightly sync now, through the Prefect API (the deployment), and print its counts."""
    from gridflow_cli.report import print_run_report

    params = {"sources": sources or None, "full": full}
    if local:
        from flows.nightly_sync import nightly_sync

        state = nightly_sync(**params, return_state=True)
        flow_run_id = str(state.state_details.flow_run_id)
        ok = state.is_completed()
        message = state.message or ""
    else:
        from gridflow_cli.services import prefect_env

        os.environ.update(prefect_env(get_settings()))
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        try:
            fr = run_deployment("nightly-sync/nightly", parameters=params, timeout=timeout, poll_interval=2)
        except Exception as exc:
            fail(f"could not run the deployment through the Prefect API: {str(exc).splitlines()[0]}")
        assert isinstance(fr, FlowRun)
        flow_run_id = str(fr.id)
        ok = fr.state is not None and fr.state.is_completed()
        message = (fr.state.message if fr.state else None) or "no state"
    print_run_report(flow_run_id)
    if not ok:
        fail(f"the sync run did not complete: {message}")


@app.command()
def run(
    keep_running: Annotated[bool, typer.Option(help="leave services up after the sync")] = True,
) -> None:
    """The main job: database, world, services, one nightly sync through Prefect, counts."""
    typer.echo("== database")
    db_up()
    typer.echo("== world")
    for city in _province_cities():
        world_load(city=city)
    typer.echo("== services")
    services_up(["prefect", "sandbox", "web"])
    typer.echo("== deployments")
    _ensure_deployed()
    services_up(["worker"])
    _install_alerts_if_configured()
    typer.echo("== nightly sync (through the Prefect API)")
    started = datetime.now(UTC)
    sync(sources=None, full=False, local=False, timeout=3600)
    typer.echo("== coverage report (triggered by the sync's end)")
    _await_coverage(started)
    s = get_settings()
    typer.echo("")
    typer.echo(
        f"Prefect UI:  {s.prefect_ui}/runs  (user gridflow, password in "
        f"{s.state_dir / 'keys' / 'prefect-api.auth'}; or GRIDFLOW_PREFECT_AUTH_STRING)"
    )
    typer.echo("Schedules:   gridflow status  (next runs of the nightly sync, sweep and coverage fallback)")
    typer.echo(
        f"gridflow web: http://127.0.0.1:{s.web_port}/  (dashboards at /dashboard, sync health at /health;"
    )
    typer.echo(
        "  create an account first: GRIDFLOW_NEW_USER_PASSWORD=… gridflow users add LOGIN --role province"
        " --scope 420000000000)"
    )
    if not keep_running:
        services_down(None)


def _province_cities() -> list[str]:
    """City codes of the sandbox province (every sandboxed source file: an HTTP city on loopback or
    a file drop), whose worlds the main job loads; the sample city when there is none."""
    from connectors.config import SourceConfigError
    from connectors.sandbox.province import province_plans

    s = get_settings()
    try:
        codes = sorted({p.city_code for p in province_plans(s.sources_dir)})
    except SourceConfigError as exc:
        fail(str(exc))
    return codes or [s.sample_city]


def _install_alerts_if_configured() -> None:
    """With GRIDFLOW_ALERT_WEBHOOK set, create/update the alert automations (idempotent)."""
    from grid.monitoring.alert_rules import WEBHOOK_ENV
    from gridflow_cli.alerts import alerts_install
    from gridflow_cli.services import prefect_env

    if get_settings().alert_webhook is None:
        typer.echo(f"alerts: {WEBHOOK_ENV} is not set; `gridflow alerts install --webhook URL` adds them")
        return
    os.environ.update(prefect_env(get_settings()))  # this project's server, as the sync below
    alerts_install(webhook="", ui_url="")


def _await_coverage(since: datetime, wait_s: float = 120.0) -> None:
    """Wait for the coverage snapshot the after-nightly trigger computes; if none arrives in
    time (no worker picked it up), run the deployment through the Prefect API. Then print the
    province summary."""
    from grid.store.db import connect, transaction

    def computed_since() -> bool:
        conn = connect()
        try:
            with transaction(conn) as cur:
                cur.execute("SELECT 1 FROM coverage_run WHERE computed_at >= %s LIMIT 1", (since,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    deadline = time.monotonic() + wait_s
    done = computed_since()
    while not done and time.monotonic() < deadline:
        time.sleep(2)
        done = computed_since()
    if not done:
        from prefect.deployments import run_deployment

        typer.echo("no triggered coverage run yet: running coverage-report/after-nightly now")
        run_deployment("coverage-report/after-nightly", timeout=600, poll_interval=2)
    from gridflow_cli.monitoring import show

    show(code="", date="")


@app.command()
def status() -> None:
    """Services, the Prefect deployments' schedules and next runs, server failures, last sync runs."""
    from gridflow_cli import prefect_status, services
    from gridflow_cli.report import print_recent_runs

    s = get_settings()
    typer.echo(f"{'service':8s}  state")
    for name in ALL_SERVICES:
        pid = services.running_pid(s, name)
        typer.echo(f"{name:8s}  {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    typer.echo("")
    os.environ.update(services.prefect_env(s))
    try:
        lines = prefect_status.deployment_lines()
    except Exception as exc:  # the API is down or refuses: say so, then go on with the database
        typer.echo(
            f"Prefect API at {s.prefect_api_url}: unreachable ({type(exc).__name__}); no schedules shown"
        )
    else:
        for line in prefect_status.format_deployments(lines):
            typer.echo(line)
        idle = [d.name for d in lines if d.active and d.next_run is None]
        if idle:
            typer.secho(f"WARNING: active schedules without a scheduled run: {', '.join(idle)}", fg="yellow")
    problems = prefect_status.server_problems(services.current_log(s, "prefect"))
    log = services.logfile(s, "prefect")
    if problems:
        typer.secho(f"PROBLEM: the Prefect server logged errors since it started (see {log}):", fg="red")
        for p in problems:
            typer.echo(f"  {p.count:>4}×  {p.where}: {p.error}")
    else:
        typer.echo("Prefect server services: no errors logged since the server started")
    typer.echo("")
    print_recent_runs()


# -- grid cells, locate, map (gridflow_cli/geo.py) ---------------------------------------------
from gridflow_cli.geo import cells_app, locate, map_points  # noqa: E402

app.add_typer(cells_app, name="cells")
app.command("locate")(locate)
app.command("map")(map_points)

# -- sources list|check, validate (gridflow_cli/connectors_cli.py) -----------------------------
from gridflow_cli import connectors_cli  # noqa: E402

connectors_cli.register(app)

# -- cases and the escalation sweep (gridflow_cli/cases.py) -------------------------------------
from gridflow_cli.cases import app as cases_app  # noqa: E402
from gridflow_cli.cases import sweep_command  # noqa: E402

app.add_typer(cases_app, name="cases")
app.command("sweep")(sweep_command)

# -- working-day calendar (gridflow_cli/calendar_cli.py) ------------------------------------------
from gridflow_cli.calendar_cli import app as calendar_app  # noqa: E402

app.add_typer(calendar_app, name="calendar")

# -- web accounts (gridflow_cli/users.py) --------------------------------------------------------
from gridflow_cli.users import app as users_app  # noqa: E402

app.add_typer(users_app, name="users")

# -- the roster of grid officers (gridflow_cli/officers.py) --------------------------------------
from gridflow_cli.officers import app as officers_app  # noqa: E402

app.add_typer(officers_app, name="officers")

# -- coverage snapshots (gridflow_cli/monitoring.py) ---------------------------------------------
from gridflow_cli import monitoring  # noqa: E402

monitoring.register(app)

# -- alerts and quarantine reprocessing (gridflow_cli/alerts.py) --------------------------------
from gridflow_cli import alerts  # noqa: E402

alerts.register(app)

# -- the simulation (gridflow_cli/simulate.py) ---------------------------------------------------
from gridflow_cli import simulate  # noqa: E402

simulate.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

from gridflow_cli.reveals import app as reveals_app  # noqa: E402

app.add_typer(reveals_app, name="reveals")
