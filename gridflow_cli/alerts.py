"""CLI commands: ``gridflow alerts install|list|remove`` and ``gridflow quarantine list|reprocess``."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from gridflow_cli.common import connect_or_fail
from gridflow_cli.common import fail as _fail

alerts_app = typer.Typer(no_args_is_help=True, help="Prefect automations that alert on sync trouble.")
quarantine_app = typer.Typer(
    no_args_is_help=True,
    help="Quarantined records (not loaded) and field problems (loaded, one field empty): counts and reprocessing.",
)


def _prefect_env() -> None:
    """This project's Prefect server unless PREFECT_API_URL already names one."""
    from grid.settings import get_settings
    from gridflow_cli.services import prefect_env

    if os.environ.get("PREFECT_API_URL"):
        return
    os.environ.update(prefect_env(get_settings()))


@alerts_app.command("install")
def alerts_install(
    webhook: Annotated[
        str, typer.Option(help="URL the alerts are posted to (default: $GRIDFLOW_ALERT_WEBHOOK)")
    ] = "",
    ui_url: Annotated[str, typer.Option(help="Prefect UI base URL for links in the payloads")] = "",
) -> None:
    """Create or update the webhook block and the automations of config/alerts.toml (idempotent)."""
    from flows import alerts
    from grid.monitoring import alert_rules
    from grid.settings import get_settings

    configured = get_settings().alert_webhook
    url = webhook or ("" if configured is None else configured.get_secret_value())
    if not url:
        _fail(f"give --webhook URL or set {alert_rules.WEBHOOK_ENV}")
    try:
        config = alert_rules.load_alerts()
        alert_rules.check_webhook_url(url)
    except alert_rules.AlertsConfigError as exc:
        _fail(str(exc))
    _prefect_env()
    try:
        done = alerts.install(config, webhook_url=url, ui_url=ui_url or get_settings().prefect_ui)
    except alert_rules.AlertsConfigError as exc:
        _fail(str(exc))
    except Exception as exc:  # the Prefect API refused or is down: one sentence, no traceback wall
        _fail(f"the Prefect API at {os.environ.get('PREFECT_API_URL')} failed: {type(exc).__name__}: {exc}")
    for name, what in sorted(done.items()):
        typer.echo(f"{name}: {what}")


@alerts_app.command("list")
def alerts_list(as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """The gridflow automations installed on the Prefect server."""
    from flows import alerts

    _prefect_env()
    rows = alerts.installed()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no gridflow automations installed (run `gridflow alerts install --webhook URL`)")
    for r in rows:
        within = f", within {r['within_s']:g} s" if r.get("within_s") else ""
        typer.echo(
            f"{r['name']}: {'enabled' if r['enabled'] else 'disabled'}, {r['posture'].lower()} on "
            f"{', '.join(r['expect'])}{within}"
        )


@alerts_app.command("remove")
def alerts_remove() -> None:
    """Delete every gridflow automation from the Prefect server."""
    from flows import alerts

    _prefect_env()
    for name in alerts.remove():
        typer.echo(f"{name}: deleted")


@quarantine_app.command("list")
def quarantine_list(
    source: Annotated[str, typer.Option(help="only this source")] = "",
    reason: Annotated[str, typer.Option(help="only this reason code")] = "",
    ids: Annotated[bool, typer.Option("--ids", help="print the open row ids (for reprocess)")] = False,
) -> None:
    """Open quarantined records (record problems: not loaded) by source and reason, then open field
    problems (records loaded with that field empty) by source, reason and field; counts, with
    --ids the row ids. No values."""
    from grid.store.db import transaction

    conn = connect_or_fail()
    try:
        with transaction(conn) as cur:
            cur.execute(
                """
                SELECT source, entity, reason_code, count(*), array_agg(id ORDER BY id) FROM quarantine
                WHERE resolved_at IS NULL AND (%s = '' OR source = %s) AND (%s = '' OR reason_code = %s)
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                """,
                (source, source, reason, reason),
            )
            rows = cur.fetchall()
            cur.execute(
                """
                SELECT source, entity, reason_code, field, count(*), array_agg(id ORDER BY id) FROM field_problem
                WHERE settled_at IS NULL AND (%s = '' OR source = %s) AND (%s = '' OR reason_code = %s)
                GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
                """,
                (source, source, reason, reason),
            )
            problems = cur.fetchall()
    finally:
        conn.close()
    typer.echo("record problems (quarantined whole, not loaded):")
    if not rows:
        typer.echo("  no open quarantined records")
    for src, entity, code, n, row_ids in rows:
        typer.echo(f"  {src} {entity} {code}: {n}" + (f"  ids: {' '.join(map(str, row_ids))}" if ids else ""))
    typer.echo("field problems (record loaded, field left empty; reprocess with --field-problem):")
    if not problems:
        typer.echo("  no open field problems")
    for src, entity, code, fld, n, row_ids in problems:
        typer.echo(
            f"  {src} {entity} {code} [{fld}]: {n}" + (f"  ids: {' '.join(map(str, row_ids))}" if ids else "")
        )


@quarantine_app.command("reprocess")
def quarantine_reprocess(
    quarantine_ids: Annotated[
        list[int] | None, typer.Argument(help="quarantine row ids (see `quarantine list --ids`)")
    ] = None,
    field_problem: Annotated[
        list[int] | None,
        typer.Option("--field-problem", help="a field problem id (repeatable; see `quarantine list --ids`)"),
    ] = None,
    local: Annotated[
        bool, typer.Option(help="run in this process instead of through the Prefect API")
    ] = False,
    wait: Annotated[bool, typer.Option(help="wait for the flow run and print its outcome")] = True,
) -> None:
    """Re-take chosen quarantined records, or records with chosen field problems, after the city
    fixed its data (the records are re-fetched by id and written through the sync's path)."""
    from grid.sync import reprocess as rp

    try:
        ids = rp.check_ids(quarantine_ids or [], allow_empty=True)
        fp_ids = rp.check_ids(field_problem or [], allow_empty=True)
        if not ids and not fp_ids:
            raise rp.ReprocessError("choose at least one quarantined record or field problem")
    except rp.ReprocessError as exc:
        _fail(str(exc))
    params = {"quarantine_ids": ids, "field_problem_ids": fp_ids}
    _prefect_env()
    if local:
        from flows.quarantine_reprocess import quarantine_reprocess as flow_fn

        try:
            counts = flow_fn(quarantine_ids=ids, field_problem_ids=fp_ids)
        except Exception as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        typer.echo(", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to do")
        return
    from prefect.deployments import run_deployment

    from grid.settings import get_settings

    try:
        run = run_deployment(rp.REPROCESS_DEPLOYMENT, parameters=params, timeout=None if wait else 0)
    except Exception as exc:
        _fail(
            f"could not start {rp.REPROCESS_DEPLOYMENT} ({type(exc).__name__}): run `gridflow deploy` first?"
        )
    state = run.state.name if run.state else "unknown"  # type: ignore[union-attr]
    typer.echo(f"flow run {run.id}: {state}  {get_settings().flow_run_url(run.id)}")  # type: ignore[union-attr]
    if wait and run.state is not None and not run.state.is_completed():  # type: ignore[union-attr]
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``gridflow`` app."""
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(quarantine_app, name="quarantine")
