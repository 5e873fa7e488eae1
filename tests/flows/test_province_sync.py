"""The sandbox province through the nightly sync (issue #19 part A): three cities onboarded by their
source files alone - 宜昌 (keyset, GCJ-02), 荆州 (offset pages, BD-09, code prefix 4210), 襄阳 (a GBK
file drop) - synced by the `nightly-sync` flow in the Prefect harness, day 0 and then a simulated
day later; every record the sandbox's ground truth lists is stored at its latest version or
quarantined with its reason code, and a worker employed in two cities is one person whose reports
from both cities attach to one case."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from connectors.sandbox.province import province_plans
from connectors.sandbox.sim import ProvinceSandbox
from grid.settings import PROJECT_ROOT
from tests.conftest import fresh_database, load_world
from tests.flows.helpers import query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow]

CITIES = {"yichang": "420500000000", "jingzhou": "421000000000", "xiangyang": "420600000000"}
PREFIX = "p19_"
CELLS = 600  # 宜昌 uses the session's loaded world (2,000 cells); the two others are loaded here
TABLE = {"workers": "worker", "enterprises": "enterprise"}


def _write_sources(directory: Path, urls: dict[str, str], drop: Path) -> None:
    """The bundled source files, renamed (so they share no stored state with other tests), with
    the sandbox's real ports and drop folder."""
    for city in CITIES:
        text = (PROJECT_ROOT / "config" / "sources" / f"{city}.toml").read_text(encoding="utf-8")
        text = re.sub(r'(?m)^name = "(\w+)"', rf'name = "{PREFIX}\1"', text)
        if city in urls:
            text = re.sub(r'(?m)^base_url = ".*"', f'base_url = "{urls[city]}"', text)
        else:
            text = re.sub(r'(?m)^folder = ".*?"', f'folder = "{drop}"', text)
        (directory / f"{PREFIX}{city}.toml").write_text(text, encoding="utf-8")


class Province(NamedTuple):
    sandbox: ProvinceSandbox
    sources_dir: Path


@pytest.fixture(scope="module")
def province(loaded_world, tmp_path_factory) -> Iterator[Province]:  # type: ignore[no-untyped-def]
    # its own database: two more cities' worlds and three cities' records must not change what the
    # later modules of the session read from the shared one
    with fresh_database("gridflow_province") as url:
        load_world(url, loaded_world)
        yield from _province(url, loaded_world, tmp_path_factory)


def _province(database_url: str, loaded_world, tmp_path_factory) -> Iterator[Province]:  # type: ignore[no-untyped-def]
    from geodata.world import build_sample_world
    from grid.cases.owners import ensure_units
    from grid.store import world as store_world
    from grid.store.db import connect, transaction

    worlds = {f"{PREFIX}yichang": loaded_world}
    conn = connect(database_url)
    try:
        for city in ("jingzhou", "xiangyang"):
            world = build_sample_world(CITIES[city], cells_target=CELLS)
            with transaction(conn) as cur:
                store_world.load_sample_world(
                    cur, world, label=f"province {city}", valid_from=date(2026, 1, 1)
                )
            worlds[f"{PREFIX}{city}"] = world
        for code in [*CITIES.values(), "420000000000"]:
            ensure_units(conn, scope=code)
    finally:
        conn.close()
    root = tmp_path_factory.mktemp("province")
    drop = root / "drop"
    template = root / "template"
    template.mkdir()
    _write_sources(template, {c: "http://127.0.0.1:1" for c in ("yichang", "jingzhou")}, drop)
    plans = province_plans(template)
    start = date.today() - timedelta(days=5)
    with ProvinceSandbox(
        plans,
        seed=1919,
        volume=0.02,
        start_date=start,
        ports=dict.fromkeys([f"{PREFIX}yichang", f"{PREFIX}jingzhou"], 0),
        worlds=worlds,
    ) as sandbox:
        sources = root / "sources"
        sources.mkdir()
        _write_sources(
            sources,
            {c: sandbox.base_url(f"{PREFIX}{c}") for c in ("yichang", "jingzhou")},
            sandbox.drop_dir(f"{PREFIX}xiangyang"),
        )
        yield Province(sandbox, sources)


