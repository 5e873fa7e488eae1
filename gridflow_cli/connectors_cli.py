"""``gridflow sources list|check`` and ``gridflow validate``: onboarding a city without a sync.

* ``gridflow sources list`` - every source file in ``GRIDFLOW_SOURCES_DIR`` with its kind, city,
  entities and where it reads from; invalid files are listed with their problem (exit 1).
* ``gridflow sources check NAME`` - validates ``NAME.toml``, fetches the first page of each entity
  (nothing is written, a file drop's ledger is not touched) and prints counts, quarantine reasons
  and schema drift. Exit 1 on an unreachable source or breaking drift.
* ``gridflow validate --kind worker|enterprise|case IN --out-dir DIR [--source NAME]`` - validation
  alone, for a city checking an export before it connects: writes ``accepted.csv`` (canonical
  fields; ID, phone, name and home address MASKED, free text reduced to its length - these files
  get emailed around), ``quarantined.csv`` (records NOT loaded: record number, source record id,
  reason code, field, detail - never a raw value) and ``field_problems.csv`` (records accepted with
  one field left empty, ``connectors/problems.py``: the same columns, one line per field).
  Without ``--source`` the file's columns must carry the canonical field names; with it, the
  city's names from that source's mapping.

Nothing printed or written carries an ID number, phone number or other raw personal value.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gridflow_cli.common import fail as _fail

if TYPE_CHECKING:
    from connectors.config import SourceConfig

sources_app = typer.Typer(no_args_is_help=True, help="Municipal source configurations: list and check.")

KINDS = {"worker": "workers", "enterprise": "enterprises", "case": "cases"}
_ROW_KEY = "\x00row"  # record number injected into each row; no city field can be named this
_CHUNK = 5000


def _sources_dir() -> Path:
    from grid.settings import get_settings

    return Path(get_settings().sources_dir)


def _load(name: str) -> SourceConfig:
    from connectors.config import SourceConfigError, load_source_config

    path = _sources_dir() / f"{name}.toml"
    if not path.exists():
        _fail(f"no source named {name!r}: {path} does not exist")
    try:
        return load_source_config(path)
    except SourceConfigError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


# -- sources list ------------------------------------------------------------------------------


@sources_app.command("list")
def sources_list() -> None:
    """Every source file, valid or not."""
    from connectors.config import SourceConfigError, load_source_config

    directory = _sources_dir()
    if not directory.is_dir():
        _fail(f"{directory} is not a directory (set GRIDFLOW_SOURCES_DIR)")
    bad = 0
    files = sorted(directory.glob("*.toml"))
    if not files:
        typer.echo(f"no source files in {directory}")
        return
    for path in files:
        try:
            c = load_source_config(path)
        except SourceConfigError as exc:
            bad += 1
            typer.secho(f"{path.stem:16s} INVALID  {exc}", fg=typer.colors.RED)
            continue
        where = c.base_url if c.kind == "http" else str(c.folder)
        state = "enabled" if c.enabled else "disabled"
        typer.echo(
            f"{c.name:16s} {c.kind:5s} {c.city_code} {c.display_name}  entities={','.join(c.entities)}  "
            f"crs={c.crs}  {state}  {where}"
        )
    if bad:
        raise typer.Exit(1)


# -- sources check -----------------------------------------------------------------------------


@sources_app.command("check")
def sources_check(name: Annotated[str, typer.Argument(help="source name (its file is NAME.toml)")]) -> None:
    """Validate NAME.toml and fetch one page of each entity: counts, reasons, drift. Writes nothing."""
    from connectors.checks import SchemaDrift, check_schema
    from connectors.config import SourceUnavailable
    from connectors.file import FileSource
    from connectors.sources import open_source
    from connectors.validate import VALIDATORS

    config = _load(name)
    where = config.base_url if config.kind == "http" else str(config.folder)
    typer.echo(
        f"{config.name}: configuration valid ({config.kind}, {config.city_code} {config.display_name}, "
        f"crs {config.crs}, entities {', '.join(config.entities)}) - {where}"
    )
    problems = 0
    with open_source(config, dry_run=True) as source:
        for entity in config.entities:
            try:
                page = source.fetch_page(entity, cursor=None, since=None, page_no=1)
            except SourceUnavailable as exc:  # SourceRejected included
                problems += 1
                typer.secho(f"  {entity}: FAILED - {exc}", fg=typer.colors.RED)
                continue
            total = f" of {page.total}" if page.total is not None else ""
            typer.echo(f"  {entity}: fetched {len(page.records)}{total} rows (first page)")
            if isinstance(source, FileSource):
                for w in source.waiting(entity):
                    typer.echo(f"    waiting: {w.name} - {w.why}")
            mapping = config.mapping[entity]
            try:
                notes = check_schema(entity, page.records, mapping)
            except SchemaDrift as exc:
                problems += 1
                typer.secho(f"    DRIFT: {exc}", fg=typer.colors.RED)
                continue
            for note in notes:
                typer.echo(f"    note: {note}")
            records, rejects = VALIDATORS[entity](
                page.records, mapping=mapping, default_crs=config.crs, today=date.today()
            )
            reasons = Counter(str(r.reason) for r in rejects)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            field_reasons = Counter(str(p.reason) for r in records for p in getattr(r, "problems", ()))
            field_detail = ", ".join(f"{k} {v}" for k, v in sorted(field_reasons.items()))
            typer.echo(
                f"    valid {len(records)}, quarantined {len(rejects)}" + (f" ({detail})" if detail else "")
            )
            if field_reasons:
                typer.echo(
                    f"    of the valid, {sum(field_reasons.values())} field problems (field left empty: "
                    f"{field_detail})"
                )
    if problems:
        _fail(f"source {config.name} has {problems} problem(s); see above")
    typer.echo(f"{config.name}: ok")


# -- validate ----------------------------------------------------------------------------------


def _mask_address(address: str) -> str:
    """Keep the division part (up to the last 区/县/市/旗 in the first 12 characters)."""
    head = address[:12]
    cut = max(head.rfind(c) for c in "区县市旗")
    return (address[: cut + 1] if cut >= 0 else "") + "***"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal | float | int):
        return str(value)
    return str(value)


#: Output columns per entity: (canonical field, how to render it safely).
def _columns(entity: str) -> list[tuple[str, Any]]:
    from grid.people import mask_id, mask_name, mask_phone

    def masked(fn: Any) -> Any:
        return lambda v: fn(v) if v else ""

    def length(v: Any) -> str:
        return f"[{len(v)} characters]" if v else ""

    plain = _cell
    if entity == "workers":
        return [
            ("source_record_id", plain),
            ("source_updated_at", plain),
            ("id_number", masked(mask_id)),
            ("name", masked(mask_name)),
            ("gender", plain),
            ("birth_date", lambda v: str(v.year) if v else ""),
            ("phone", masked(mask_phone)),
            ("enterprise_uscc", plain),
            ("address", masked(_mask_address)),
            ("lon", plain),
            ("lat", plain),
            ("crs", plain),
        ]
    if entity == "enterprises":
        return [
            ("source_record_id", plain),
            ("source_updated_at", plain),
            ("uscc", plain),
            ("name", plain),
            ("union_established", plain),
            ("employee_count", plain),
            ("address", plain),
            ("lon", plain),
            ("lat", plain),
            ("crs", plain),
            ("legal_rep_phone", masked(mask_phone)),
        ]
    return [
        ("source_record_id", plain),
        ("source_updated_at", plain),
        ("kind", plain),
        ("severity", plain),
        ("hardship_grade", plain),
        ("reported_at", plain),
        ("worker_id_number", masked(mask_id)),
        ("enterprise_uscc", plain),
        ("workers_affected", plain),
        ("amount", plain),
        ("description", length),
        ("address", masked(_mask_address)),
        ("lon", plain),
        ("lat", plain),
        ("crs", plain),
    ]


def _identity_mapping(entity: str, header: Sequence[str]) -> dict[str, str]:
    from connectors.records import CANONICAL_FIELDS

    required, optional = CANONICAL_FIELDS[entity]
    present = set(header)
    missing = [f for f in required if f not in present]
    if missing:
        _fail(
            f"the file lacks the column(s) {', '.join(missing)}; name the columns with the canonical field "
            "names, or pass --source NAME to use that city's field names"
        )
    mapping = {f: f for f in (*required, *optional) if f in present}
    if bool(mapping.get("lon")) != bool(mapping.get("lat")):
        mapping.pop("lon", None)
        mapping.pop("lat", None)
    return mapping


def validate(
    input_file: Annotated[Path, typer.Argument(metavar="IN", help="a CSV or XLSX export")],
    kind: Annotated[str, typer.Option(help="worker, enterprise or case")],
    out_dir: Annotated[
        Path, typer.Option(help="where accepted.csv, quarantined.csv and field_problems.csv go")
    ],
    source: Annotated[str | None, typer.Option(help="use this source's field mapping and CRS")] = None,
    crs: Annotated[
        str | None, typer.Option(help="coordinate system of the points (default: the source's)")
    ] = None,
    encoding: Annotated[str | None, typer.Option(help="CSV encoding (default: detected)")] = None,
) -> None:
    """Validate an export without loading it: accepted.csv (masked), quarantined.csv (records not
    loaded, with reasons) and field_problems.csv (accepted records with a field left empty)."""
    from connectors.file import FileDamaged, read_rows
    from connectors.records import DAMAGE_KEY
    from connectors.validate import VALIDATORS, resolve_crs
    from grid.monitoring.exports import spreadsheet_safe

    def cells(values: Sequence[Any]) -> list[Any]:
        return [spreadsheet_safe(v) if isinstance(v, str) else v for v in values]

    entity = KINDS.get(kind.strip().lower())
    if entity is None:
        _fail(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
        return
    if not input_file.is_file():
        _fail(f"{input_file} is not a file")
    if input_file.suffix.lower() not in (".csv", ".xlsx"):
        _fail(f"{input_file.name}: only .csv and .xlsx files can be validated")
    config = _load(source) if source else None
    default_crs = crs or (config.crs if config else None)
    if crs and resolve_crs(crs) is None:
        _fail(f"unknown coordinate system {crs!r} (use cgcs2000, wgs84, gcj02 or bd09)")
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"--out-dir {out_dir} exists and is not a directory")

    def read(offset: int) -> tuple[list[dict[str, Any]], int, bool]:
        try:
            return read_rows(
                input_file,
                encoding=encoding,
                delimiter=config.delimiter if config else None,
                sheet=config.sheet if config else None,
                offset=offset,
                limit=_CHUNK,
                number_key=_ROW_KEY,
            )
        except FileDamaged as exc:
            _fail(str(exc))
            raise  # unreachable
        except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
            _fail(f"{input_file.name} cannot be read ({type(exc).__name__})")
            raise  # unreachable

    first, consumed, done = read(0)
    if config is not None:
        mapping: Mapping[str, str] | None = config.mapping.get(entity)  # type: ignore[call-overload]
        if not mapping:
            _fail(f"source {config.name} has no mapping for {entity}")
            return
    elif not first and done:
        mapping = {}  # no data rows: nothing to map, two header-only outputs
    else:
        header = next((list(r) for r in first if DAMAGE_KEY not in r), [])
        mapping = _identity_mapping(entity, [h for h in header if h != _ROW_KEY])
    validator = VALIDATORS[entity]
    columns = _columns(entity)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create --out-dir {out_dir}: {exc.strerror or type(exc).__name__}")
    reasons: Counter[str] = Counter()
    field_reasons: Counter[str] = Counter()
    n_rows = n_ok = 0
    today = date.today()
    with (
        (out_dir / "accepted.csv").open("w", encoding="utf-8-sig", newline="") as acc_fh,
        (out_dir / "quarantined.csv").open("w", encoding="utf-8-sig", newline="") as q_fh,
        (out_dir / "field_problems.csv").open("w", encoding="utf-8-sig", newline="") as f_fh,
    ):
        accepted = csv.writer(acc_fh)
        quarantined = csv.writer(q_fh)
        problems = csv.writer(f_fh)
        accepted.writerow([c for c, _ in columns])
        quarantined.writerow(["row", "source_record_id", "reason_code", "field", "detail"])
        problems.writerow(["row", "source_record_id", "reason_code", "field", "detail"])
        rows, offset = first, consumed
        while True:
            n_rows += len(rows)
            records, rejects = (
                validator(rows, mapping=mapping, default_crs=default_crs, today=today) if rows else ([], [])
            )
            row_of = {str(r.get(mapping["source_record_id"], "")).strip(): r.get(_ROW_KEY, "") for r in rows}
            for rec in records:
                accepted.writerow(cells([render(getattr(rec, c)) for c, render in columns]))
                for prob in getattr(rec, "problems", ()):
                    field_reasons[str(prob.reason)] += 1
                    problems.writerow(
                        cells([row_of.get(rec.source_record_id, ""), rec.source_record_id, str(prob.reason),
                               prob.field, prob.detail])
                    )  # fmt: skip
            n_ok += len(records)
            for rej in sorted(rejects, key=lambda r: int(r.raw.get(_ROW_KEY, 0))):
                reasons[str(rej.reason)] += 1
                quarantined.writerow(
                    cells(
                        [
                            rej.raw.get(_ROW_KEY, ""),
                            rej.source_record_id or "",
                            str(rej.reason),
                            rej.field or "",
                            rej.detail,
                        ]
                    )
                )
            if done:
                break
            rows, consumed, done = read(offset)
            offset += consumed
    detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    field_detail = ", ".join(f"{k} {v}" for k, v in sorted(field_reasons.items()))
    typer.echo(
        f"{input_file.name}: {n_rows} rows, {n_ok} accepted, {sum(reasons.values())} quarantined"
        + (f" ({detail})" if detail else "")
    )
    typer.echo(
        f"of the accepted, {sum(field_reasons.values())} field problems (record kept, field left empty)"
        + (f" ({field_detail})" if field_detail else "")
    )
    typer.echo(
        f"wrote {out_dir / 'accepted.csv'}, {out_dir / 'quarantined.csv'} and {out_dir / 'field_problems.csv'}"
    )


def register(app: typer.Typer) -> None:
    """Add ``sources`` and ``validate`` to the ``gridflow`` command."""
    app.add_typer(sources_app, name="sources")
    app.command("validate")(validate)
