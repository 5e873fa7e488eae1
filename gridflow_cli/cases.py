"""``gridflow cases ...`` and ``gridflow sweep``: cases for operators, from the command line.

Registered by ``gridflow_cli.main``::

    from gridflow_cli.cases import app as cases_app, sweep_command
    app.add_typer(cases_app, name="cases")
    app.command("sweep")(sweep_command)

Nothing here prints raw personal data: a worker appears only as the masked ID number of the
``worker`` row their keyed HMAC matches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from gridflow_cli.common import connect_or_fail as _connect
from gridflow_cli.common import fail as _fail

app = typer.Typer(no_args_is_help=True, help="Cases: open, show, list (disputes and hardship).")


def _when(text: str | None, what: str) -> datetime | None:
    """An ISO time; a time without an offset is read in the policy's time zone (Asia/Shanghai)."""
    if not text:
        return None
    from grid.cases.store import rules_from_settings

    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{what} must be an ISO time such as 2026-10-09T09:00:00+08:00, got {text!r}")
    if at.tzinfo is None:
        at = at.replace(tzinfo=rules_from_settings().policy.calendar.tz)
    return at


def _fmt(at: datetime | None) -> str:
    if at is None:
        return "-"
    from grid.cases.store import rules_from_settings

    return at.astimezone(rules_from_settings().policy.calendar.tz).strftime("%Y-%m-%d %H:%M")


@app.command("open")
def open_command(
    kind: Annotated[str, typer.Option(help="wage_arrears, labour_contract, dismissal, ..., hardship")],
    cell: Annotated[str, typer.Option(help="15-digit grid cell code")] = "",
    division: Annotated[str, typer.Option(help="12-digit division code (when there is no cell)")] = "",
    workers: Annotated[int, typer.Option(help="workers affected")] = 1,
    amount: Annotated[str, typer.Option(help="amount in yuan, e.g. 250000")] = "",
    severity: Annotated[str, typer.Option(help="normal, early_sign or collective_incident")] = "normal",
    grade: Annotated[str, typer.Option(help="hardship grade: deep, relative or accident")] = "",
    enterprise: Annotated[str, typer.Option(help="enterprise unified social credit code")] = "",
    channel: Annotated[str, typer.Option(help="officer, api or sync")] = "officer",
    actor: Annotated[str, typer.Option(help="who opens it (account name)")] = "cli",
    at: Annotated[str, typer.Option(help="ISO time of the report (default now)")] = "",
) -> None:
    """Open a case (or attach the report to an open case of the same party and kind)."""
    from grid.cases.intake import CaseReport, IntakeError, open_case, parse_amount
    from grid.cases.routing import RoutingError
    from grid.cases.store import rules_from_settings

    try:
        report = CaseReport(
            kind=kind,  # type: ignore[arg-type]
            channel=channel,  # type: ignore[arg-type]
            severity=severity,  # type: ignore[arg-type]
            workers_affected=workers,
            amount=parse_amount(amount or None),
            hardship_grade=grade or None,  # type: ignore[arg-type]
            cell_code=cell or None,
            division_code=division or None,
            enterprise_uscc=enterprise or None,
        )
    except IntakeError as exc:
        _fail(str(exc))
    conn = _connect()
    try:
        result = open_case(
            conn, report=report, rules=rules_from_settings(), actor=actor, at=_when(at, "--at")
        )
    except RoutingError as exc:
        _fail(f"cannot route the case: {exc}")
    finally:
        conn.close()
    if result.attached:
        typer.echo(f"attached to open case {result.case_id} (version {result.version}); no new case opened")
    else:
        typer.echo(
            f"case {result.case_id} opened at {result.level.name.lower()} level, owner {result.owner_code} "
            f"(rule {result.rule})"
        )


