"""``gridflow calendar ...``: the working-day calendar and recomputing deadlines on publication.

Registered by ``gridflow_cli.main``::

    from gridflow_cli.calendar_cli import app as calendar_app
    app.add_typer(calendar_app, name="calendar")

Both commands rewrite deadlines of open cases, so they are dry runs unless given ``--commit``
(the house rule for what rewrites the world).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gridflow_cli.common import connect_or_fail, fail

if TYPE_CHECKING:
    from grid.cases.recompute import RecomputeReport
    from grid.cases.store import CaseRules

app = typer.Typer(
    no_args_is_help=True, help="Working-day calendar: load an official holiday list, show a year."
)


def _fmt(at: datetime | None, rules: CaseRules) -> str:
    if at is None:
        return "-"
    return at.astimezone(rules.policy.calendar.tz).strftime("%Y-%m-%d %H:%M")


def _run(rules: CaseRules, *, commit: bool, scope: str) -> RecomputeReport:
    from grid.cases.owners import scope_prefix
    from grid.cases.recompute import recompute_provisional
    from grid.cases.store import ScopeError

    try:
        prefix = scope_prefix(scope) if scope else None
    except ScopeError as exc:
        fail(str(exc))
    conn = connect_or_fail()
    try:
        report = recompute_provisional(
            conn, rules=rules, at=datetime.now(UTC), commit=commit, scope_prefix=prefix
        )
    finally:
        conn.close()
    changed = report.changed
    verb = "recomputed" if commit else "would recompute (dry run; --commit applies)"
    typer.echo(f"{report.examined} open case(s) on a provisional calendar; {verb} {len(changed)}:")
    for m in changed:
        mark = "暂定 provisional" if m.new_provisional else "official"
        typer.echo(
            f"  case {m.case_id}: resolve by {_fmt(m.old_resolve_by, rules)} -> {_fmt(m.new_resolve_by, rules)}; "
            f"respond by {_fmt(m.old_respond_by, rules)} -> {_fmt(m.new_respond_by, rules)}; now {mark}"
        )
        for s in m.steps:
            if s.old_due != s.new_due or s.old_provisional != s.new_provisional:
                typer.echo(f"    step {s.kind}: {_fmt(s.old_due, rules)} -> {_fmt(s.new_due, rules)}")
    return report


@app.command("load")
def load_command(
    file: Annotated[Path, typer.Argument(help="official holiday file (config/holidays/YYYY.toml format)")],
    commit: Annotated[
        bool, typer.Option("--commit", help="apply (default: dry run, writes nothing)")
    ] = False,
    scope: Annotated[str, typer.Option(help="only cases within this division code")] = "",
) -> None:
    """Recompute open cases' provisional deadlines and pending steps with an official holiday list.

    All in one transaction, one case event per changed case showing old and new deadlines. Add the
    file to ``calendar.holiday_files`` of the policy so that new cases count on it too.
    """
    from grid.cases.policy import build_calendar
    from grid.cases.store import CaseRules, rules_from_settings
    from grid.workdays import CalendarError

    policy = rules_from_settings().policy
    calendar = build_calendar(policy)  # a fresh calendar: the cached one is shared
    listed = {p.resolve() for p in policy.calendar.holiday_files}
    try:
        year = None if file.resolve() in listed else calendar.add_file(file)
    except CalendarError as exc:
        fail(str(exc))
    typer.echo(
        f"holiday file {file}: year {year} is official now"
        if year is not None
        else f"holiday file {file} is already listed in the policy"
    )
    _run(CaseRules(policy, calendar), commit=commit, scope=scope)
    if year is not None:
        typer.echo(
            f"note: add {file} to calendar.holiday_files of the policy so that new cases count on it "
            "too / 请将该文件加入省级政策的 calendar.holiday_files，新案件才会按其计算"
        )


@app.command("recompute")
def recompute_command(
    commit: Annotated[
        bool, typer.Option("--commit", help="apply (default: dry run, writes nothing)")
    ] = False,
    scope: Annotated[str, typer.Option(help="only cases within this division code")] = "",
) -> None:
    """Recompute provisional deadlines on the policy's calendar (after adding a holiday file to it)."""
    from grid.cases.policy import build_calendar
    from grid.cases.store import CaseRules, rules_from_settings

    policy = rules_from_settings().policy
    _run(CaseRules(policy, build_calendar(policy)), commit=commit, scope=scope)


@app.command("show")
def show_command(
    year: Annotated[int, typer.Argument(help="calendar year")],
) -> None:
    """A year's days off: the official list if known, else the derived statutory days (暂定)."""
    from grid.cases.policy import build_calendar
    from grid.cases.store import rules_from_settings
    from grid.workdays import statutory_days_off

    cal = build_calendar(rules_from_settings().policy)
    if year in cal.known_years:
        typer.echo(f"{year}: official schedule (chinese-calendar or a policy holiday file)")
    else:
        typer.echo(
            f"{year}: no official list; statutory days off derived from the national rules, make-up "
            "working weekends unknown — every deadline in this year is provisional (暂定)"
        )
    for d, festival in sorted(statutory_days_off(year).items()):
        worked = "  (a working day on the official list)" if cal.is_workday(d) else ""
        typer.echo(f"  {d.isoformat()} {d.strftime('%a')}  {festival}{worked}")
