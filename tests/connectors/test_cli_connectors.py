"""`gridflow sources list|check` and `gridflow validate`: onboarding a city without a sync, and no
personal data in anything printed or written."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from connectors.records import CANONICAL_FIELDS
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import YICHANG_MAPPING, SandboxDataset
from connectors.sandbox.faults import write_drop_file
from connectors.validate import CHINA_TZ
from grid.settings import PROJECT_ROOT, get_settings
from gridflow_cli.main import app
from tests.pii_scan import find_pii
from tests.sandbox_labels import split_labels

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=CHINA_TZ)
CELLS = [("420502001001001", box(111.28, 30.68, 111.30, 30.70))]
TEMPLATE = (PROJECT_ROOT / "config" / "sources" / "yichang.toml").read_text(encoding="utf-8")
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset() -> SandboxDataset:
    return SandboxDataset(
        CELLS,
        city_code="420500000000",
        n_workers=300,
        n_enterprises=40,
        n_cases=120,
        seed=12,
        bad_fraction=0.06,
        as_of=AS_OF,
        roster=True,  # the bundled config syncs the roster too
    )


@pytest.fixture(scope="module")
def sandbox(dataset: SandboxDataset) -> Iterator[SandboxServer]:
    with SandboxServer(create_app(dataset)) as server:
        yield server


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty sources dir as GRIDFLOW_SOURCES_DIR."""
    d = tmp_path / "sources"
    d.mkdir()
    monkeypatch.setenv("GRIDFLOW_SOURCES_DIR", str(d))
    get_settings.cache_clear()
    yield d
    get_settings.cache_clear()


def http_source(directory: Path, name: str, base_url: str, **replace: str) -> None:
    text = TEMPLATE.replace('name = "yichang"', f'name = "{name}"').replace(
        'base_url = "http://127.0.0.1:8765"', f'base_url = "{base_url}"'
    )
    text = text.replace("max_attempts = 5", "max_attempts = 1")
    for old, new in replace.items():
        text = text.replace(old, new)
    (directory / f"{name}.toml").write_text(text, encoding="utf-8")


def file_source(directory: Path, name: str, folder: Path) -> None:
    text = TEMPLATE.replace('name = "yichang"', f'name = "{name}"').replace(
        'kind = "http"\nbase_url = "http://127.0.0.1:8765"', f'kind = "file"\nfolder = "{folder}"'
    )
    (directory / f"{name}.toml").write_text(text, encoding="utf-8")


def no_pii(text: str) -> None:
    assert find_pii(text) == [], "personal data in CLI output"


# --- sources list / check ---------------------------------------------------------------------


