"""Printing sync results from the database (the numbers come from the tables, not the flow)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import typer

from grid.settings import get_settings
from grid.store.db import connect, fetch_one, transaction

SHANGHAI = ZoneInfo("Asia/Shanghai")


def print_run_report(flow_run_id: str) -> None:
    """Counts of the sync runs of one Prefect flow run (parent or child), and database totals."""
    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(
                """
                SELECT r.id, r.source, r.status, r.received, r.loaded, r.unchanged, r.quarantined, r.unmapped,
                       r.flow_run_id
                FROM sync_run r
                WHERE r.flow_run_id = %(id)s::uuid OR r.parent_flow_run_id = %(id)s::uuid
                ORDER BY r.id
                """,
                {"id": flow_run_id},
            )
            runs = cur.fetchall()
            cur.execute(
                "SELECT (SELECT count(*) FROM worker WHERE deleted_at IS NULL),"
                " (SELECT count(*) FROM enterprise WHERE deleted_at IS NULL),"
                " (SELECT count(*) FROM quarantine WHERE resolved_at IS NULL),"
                " (SELECT count(*) FROM case_intake),"
                " (SELECT count(*) FROM worker WHERE cell_code IS NULL AND deleted_at IS NULL)"
                "  + (SELECT count(*) FROM enterprise WHERE cell_code IS NULL AND deleted_at IS NULL),"
                " (SELECT count(*) FROM field_problem WHERE settled_at IS NULL)"
            )
            workers, enterprises, quarantined, cases, unmapped, problems = fetch_one(cur)
    finally:
        conn.close()
    ui = get_settings().flow_run_url(flow_run_id)
    typer.echo(f"flow run {flow_run_id}  ({ui})")
    typer.echo(
        f"{'run':>5} {'source':12} {'status':10} {'received':>9} {'loaded':>8} {'unchanged':>9} "
        f"{'quarantined':>11} {'unmapped':>8}"
    )
    for rid, source, st, rec, loaded, unch, quar, unm, _ in runs:
        typer.echo(f"{rid:>5} {source:12} {st:10} {rec:>9} {loaded:>8} {unch:>9} {quar:>11} {unm:>8}")
    typer.echo(
        f"database now: {workers} workers, {enterprises} enterprises, {cases} case reports taken in, "
        f"{quarantined} open quarantine rows (records not loaded), "
        f"{problems} open field problems (records loaded with a field empty), "
        f"{unmapped} records without a cell"
    )


def print_recent_runs(limit: int = 10) -> None:
    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(
                "SELECT id, source, status, started_at, received, loaded, quarantined, unmapped"
                " FROM sync_run ORDER BY id DESC LIMIT %s",
                (limit,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    typer.echo(
        f"{'run':>5} {'source':12} {'status':10} {'started (Asia/Shanghai)':23} {'received':>9} "
        f"{'loaded':>8} {'quarantined':>11} {'unmapped':>8}"
    )
    if not rows:
        typer.echo("  (no sync run yet)")
    for rid, source, st, started, rec, loaded, quar, unm in rows:
        when = started.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S") if started else "-"
        typer.echo(
            f"{rid:>5} {source:12} {st:10} {when:23} {rec or 0:>9} {loaded or 0:>8} {quar or 0:>11} {unm or 0:>8}"
        )
