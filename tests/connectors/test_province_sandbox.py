"""The sandbox province (issue #19 part A, docs/SANDBOX-TIMELINE.md): three cities onboarded only
through their source files, a reproducible timeline of simulated days, the /_sim control API over
real HTTP, offset paging that resumes safely, a GBK file drop, and cross-city workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.config import load_all_sources
from connectors.file import FileSource
from connectors.http import HttpSource
from connectors.sandbox.province import CityTimeline, province_plans
from connectors.sandbox.sim import ProvinceSandbox
from connectors.validate import CHINA_TZ, validate_cases, validate_enterprises, validate_workers
from grid.settings import PROJECT_ROOT

SOURCES = PROJECT_ROOT / "config" / "sources"
START = date(2026, 3, 1)
VOLUME = 0.02
SEED = 4242
CELLS = 300
CITIES = {"yichang": "420500000000", "jingzhou": "421000000000", "xiangyang": "420600000000"}
VALIDATE = {"enterprises": validate_enterprises, "workers": validate_workers, "cases": validate_cases}


@pytest.fixture(scope="module")
def plans():  # type: ignore[no-untyped-def]
    return province_plans(SOURCES, list(CITIES), cells_target=CELLS)


@pytest.fixture(scope="module")
def worlds(plans):  # type: ignore[no-untyped-def]
    from geodata.world import build_sample_world

    return {p.source: build_sample_world(p.city_code, cells_target=CELLS) for p in plans}


def _timeline(plans, worlds, source: str, *, seed: int = SEED) -> CityTimeline:  # type: ignore[no-untyped-def]
    plan = next(p for p in plans if p.source == source)
    return CityTimeline(
        plan, seed=seed, volume=VOLUME, start_date=START, province=list(CITIES.values()), world=worlds[source]
    )


@pytest.fixture(scope="module")
def province(plans, worlds, tmp_path_factory) -> Iterator[ProvinceSandbox]:  # type: ignore[no-untyped-def]
    drop = tmp_path_factory.mktemp("drop")
    with ProvinceSandbox(
        plans,
        seed=SEED,
        volume=VOLUME,
        start_date=START,
        ports=dict.fromkeys(["yichang", "jingzhou"], 0),
        drop_dirs={"xiangyang": drop},
        worlds=worlds,
    ) as sandbox:
        yield sandbox


def test_the_three_cities_come_from_their_source_files(plans) -> None:  # type: ignore[no-untyped-def]
    """Rule: a city is onboarded only through config/sources/<city>.toml: code, CRS, transport and
    paging are read from the file (荆州 is 4210…, offset paging, BD-09; 襄阳 a GBK file drop)."""
    by = {p.source: p for p in plans}
    assert {s: p.city_code for s, p in by.items()} == CITIES
    assert (by["yichang"].kind, by["yichang"].crs, by["yichang"].port) == ("http", "gcj02", 8765)
    assert (by["jingzhou"].kind, by["jingzhou"].crs, by["jingzhou"].port) == ("http", "bd09", 8766)
    assert by["xiangyang"].kind == "file" and by["xiangyang"].crs == "wgs84"
    configs = {c.name: c for c in load_all_sources(SOURCES)}
    assert configs["jingzhou"].paging == "offset" and configs["yichang"].paging == "cursor"
    assert configs["xiangyang"].folder == PROJECT_ROOT / ".state" / "drop" / "xiangyang"


def test_same_seed_same_days_other_seed_other_rows(plans, worlds) -> None:  # type: ignore[no-untyped-def]
    """Rule: the timeline is a pure function of its seed: the same seed gives the same rows on day 0
    and on day 3, another seed other rows."""
    a, b = _timeline(plans, worlds, "jingzhou"), _timeline(plans, worlds, "jingzhou")
    for day in (0, 3):
        a.advance(day)
        b.advance(day)
        for entity in ("enterprises", "workers", "cases"):
            assert a.rows(entity) == b.rows(entity)
            assert a.truth(entity) == b.truth(entity)
    other = _timeline(plans, worlds, "jingzhou", seed=SEED + 1)
    assert [r.row for r in other.rows("workers")] != [r.row for r in a.rows("workers")]


def test_a_day_adds_changes_and_removes_rows_inside_its_own_date(plans, worlds) -> None:  # type: ignore[no-untyped-def]
    """Rule: day N+1 differs from day N only by rows updated within day N+1's date (Asia/Shanghai):
    workers joining, changing (a newer version of the same id) and leaving (gone from the export,
    truth keeps them as not present), enterprises setting up unions, new case reports; every
    other row is served byte for byte as before."""
    tl = _timeline(plans, worlds, "yichang")
    tl.advance(2)
    seen: dict[str, int] = {"join": 0, "change": 0, "leave": 0, "union": 0, "case": 0}
    for day in range(3, 9):
        before = {e: {r.record_id: r for r in tl.rows(e)} for e in ("enterprises", "workers", "cases")}
        tl.advance(day)
        lo = datetime.combine(START + timedelta(days=day), datetime.min.time(), CHINA_TZ)
        hi = lo + timedelta(days=1)
        for entity, old in before.items():
            new = {r.record_id: r for r in tl.rows(entity)}
            truth = {t["id"]: t for t in tl.truth(entity)}
            for rid, row in new.items():
                if rid in old and old[rid] == row:
                    continue
                assert lo <= row.updated_at < hi, (entity, rid)
                assert row.row[tl.plan.mapping[entity]["source_updated_at"]] == row.updated_at.strftime(
                    "%Y-%m-%d %H:%M:%S"
                )
                if rid not in old:
                    seen["case" if entity == "cases" else "join"] += entity != "enterprises"
                elif entity == "workers":
                    seen["change"] += 1
                elif entity == "enterprises":
                    union = tl.plan.mapping["enterprises"]["union_established"]
                    seen["union"] += old[rid].row[union] == "0" and row.row[union] == "1"
            for rid in set(old) - set(new):
                assert entity == "workers" and truth[rid]["present"] is False
                seen["leave"] += 1
    assert all(seen.values()), seen


def test_day_0_carries_bad_rows_of_every_kind_the_generator_knows(plans, worlds) -> None:  # type: ignore[no-untyped-def]
    """Rule: even a CI-sized city (volume 0.02) has, on day 0, at least one bad row of each kind
    the generator makes for each entity - the single-city sandbox's kinds and the timeline's extra
    ones (ID format and birth date, blank names and kinds, unreadable coordinates, credit-code
    format, unrecognised union flag, zero workers affected) - and the roster's."""
    from connectors.sandbox.data import CASE_BAD_KINDS, ENTERPRISE_BAD_KINDS, WORKER_BAD_KINDS
    from connectors.sandbox.province import EXTRA_BAD_KINDS
    from connectors.sandbox.roster import ROSTER_BAD_KINDS

    tl = _timeline(plans, worlds, "jingzhou")
    base = {"workers": WORKER_BAD_KINDS, "enterprises": ENTERPRISE_BAD_KINDS, "cases": CASE_BAD_KINDS}
    for entity, kinds in base.items():
        want = {k.value for k in (*kinds, *EXTRA_BAD_KINDS[entity])}
        assert want <= {t["expected"] for t in tl.truth(entity)}, entity
    assert {k.value for k in ROSTER_BAD_KINDS} <= {t["expected"] for t in tl.truth("grid_officers")}


