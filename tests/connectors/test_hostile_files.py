"""No row lost to a bad file: the reader accounts for every physical line, every ``gridflow``
command that takes a file answers the hostile corpus (tests/data/hostile) with a clear sentence and
never a traceback, and what the project writes cannot run as a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from connectors.file import MAX_FIELD, _csv_records, read_rows
from connectors.records import DAMAGE_KEY
from connectors.validate import validate_workers
from gridflow_cli.main import app
from tests.data.hostile.make_corpus import HEADER, _row

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"
HOSTILE = sorted(p for p in CORPUS.iterdir() if p.suffix in (".csv", ".xlsx", ".geojson"))
runner = CliRunner()
SUMMARY = re.compile(r": (\d+) rows, (\d+) accepted, (\d+) quarantined")
MAPPING = {f: f for f in ("source_record_id", "source_updated_at", "id_number", "name", "lon", "lat", "crs")}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("name", "rows", "reasons"),
    [
        pytest.param("unclosed_quote.csv", 50, {"malformed_row": 1}, id="unclosed quote: one line, not 40"),
        pytest.param("field_over_limit.csv", 10, {"field_too_long": 1}, id="field over the limit"),
        pytest.param(
            "quoted_field_over_limit.csv", 4, {"field_too_long": 1}, id="quoted field over the limit"
        ),
        pytest.param(
            "ragged_rows.csv",
            10,
            {"ragged_row": 1},
            id="more values quarantined; fewer values: the record kept, missing coordinates a field problem",
        ),
        pytest.param("text_after_quote.csv", 8, {"malformed_row": 1}, id="text after a closing quote"),
        pytest.param("formula_ids.csv", 6, {}, id="formula-leading ids"),
        pytest.param("header_only.csv", 0, {}, id="header only"),
        pytest.param("empty.csv", 0, {}, id="empty file"),
    ],
)
def test_validate_accounts_for_every_line_of_a_damaged_file(
    name: str, rows: int, reasons: dict[str, int], tmp_path: Path
) -> None:
    """Rule: rows in = accepted + quarantined, every damaged line quarantined with its reason."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["validate", "--kind", "worker", str(CORPUS / name), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    m = SUMMARY.search(result.output)
    assert m is not None, result.output
    n, ok, bad = (int(g) for g in m.groups())
    assert (n, n) == (rows, ok + bad)
    accepted, quarantined = _read_csv(out / "accepted.csv"), _read_csv(out / "quarantined.csv")
    assert (len(accepted), len(quarantined)) == (ok, bad)
    got: dict[str, int] = {}
    for q in quarantined:
        got[q["reason_code"]] = got.get(q["reason_code"], 0) + 1
        assert q["detail"] and "x" * 50 not in q["detail"]  # a reason, never the value
    assert got == reasons
    problems = [p["reason_code"] for p in _read_csv(out / "field_problems.csv")]
    assert problems == (["missing_coordinates"] if name == "ragged_rows.csv" else [])


def test_the_unclosed_quote_is_named_by_its_line(tmp_path: Path) -> None:
    runner.invoke(
        app, ["validate", "--kind", "worker", str(CORPUS / "unclosed_quote.csv"), "--out-dir", str(tmp_path)]
    )
    (q,) = _read_csv(tmp_path / "quarantined.csv")
    assert q["detail"] == "line 11: a quote opened here is never closed" and q["row"] == "11"


