"""Rule: the fast path of worker validation never changes a result (issue #20).

``connectors.validate._worker_fast_path`` answers the record for a clean row and None ("not
sure") for anything else, which the reference ``validate_row`` then decides. Every test here
runs ``validate_workers`` twice in one process, with the fast path (``FAST_PATH = True``, the
default) and with the reference alone, and requires exactly the same records and rejects: same
values, same types, same time zones, same reasons and details, same order.

Inputs: (a) a 20,000-worker sandbox city with its ~3 % bad rows, in pages and with duplicates
across a page; (b) the hostile-file corpus; (c) Hypothesis pages of clean rows with any field
mutated into a form the reference treats differently. A last test requires that the fast path
does take the clean sandbox rows, so that it cannot silently stop firing.
"""

from __future__ import annotations

import dataclasses
import random
import types
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum.cn import ric, uscc

import connectors.validate as validate
from connectors.file import FileDamaged, read_rows
from connectors.records import Reject, WorkerRecord
from connectors.sandbox.data import YICHANG_MAPPING, SandboxDataset
from connectors.validate import CHINA_TZ, validate_workers

MAPPING = YICHANG_MAPPING["workers"]
AS_OF = datetime(2026, 11, 20, 22, 0, tzinfo=CHINA_TZ)
TODAY = AS_OF.date()
PAGE = 500

# -- comparing both ways ---------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """A value with the types spelled out, so that 1 == 1.0 or two time zones naming the same
    instant do not pass for the same result."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        text = getattr(value, "source_updated_text", None)  # a cache the fast path keeps, not compared
        if text is not None:  # it must name the record's instant (read here as PostgreSQL reads it)
            assert datetime.fromisoformat(text) == value.source_updated_at  # type: ignore[attr-defined]
        return (
            type(value).__name__,
            tuple(
                _exact(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.name != "source_updated_text"
            ),
        )
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), repr(value.tzinfo), value.fold)
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(_exact(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _exact(v)) for k, v in value.items()))
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


def _both_ways(
    monkeypatch: pytest.MonkeyPatch,
    rows: Sequence[Mapping[str, Any]],
    *,
    mapping: Mapping[str, str] = MAPPING,
    default_crs: str | None = "gcj02",
    today: date = TODAY,
) -> tuple[list[WorkerRecord], list[Reject]]:
    """validate_workers with and without the fast path; asserts they agree exactly."""
    with monkeypatch.context() as m:
        m.setattr(validate, "FAST_PATH", False)
        ref_records, ref_rejects = validate_workers(
            rows, mapping=mapping, default_crs=default_crs, today=today
        )
    assert validate.FAST_PATH
    records, rejects = validate_workers(rows, mapping=mapping, default_crs=default_crs, today=today)
    assert [_exact(r) for r in records] == [_exact(r) for r in ref_records]
    assert [_exact(r) for r in rejects] == [_exact(r) for r in ref_rejects]
    assert records == ref_records and rejects == ref_rejects
    return records, rejects


# -- (a) the sandbox city --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_workers(sample_world) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    ds = SandboxDataset(
        [(c.code, c.geometry) for c in sample_world.cells],
        city_code="420500000000",
        n_workers=20_000,
        n_enterprises=2_000,
        as_of=AS_OF,
        names={d.code: d.name for d in sample_world.divisions},
        every_bad_kind=True,
    )
    return [dict(r.row) for r in ds.rows("workers")]


