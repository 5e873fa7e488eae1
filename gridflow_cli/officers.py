"""``gridflow officers ...``: the roster of grid officers (网格员花名册).

Registered by ``gridflow_cli.main``::

    from gridflow_cli.officers import app as officers_app
    app.add_typer(officers_app, name="officers")
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gridflow_cli.common import connect_or_fail
from gridflow_cli.common import fail as _fail

app = typer.Typer(
    no_args_is_help=True, help="The roster of grid officers: import a city's spreadsheet, list it."
)


@app.callback()
def officers() -> None:
    """The roster of grid officers (a group, so ``gridflow officers import`` stays a subcommand)."""


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="The roster as CSV or XLSX, in the city's field names.")],
    source: Annotated[str, typer.Option("--source", help="The city's source (config/sources/NAME.toml).")],
    partial: Annotated[
        bool,
        typer.Option(
            "--partial", help="Only some officers: those missing from the file are not counted as gone."
        ),
    ] = False,
) -> None:
    """Validate and load a roster spreadsheet: the same checks, quarantine and versioned write as
    the nightly sync. Prints a summary; each bad row by its line and reason code (no names, no phones)."""
    from connectors.checks import SchemaDrift
    from connectors.file import FileDamaged
    from flows.roster_import import import_roster, reason_label
    from gridflow_cli.connectors_cli import _load

    if file.suffix.lower() not in (".csv", ".xlsx"):
        _fail(f"{file.name}: a roster is a .csv or .xlsx file")
    if not file.is_file():
        _fail(f"{file} does not exist")
    config = _load(source)
    try:
        result = import_roster(config, file, partial=partial)
    except (FileDamaged, SchemaDrift, ValueError) as exc:
        _fail(str(exc))
    typer.echo(
        f"roster of {source} from {file.name} (run {result.run_id}): received {result.received}, "
        f"loaded {result.loaded}, unchanged {result.unchanged}, quarantined {result.quarantined}"
    )
    if not partial:
        typer.echo(
            f"  officers missing from this roster: {result.missing}, gone (missing twice): {result.soft_deleted}"
        )
    if result.released:
        typer.echo(f"  open cases of officers who left, handed to the community union: {result.released}")
    for note in result.notes:
        typer.echo(f"  note: {note}")
    for code, n in sorted(result.by_reason.items()):
        typer.echo(f"  {reason_label(code)}: {n}")
    for bad in result.bad:
        where = f"line {bad.line}" if bad.line else "a row"
        typer.echo(f"  {where}: {bad.reason} ({bad.field or '-'}) {bad.detail}")


@app.command("list")
def list_(
    scope: Annotated[
        str | None, typer.Option("--scope", help="Only officers serving cells within this division.")
    ] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only this source's roster.")] = None,
) -> None:
    """Officers: roster id, staff name, masked phone, in post or not, cells, open cases owned."""
    from geodata.codes import own_prefix

    try:
        prefix = own_prefix(scope) if scope else ""
    except ValueError as exc:
        _fail(str(exc))
    conn = connect_or_fail()
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT o.source, o.source_record_id, o.name, coalesce(o.phone_masked, '-'), o.active,
                       ARRAY(SELECT oc.cell_code FROM officer_cell oc WHERE oc.officer_id = o.id ORDER BY 1),
                       (SELECT count(*) FROM case_file c WHERE c.owner_officer = o.id
                          AND c.state NOT IN ('resolved', 'closed'))
                FROM officer o
                WHERE (%s::text IS NULL OR o.source = %s)
                  AND (%s = '' OR EXISTS (SELECT 1 FROM officer_cell oc WHERE oc.officer_id = o.id
                                          AND oc.cell_code LIKE %s))
                ORDER BY o.source NULLS FIRST, o.source_record_id
                """,
                (source, source, prefix, prefix + "%"),
            )
            rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    typer.echo(f"{'source':<14}{'officer':<18}{'name':<10}{'phone':<14}{'in post':<9}{'open':>5}  cells")
    for src, rid, name, phone, active, cells, n in rows:
        typer.echo(
            f"{src or '-':<14}{rid:<18}{name:<10}{phone:<14}{'yes' if active else 'no':<9}{n:>5}  "
            f"{','.join(cells) or '-'}"
        )
    typer.echo(f"{len(rows)} officers")