def _stored(source: str, entity: str) -> dict[str, str]:
    if entity == "cases":
        return {
            ref.split(":", 1)[1]: ""
            for (ref,) in query("SELECT source_ref FROM case_intake WHERE source_ref LIKE %s", f"{source}:%")
        }
    return dict(
        query(
            f"SELECT source_record_id, to_char(source_updated_at AT TIME ZONE 'Asia/Shanghai',"
            f" 'YYYY-MM-DD HH24:MI:SS') FROM {TABLE[entity]} WHERE source = %s AND deleted_at IS NULL",
            source,
        )
    )


def _check_against_truth(sandbox: ProvinceSandbox) -> dict[str, dict[str, int]]:
    """Every record of the truth stored at its latest version or quarantined with its reason; field
    problems as the truth says. Returns per city the loaded / quarantined counts."""
    counts: dict[str, dict[str, int]] = {}
    for source in sandbox.sources:
        n = {"stored": 0, "quarantined": 0}
        for entity in ("enterprises", "workers", "cases"):
            truth = sandbox.truth(source, entity)
            stored = _stored(source, entity)
            quarantined = dict(
                query(
                    "SELECT source_record_id, reason_code FROM quarantine WHERE source = %s AND entity = %s"
                    " AND resolved_at IS NULL",
                    source,
                    entity,
                )
            )
            want_stored = {
                t["id"]: (t["accept_from"], t["updated_at"]) for t in truth if t["outcome"] == "stored"
            }
            want_quarantined = {t["id"]: t["expected"] for t in truth if t["outcome"] == "quarantined"}
            assert set(stored) == set(want_stored), (source, entity)
            if entity != "cases":  # the latest version, or an older one with the same content
                late = {
                    rid: (v, want_stored[rid])
                    for rid, v in stored.items()
                    if not want_stored[rid][0] <= v <= want_stored[rid][1]
                }
                assert not late, (source, entity, late)
            assert quarantined == want_quarantined, (source, entity)
            if entity != "cases":
                problems = dict(
                    query(
                        "SELECT source_record_id, reason_code FROM field_problem WHERE source = %s AND entity = %s"
                        " AND settled_at IS NULL",
                        source,
                        entity,
                    )
                )
                want = {
                    t["id"]: t["expected"]
                    for t in truth
                    if t["outcome"] == "stored" and t["expected"] != "ok"
                }
                assert problems == want, (source, entity)
            n["stored"] += len(want_stored)
            n["quarantined"] += len(want_quarantined)
        # the roster (h16's generator, every city): officers loaded, bad rows quarantined by reason
        truth = sandbox.truth(source, "grid_officers")
        officers = {rid for (rid,) in query("SELECT source_record_id FROM officer WHERE source = %s", source)}
        assert officers == {t["id"] for t in truth if t["outcome"] == "stored"}, source
        reasons = query(
            "SELECT reason_code FROM quarantine WHERE source = %s AND entity = 'grid_officers' AND resolved_at IS NULL",
            source,
        )
        assert sorted(r for (r,) in reasons) == sorted(
            t["expected"] for t in truth if t["outcome"] == "quarantined"
        )
        n["stored"] += len(officers)
        assert n["stored"] and n["quarantined"], (source, n)
        counts[source] = n
    return counts


def _sync(province: Province) -> list[dict[str, Any]]:
    from flows.nightly_sync import nightly_sync

    with sources_env(province.sources_dir):
        rows = nightly_sync()
    assert sorted(r["source"] for r in rows) == sorted(province.sandbox.sources)
    assert all(r["status"] == "completed" for r in rows), rows
    return rows