@app.command("show")
def show_command(
    case_id: Annotated[int, typer.Argument(help="case id")],
    scope: Annotated[str, typer.Option(help="only if within this division/cell code")] = "",
) -> None:
    """A case: facts, routing explanation, deadlines, timeline and pending steps (PII masked)."""
    from grid.cases.queries import events_of, get_case
    from grid.cases.store import CaseNotFound
    from grid.store.db import transaction

    conn = _connect()
    try:
        try:
            c = get_case(conn, case_id=case_id, scope=scope or None)
        except CaseNotFound as exc:
            _fail(str(exc))
        events = events_of(conn, case_id=case_id)
        with transaction(conn) as cur:
            cur.execute(
                "SELECT kind, due_at, owner_code FROM escalation_step WHERE case_id = %s AND done_at IS NULL "
                "ORDER BY due_at",
                (case_id,),
            )
            steps = cur.fetchall()
    finally:
        conn.close()
    typer.echo(
        f"case {c.id}  {c.kind.label_zh} ({c.kind.value})  {c.severity.label_zh}  state {c.state.label_zh}"
    )
    typer.echo(f"  version {c.version}  head {c.head_hash[:16]}…")
    typer.echo(f"  owner {c.owner_code} at {c.level.name.lower()} level; chain {c.chain_code}")
    typer.echo(
        f"  filed under cell {c.cell_code or '-'} (cell version {c.cell_version_id or '-'}), {c.division_code}"
    )
    party = c.worker_masked or ("worker (matched by keyed HMAC)" if c.has_worker else "-")
    typer.echo(
        f"  workers affected {c.workers_affected}; worker {party}; enterprise {c.enterprise_uscc or '-'}"
    )
    typer.echo(
        f"  opened {_fmt(c.opened_at)}; respond by {_fmt(c.respond_by)}; resolve by {_fmt(c.resolve_by)}"
        + (f"; mediation window ends {_fmt(c.mediation_window_ends)}" if c.mediation_window_ends else "")
        + (" (provisional calendar)" if c.deadlines_provisional else "")
    )
    r = c.routing
    typer.echo(f"routing: rule {r.get('rule')} -> {r.get('level')} ({r.get('owner_code')})")
    typer.echo(f"  {r.get('text_zh')}")
    typer.echo(f"  {r.get('text_en')}")
    for alert in r.get("alerts", []):
        typer.echo(f"  ! {alert.get('code')}: {alert.get('message_en')}")
    typer.echo("timeline:")
    for se in events:
        ev = se.event
        detail = {
            k: v for k, v in ev.payload.items() if k in ("reason", "outcome", "to_owner", "kind", "text")
        }
        typer.echo(
            f"  {ev.seq:>3} {_fmt(ev.at)} {ev.action.label_zh}({ev.action.value}) "
            f"{ev.from_state or '-'} -> {ev.to_state}  owner {se.owner_after}  by {ev.actor}"
            + (f"  {detail}" if detail else "")
        )
    typer.echo("pending steps:" if steps else "pending steps: none")
    for kind, due, owner in steps:
        typer.echo(f"  {kind} due {_fmt(due)} against {owner}")