def test_sandbox_city_pages_give_the_same_result(
    sandbox_workers: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 sandbox workers (ok, legacy, full-width and lowercase-x IDs, address-only rows and
    ~3 % bad rows of every kind) in pages of 500: the same records and rejects both ways."""
    n_records = n_rejects = 0
    for i in range(0, len(sandbox_workers), PAGE):
        records, rejects = _both_ways(monkeypatch, sandbox_workers[i : i + PAGE])
        n_records += len(records)
        n_rejects += len(rejects)
    assert n_records + n_rejects == len(sandbox_workers)
    assert n_rejects > 0


def test_sandbox_rows_in_other_settings_give_the_same_result(
    sandbox_workers: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rows with another declared CRS (none, unknown, WGS84), an earlier ``today``
    (update times and births then in the future) and a mapping without the optional fields."""
    rows = sandbox_workers[:2000]
    for default_crs in (None, "bogus", "wgs84"):
        _both_ways(monkeypatch, rows, default_crs=default_crs)
    _both_ways(monkeypatch, rows, today=date(2024, 6, 1))
    _both_ways(monkeypatch, rows, today=date(1995, 1, 1))
    required = {k: MAPPING[k] for k in ("source_record_id", "source_updated_at", "id_number", "name")}
    _both_ways(monkeypatch, rows, mapping=required)
    _both_ways(monkeypatch, rows, mapping={**required, "address": "jzdz", "lon": "jd", "lat": "wd"})


def test_pages_with_duplicates_give_the_same_result(
    sandbox_workers: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that repeats record ids (identical copies, an older and a newer version, two
    conflicting versions of one time) takes the duplicate handling: the same result both ways."""
    rng = random.Random(20)
    page = [dict(r) for r in sandbox_workers[:PAGE]]
    page += [dict(r) for r in rng.sample(page, 40)]  # identical copies collapse
    for row in rng.sample(page[:PAGE], 20):  # a newer version wins
        page.append({**row, MAPPING["source_updated_at"]: "2026-11-20 21:59:59", MAPPING["name"]: "新名字"})
    for row in rng.sample(page[:PAGE], 10):  # differently written, same record
        page.append({**row, MAPPING["id_number"]: " " + str(row[MAPPING["id_number"]]).lower() + " "})
    for row in rng.sample(page[:PAGE], 10):  # conflicting versions of one time
        page.append({**row, MAPPING["phone"]: "13900000000"})
    rng.shuffle(page)
    _, rejects = _both_ways(monkeypatch, page)
    assert any(r.reason == "duplicate_in_page" for r in rejects)


# -- (b) the hostile-file corpus -------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"
HOSTILE_MAPPING = {
    f: f for f in ("source_record_id", "source_updated_at", "id_number", "name", "lon", "lat", "crs")
}


@pytest.mark.parametrize(
    "path", sorted(CORPUS.glob("*.csv")) + sorted(CORPUS.glob("*.xlsx")), ids=lambda p: p.name
)
def test_hostile_files_give_the_same_result(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hostile file's worker rows (damaged lines included), as connectors.file reads them,
    as written and with the time zone dropped from their update times (so that the fast path
    has clean rows to take among the damage)."""
    try:
        rows, _, _ = read_rows(path, offset=0, limit=10_000)
    except FileDamaged:
        return  # unreadable as a whole: no rows to validate
    for today in (date(2026, 12, 1), date(2026, 11, 1)):
        for default_crs in (None, "gcj02"):
            _both_ways(monkeypatch, rows, mapping=HOSTILE_MAPPING, default_crs=default_crs, today=today)
            naive = [
                {**r, "source_updated_at": str(r["source_updated_at"])[:19]}
                if "source_updated_at" in r
                else r
                for r in rows
            ]
            _both_ways(monkeypatch, naive, mapping=HOSTILE_MAPPING, default_crs=default_crs, today=today)


# -- (c) clean rows, mutated -----------------------------------------------------------------

_AREAS = ("420502", "420506", "420581", "110101", "500233", "710000", "810000", "990101", "000000")
_FULLWIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def _id(area: str, birth: date, seq: int) -> str:
    body = f"{area}{birth:%Y%m%d}{seq:03d}"
    return body + ric.calc_check_digit(body + "0")


def _credit(n: int) -> str:
    body = f"91420500MA49{n:05d}"
    return body + uscc.calc_check_digit(body)


@st.composite
def clean_rows(draw: st.DrawFn) -> dict[str, Any]:
    birth = draw(st.dates(min_value=date(1940, 1, 1), max_value=date(2008, 12, 31)))
    updated = draw(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 11, 21, 23, 59, 59)))
    return {
        "ywid": draw(st.sampled_from(["a1", "a2", "a3", "b1", "w-000123", "f5dd875dec43d7"])),
        "gxsj": updated.replace(microsecond=0).isoformat(sep=draw(st.sampled_from([" ", "T"]))),
        "sfzh": draw(st.sampled_from(_X_IDS))
        if draw(st.integers(0, 5)) == 0
        else _id(draw(st.sampled_from(_AREAS[:3])), birth, draw(st.integers(0, 999))),
        "xm": draw(st.sampled_from(["张伟", "王芳", "欧阳娜娜", "李"])),
        "xb": draw(st.sampled_from(["1", "2", "男", "女"])),
        "csrq": f"{birth:%Y-%m-%d}",
        "lxdh": draw(st.sampled_from(["13812345678", "19900001111", "", "0717-6234567"])),
        "dwtyxydm": _credit(draw(st.integers(0, 50))),
        "jzdz": "湖北省宜昌市西陵区云集路12号",
        "jd": f"{draw(st.floats(110.0, 112.0)):.6f}",
        "wd": f"{draw(st.floats(29.5, 31.5)):.6f}",
        "zbx": draw(st.sampled_from(["", "gcj02"])),
    }


