"""FileSource: CSV/XLSX drops in any of the encodings cities use, never a partial file, never a file
twice, and a cursor that resumes inside a file. Real files in a temporary folder, no mocks."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box

from connectors.config import SourceConfig, SourceConfigError, SourceRejected, load_source_config
from connectors.file import FileSource, detect_encoding, read_rows
from connectors.records import DAMAGE_DETAIL_KEY, DAMAGE_KEY, Reject
from connectors.sandbox.data import YICHANG_MAPPING, SandboxDataset
from connectors.sandbox.faults import write_drop_file
from connectors.source import Page, Source
from connectors.sources import open_source
from connectors.validate import CHINA_TZ, VALIDATORS
from tests.sandbox_labels import split_labels

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=CHINA_TZ)
CELLS = [
    ("420502001001001", box(111.28, 30.68, 111.30, 30.70)),
    ("420506100001001", box(111.32, 30.76, 111.35, 30.79)),
]
MAPPING = {e: m for e, m in YICHANG_MAPPING.items() if e != "cases"}


@pytest.fixture(scope="module")
def dataset() -> SandboxDataset:
    return SandboxDataset(
        CELLS,
        city_code="420500000000",
        n_workers=240,
        n_enterprises=30,
        seed=9,
        bad_fraction=0.06,
        as_of=AS_OF,
    )


def config(folder: Path, **over: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "drop_city",
            "display_name": "某市网格文件交换",
            "city_code": "420500000000",
            "kind": "file",
            "folder": folder,
            "crs": "gcj02",
            "mapping": MAPPING,
            "page_size": 100,
            **over,
        }
    )


def rows_of(dataset: SandboxDataset, entity: str = "workers") -> list[dict[str, Any]]:
    return [r.row for r in dataset.rows(entity)]


def read_all(source: FileSource, entity: str = "workers") -> list[Page]:
    return list(source.pages(entity, since=None))


def ids(pages: list[Page]) -> list[str]:
    return [r["ywid"] for p in pages for r in p.records]


def outcome(records: list[Any], rejects: list[Reject]) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """Validation results without the raw rows (an XLSX empty cell reads back as None, not '')."""
    return records, [(r.source_record_id, r.reason, r.field, r.detail) for r in rejects]


# --- configuration -----------------------------------------------------------------------------


def test_file_source_config_loads_with_a_folder_relative_to_the_file(tmp_path: Path) -> None:
    """Rule: kind = "file" needs a folder; a relative folder is relative to the config file."""
    text = (Path(__file__).parents[2] / "config" / "sources" / "yichang.toml").read_text(encoding="utf-8")
    text = text.replace('kind = "http"', 'kind = "file"\nfolder = "drop"\nencoding = "GBK"').replace(
        'base_url = "http://127.0.0.1:8765"\n', ""
    )
    path = tmp_path / "yichang.toml"
    path.write_text(text, encoding="utf-8")
    cfg = load_source_config(path)
    assert (cfg.kind, cfg.folder, cfg.encoding, cfg.ready) == ("file", tmp_path / "drop", "gbk", "manifest")
    assert set(cfg.mapping) == {"enterprises", "workers", "grid_officers", "cases"} and cfg.entities == [
        "enterprises",
        "workers",
        "grid_officers",
        "cases",
    ]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        pytest.param({"folder": None}, "folder is required for kind 'file'", id="no folder"),
        pytest.param({"encoding": "klingon"}, "unknown text encoding 'klingon'", id="unknown encoding"),
        pytest.param({"file_pattern": "*.csv"}, "must contain '{entity}'", id="pattern without entity"),
        pytest.param({"file_pattern": "../{entity}*"}, "inside the folder", id="pattern leaving the folder"),
        pytest.param(
            {"ready": "hope"}, "Input should be 'manifest' or 'settle'", id="unknown readiness rule"
        ),
    ],
)
def test_bad_file_source_config(tmp_path: Path, over: dict[str, Any], message: str) -> None:
    """Rule: file-source settings are checked at load, with the problem named."""
    from pydantic import ValidationError

    with pytest.raises((ValidationError, SourceConfigError)) as info:
        config(over.pop("folder", tmp_path), **over)
    assert message in str(info.value)


def test_open_source_picks_the_implementation_by_kind(tmp_path: Path) -> None:
    """Rule: open_source gives a FileSource for kind "file" and an HttpSource for kind "http";
    both are Sources."""
    from connectors.http import HttpSource

    with open_source(config(tmp_path)) as source:
        assert isinstance(source, FileSource) and isinstance(source, Source)
    http = config(tmp_path).model_copy(
        update={"kind": "http", "base_url": "http://127.0.0.1:9", "folder": None}
    )
    with open_source(http) as source:
        assert isinstance(source, HttpSource) and isinstance(source, Source)


# --- encodings and formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "encoding", "detected"),
    [
        pytest.param("csv", "utf-8", "utf-8", id="CSV in UTF-8"),
        pytest.param("csv", "utf-8-sig", "utf-8-sig", id="CSV in UTF-8 with BOM (Excel's 'CSV UTF-8')"),
        pytest.param("csv", "gbk", "gb18030", id="CSV in GBK (read as its superset GB18030)"),
        pytest.param("csv", "gb18030", "gb18030", id="CSV in GB18030"),
        pytest.param("xlsx", "utf-8", None, id="XLSX"),
    ],
)
@pytest.mark.parametrize("entity", ["workers", "enterprises"])
def test_every_encoding_gives_identical_validation_results(
    tmp_path: Path, dataset: SandboxDataset, entity: str, fmt: str, encoding: str, detected: str | None
) -> None:
    """Rule: the same rows in UTF-8, UTF-8+BOM, GBK, GB18030 or XLSX validate to identical records
    and rejects (real-format IDs and credit codes, full-width and legacy IDs, bad rows included)."""
    rows = rows_of(dataset, entity)
    write_drop_file(tmp_path, f"{entity}_20260301.{fmt}", rows, fmt=fmt, encoding=encoding)  # type: ignore[arg-type]
    source = FileSource(config(tmp_path, page_size=1000))
    (f,) = source.pending(entity)
    assert f.encoding == detected
    pages = read_all(source, entity)
    got = [r for p in pages for r in p.records]
    assert [r["ywid"] for r in got] == [r["ywid"] for r in rows]
    validate = VALIDATORS[entity]
    kw = {"mapping": MAPPING[entity], "default_crs": "gcj02", "today": AS_OF.date()}
    assert outcome(*validate(got, **kw)) == outcome(*validate(rows, **kw))
    labels = dataset.labels(entity)
    records, rejects = validate(got, **kw)
    whole, kept = split_labels(entity, labels)  # issue #21: record problems out, field problems kept
    assert {r.source_record_id: r.reason.value for r in rejects} == whole
    assert {r.source_record_id: r.problems[0].reason.value for r in records if r.problems} == kept


def test_variants_survive_gbk(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: full-width digits, lowercase x and Chinese text come back from a GBK file unchanged."""
    rows = rows_of(dataset)
    wanted = {"fullwidth_id", "lowercase_x", "legacy_id"}
    assert wanted <= set(dataset.labels("workers").values())
    write_drop_file(tmp_path, "workers.csv", rows, encoding="gbk")
    got = [r for p in read_all(FileSource(config(tmp_path))) for r in p.records]
    assert got == [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param("职工,ID\n".encode(), "utf-8", id="UTF-8"),
        pytest.param(b"\xef\xbb\xbf" + "职工\n".encode(), "utf-8-sig", id="UTF-8 with BOM"),
        pytest.param("职工\n".encode("gbk"), "gb18030", id="GBK"),
        pytest.param(b"plain ascii\n", "utf-8", id="ASCII is UTF-8"),
        pytest.param(b"\x81\x30\xff\x00", None, id="neither"),
    ],
)
def test_decode_ladder(data: bytes, expected: str | None) -> None:
    """Rule: BOM -> utf-8-sig; strict UTF-8 -> utf-8; else GB18030; else nothing."""
    assert detect_encoding(data) == expected