def test_validate_neutralises_formula_cells(tmp_path: Path) -> None:
    """Rule: a cell starting with = + - @ tab or CR is written with a leading apostrophe."""
    runner.invoke(
        app, ["validate", "--kind", "worker", str(CORPUS / "formula_ids.csv"), "--out-dir", str(tmp_path)]
    )
    ids = [r["source_record_id"] for r in _read_csv(tmp_path / "accepted.csv")]
    assert ids == ["r1", "r2", "r3", '\'=HYPERLINK("http://x.example")', "'+r5", "'-r6"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("garbage.xlsx", "garbage.xlsx is not a readable XLSX workbook", id="garbage xlsx"),
        pytest.param("truncated.xlsx", "truncated.xlsx is not a readable XLSX workbook", id="truncated xlsx"),
        pytest.param("not_text.csv", "not_text.csv is neither UTF-8 nor GB18030/GBK text", id="binary csv"),
    ],
)
def test_validate_refuses_an_unreadable_file_in_one_sentence(name: str, message: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate", "--kind", "worker", str(CORPUS / name), "--out-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_out_dir_naming_a_file_is_a_clear_error(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    result = runner.invoke(
        app, ["validate", "--kind", "worker", str(CORPUS / "formula_ids.csv"), "--out-dir", str(taken)]
    )
    assert result.exit_code == 1 and "exists and is not a directory" in result.output
    assert taken.read_text() == "x"


def _commands(path: Path, tmp: Path) -> list[list[str]]:
    return [
        ["validate", "--kind", "worker", str(path), "--out-dir", str(tmp / "v")],
        ["validate", "--kind", "case", str(path), "--out-dir", str(tmp / "c")],
        ["map", str(path), "--out", str(tmp / "map.csv"), "--crs", "wgs84"],
        ["cells", "import", str(path)],
    ]


@pytest.mark.parametrize("path", HOSTILE, ids=[p.name for p in HOSTILE])
def test_no_command_taking_a_file_tracebacks_on_the_hostile_corpus(
    path: Path, database_url: str, tmp_path: Path
) -> None:
    """Rule: every gridflow command that takes a file answers damage with a sentence (exit 1) or a
    result (exit 0), never a traceback."""
    for args in _commands(path, tmp_path):
        result = runner.invoke(app, args)
        where = f"gridflow {' '.join(args[:2])} {path.name}"
        assert result.exception is None or isinstance(result.exception, SystemExit), (where, result.exception)
        assert "Traceback" not in result.output, where
        assert result.exit_code in (0, 1), (where, result.exit_code, result.output)
        if result.exit_code == 1:
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert lines and any(line.startswith("gridflow: ") for line in lines), (where, result.output)


def test_map_neutralises_formula_ids(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "map.csv"
    result = runner.invoke(app, ["map", str(CORPUS / "formula_ids.csv"), "--out", str(out), "--crs", "wgs84"])
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in _read_csv(out)][3:] == ['\'=HYPERLINK("http://x.example")', "'@SUM(A1)", "'-2+3"]


def test_a_cell_file_naming_an_unknown_crs_is_refused(database_url: str) -> None:
    result = runner.invoke(app, ["cells", "import", str(CORPUS / "bogus_crs.geojson")])
    assert result.exit_code == 1 and "EPSG:999999" in result.output, result.output


# -- property: generated damage ----------------------------------------------------------------

_DAMAGE = st.sampled_from(
    ["none", "open_quote", "long_field", "extra_values", "fewer_values", "junk_quote", "blank"]
)


def _damaged(row: str, how: str) -> str:
    if how == "open_quote":
        return row.replace(",测试", ',"测试', 1)
    if how == "long_field":
        return row.replace(",测试", "," + "y" * (MAX_FIELD + 1) + "测试", 1)
    if how == "extra_values":
        return row + ",多余"
    if how == "fewer_values":
        return row.rsplit(",", 2)[0]
    if how == "junk_quote":
        return row.replace(",测试", ',"测"试', 1)
    if how == "blank":
        return ""
    return row


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage=st.lists(_DAMAGE, min_size=1, max_size=90), page=st.integers(min_value=1, max_value=40))
def test_rows_in_equal_accepted_plus_quarantined_whatever_the_damage(
    damage: list[str], page: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Property: every physical line is in exactly one record; every non-blank record is one row;
    rows in = accepted + quarantined, read in pages of any size."""
    lines = [_damaged(_row(i), how) for i, how in enumerate(damage, start=1)]
    text = "\n".join([HEADER, *lines]) + "\n"
    records = list(_csv_records(io.StringIO(text, newline=""), ","))
    assert sum(r.lines for r in records) == len(lines) + 1
    assert [r.line for r in records if r.lines] == sorted(r.line for r in records if r.lines)

    path = tmp_path_factory.mktemp("prop") / "workers.csv"
    path.write_text(text, encoding="utf-8")
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        got, consumed, done = read_rows(path, delimiter=",", offset=offset, limit=page)
        rows += got
        offset += consumed
        if done:
            break
    expected = sum(1 for r in records[1:] if r.damage is not None or any(str(v).strip() for v in r.values))
    assert len(rows) == expected
    accepted, rejected = validate_workers(rows, mapping=MAPPING, default_crs=None, today=date(2026, 12, 1))
    assert len(accepted) + len(rejected) == len(rows)
    damaged = sum(1 for r in rows if DAMAGE_KEY in r)
    assert (
        sum(1 for r in rejected if str(r.reason) in ("malformed_row", "field_too_long", "ragged_row"))
        == damaged
    )