def test_outage_and_day_control_over_http(province: ProvinceSandbox) -> None:
    """Rule: POST /_sim/outage makes every data endpoint answer 503 until it is lifted; POST
    /_sim/day moves EVERY city of the process forward to day N (date = start + N, else 409;
    never backwards); GET /_sim/state says where the city is."""
    url = province.base_url("jingzhou")
    with httpx.Client(timeout=30) as http:
        assert http.get(f"{url}/api/v1/workers?limit=1").status_code == 200
        assert http.post(f"{url}/_sim/outage", json={"down": True}).json()["down"] is True
        assert http.get(f"{url}/api/v1/workers?limit=1").status_code == 503
        assert http.get(f"{url}/health").status_code == 503
        assert http.get(f"{province.base_url('yichang')}/api/v1/workers?limit=1").status_code == 200
        assert http.post(f"{url}/_sim/outage", json={"down": False}).status_code == 200
        assert http.get(f"{url}/api/v1/workers?limit=1").status_code == 200
        assert http.post(f"{url}/_sim/outage", json={"down": "yes"}).status_code == 422

        assert http.post(f"{url}/_sim/day", json={"day": 1, "date": "2026-03-05"}).status_code == 409
        state = http.post(f"{url}/_sim/day", json={"day": 1, "date": "2026-03-02"}).json()
        assert (state["day"], state["date"], state["start_date"]) == (1, "2026-03-02", "2026-03-01")
        other = http.get(f"{province.base_url('yichang')}/_sim/state").json()
        assert other["day"] == 1 and province.timeline("xiangyang").day == 1
        assert http.post(f"{url}/_sim/day", json={"day": 1, "date": "2026-03-02"}).status_code == 200
        assert http.post(f"{url}/_sim/day", json={"day": 0, "date": "2026-03-01"}).status_code == 409
        assert http.get(f"{url}/_sim/state").json()["counts"] == province.timeline("jingzhou").counts()


