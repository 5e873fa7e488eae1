"""``gridflow reveals list``: the reveal log (who revealed which masked field of which case, why,
when), read as the database owner, newest first, a page at a time."""

from __future__ import annotations

from typing import Annotated

import typer

from gridflow_cli.common import connect_or_fail
from gridflow_cli.common import fail as _fail

app = typer.Typer(no_args_is_help=True, help="The reveal log (reveal_audit), for the privacy officer.")


@app.callback()
def reveals() -> None:
    """The reveal log (a group, so ``gridflow reveals list`` stays a subcommand)."""


@app.command("list")
def list_command(
    since: Annotated[str, typer.Option(help="only reveals at or after this ISO date or time")] = "",
    user: Annotated[str, typer.Option(help="only this login")] = "",
    case: Annotated[int | None, typer.Option(help="only this case id")] = None,
    limit: Annotated[int, typer.Option(help="rows per page (1-500)")] = 50,
    page: Annotated[int, typer.Option(help="page number, from 1")] = 1,
) -> None:
    """Print reveals, one a line: time, login, field, case, reason."""
    from datetime import datetime

    from grid.accounts.reveals import MAX_PAGE, list_reveals
    from grid.cases.store import rules_from_settings

    if not 1 <= limit <= MAX_PAGE:
        _fail(f"--limit is 1..{MAX_PAGE}")
    if page < 1:
        _fail("--page starts at 1")
    at = None
    if since:
        try:
            at = datetime.fromisoformat(since)
        except ValueError:
            _fail(f"--since {since!r} is not an ISO date or time")
        if at.tzinfo is None:
            at = at.replace(tzinfo=rules_from_settings().policy.calendar.tz)
    conn = connect_or_fail()
    try:
        result = list_reveals(
            conn,
            principal=None,
            since=at,
            login=user or None,
            case_id=case,
            limit=limit,
            offset=(page - 1) * limit,
        )
    finally:
        conn.close()
    if not result.rows:
        typer.echo("no reveals match")
        return
    typer.echo("at\tlogin\tfield\tcase\treason")
    for r in result.rows:
        reason = " ".join(r.reason.split())
        typer.echo(f"{r.at.isoformat(timespec='seconds')}\t{r.login}\t{r.field}\t{r.case_id}\t{reason}")
    if result.has_more:
        typer.echo(f"(more: --page {page + 1})")
