"""Issue #21 on two generated cities: the four fulls count every known record, so a city sending
10 % bad phones gets the same 职工信息掌握率 as one sending none, and a note of its field problems;
a record quarantined whole is shown beside the rate as "另有 N 条待核实".

Province 98 does not exist (no real code starts with 98, and 98 is no resident-ID province): two
generated cities, each with one county, town and community and four square grid cells. Their
worker rows go through the sync's real path (validation, placement, encryption, page write) and
the coverage snapshot; everything is removed again at the end.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2.extras import execute_values
from stdnum.cn import ric

from flows.pipeline import ChunkSpec, current_cell_version, prepare_chunk
from grid.monitoring.coverage import compute_snapshot, division_coverage
from grid.monitoring.pending import Notes, notes
from grid.store.db import transaction
from grid.sync import store as sync
from tests.connectors.test_validate import WORKER_MAP

pytestmark = [pytest.mark.db]

SH_DAY = date(2026, 7, 21)
AS_OF = datetime.fromisoformat("2026-07-21T20:00:00+08:00")
PROVINCE = "980000000000"
CITIES = {"fp_city_a": ("980100000000", 100.0), "fp_city_b": ("980200000000", 101.0)}
N, BAD_IDS = 200, 4


def _codes(city: str) -> tuple[str, str, str]:
    county, town = city[:4] + "01000000", city[:4] + "01001000"
    return county, town, city[:4] + "01001001"


def _square(x: float, y: float, size: float = 0.01) -> str:
    return f"MULTIPOLYGON((({x} {y},{x + size} {y},{x + size} {y + size},{x} {y + size},{x} {y})))"


@pytest.fixture(scope="module")
def two_cities(database_url: str) -> Iterator[None]:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            rows: list[tuple[Any, ...]] = [(PROVINCE, 1, "测试省", None)]
            for city, _ in CITIES.values():
                county, town, community = _codes(city)
                rows += [(city, 2, f"测试市{city[2:4]}", PROVINCE), (county, 3, "测试县", city)]
                rows += [(town, 4, "测试镇", county), (community, 5, "测试社区", town)]
            execute_values(
                cur,
                "INSERT INTO division (code, level, name, parent_code, source, valid_from) VALUES %s",
                [(*r, "test", date(2020, 1, 1)) for r in rows],
            )
            for name, (city, x0) in CITIES.items():
                cur.execute(
                    "INSERT INTO cell_version (label, scope_code, valid_from) VALUES ('fp', %s, '2020-01-01')"
                    " RETURNING id",
                    (city,),
                )
                version = cur.fetchone()[0]
                community = _codes(city)[2]
                for k in range(4):
                    cur.execute(
                        "INSERT INTO grid_cell (code, community_code, name, geom, version_id, valid_from)"
                        " VALUES (%s, %s, %s, ST_GeomFromText(%s, 4326), %s, '2020-01-01')",
                        (
                            f"{community}{k + 1:03d}",
                            community,
                            f"网格{k + 1}",
                            _square(x0 + 0.01 * k, 30.0),
                            version,
                        ),
                    )
                sync.register_source(
                    cur,
                    name=name,
                    display_name=name,
                    city_code=city,
                    kind="file",
                    crs="wgs84",
                    enabled=True,
                    config={},
                )
        conn.commit()
        yield
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            names = list(CITIES)
            cur.execute("DELETE FROM coverage_run WHERE snapshot_date = %s", (SH_DAY,))
            for table in ("field_problem", "quarantine", "worker", "source_cursor"):
                cur.execute(f"DELETE FROM {table} WHERE source = ANY(%s)", (names,))
            cur.execute("DELETE FROM sync_run WHERE source = ANY(%s)", (names,))
            cur.execute("DELETE FROM source WHERE name = ANY(%s)", (names,))
            cur.execute("DELETE FROM grid_cell WHERE code LIKE '98%%'")
            cur.execute("DELETE FROM cell_version WHERE scope_code LIKE '98%%'")
            cur.execute("DELETE FROM division WHERE code LIKE '98%%'")
        conn.commit()
        conn.close()


def _workers(x0: float, *, bad_phone_every: int | None) -> list[dict[str, Any]]:
    """N generated workers of a city: 180 inside its cells, 10 at a point between cells, 10 with
    no point and no address; BAD_IDS more with a wrong resident-ID check digit. The same people in
    each city (the same seed), only the cells' longitude differs."""
    rng = random.Random(21)
    rows = []
    for i in range(N + BAD_IDS):
        body = f"420502{1970 + i % 30}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
        rid = body + ric.calc_check_digit(body + "0")
        if i >= N:
            rid = body + ("1" if rid[-1] != "1" else "2")
        lon: Any = f"{x0 + rng.uniform(0.0005, 0.0395):.6f}"
        lat: Any = f"{30.0 + rng.uniform(0.0005, 0.0095):.6f}"
        if i % 20 == 0:
            lon = lat = ""
        elif i % 20 == 1:
            lon = f"{x0 + 0.06:.6f}"
        phone = f"139{i:08d}"
        if bad_phone_every and i < N and i % bad_phone_every == 5:
            phone = "12345"
        rows.append(
            {"ywid": f"w{i}", "gxsj": "2026-07-20 10:00:00", "sfzh": rid, "xm": f"职工{i}", "xb": "", "csrq": "",
             "lxdh": phone, "dwtyxydm": "", "jzdz": "", "jd": lon, "wd": lat, "zbx": ""}
        )  # fmt: skip
    return rows


