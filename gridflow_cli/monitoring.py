"""``gridflow coverage``: compute the day's coverage snapshot, or show a division's latest numbers.

Registered by ``gridflow_cli.main`` through :func:`register`. Aggregates only: nothing here reads a
person's record.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from gridflow_cli.common import connect_or_fail as _connect
from gridflow_cli.common import fail as _fail

if TYPE_CHECKING:
    from grid.monitoring.coverage import DivisionCoverage
    from grid.monitoring.pending import Notes

coverage_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Coverage snapshots (the four fulls, supervision rates, overdue counts per division): "
    "without a command, compute today's (or --date's) snapshot and print the province summary.",
)


def _pad(text: str, width: int) -> str:
    """``text`` cut and padded to ``width`` terminal columns (Chinese characters take two)."""
    out, used = [], 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(out) + " " * (width - used)


def note_text(pending: int, with_problem: int) -> str:
    """The note beside a registry rate: records quarantined whole (not counted) and records
    counted despite a field problem (``grid.monitoring.pending``); '' when there is neither."""
    parts = []
    if pending:
        parts.append(f"另有 {pending:,} 条待核实 (+{pending:,} quarantined whole, not counted)")
    if with_problem:
        parts.append(f"{with_problem:,} 条字段待核实 ({with_problem:,} counted with a field problem)")
    return "  ".join(parts)


def _print_division(d: DivisionCoverage, *, indent: str = "", notes: Notes | None = None) -> None:
    from grid.monitoring.coverage import headline, percent

    c = d.counts
    typer.echo(f"{indent}{d.name} ({d.code}, level {d.level})")
    for r, num, den, value in headline(c):
        note = note_text(*notes.for_rate(r.name)) if notes else ""
        typer.echo(
            f"{indent}  {_pad(r.label_en + ' ' + r.label_zh, 32)} {num:>10,} / {den:<10,} {percent(value):>7}"
            + (f"  {note}" if note else "")
        )
    typer.echo(
        f"{indent}  overdue: {c.overdue:,} past the resolution deadline, "
        f"{c.overdue_response:,} not accepted in time"
    )


@coverage_app.callback()
def coverage(
    ctx: typer.Context,
    date: Annotated[
        str, typer.Option("--date", help="snapshot date YYYY-MM-DD (default: today, as of now)")
    ] = "",
) -> None:
    """Compute the coverage snapshot of a date directly against the database and print the
    province summary (``gridflow coverage show [CODE]`` prints one division)."""
    if ctx.invoked_subcommand is not None:
        return
    from grid.cases.store import rules_from_settings
    from grid.monitoring.coverage import CoverageError, as_of_for, compute_snapshot, parse_date, percent

    tz = rules_from_settings().policy.calendar.tz
    try:
        day, as_of = as_of_for(parse_date(date), now=datetime.now(UTC), tz=tz)
    except CoverageError as exc:
        _fail(str(exc))
    from grid.monitoring.pending import notes as read_notes

    conn = _connect()
    try:
        summary = compute_snapshot(conn, snapshot_date=day, as_of=as_of, tz=tz)
        noted = read_notes(conn, codes=[p.code for p in summary.provinces], snapshot_date=day)
    finally:
        conn.close()
    typer.echo(
        f"coverage snapshot {day.isoformat()} as of {as_of.astimezone(tz):%Y-%m-%d %H:%M} ({tz}): "
        f"{summary.divisions:,} divisions in {summary.seconds or 0:.1f} s"
    )
    if day != datetime.now(tz).date():
        typer.echo("note: a past date counts today's registry rows; only case times are bounded by the date")
    if not summary.provinces:
        typer.echo("no enterprise, worker or case is attributed to any province yet")
    for p in summary.provinces:
        _print_division(p, notes=noted[p.code])
        typer.echo(f"  {'city':<34} {'union':>7} {'mapped':>7} {'disputes':>8} {'on time':>8} {'overdue':>8}")
        for city in (x for x in summary.cities if x.code[:2] == p.code[:2]):
            rs = city.counts.rates()
            typer.echo(
                f"  {_pad(city.name + ' ' + city.code, 34)} {percent(rs['union']):>7} {percent(rs['workers']):>7} "
                f"{percent(rs['disputes']):>8} {percent(rs['on_time']):>8} {city.counts.overdue:>8,}"
            )


@coverage_app.command("show")
def show(
    code: Annotated[str, typer.Argument(help="12-digit division code (default: the province)")] = "",
    date: Annotated[str, typer.Option("--date", help="snapshot date (default: the latest)")] = "",
) -> None:
    """A division's numbers and rates in the latest (or a given) snapshot, and its children's."""
    from geodata.codes import is_division_code
    from grid.monitoring.coverage import (
        CoverageError,
        children_coverage,
        division_coverage,
        latest_run,
        parse_date,
        percent,
        province_summary,
    )
    from grid.monitoring.pending import notes as read_notes

    if code and not is_division_code(code):
        _fail(f"a division code is 12 digits, got {code!r}")
    try:
        asked = parse_date(date)
    except CoverageError as exc:
        _fail(str(exc))
    conn = _connect()
    try:
        latest = None if asked else latest_run(conn)
        day = asked or (latest.snapshot_date if latest else None)
        if day is None:
            _fail("no coverage snapshot yet: run `gridflow coverage` first")
        if not code:
            summary = province_summary(conn, day)
            if summary is None or not summary.provinces:
                _fail(f"no snapshot with any province's records on {day.isoformat()}")
            code = summary.provinces[0].code
        row = division_coverage(conn, snapshot_date=day, code=code)
        kids = children_coverage(conn, snapshot_date=day, code=code)
        noted = read_notes(conn, codes=[code, *(k.code for k in kids)], snapshot_date=day)
    finally:
        conn.close()
    if row is None:
        _fail(f"no row for {code} in the snapshot of {day.isoformat()}")
    typer.echo(f"coverage snapshot {day.isoformat()}")
    _print_division(row, notes=noted[code])
    if kids:
        typer.echo(
            f"  {'below':<34} {'union':>7} {'mapped':>7} {'disputes':>8} {'response':>8} "
            f"{'on time':>8} {'overdue':>8}  note beside 职工信息掌握率"
        )
        for k in kids:
            rs = k.counts.rates()
            typer.echo(
                f"  {_pad(k.name + ' ' + k.code, 34)} {percent(rs['union']):>7} {percent(rs['workers']):>7} "
                f"{percent(rs['disputes']):>8} {percent(rs['response']):>8} {percent(rs['on_time']):>8} "
                f"{k.counts.overdue:>8,}"
                + (f"  {note}" if (note := note_text(*noted[k.code].for_rate("workers"))) else "")
            )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``gridflow`` app."""
    app.add_typer(coverage_app, name="coverage")