def test_three_cities_sync_to_the_truth_day_0_and_day_1(prefect_harness, province: Province) -> None:
    """Rule: after the nightly sync of the three cities, every record of each city's ground truth is
    stored at its latest version or quarantined with the reason code the truth names (field
    problems likewise), on day 0 and again after a simulated day of joins, changes, leaves, union
    set-ups, case reports and fixes (read incrementally: keyset, offset pages, the day's new drop)."""
    sandbox = province.sandbox
    _sync(province)
    day0 = _check_against_truth(sandbox)
    sandbox.advance(1)
    changed = {
        s: sum(len(sandbox.timeline(s).rows_of_today(e)) for e in ("workers", "cases"))
        for s in sandbox.sources
    }
    assert all(changed.values()), changed
    _sync(province)
    day1 = _check_against_truth(sandbox)
    assert all(day1[s]["stored"] >= day0[s]["stored"] for s in sandbox.sources)
    # the points were placed in each city's own cells: 荆州's BD-09 and 襄阳's WGS-84 alike
    for source, code in ((f"{PREFIX}{c}", CITIES[c]) for c in CITIES):
        outside = query(
            "SELECT count(*) FROM worker WHERE source = %s AND division_code IS NOT NULL AND division_code NOT LIKE %s",
            source,
            code[:4] + "%",
        )[0][0]
        placed = query("SELECT count(*) FROM worker WHERE source = %s AND cell_code IS NOT NULL", source)[0][
            0
        ]
        assert outside == 0 and placed > 0, source


def test_a_worker_in_two_cities_is_one_person_with_one_case(prefect_harness, province: Province) -> None:
    """Rule: a person employed in two cities (same resident ID, a record id in each) is one identity
    (the same keyed HMAC in both cities' worker rows), and reports of the same kind about them from
    both cities attach to ONE case."""
    _sync(province)
    pairs = 0
    for a, b in ((f"{PREFIX}yichang", f"{PREFIX}jingzhou"), (f"{PREFIX}jingzhou", f"{PREFIX}xiangyang")):
        ta, tb = province.sandbox.timeline(a), province.sandbox.timeline(b)
        cities = tuple(sorted((ta.plan.city_code, tb.plan.city_code)))
        shared = {p.id_number for p in ta.shared_people if p.cities == cities}

        def index(tl: Any, entity: str, field: str, shared: set[str] = shared) -> dict[tuple[str, str], str]:
            m = tl.plan.mapping[entity]
            return {
                (r.row[m[field]], r.row[m["kind"]] if entity == "cases" else ""): r.record_id
                for r in tl.rows(entity)
                if r.row[m[field]] in shared
            }

        wa, wb = index(ta, "workers", "id_number"), index(tb, "workers", "id_number")
        ca, cb = index(ta, "cases", "worker_id_number"), index(tb, "cases", "worker_id_number")
        for (person, _), rid_a in wa.items():
            rid_b = wb[(person, "")]
            hmacs = query(
                "SELECT DISTINCT id_hmac FROM worker WHERE (source, source_record_id) IN ((%s, %s), (%s, %s))",
                a,
                rid_a,
                b,
                rid_b,
            )
            assert len(hmacs) == 1, "one person in the identity index"
        for key in set(ca) & set(cb):
            case_ids = query(
                "SELECT DISTINCT case_id FROM case_intake WHERE source_ref IN (%s, %s)",
                f"{a}:{ca[key]}",
                f"{b}:{cb[key]}",
            )
            intakes = query(
                "SELECT count(*) FROM case_intake WHERE source_ref IN (%s, %s)",
                f"{a}:{ca[key]}",
                f"{b}:{cb[key]}",
            )[0][0]
            assert intakes == 2 and len(case_ids) == 1, "both cities' reports attach to one case"
            pairs += 1
    assert pairs, "no cross-city report pair to check"
