"""``gridflow cells import``, ``gridflow locate`` and ``gridflow map``: the grid from the command line."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from geodata.codes import Level
from gridflow_cli.common import fail as _fail

if TYPE_CHECKING:
    import psycopg2.extensions

    from geodata.diff import GridDiff
    from geodata.division_index import Located
    from geodata.imports import Problem
    from grid.cells.imports import ImportPlan

cells_app = typer.Typer(
    no_args_is_help=True, help="Grid cell versions: import a new grid with a dry-run diff."
)

_LEVEL_ROWS = (
    ("community", Level.COMMUNITY),
    ("town", Level.TOWN),
    ("county", Level.COUNTY),
    ("city", Level.CITY),
    ("province", Level.PROVINCE),
)
OUT_COLUMNS = (
    "id",
    "cell_code",
    "community_code",
    "town_code",
    "county_code",
    "city_code",
    "province_code",
    "method",
    "reason",
)


@contextmanager
def _db() -> Iterator[psycopg2.extensions.connection]:
    from grid.store.db import DatabaseUnavailable, connect

    try:
        conn = connect()
    except DatabaseUnavailable as exc:
        _fail(str(exc))
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _parse_date(text: str | None) -> date:
    if not text:
        from grid.workdays import today_local

        return today_local()
    try:
        return date.fromisoformat(text)
    except ValueError:
        _fail(f"--valid-from must be a date like 2026-12-01, got {text!r}")


# -- cells import -----------------------------------------------------------------------------


def _print_problems(problems: Sequence[Problem], show: int) -> None:
    blocking = sum(p.blocking for p in problems)
    typer.echo(f"problems: {blocking} blocking, {len(problems) - blocking} warning(s)")
    for p in problems[:show]:
        where = "file" if p.feature is None else f"feature {p.feature}"
        typer.echo(f"  {where:<13} {p.code or '-':<16} {p.severity.value:<8} {p.reason.value:<22} {p.detail}")
    if len(problems) > show:
        typer.echo(f"  ... and {len(problems) - show} more")


def _print_diff(diff: GridDiff, show: int) -> None:
    from geodata.diff import ChangeKind

    counts = diff.counts()
    typer.echo("diff: " + ", ".join(f"{counts[k]} {k.value}" for k in ChangeKind))
    for kind in (ChangeKind.ADDED, ChangeKind.REMOVED, ChangeKind.CHANGED, ChangeKind.RENAMED):
        rows = diff.of(kind)
        for c in rows[:show]:
            if kind is ChangeKind.ADDED:
                detail = f"{c.new_name}  {c.new_area_m2:,.0f} m²"
            elif kind is ChangeKind.REMOVED:
                detail = f"{c.old_name}  {c.old_area_m2:,.0f} m²"
            elif kind is ChangeKind.CHANGED:
                detail = (
                    f"{c.new_name}  {c.old_area_m2:,.0f} → {c.new_area_m2:,.0f} m²"
                    f" ({c.changed_area_m2:,.0f} m² differs)"
                )
            else:
                detail = f"{c.old_name} → {c.new_name}"
            typer.echo(f"  {kind.value:<9} {c.code}  {detail}")
        if len(rows) > show:
            typer.echo(f"  {kind.value:<9} ... and {len(rows) - show} more")


def _print_moves(plan: ImportPlan, show: int) -> None:
    if not plan.cases_checked:
        typer.echo("open cases that would move: none (no case table in this database)")
        return
    typer.echo(
        f"open cases that would move: {len(plan.moves)} (and {plan.staying} staying in a cell of the same code)"
    )
    for m in plan.moves[:show]:
        typer.echo(f"  case {m.case_id:<8} {m.from_chain} → {m.to_chain}  ({m.how})")
    if len(plan.moves) > show:
        typer.echo(f"  ... and {len(plan.moves) - show} more")


@cells_app.command("import")
def cells_import(
    file: Annotated[Path, typer.Argument(help="GeoJSON, GeoPackage or Shapefile of grid cells")],
    layer: Annotated[str | None, typer.Option(help="layer name (files with several layers)")] = None,
    code_field: Annotated[str, typer.Option(help="attribute holding the 15-digit cell code")] = "code",
    name_field: Annotated[str, typer.Option(help="attribute holding the cell name ('' for none)")] = "name",
    community_field: Annotated[
        str | None,
        typer.Option(help="attribute holding the 12-digit community code, checked against the code"),
    ] = None,
    crs: Annotated[
        str | None,
        typer.Option(
            help="coordinate system of the file when it cannot say: gcj02, bd09 (converted to WGS84), "
            "or wgs84/cgcs2000 for a file without one"
        ),
    ] = None,
    valid_from: Annotated[
        str | None, typer.Option(help="first day of the new version (default: today)")
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(help="12-digit division the file covers (default: the lowest holding every cell)"),
    ] = None,
    tolerance_m: Annotated[
        float, typer.Option(help="how far (m) a cell may reach outside its community")
    ] = 5.0,
    label: Annotated[
        str | None, typer.Option(help="label of the new version (default: the file name)")
    ] = None,
    show: Annotated[int, typer.Option(help="rows to print per section")] = 20,
    commit: Annotated[
        bool, typer.Option("--commit", help="apply as a new version (default: dry run)")
    ] = False,
) -> None:
    """Diff a grid file against the current cells; with --commit, apply it as a new version.

    Prints added / removed / changed cells with areas, every problem per feature, and the open
    cases that would move to another cell. Exits 1 when there is a blocking problem (nothing is
    committed then). Open cases are re-routed only by --commit, each with the reason recorded.
    """
    from geodata.imports import FieldMapping, cell_import, common_scope, needed_divisions, read_layer
    from grid.cells import imports as store

    fields = FieldMapping(code=code_field, name=name_field or None, parent=community_field)
    start = _parse_date(valid_from)
    t0 = time.monotonic()
    read = read_layer(file, layer=layer, fields=fields, crs=crs)
    typer.echo(
        f"file: {file} (layer {read.layer or '-'}, {len(read.features)} features, "
        f"file CRS {read.file_crs or 'none'}, read as {read.crs.value if read.crs else '-'})"
    )
    if scope is not None and not (scope.isascii() and scope.isdigit() and len(scope) == 12):
        _fail(f"--scope must be a 12-digit division code, got {scope!r}")
    with _db() as conn:
        with conn.cursor() as cur:
            divisions = store.divisions_by_code(cur, needed_divisions(read))
        good_codes = [f.code for f in read.features if f.code is not None]
        the_scope = scope or common_scope(good_codes)
        checked = cell_import(read, divisions, tolerance_m=tolerance_m, scope=the_scope)
        blocking = checked.blocking
        if the_scope is None or not checked.cells:
            _print_problems(checked.problems, show)
            _fail(
                "nothing to import: no feature is usable"
                if the_scope is not None or not checked.cells
                else "the codes span several provinces; name the --scope"
            )
        with conn.cursor() as cur:
            names = store.names_of(cur, [the_scope])
        typer.echo(f"scope: {the_scope} {names.get(the_scope, '')}".rstrip())
        try:
            plan = store.plan_import(conn, checked.cells, scope=the_scope, valid_from=start)
        except store.ImportRefused as exc:
            _fail(str(exc))
        if plan.superseded:
            typer.echo(
                f"replaces version(s) {', '.join(map(str, plan.superseded))}; new version scope "
                f"{plan.version_scope}, {plan.carried_over} cell(s) outside the scope carried over"
            )
        _print_diff(plan.diff, show)
        if blocking:
            typer.echo(f"  (the {len(blocking)} feature(s) with blocking problems are left out of this diff)")
        _print_problems(checked.problems, show)
        if plan.refused is None:
            _print_moves(plan, show)
        if blocking or plan.refused:
            why = [f"{len(blocking)} blocking problem(s): fix the file"] if blocking else []
            why += [plan.refused] if plan.refused else []
            _fail("; ".join(why) + ("; nothing committed" if commit else ""))
        if plan.noop:
            typer.echo("no change: the file is the current grid; nothing to commit")
            return
        if not commit:
            typer.echo(
                f"dry run: nothing written. Rerun with --commit to apply as a new version valid from {start} "
                f"[{time.monotonic() - t0:.1f} s]"
            )
            return
        try:
            result = store.commit_import(
                conn,
                checked.cells,
                scope=the_scope,
                valid_from=start,
                label=label or file.name,
                note=f"cells import of {file.name}",
            )
        except store.ImportRefused as exc:
            _fail(str(exc))
    if result.version_id is None:
        typer.echo("no change: the file is the current grid; nothing committed")
        return
    typer.echo(
        f"committed cell version {result.version_id} valid from {start}; "
        f"closed version(s) {', '.join(map(str, result.plan.superseded)) or '-'}; "
        f"open cases re-routed: {result.rerouted} ({result.reassigned} reassigned), "
        f"{result.relabelled} kept their cell [{time.monotonic() - t0:.1f} s]"
    )


# -- locate ------------------------------------------------------------------------------------


def _chain_lines(located: Located, i: int, names: dict[str, str]) -> list[str]:
    chain = located.chain()
    lines = []
    cell = located.cell_code[i]
    if cell is not None:
        lines.append(f"cell       {cell}  {names.get(str(cell), '')}".rstrip())
    for label, lvl in _LEVEL_ROWS:
        code = chain[lvl][i]
        if code is not None:
            lines.append(f"{label:<10} {code}     {names.get(str(code), '-')}")
    return lines


def locate(
    lon: Annotated[float, typer.Option("--lon", help="longitude in decimal degrees")],
    lat: Annotated[float, typer.Option("--lat", help="latitude in decimal degrees")],
    crs: Annotated[
        str, typer.Option(help="coordinate system of the point: wgs84, cgcs2000, gcj02 or bd09")
    ] = "wgs84",
) -> None:
    """Print the grid cell of a point and its chain (community, town, county, city, province).

    Outside the loaded grid the point is placed in the deepest division polygon that holds it
    (the national county polygons loaded by `gridflow world load`); outside every one it is
    unmapped, with the reason.
    """
    import numpy as np

    from geodata.cellindex import CellIndex
    from geodata.crs import UnknownCRSError, parse_crs, to_wgs84
    from geodata.division_index import DivisionIndex, locate_points
    from grid.cells import imports as store

    try:
        system = parse_crs(crs)
    except UnknownCRSError as exc:
        _fail(str(exc))
    wx, wy = (float(v[0]) for v in to_wgs84([lon], [lat], system))
    typer.echo(f"point      {lon:.6f}, {lat:.6f} ({system.value}) -> WGS84 {wx:.6f}, {wy:.6f}")
    with _db() as conn, conn.cursor() as cur:
        box = (wx, wy, wx, wy) if np.isfinite(wx) and np.isfinite(wy) else None
        snap = store.grid_snapshot(cur, bbox=box) if box else None
        index = None
        if snap is not None and snap.codes:
            outline = snap.area if snap.area is not None and not snap.area.is_empty else None
            index = CellIndex(snap.codes, snap.geoms, retired=snap.retired, outline=outline)
        divisions = DivisionIndex(store.division_polygons(cur, bbox=box)) if box else None
        located = locate_points(
            [lon],
            [lat],
            system.value,
            cells=index,
            grid_area=None if snap is None else snap.area,
            divisions=divisions,
        )
        codes = [c for col in located.chain().values() for c in col.tolist() if c is not None]
        codes += [c for c in located.cell_code.tolist() if c is not None]
        names = store.names_of(cur, codes)
    if located.level[0] == 0:
        typer.echo(f"unmapped   reason {located.reason[0]}")
        return
    if located.cell_code[0] is None:
        typer.echo(f"cell       none ({located.reason[0]})")
    for line in _chain_lines(located, 0, names):
        typer.echo(line)
    typer.echo(
        f"method     {located.method[0]}" + (f" (reason {located.reason[0]})" if located.reason[0] else "")
    )


# -- map ---------------------------------------------------------------------------------------


def _column(frame: Any, name: str) -> Any:
    import pandas as pd

    if name in frame.columns:
        return frame[name].fillna("").astype(str).str.strip()
    return pd.Series([""] * len(frame), index=frame.index, dtype=object)


def map_points(
    in_csv: Annotated[Path, typer.Argument(help="CSV with a header row; columns below")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write; columns below")],
    crs: Annotated[
        str | None, typer.Option(help="CRS of rows whose crs column is empty (wgs84, cgcs2000, gcj02, bd09)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="rows per chunk")] = 100_000,
) -> None:
    """Place a file of points and/or addresses: cell, chain codes, method and reason per row.

    \b
    IN.csv: UTF-8, a header row; only id is required, others are ignored.
      id        your row identifier, copied to the output
      lon, lat  decimal degrees (empty: no point)
      crs       wgs84, cgcs2000, gcj02, bd09, EPSG:4326 or EPSG:4490;
                empty: --crs; a point with no CRS is never guessed
      address   free text, used when the point gives no cell
    \b
    OUT.csv columns:
      id, cell_code, community_code, town_code, county_code, city_code,
      province_code, method, reason
    \b
    method: point_in_cell; point_in_<level> (in no cell, but in a division
      polygon); address_<level> (placed by the address); unmapped
    reason: why there is no cell: outside_area, gap_between_cells,
      retired_cell, outside_china, outside_loaded_divisions, no_crs,
      unknown_crs, invalid_point, no_location or an address reason;
      empty when the point is in a cell
    \b
    The file is streamed in chunks and each chunk is placed at once.
    """
    import numpy as np
    import pandas as pd

    from geodata.address import AddressLocator
    from geodata.cellindex import CellIndex
    from geodata.crs import UnknownCRSError, parse_crs
    from geodata.division_index import DivisionIndex, locate_points
    from grid.cells import imports as store
    from grid.monitoring.exports import spreadsheet_safe
    from grid.store import geo

    if crs is not None:
        try:
            parse_crs(crs)
        except UnknownCRSError as exc:
            _fail(str(exc))
    try:
        header = pd.read_csv(in_csv, dtype=str, nrows=0, encoding="utf-8-sig")
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {in_csv}: {exc}")
    columns = set(header.columns)
    if "id" not in columns:
        _fail(f"{in_csv} has no id column (columns: {', '.join(header.columns)})")
    if not ({"lon", "lat"} <= columns or "address" in columns):
        _fail(f"{in_csv} needs lon and lat columns, or an address column")
    t0 = time.monotonic()
    with _db() as conn, conn.cursor() as cur:
        snap = store.grid_snapshot(cur)
        divisions = DivisionIndex(store.division_polygons(cur))
        locator = AddressLocator(geo.load_divisions(cur)) if "address" in columns else None
    index = None
    if snap.codes:
        outline = snap.area if snap.area is not None and not snap.area.is_empty else None
        index = CellIndex(snap.codes, snap.geoms, retired=snap.retired, outline=outline)
    methods: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rows = 0
    first = True
    chunks = pd.read_csv(
        in_csv, dtype=str, keep_default_na=False, chunksize=max(1, chunk_size), encoding="utf-8-sig"
    )
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            # pandas names the line ("Expected 3 fields in line 12, saw 4"), never its content
            where = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            _fail(f"{in_csv.name} is damaged after {rows} rows ({where}); {out} holds the rows before it")
        lon_text, lat_text = _column(chunk, "lon"), _column(chunk, "lat")
        lon = pd.to_numeric(lon_text.replace("", np.nan), errors="coerce").to_numpy(dtype=np.float64)
        lat = pd.to_numeric(lat_text.replace("", np.nan), errors="coerce").to_numpy(dtype=np.float64)
        given = ((lon_text != "") | (lat_text != "")).to_numpy()
        row_crs = _column(chunk, "crs")
        if crs is not None:
            row_crs = row_crs.where(row_crs != "", crs)
        address = _column(chunk, "address")
        located = locate_points(
            lon,
            lat,
            row_crs.tolist(),
            cells=index,
            grid_area=snap.area,
            divisions=divisions,
            addresses=address.tolist() if locator is not None else None,
            locator=locator,
            point_given=given,
        )
        chain = located.chain()
        frame = pd.DataFrame(
            {
                "id": chunk["id"].map(spreadsheet_safe).to_numpy(),
                "cell_code": located.cell_code,
                "community_code": chain[Level.COMMUNITY],
                "town_code": chain[Level.TOWN],
                "county_code": chain[Level.COUNTY],
                "city_code": chain[Level.CITY],
                "province_code": chain[Level.PROVINCE],
                "method": located.method,
                "reason": located.reason,
            },
            columns=list(OUT_COLUMNS),
        )
        frame.to_csv(out, mode="w" if first else "a", header=first, index=False, encoding="utf-8")
        first = False
        rows += len(frame)
        methods.update(str(m) for m in located.method)
        reasons.update(str(r) for r in located.reason if r is not None)
    if first:  # an empty input still gets a header
        pd.DataFrame(columns=list(OUT_COLUMNS)).to_csv(out, index=False)
    typer.echo(f"{rows} rows -> {out} [{time.monotonic() - t0:.1f} s]")
    typer.echo("methods: " + (", ".join(f"{k} {v}" for k, v in sorted(methods.items())) or "-"))
    typer.echo("reasons: " + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-"))