def test_sources_list_shows_every_file_and_flags_bad_ones(sources: Path, tmp_path: Path) -> None:
    """Rule: list names each source with kind, city, entities and location; an invalid file is
    listed with its problem and the command exits 1."""
    http_source(sources, "yichang", "http://127.0.0.1:8765")
    file_source(sources, "xiangyang", tmp_path / "drop")
    (sources / "broken.toml").write_text('name = "broken"\n', encoding="utf-8")
    result = runner.invoke(app, ["sources", "list"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("broken") and "INVALID" in lines[0]
    assert lines[1].startswith("xiangyang") and " file " in lines[1] and str(tmp_path / "drop") in lines[1]
    assert lines[2].startswith("yichang") and "http://127.0.0.1:8765" in lines[2]
    assert "entities=enterprises,workers" in lines[2] and "enabled" in lines[2]


def test_sources_check_fetches_one_page_per_entity(sources: Path, sandbox: SandboxServer) -> None:
    """Rule: check validates the file, fetches a page of each entity and prints counts and
    quarantine reasons - and no ID or phone number."""
    http_source(sources, "yichang", sandbox.base_url)
    result = runner.invoke(app, ["sources", "check", "yichang"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "yichang: configuration valid (http, 420500000000" in out
    assert "enterprises: fetched 40 of 40 rows (first page)" in out
    assert "workers: fetched 300 of 300 rows (first page)" in out
    assert "quarantined" in out and "bad_id_checksum" in out
    assert out.rstrip().endswith("yichang: ok")
    no_pii(out)


def test_sources_check_reports_drift_and_exits_1(sources: Path, sandbox: SandboxServer) -> None:
    """Rule: breaking schema drift (a required field renamed) is reported in one sentence."""
    http_source(
        sources, "drifty", sandbox.base_url, **{'"/api/v1/{entity}"': '"/api/v1/{entity}?fault=drift"'}
    )
    result = runner.invoke(app, ["sources", "check", "drifty"])
    assert result.exit_code == 1
    assert (
        "DRIFT: workers page lacks the required field 'sfzh' (id_number) in every one of its 300 rows "
        "(renamed or dropped by the source); new field(s) 'sfzh_new' may be the new name"
    ) in result.output
    assert "DRIFT: cases page lacks the required field 'ajlx'" in result.output
    assert "source drifty has 3 problem(s)" in result.output  # enterprises, workers and cases each drifted
    no_pii(result.output)


def test_sources_check_unreachable_is_one_sentence(sources: Path) -> None:
    """Rule: an unreachable source is reported per entity in one sentence; exit 1."""
    http_source(sources, "down", "http://127.0.0.1:9")
    result = runner.invoke(app, ["sources", "check", "down"])
    assert result.exit_code == 1
    assert (
        "enterprises: FAILED - source down unreachable at http://127.0.0.1:9: connection refused after 1 attempt"
        in (result.output)
    )


def test_sources_check_unknown_name(sources: Path) -> None:
    """Rule: an unknown source name says which file it looked for."""
    result = runner.invoke(app, ["sources", "check", "nowhere"])
    assert result.exit_code == 1 and "no source named 'nowhere'" in result.output


def test_sources_check_a_file_drop_shows_waiting_files_and_writes_nothing(
    sources: Path, tmp_path: Path, dataset: SandboxDataset
) -> None:
    """Rule: for a file drop, check reads the first page of ready files, lists waiting (partial)
    files, and never writes the ledger."""
    drop = tmp_path / "drop"
    write_drop_file(
        drop, "enterprises_20260301.csv", [r.row for r in dataset.rows("enterprises")], encoding="gbk"
    )
    write_drop_file(drop, "workers_20260301.csv", [r.row for r in dataset.rows("workers")], cut_mid_row=True)
    file_source(sources, "dropcity", drop)
    result = runner.invoke(app, ["sources", "check", "dropcity"])
    assert result.exit_code == 0, result.output
    assert "enterprises: fetched 40 of 40 rows" in result.output
    assert "workers: fetched 0 of 0 rows" in result.output
    assert "waiting: workers_20260301.csv - SHA-256 does not match the manifest" in result.output
    assert not (drop / ".gridflow-ledger.json").exists()
    no_pii(result.output)


# --- validate ---------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("kind", "entity", "fmt", "encoding"),
    [
        pytest.param("worker", "workers", "csv", "gbk", id="workers, GBK CSV"),
        pytest.param("worker", "workers", "csv", "utf-8", id="workers, UTF-8 CSV"),
        pytest.param("worker", "workers", "xlsx", "utf-8", id="workers, XLSX"),
        pytest.param("enterprise", "enterprises", "csv", "utf-8-sig", id="enterprises, UTF-8 with BOM"),
        pytest.param("case", "cases", "csv", "gb18030", id="case reports, GB18030"),
    ],
)
def test_validate_writes_masked_accepted_and_reasoned_quarantine(
    sources: Path,
    tmp_path: Path,
    dataset: SandboxDataset,
    kind: str,
    entity: str,
    fmt: str,
    encoding: str,
) -> None:
    """Rule: validate --source uses the city's mapping; accepted.csv has the canonical fields with
    ID, phone, name and home address masked; quarantined.csv has row number, record id, reason
    code, field and detail for exactly the rows with a record problem; field_problems.csv the same
    for the accepted rows with a field left empty (issue #21); no raw personal value anywhere."""
    http_source(sources, "yichang", "http://127.0.0.1:8765")
    rows = [r.row for r in dataset.rows(entity)]
    infile = write_drop_file(tmp_path, f"export.{fmt}", rows, fmt=fmt, encoding=encoding)  # type: ignore[arg-type]
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["validate", str(infile), "--kind", kind, "--out-dir", str(out), "--source", "yichang"]
    )
    assert result.exit_code == 0, result.output
    labels = dataset.labels(entity)
    bad, kept = split_labels(entity, labels)
    accepted, quarantined = read_csv(out / "accepted.csv"), read_csv(out / "quarantined.csv")
    problems = read_csv(out / "field_problems.csv")
    assert {r["source_record_id"]: r["reason_code"] for r in problems} == kept
    assert len(problems) == len(kept)
    assert entity == "cases" or kept, "the sandbox has field problems of workers and enterprises"
    required, optional = CANONICAL_FIELDS[entity]
    assert set(accepted[0]) == set(required) | set(optional)
    assert {r["source_record_id"] for r in accepted} == set(labels) - set(bad)
    assert {r["source_record_id"]: r["reason_code"] for r in quarantined} == bad
    assert list(quarantined[0]) == ["row", "source_record_id", "reason_code", "field", "detail"]
    order = [r.record_id for r in dataset.rows(entity)]
    for q in quarantined + problems:  # the row number points at the record in the file (header = row 1)
        assert int(q["row"]) == order.index(q["source_record_id"]) + 2
    assert f"{len(rows)} rows, {len(labels) - len(bad)} accepted, {len(bad)} quarantined" in result.output
    assert f"of the accepted, {len(kept)} field problems" in result.output
    for name in ("accepted.csv", "quarantined.csv", "field_problems.csv"):
        no_pii((out / name).read_text(encoding="utf-8-sig"))
    no_pii(result.output)
    if entity == "workers":
        sample = accepted[0]
        assert "*" in sample["id_number"] and sample["name"].count("*") >= 1
        assert sample["address"].endswith("***")
    if entity == "cases":
        assert all(r["description"].endswith("characters]") for r in accepted)


def test_validate_with_canonical_column_names(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: without --source the columns must be the canonical field names (the template a city
    fills in); --crs declares the coordinate system."""
    reverse = {city: canon for canon, city in YICHANG_MAPPING["enterprises"].items()}
    rows = [{reverse[k]: v for k, v in r.row.items()} for r in dataset.rows("enterprises")]
    infile = write_drop_file(tmp_path, "qiye.csv", rows)
    result = runner.invoke(
        app,
        ["validate", str(infile), "--kind", "enterprise", "--out-dir", str(tmp_path / "o"), "--crs", "gcj02"],
    )
    assert result.exit_code == 0, result.output
    whole, kept = split_labels("enterprises", dataset.labels("enterprises"))
    reasons = Counter(r["reason_code"] for r in read_csv(tmp_path / "o" / "quarantined.csv"))
    assert reasons == Counter(whole.values())
    problems = Counter(r["reason_code"] for r in read_csv(tmp_path / "o" / "field_problems.csv"))
    assert problems == Counter(kept.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--kind", "worker"], "lacks the column(s) source_record_id", id="city names without --source"
        ),
        pytest.param(
            ["--kind", "person"], "--kind must be one of worker, enterprise, case", id="unknown kind"
        ),
        pytest.param(
            ["--kind", "worker", "--crs", "BJ54"], "unknown coordinate system 'BJ54'", id="unknown crs"
        ),
    ],
)
def test_validate_refuses_with_one_sentence(
    tmp_path: Path, dataset: SandboxDataset, args: list[str], message: str
) -> None:
    """Rule: a file or option validate cannot use is refused with one sentence, exit 1."""
    infile = write_drop_file(tmp_path, "w.csv", [r.row for r in dataset.rows("workers")][:5])
    result = runner.invoke(app, ["validate", str(infile), "--out-dir", str(tmp_path / "o"), *args])
    assert result.exit_code == 1
    assert message in result.output


def test_validate_streams_a_large_file_in_chunks(sources: Path, tmp_path: Path) -> None:
    """Rule: files larger than one chunk (5000 rows) are validated completely."""
    big = SandboxDataset(
        CELLS, city_code="420500000000", n_workers=6200, n_enterprises=5, seed=2, as_of=AS_OF
    )
    http_source(sources, "yichang", "http://127.0.0.1:8765")
    infile = write_drop_file(tmp_path, "big.csv", [r.row for r in big.rows("workers")])
    result = runner.invoke(
        app,
        [
            "validate",
            str(infile),
            "--kind",
            "worker",
            "--out-dir",
            str(tmp_path / "o"),
            "--source",
            "yichang",
        ],
    )
    assert result.exit_code == 0, result.output
    whole, kept = split_labels("workers", big.labels("workers"))
    assert len(read_csv(tmp_path / "o" / "accepted.csv")) == 6200 - len(whole)
    assert len(read_csv(tmp_path / "o" / "quarantined.csv")) == len(whole)
    assert len(read_csv(tmp_path / "o" / "field_problems.csv")) == len(kept)