def _sync(conn: psycopg2.extensions.connection, source: str, rows: list[dict[str, Any]]) -> sync.PageResult:
    city = CITIES[source][0]
    spec = ChunkSpec(
        source=source,
        entity="workers",
        city_code=city,
        cell_version=current_cell_version(city),
        mapping=WORKER_MAP,
        default_crs="wgs84",
        full=False,
    )
    run = sync.start_run(conn, source=source, mode="incremental", flow_run_id=None)
    chunk = prepare_chunk(spec, rows, {}, SH_DAY)
    page = sync.write_page(
        conn,
        run_id=run,
        source=source,
        entity="workers",
        chunks=[chunk],
        received=len(rows),
        since=None,
        cursor_after=None,
    )
    totals = sync.RunTotals()
    totals.add("workers", page)
    sync.finish_run(conn, run_id=run, totals=totals)
    return page


def test_a_city_sending_bad_phones_gets_the_same_rate_and_a_note_of_its_field_problems(
    two_cities: None, conn: psycopg2.extensions.connection
) -> None:
    """Rule (issue #21): every worker whose identifying fields are valid is stored and counted, so
    10 % bad phones change neither the denominator nor the rate of 职工信息掌握率 — they show as a
    note of field problems. Workers without a usable location are in the denominator (unmapped,
    with their reason); workers quarantined whole are counted at their source's city, beside the
    rate ("另有 N 条待核实"), never in it."""
    a, b = "fp_city_a", "fp_city_b"
    page_a = _sync(conn, a, _workers(CITIES[a][1], bad_phone_every=None))
    page_b = _sync(conn, b, _workers(CITIES[b][1], bad_phone_every=10))
    assert (page_a.loaded, page_a.quarantined) == (N, BAD_IDS) == (page_b.loaded, page_b.quarantined)
    assert page_a.by_problem == {"missing_coordinates": 10}
    assert page_b.by_problem == {"missing_coordinates": 10, "bad_phone": N // 10}

    compute_snapshot(conn, snapshot_date=SH_DAY, as_of=AS_OF)
    city_a, city_b = (CITIES[s][0] for s in (a, b))
    row_a = division_coverage(conn, snapshot_date=SH_DAY, code=city_a)
    row_b = division_coverage(conn, snapshot_date=SH_DAY, code=city_b)
    assert row_a is not None and row_b is not None
    assert (row_a.counts.workers, row_a.counts.workers_mapped) == (N, N - 20)
    assert (row_b.counts.workers, row_b.counts.workers_mapped) == (N, N - 20)
    assert row_a.counts.rate("workers") == row_b.counts.rate("workers") == 0.9

    got = notes(conn, codes=[city_a, city_b, PROVINCE, _codes(city_b)[2]], snapshot_date=SH_DAY)
    assert got[city_a] == Notes(workers_pending=BAD_IDS, workers_field_problems=10)
    assert got[city_b] == Notes(workers_pending=BAD_IDS, workers_field_problems=10 + N // 10)
    assert got[PROVINCE] == Notes(workers_pending=2 * BAD_IDS, workers_field_problems=20 + N // 10)
    # the bad phones of placed workers are noted where the workers are; the quarantined nowhere below the city
    community = got[_codes(city_b)[2]]
    assert community.workers_pending == 0 and 0 < community.workers_field_problems <= N // 10

    with transaction(conn) as cur:
        cur.execute(
            "SELECT unmapped_reason, count(*) FROM worker WHERE source = %s AND cell_code IS NULL GROUP BY 1",
            (b,),
        )
        unmapped = dict(cur.fetchall())
    assert unmapped.get("missing_coordinates") == 10 and sum(unmapped.values()) == 20

    from typer.testing import CliRunner

    from gridflow_cli.main import app

    shown = CliRunner().invoke(app, ["coverage", "show", city_b, "--date", SH_DAY.isoformat()])
    assert shown.exit_code == 0, shown.output
    line = next(ln for ln in shown.output.splitlines() if "Workers mapped" in ln)
    assert "180 / 200" in line and "90.0%" in line
    assert f"另有 {BAD_IDS} 条待核实" in line and f"{10 + N // 10} 条字段待核实" in line

    # `gridflow quarantine list` shows the two kinds apart
    listed = CliRunner().invoke(app, ["quarantine", "list", "--source", b])
    assert listed.exit_code == 0, listed.output
    record_part, field_part = listed.output.split("field problems (record loaded")
    assert f"{b} workers bad_id_checksum: {BAD_IDS}" in record_part
    assert f"{b} workers bad_phone [phone]: {N // 10}" in field_part
    assert f"{b} workers missing_coordinates [lon]: 10" in field_part
    assert "bad_phone" not in record_part and "12345" not in listed.output
    refused = CliRunner().invoke(app, ["quarantine", "reprocess", "--local"])
    assert refused.exit_code == 1 and "choose at least one" in refused.output