def test_a_gbk_row_deep_in_an_ascii_file_is_detected(tmp_path: Path) -> None:
    """Rule: the encoding is decided over the whole file, not a sample of its start."""
    body = "ywid,xm\n" + "".join(f"{i},a\n" for i in range(20_000)) + "20000,张三\n"
    (tmp_path / "workers.csv").write_bytes(body.encode("gbk"))
    rows, _, done = read_rows(tmp_path / "workers.csv")
    assert done and rows[-1] == {"ywid": "20000", "xm": "张三"}


def test_encoding_override(tmp_path: Path) -> None:
    """Rule: config.encoding wins over detection."""
    (tmp_path / "workers.csv").write_bytes("ywid,xm\n1,张三\n".encode("gbk"))
    write_manifest(tmp_path / "workers.csv")
    pages = read_all(FileSource(config(tmp_path, encoding="gbk")))
    assert pages[0].records == [{"ywid": "1", "xm": "张三"}]


def write_manifest(path: Path) -> None:
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n", encoding="ascii")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            "ywid\txm\n1\t张三\n2\t李四\n",
            [{"ywid": "1", "xm": "张三"}, {"ywid": "2", "xm": "李四"}],
            id="tabs sniffed",
        ),
        pytest.param(
            "ywid,xm\n1,张三\n\n,\n2,李四\n",
            [{"ywid": "1", "xm": "张三"}, {"ywid": "2", "xm": "李四"}],
            id="blank rows",
        ),
        pytest.param("ywid,xm\n1\n", [{"ywid": "1", "xm": None}], id="a short row is padded"),
        pytest.param(
            "ywid,xm\n1,张三,多余\n",
            [
                {
                    "ywid": "1",
                    "xm": "张三",
                    "_col3": "多余",
                    DAMAGE_KEY: "ragged_row",
                    DAMAGE_DETAIL_KEY: "line 2: 3 values for 2 columns",
                }
            ],
            id="extra cells kept, the row marked ragged for quarantine",
        ),
        pytest.param(
            ' ywid ,"xm"\n"1","张,三"\n', [{"ywid": "1", "xm": "张,三"}], id="quoted header and comma"
        ),
        pytest.param("ywid,xm\n", [], id="header only"),
    ],
)
def test_csv_shapes(tmp_path: Path, content: str, expected: list[dict[str, Any]]) -> None:
    """Rule: CSV dialects and ragged rows are read without losing or inventing values."""
    path = tmp_path / "workers.csv"
    path.write_text(content, encoding="utf-8")
    write_manifest(path)
    pages = read_all(FileSource(config(tmp_path)))
    assert [r for p in pages for r in p.records] == expected