def _truth_by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in items if t["present"]}


def test_truth_endpoint_agrees_with_validation(province: ProvinceSandbox) -> None:
    """Rule: /_sim/truth names, for every record served, the outcome validation gives it: a record
    problem's reason code (quarantined), a field problem's reason code (stored with the field
    empty), or ok — checked on every row of every entity of both HTTP cities."""
    configs = {c.name: c for c in load_all_sources(SOURCES)}
    with httpx.Client(timeout=60) as http:
        for source in ("yichang", "jingzhou"):
            url = province.base_url(source)
            for entity, validate in VALIDATE.items():
                truth = _truth_by_id(http.get(f"{url}/_sim/truth", params={"entity": entity}).json()["items"])
                rows = http.get(f"{url}/api/v1/{entity}", params={"limit": 10_000}).json()["items"]
                assert len(rows) == len(truth)
                ok, rejects = validate(
                    rows,
                    mapping=configs[source].mapping[entity],
                    default_crs=configs[source].crs,
                    today=START + timedelta(days=30),
                )
                got: dict[str, tuple[str, str]] = {}
                for rec in ok:
                    problems = {p.reason.value for p in getattr(rec, "problems", ())}
                    got[rec.source_record_id] = ("stored", problems.pop() if problems else "ok")
                for rej in rejects:
                    got[str(rej.source_record_id)] = ("quarantined", rej.reason.value)
                want = {rid: (t["outcome"], t["expected"]) for rid, t in truth.items()}
                assert got == want, (source, entity)
                assert {e for _, e in want.values()} - {"ok"}, (source, entity, "no bad rows at all")


def test_offset_paging_reads_every_row_and_resumes_from_its_cursor(province: ProvinceSandbox) -> None:
    """Rule: 荆州's offset-paged API is read completely (every served record exactly as the truth
    lists them), a stored page cursor resumes where it stopped, and a day passing while we page
    skips nothing (a changed record is read at its new version)."""
    config = next(c for c in load_all_sources(SOURCES) if c.name == "jingzhou")
    config = config.model_copy(update={"base_url": province.base_url("jingzhou"), "page_size": 37})
    ids_field = config.mapping["workers"]["source_record_id"]
    with HttpSource(config) as source:
        pages = list(source.pages("workers", since=None))
        assert len(pages) > 3 and all(p.cursor_after and p.cursor_after.startswith("o1.") for p in pages[:-1])
        read = [r[ids_field] for p in pages for r in p.records]
        truth = _truth_by_id(province.truth("jingzhou", "workers"))
        assert set(read) == set(truth)
        # resume from the third page's stored cursor: the rest equals what the first pass read after it
        resumed = source.fetch_page("workers", cursor=pages[2].cursor_after, since=None, page_no=4)
        assert {r[ids_field] for r in pages[3].records} <= {r[ids_field] for r in resumed.records} | set(
            r[ids_field] for r in pages[2].records
        )
        # a day passes in the middle of paging: nothing served at the end is missed
        gen = source.pages("workers", since=None)
        got = {r[ids_field]: r for r in next(gen).records}
        province.advance(province.day + 1)
        for page in gen:
            got.update({r[ids_field]: r for r in page.records})
    truth = _truth_by_id(province.truth("jingzhou", "workers"))
    updated = config.mapping["workers"]["source_updated_at"]
    assert set(truth) <= set(got)
    latest = {rid: got[rid][updated] for rid in truth}
    assert latest == {rid: t["updated_at"] for rid, t in truth.items()}