def _pad(s: str) -> list[Any]:
    return [f" {s}", f"{s} ", f"\t{s}\n", f"\u3000{s}", s.translate(_FULLWIDTH)]


# Per city field: ways to write it that the reference may treat differently from the clean value.
_VALUES: dict[str, list[Any]] = {
    "ywid": [None, "", "  ", " a1 ", True, 17, 17.0, "a1\u3000", "ａ1"],
    "gxsj": [
        None,
        "",
        " ",
        "2026-01-05 08:00:00",
        " 2026-01-05 08:00:00",
        "2026-01-05 08:00:00 ",
        "2026-01-05T08:00:00",
        "2026-01-05\t08:00:00",
        "2026-01-05 08:00",
        "2026-01-05",
        "2026/01/05 08:00:00",
        "2026.1.5 08:00:00",
        "2026年1月5日 08:00:00",
        "20260105080000",
        "2026-01-05T08:00:00+08:00",
        "2026-01-05T08:00+08",
        "2026-01-05T00:00:00Z",
        "20260105T080000.123",
        "２０２６-01-05 08:00:00",
        "1767571200",
        "1767571200000",
        1767571200,
        1767571200000,
        1767571200.5,
        float("nan"),
        float("inf"),
        True,
        "2026-02-30 08:00:00",
        "2026-13-01 08:00:00",
        "2026-11-22 00:00:00",
        "2026-11-21 23:59:59",
        "2099-01-01 00:00:00",
        "1899-12-31 23:59:59",
        datetime(2026, 1, 5, 8),
        datetime(2026, 1, 5, 8, tzinfo=CHINA_TZ),
        "2026-W02-1T08:00:00",
    ],
    "sfzh": [
        None,
        "",
        "  ",
        420502198503120011,
        4.205021985e17,
        "420502850312001",
        "４２０５０２８５０３１２００１",
        "4205021985031200",
        "42050219850312001",
        "4205021985031200112",
        "42050219850312001A",
        "420502-19850312-0011",
        "420502 19850312 0011",
        "42050220991231001X",
        _id("420502", date(1899, 12, 31), 1),
        _id("420502", date(2026, 11, 21), 1),
        _id("420502", date(2026, 11, 20), 1),
        _id("420502", date(1900, 1, 1), 1),
        "420502199902300011",
        "420502199913010011",
    ],
    "xm": [None, "", " ", " 张伟 ", "张 伟", "张\u3000伟", "John Smith", "张伟\t", 42, "Ａｌｉ"],
    "xb": [None, "", " 1", "M", "f", "FEMALE", "男性", "未知", "x", 1, 2, 1.0, True],
    "csrq": [
        None,
        "",
        " ",
        "1985/03/12",
        "1985.3.12",
        "1985年3月12日",
        "19850312",
        " 1985-03-12 ",
        "1985-3-12",
        "1985-02-30",
        "1985-13-45",
        "不详",
        "1985-03-12 00:00:00",
        "1985-03-12T00:00:00",
        "１９８５-03-12",
        "2024-W01-1",
        date(1985, 3, 12),
        datetime(1985, 3, 12),
        19850312,
        1985.0,
    ],
    "lxdh": [
        "-0717-6234567-",
        "0717--6234567",
        "010-62345678",
        "0086-13812345678",
        "+86 07176234567",
        "+86  13812345678",
        "+86 1381234567",
        "+86 12812345678",
        "+87 13812345678",
        None,
        "",
        " ",
        0,
        False,
        0.0,
        "+86 13812345678",
        "+8613812345678",
        "008613812345678",
        "8613812345678",
        "138-1234-5678",
        "(0717) 6234567",
        "0717-123",
        "+1 415 555 0100",
        "12345678901",
        "1381234567",
        "138123456789",
        " 13812345678",
        "13812345678 ",
        "１３８１２３４５６７８",
        13812345678,
        13812345678.0,
        "+86 717 6234567",
        "10012345678",
    ],
    "dwtyxydm": [
        None,
        "",
        " ",
        _credit(1).lower(),
        f" {_credit(1)} ",
        _credit(1)[:17] + "0",
        _credit(2)[:17],
        "91420500MA49-00001" + _credit(1)[-1],
        _credit(1).translate(_FULLWIDTH),
        914205001234567890,
        "91420500MA4900001I",
        "9142050OMA49000010",
    ],
    "jzdz": [None, "", "  ", " 宜昌市 ", 12, 0, False, "\u3000"],
    "jd": [
        None,
        "",
        " ",
        "0",
        "0.0",
        0.0,
        0,
        "-0",
        "nan",
        "NaN",
        "null",
        "None",
        "-",
        "inf",
        "-inf",
        float("nan"),
        float("inf"),
        111.3,
        111,
        True,
        " 111.3 ",
        "111.3\n",
        "１１１.３",
        "1.113e2",
        "1_11.3",
        "139.6917",
        "-74.0060",
        "200",
        "abc",
        "111,3",
    ],
    "wd": [
        None,
        "",
        " ",
        "0",
        "0.0",
        0.0,
        "nan",
        "null",
        "-",
        "inf",
        float("nan"),
        30.7,
        30,
        " 30.7 ",
        "３０.７",
        "35.6895",
        "-6.2088",
        "95",
        "abc",
        "3.07e1",
        "60",
    ],
    "zbx": [
        None,
        " ",
        "GCJ-02",
        "gcj02 ",
        "wgs84",
        "WGS-84",
        "EPSG:4326",
        "bd09",
        "baidu",
        "cgcs2000",
        "4490",
        4490,
        "BJ54",
        "XIAN80",
        "北京54",
        "unknown",
    ],
}