@app.command("list")
def list_command(
    scope: Annotated[str, typer.Option(help="division or cell code whose subtree to list")],
    state: Annotated[list[str] | None, typer.Option(help="only these states (repeatable)")] = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Cases within a scope, newest first."""
    from geodata.codes import Level
    from grid.cases.queries import list_cases
    from grid.cases.states import State
    from grid.cases.store import ScopeError

    try:
        states = [State(s) for s in state] if state else None
    except ValueError as exc:
        _fail(str(exc))
    conn = _connect()
    try:
        rows = list_cases(conn, scope=scope, states=states, limit=limit)
    except ScopeError as exc:
        _fail(str(exc))
    finally:
        conn.close()
    if not rows:
        typer.echo(f"no cases within {scope}")
        return
    typer.echo(f"{'id':>8}  {'kind':<20}{'state':<12}{'level':<10}{'owner':<16}{'resolve by':<17}")
    for c in rows:
        typer.echo(
            f"{c.id:>8}  {c.kind:<20}{c.state:<12}{Level(c.level).name.lower():<10}{c.owner_code:<16}"
            f"{_fmt(c.resolve_by):<17}{' OVERDUE' if c.overdue else ''}"
        )


@app.command("seed-units")
def seed_units_command(
    scope: Annotated[str, typer.Option(help="create a union unit for every division in this subtree")],
) -> None:
    """Create an active union unit for each current division within a scope (grid officers excluded)."""
    from grid.cases.owners import ensure_units

    conn = _connect()
    try:
        n = ensure_units(conn, scope=scope)
    finally:
        conn.close()
    typer.echo(f"{n} union unit(s) created within {scope}")


def sweep_command(
    now: Annotated[str, typer.Option(help="ISO time to sweep at (replay); default: now")] = "",
    scope: Annotated[str, typer.Option(help="only cases within this division code")] = "",
    batch: Annotated[int, typer.Option(help="due steps per transaction")] = 1000,
    deliver: Annotated[
        bool, typer.Option(help="also deliver the outbox (config/notify.toml robots, GRIDFLOW_WEBHOOKS)")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="list what would be reminded, criticised, escalated; write nothing"),
    ] = False,
    commit: Annotated[
        bool,
        typer.Option(
            "--commit",
            help="write even when --now is after the database clock (a drill: events marked replayed)",
        ),
    ] = False,
) -> None:
    """Run the escalation sweep once, in this process (``--now`` replays a past or future time).

    A ``--now`` after the database clock is refused unless ``--dry-run`` (preview, writes nothing)
    or ``--commit`` (a drill: its events are marked replayed).
    """
    from datetime import UTC

    from grid.cases.store import rules_from_settings
    from grid.cases.sweep import FutureSweep, sweep

    if dry_run and commit:
        _fail("--dry-run and --commit exclude each other")
    if dry_run and deliver:
        _fail("--dry-run delivers nothing: drop --deliver")
    at = _when(now, "--now") or datetime.now(UTC)
    routing = None
    if deliver:  # a broken notify file stops the command before the sweep writes anything
        from grid.cases.notify import NotifyConfigError, load_routing

        try:
            routing = load_routing()
        except (NotifyConfigError, ValueError) as exc:
            _fail(str(exc))
    conn = _connect()
    try:
        try:
            report = sweep(
                conn,
                now=at,
                rules=rules_from_settings(),
                batch=batch,
                scope=scope or None,
                dry_run=dry_run,
                drill=commit,
            )
        except FutureSweep as exc:
            _fail(str(exc))
        if dry_run:
            for p in report.planned:
                extra = f" -> {p['to_level']} {p['to_owner']}" if "to_owner" in p else ""
                typer.echo(
                    f"  case {p['case_id']}: {p['step']} due {_fmt(p['due_at'])}: would {p['did']} "
                    f"{p['unit']}{extra}"
                )
        head = "dry run (nothing written) at" if dry_run else "sweep at"
        typer.echo(
            f"{head} {at.isoformat()}: {report.steps} due step(s) in {report.batches} batch(es): "
            f"{report.reminded} reminded, {report.criticised} criticised, {report.escalated} escalated, "
            f"{report.cancelled} cancelled, {report.superseded} superseded; {report.notices} notice(s) "
            f"{'would be ' if dry_run else ''}queued"
            + (" [replayed: events marked as a drill]" if report.replayed and not dry_run else "")
            + f" [{report.seconds:.2f} s]"
        )
        if routing is not None:
            import httpx

            from grid.cases.outbox import deliver as deliver_outbox

            with httpx.Client(timeout=10) as client:
                d = deliver_outbox(conn, routing=routing, client=client, now=at)
            typer.echo(
                f"outbox: {d.delivered} delivered, {d.retrying} to retry, {d.failed} failed "
                f"(robots: {len(routing.robots)}; webhooks: {', '.join(sorted(routing.webhooks)) or 'none'})"
            )
    finally:
        conn.close()