# --- readiness: a partial file is never read ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        pytest.param({"manifest": False}, "no manifest (NAME.sha256) yet", id="no manifest yet"),
        pytest.param(
            {"cut_mid_row": True}, "SHA-256 does not match the manifest", id="cut mid-row: hash mismatch"
        ),
        pytest.param(
            {"cut_mid_row": True, "encoding": "gbk"}, "SHA-256 does not match", id="GBK file cut mid-row"
        ),
        pytest.param({"cut_mid_row": True, "fmt": "xlsx"}, "SHA-256 does not match", id="XLSX cut short"),
    ],
)
def test_a_partial_file_waits_and_is_read_once_complete(
    tmp_path: Path,
    dataset: SandboxDataset,
    kwargs: dict[str, Any],
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rule (manifest mode): a file without a matching NAME.sha256 is never read; it is read in
    full once the upload completes. The log names the file, never a row."""
    rows = rows_of(dataset)
    fmt = kwargs.get("fmt", "csv")
    name = f"workers_20260301.{fmt}"
    write_drop_file(tmp_path, name, rows, **kwargs)
    source = FileSource(config(tmp_path))
    with caplog.at_level(logging.WARNING):
        pages = read_all(source)
    assert ids(pages) == []
    (w,) = source.waiting("workers")
    assert w.name == name and w.why.startswith(why)
    write_drop_file(tmp_path, name, rows, fmt=fmt, encoding=kwargs.get("encoding", "utf-8"))
    assert ids(read_all(FileSource(config(tmp_path)))) == [r["ywid"] for r in rows]
    assert all(r["sfzh"] not in caplog.text for r in rows)


def test_settle_mode_waits_for_quiet_files_and_refuses_a_cut_row(
    tmp_path: Path, dataset: SandboxDataset
) -> None:
    """Rule (settle mode): a file is read once unchanged for settle_s seconds; a CSV ending
    mid-row waits even when quiet."""
    rows = rows_of(dataset)
    now = time.time()
    write_drop_file(tmp_path, "workers_new.csv", rows[:50], manifest=False)
    write_drop_file(
        tmp_path, "workers_old.csv", rows[50:100], manifest=False, mtime=datetime.now() - timedelta(hours=1)
    )
    write_drop_file(
        tmp_path,
        "workers_cut.csv",
        rows[100:150],
        manifest=False,
        cut_mid_row=True,
        mtime=datetime.now() - timedelta(hours=1),
    )
    source = FileSource(config(tmp_path, ready="settle", settle_s=600), clock=lambda: now)
    assert ids(read_all(source)) == [r["ywid"] for r in rows[50:100]]
    waiting = {w.name: w.why for w in source.waiting("workers")}
    assert waiting["workers_new.csv"].startswith("modified 0 s ago, less than the 600 s settle window")
    assert waiting["workers_cut.csv"] == "ends in the middle of a row: cut short"
    later = FileSource(config(tmp_path, ready="settle", settle_s=600), clock=lambda: now + 3600)
    assert ids(read_all(later)) == [r["ywid"] for r in rows[:50]]


# --- the ledger: a file twice changes nothing ----------------------------------------------


def test_a_file_delivered_twice_is_read_once(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: the ledger of file hashes: the same content under another name, or delivered again
    after it was committed, is not read again; new content is."""
    rows = rows_of(dataset)
    write_drop_file(tmp_path, "workers_a.csv", rows[:120])
    write_drop_file(tmp_path, "workers_a_copy.csv", rows[:120])
    assert ids(read_all(FileSource(config(tmp_path)))) == [r["ywid"] for r in rows[:120]]
    write_drop_file(tmp_path, "workers_a_again.csv", rows[:120], encoding="utf-8")
    write_drop_file(tmp_path, "workers_b.csv", rows[120:150])
    assert ids(read_all(FileSource(config(tmp_path)))) == [r["ywid"] for r in rows[120:150]]
    assert ids(read_all(FileSource(config(tmp_path)))) == []


def test_the_ledger_is_written_only_once_a_later_cursor_proves_the_commit(
    tmp_path: Path, dataset: SandboxDataset
) -> None:
    """Rule: a file enters the ledger only when fetch_page gets the cursor that follows its last
    page (the flow stores it in the page's transaction); a crash before that re-reads the last page."""
    rows = rows_of(dataset)
    write_drop_file(tmp_path, "workers.csv", rows[:150])
    source = FileSource(config(tmp_path))
    first = source.fetch_page("workers", cursor=None, since=None)
    last = source.fetch_page("workers", cursor=first.cursor_after, since=None)
    assert (len(first.records), len(last.records), first.total) == (100, 50, 150)
    assert last.cursor_after is not None
    assert not source.ledger.done("workers"), "not committed yet"
    crashed = FileSource(config(tmp_path)).fetch_page("workers", cursor=first.cursor_after, since=None)
    assert [r["ywid"] for r in crashed.records] == [r["ywid"] for r in last.records]
    end = FileSource(config(tmp_path)).fetch_page("workers", cursor=last.cursor_after, since=None)
    assert end.records == [] and end.cursor_after is None
    assert [v["name"] for v in FileSource(config(tmp_path)).ledger.done("workers").values()] == [
        "workers.csv"
    ]


def test_dry_reads_never_write_the_ledger(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: commit_ledger=False (sources check) reads everything and writes nothing."""
    write_drop_file(tmp_path, "workers.csv", rows_of(dataset))
    with open_source(config(tmp_path), dry_run=True) as source:
        assert len(ids(read_all(source))) == 240  # type: ignore[arg-type]
    assert not (tmp_path / ".gridflow-ledger.json").exists()
    assert len(ids(read_all(FileSource(config(tmp_path))))) == 240


# --- cursors ---------------------------------------------------------------------------------


def test_resume_inside_a_file_with_a_new_source_per_page(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: as in the flow, each page may come from a new FileSource; following the cursors reads
    every row exactly once, in file order, oldest file first, and a page never spans two files."""
    rows = rows_of(dataset)
    old = datetime.now() - timedelta(hours=2)
    write_drop_file(tmp_path, "workers_2.xlsx", rows[130:], fmt="xlsx")
    write_drop_file(tmp_path, "workers_1.csv", rows[:130], encoding="gbk", mtime=old)
    cursor: str | None = None
    sizes: list[int] = []
    got: list[str] = []
    while True:
        page = FileSource(config(tmp_path)).fetch_page("workers", cursor=cursor, since=None)
        sizes.append(len(page.records))
        got += [r["ywid"] for r in page.records]
        if page.cursor_after is None:
            break
        cursor = page.cursor_after
    assert got == [r["ywid"] for r in rows]
    assert sizes == [100, 30, 100, 10, 0]


def test_a_cursor_into_a_vanished_file_is_refused(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: if the file a stored cursor points into is gone, rows would be lost: SourceRejected,
    one sentence naming the file."""
    write_drop_file(tmp_path, "workers.csv", rows_of(dataset))
    page = FileSource(config(tmp_path)).fetch_page("workers", cursor=None, since=None)
    os.unlink(tmp_path / "workers.csv")
    with pytest.raises(SourceRejected) as info:
        FileSource(config(tmp_path)).fetch_page("workers", cursor=page.cursor_after, since=None)
    assert str(info.value) == (
        "source drop_city: the workers file workers.csv the stored cursor points into is gone or changed; "
        "put it back, or reset the workers cursor to re-read the drop folder"
    )


def test_a_foreign_cursor_is_refused(tmp_path: Path) -> None:
    """Rule: a cursor this source did not issue (e.g. an HTTP one left over) is SourceRejected."""
    with pytest.raises(SourceRejected, match="not one this file source issued"):
        FileSource(config(tmp_path)).fetch_page("workers", cursor="WzE3MDAwMDAwMDAsImFiYyJd", since=None)


def test_files_are_picked_per_entity_and_junk_is_ignored(tmp_path: Path, dataset: SandboxDataset) -> None:
    """Rule: file_pattern picks each entity's files; other suffixes, hidden and lock files are not read."""
    write_drop_file(tmp_path, "enterprises_20260301.csv", rows_of(dataset, "enterprises"))
    write_drop_file(tmp_path, "workers_20260301.csv", rows_of(dataset)[:10])
    (tmp_path / "workers_20260301.csv.part").write_text("ywid\nx\n", encoding="utf-8")
    (tmp_path / "~$workers.xlsx").write_text("lock", encoding="utf-8")
    (tmp_path / ".workers_hidden.csv").write_text("ywid\nx\n", encoding="utf-8")
    source = FileSource(config(tmp_path))
    assert len(ids(read_all(source, "enterprises"))) == 30
    assert len(ids(read_all(source, "workers"))) == 10


def test_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    """Rule: a drop folder that is not there (an unmounted share) is SourceUnavailable."""
    from connectors.config import SourceUnavailable

    with pytest.raises(SourceUnavailable, match=r"^source drop_city: drop folder .* does not exist$"):
        FileSource(config(tmp_path / "nope")).fetch_page("workers", cursor=None, since=None)