_X_IDS = [i for i in (_id("420502", date(1985, 3, 12), n) for n in range(300)) if i.endswith("X")][:3]
# Other ways to write a field's clean text value.
_TRANSFORMS: list[Any] = [
    str.lower,
    str.upper,
    lambda s: f" {s}",
    lambda s: f"{s} ",
    lambda s: f"\t{s}\n",
    lambda s: f"\u3000{s}",
    lambda s: s.translate(_FULLWIDTH),
    lambda s: s.replace("-", "/"),
    lambda s: s[:-1],
    lambda s: s + "0",
]
_MUTATIONS: dict[str, Any] = {f: st.sampled_from(v) for f, v in _VALUES.items()}
_MUTATIONS["sfzh"] = st.one_of(
    _MUTATIONS["sfzh"],
    st.builds(
        _id, st.sampled_from(_AREAS), st.dates(date(1890, 1, 1), date(2030, 1, 1)), st.integers(0, 999)
    ),
)


@st.composite
def mutated_pages(draw: st.DrawFn) -> list[dict[str, Any]]:
    page = []
    for _ in range(draw(st.integers(1, 8))):
        row = draw(clean_rows())
        if draw(st.integers(0, 2)) == 0:  # (0, 0), or one coordinate, or both as floats
            how = draw(st.sampled_from(["zero", "zero-str", "lon-only", "floats", "swap"]))
            if how == "zero":
                row["jd"], row["wd"] = 0.0, 0.0
            elif how == "zero-str":
                row["jd"], row["wd"] = "0", "0.000000"
            elif how == "lon-only":
                row["wd"] = draw(st.sampled_from([None, ""]))
            elif how == "floats":
                row["jd"], row["wd"] = float(row["jd"]), float(row["wd"])
            else:
                row["jd"], row["wd"] = row["wd"], row["jd"]
        for field in draw(st.lists(st.sampled_from(sorted(_MUTATIONS)), max_size=3, unique=True)):
            if isinstance(row[field], str) and draw(st.booleans()):
                row[field] = draw(st.sampled_from(_TRANSFORMS))(row[field])
            else:
                row[field] = draw(_MUTATIONS[field])
        if draw(st.integers(0, 4)) == 0:  # a field missing from the row altogether
            row.pop(draw(st.sampled_from(sorted(row))))
        page.append(row)
    return page


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    page=mutated_pages(),
    default_crs=st.sampled_from(["gcj02", "wgs84", None, "bogus"]),
    today=st.sampled_from([TODAY, date(2026, 1, 5), date(1999, 12, 31)]),
)
def test_mutated_clean_rows_give_the_same_result(
    page: list[dict[str, Any]], default_crs: str | None, today: date
) -> None:
    """Property: whatever is done to a clean row (whitespace, full-width digits, lowercase x,
    15-digit IDs, blank/None/missing fields, numbers for text, epoch times, (0, 0), points
    outside China, bad check characters, future dates, other date formats, +86 phones, other
    CRS names), the page's records and rejects are the reference's."""
    with pytest.MonkeyPatch.context() as mp:
        _both_ways(mp, page, default_crs=default_crs, today=today)