def test_file_city_drops_gbk_csv_with_manifests_read_by_the_file_connector(province: ProvinceSandbox) -> None:
    """Rule: 襄阳's day-0 drop and each later day's drop are GBK CSV files with matching .sha256
    manifests under its Chinese headers; the file connector reads every row the truth lists."""
    folder = province.drop_dir("xiangyang")
    day0 = folder / f"workers_{START:%Y%m%d}.csv"
    assert day0.exists() and (folder / f"{day0.name}.sha256").exists()
    text = day0.read_bytes().decode("gb18030")
    assert text.splitlines()[0].startswith("业务编号,更新时间,身份证号,姓名")
    config = next(c for c in load_all_sources(SOURCES) if c.name == "xiangyang")
    config = config.model_copy(
        update={"folder": folder, "ledger_path": folder.parent / "xiangyang-ledger.json"}
    )
    source = FileSource(config)
    for entity in ("enterprises", "workers", "cases"):
        read: dict[str, str] = {}
        ids_field = config.mapping[entity]["source_record_id"]
        updated = config.mapping[entity]["source_updated_at"]
        for page in source.pages(entity, since=None):
            for r in page.records:
                if r.get(ids_field):
                    prev = read.get(r[ids_field])
                    read[r[ids_field]] = max(prev, r[updated]) if prev else r[updated]
        truth = {t["id"]: t["updated_at"] for t in province.truth("xiangyang", entity)}
        assert read == truth, entity


def test_cross_city_workers_share_an_id_number_and_get_reports_from_both_cities(plans, worlds) -> None:  # type: ignore[no-untyped-def]
    """Rule: people with jobs in two cities are served by both with the same resident ID under
    different record ids, and on day 0 both cities report a case about some of them, same kind."""
    yc, jz = _timeline(plans, worlds, "yichang"), _timeline(plans, worlds, "jingzhou")
    shared = {p.id_number for p in yc.shared_people if p.cities == ("420500000000", "421000000000")}
    assert shared and shared == {
        p.id_number for p in jz.shared_people if p.cities == ("420500000000", "421000000000")
    }

    def workers(tl: CityTimeline) -> dict[str, str]:
        m = tl.plan.mapping["workers"]
        return {
            r.row[m["id_number"]]: r.record_id for r in tl.rows("workers") if r.row[m["id_number"]] in shared
        }

    def reports(tl: CityTimeline) -> set[tuple[str, str]]:
        m = tl.plan.mapping["cases"]
        return {(r.row[m["worker_id_number"]], r.row[m["kind"]]) for r in tl.rows("cases")} & {
            (pid, k) for pid in shared for k in ("拖欠工资", "劳动合同", "社会保险", "工伤")
        }

    in_yc, in_jz = workers(yc), workers(jz)
    assert set(in_yc) == set(in_jz) == shared
    assert not set(in_yc.values()) & set(in_jz.values())
    both = reports(yc) & reports(jz)
    assert both, "no report about a cross-city worker from both cities"


def test_sandbox_cli_writes_one_days_drop(tmp_path: Path) -> None:
    """Rule: `python -m connectors.sandbox province-drop` writes day N's drop of a file city."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "connectors.sandbox", "province-drop", "--source", "xiangyang", "--day", "2",
         "--volume", str(VOLUME), "--cells", str(CELLS), "--start-date", START.isoformat(), "--folder", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "workers_20260303.csv" in names and "workers_20260303.csv.sha256" in names