def test_each_mutation_alone_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listed value and every text transform, alone in a clean row (so that nothing else
    sends the row to the reference), on 12 clean rows, for three ``today``s (the last one before
    some of the births and update times the caches have seen)."""
    rng = random.Random(2026)
    clean: list[dict[str, Any]] = []
    for n in range(12):
        birth = date(1950, 1, 1) + (date(2005, 12, 31) - date(1950, 1, 1)) * rng.random()
        clean.append(
            {
                "ywid": f"w{n}",
                "gxsj": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 08:30:00",
                "sfzh": _X_IDS[n % 3] if n % 4 == 0 else _id("420502", birth, rng.randrange(1000)),
                "xm": rng.choice(["张伟", "王芳", "李"]),
                "xb": rng.choice(["1", "2", "男", "女"]),
                "csrq": f"{birth:%Y-%m-%d}",
                "lxdh": rng.choice(["13812345678", "", "0717-6234567"]),
                "dwtyxydm": _credit(n),
                "jzdz": "湖北省宜昌市西陵区云集路12号",
                "jd": f"{rng.uniform(110, 112):.6f}",
                "wd": f"{rng.uniform(29.5, 31.5):.6f}",
                "zbx": rng.choice(["", "gcj02"]),
            }
        )
    for today in (TODAY, date(2026, 1, 5), date(1999, 12, 31)):
        pages = [clean]
        for field, values in _VALUES.items():
            for value in values:
                pages.append([{**row, field: value} for row in clean])
            for transform in _TRANSFORMS:
                pages.append([{**row, field: transform(row[field])} for row in clean])
            pages.append([{k: v for k, v in row.items() if k != field} for row in clean])
        for page in pages:
            _both_ways(monkeypatch, page, today=today)


# -- the fast path does fire -----------------------------------------------------------------


def test_the_fast_path_takes_most_clean_sandbox_rows(sandbox_workers: list[dict[str, Any]]) -> None:
    """Rule: at least 90 % of the sandbox rows the reference accepts without a field problem are
    taken by the fast path (row by row: each with the reference's record), so that the
    equality tests above test a path that runs."""
    common, reference = validate._worker_validator(MAPPING, "gcj02", TODAY)
    fast = validate._worker_fast_path(common, MAPPING, TODAY)
    clean = taken = 0
    for row in sandbox_workers:
        try:
            expected = reference(row)
        except validate.FieldError:
            expected = None
        got = fast(row)
        if got is not None:
            assert expected is not None and _exact(got) == _exact(expected)
            assert type(got) is WorkerRecord and not got.problems
            with pytest.raises(dataclasses.FrozenInstanceError):
                got.name = "x"  # type: ignore[misc]
            taken += 1
        if expected is not None and not expected.problems:
            clean += 1
    assert clean > 18_000
    assert taken >= 0.9 * clean, f"fast path took {taken} of {clean} clean rows"


def test_a_validated_page_is_freed_without_the_cyclic_collector(
    sandbox_workers: list[dict[str, Any]],
) -> None:
    """Rule: validating a page leaves no reference cycle behind: its records, rejects and frames
    are freed by reference counting as soon as the caller drops them. (A cached credit-code error
    kept its traceback, which held the validating frames and with them every record of the chunk
    in a cycle; a first night then spent ~1.5 µs a record in Python's cyclic collector.) The
    sandbox pages carry bad credit codes, each seen more than once (cache misses and hits)."""
    import gc

    def bad_code(row: Mapping[str, Any]) -> bool:
        try:
            validate.normalise_uscc(row.get(MAPPING["enterprise_uscc"]), field="enterprise_uscc")
        except validate.FieldError:
            return True
        return False

    bad = [r for r in sandbox_workers if bad_code(r)]
    assert len(bad) >= 10
    again = [
        dict(r, **{MAPPING["source_record_id"]: f"again{i}"}) for i, r in enumerate(bad[:10])
    ]  # cache hits
    page = [*sandbox_workers[:PAGE], *(dict(r) for r in bad[:10]), *again]
    pages = [page, [dict(r) for r in page]]
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        validated = 0
        for rows in pages:
            records, rejects = validate_workers(rows, mapping=MAPPING, default_crs="gcj02", today=TODAY)
            validated += len(records)
            del records, rejects
        gc.collect()
        # Only this page's garbage counts: the session's Prefect harness runs threads of its own,
        # and a cycle one of them leaves meanwhile (anyio scopes, futures, their frames) is not
        # the validator's.
        left = [
            type(o).__name__
            for o in gc.garbage
            if isinstance(o, WorkerRecord | validate.FieldError)
            or (isinstance(o, types.FrameType) and o.f_code.co_filename == validate.__file__)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert validated > PAGE
    assert left == [], sorted(set(left))
