"""Benchmark: the officer inbox under a steady 150 requests/s on a tenth-of-a-province dataset.

Run from the repository root: ``.venv/bin/python -m bench.bench_web [--cells N] [--cases N] [--rate R]``

Workload, seeded by set-based SQL into a throwaway database on the project cluster (dropped at the
end): one city of 10 counties x 10 towns x 10 communities x (cells/1000) cells with a union unit at
every level and a grid officer in every cell; ``--cases`` wage-arrears and other cases spread over
the cells (a fifth open, deadlines spread around now so some are overdue); one grid-officer account
per cell (``--cells`` accounts) with a live server-side session each.

The app runs under real uvicorn (``--workers`` processes) on loopback as ``gridflow_app`` under
row-level security. An open-loop generator in this process sends ``GET /inbox`` for a random
officer every 1/rate seconds (not waiting for answers, so a slow server shows as latency, not as a
lower rate) for ``--seconds`` after a warm-up, and prints the latency percentiles, the achieved
rate and the server's CPU time per request (uvicorn processes only; PostgreSQL's CPU is reported
separately as the cluster's backends are not ours to attribute per request).

Issue targets: inbox p95 <= 200 ms at a steady 150 requests/s; <= 5 ms CPU per request.

One uvicorn process is the default: on this machine uvicorn's multi-process mode (``--workers 2``)
adds a constant ~44 ms to every request, even ``/healthz`` (seen with httpx and with the raw
client alike), while one process serves 150 requests/s at ~3 ms CPU each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import psutil
import psycopg2

from bench._util import scratch_database, timed, verdict
from grid.accounts.sessions import hash_password
from grid.settings import PROJECT_ROOT

CITY = "422000000000"


def seed(url: str, *, n_cells: int, n_cases: int) -> None:
    per = max(1, n_cells // 1000)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    pw = hash_password("bench password 123")
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute(
            """
            CREATE TEMP TABLE cells AS
            SELECT row_number() OVER (ORDER BY code) - 1 AS n, code FROM (
              SELECT '4220' || lpad(d::text, 2, '0') || lpad(t::text, 3, '0') || lpad(v::text, 3, '0')
                     || lpad(c::text, 3, '0') AS code
              FROM generate_series(1, 10) d, generate_series(1, 10) t, generate_series(1, 10) v,
                   generate_series(1, %s) c) x
            """,
            (per,),
        )
        cur.execute(
            """
            INSERT INTO unit (code, level, name)
            SELECT DISTINCT u.code, u.level, 'bench ' || u.code FROM cells,
              LATERAL (VALUES ('420000000000', 1), (%s, 2), (substr(code, 1, 6) || '000000', 3),
                              (substr(code, 1, 9) || '000', 4), (substr(code, 1, 12), 5)) u(code, level)
            """,
            (CITY,),
        )
        # the roster: one officer per cell (cases of a cell are then owned by its officer)
        cur.execute("INSERT INTO officer (source_record_id, name) SELECT 'wg' || n, '网格员' || n FROM cells")
        cur.execute(
            "INSERT INTO officer_cell (officer_id, cell_code) SELECT o.id, c.code FROM cells c "
            "JOIN officer o ON o.source_record_id = 'wg' || c.n AND o.source IS NULL"
        )
        # statistics before the cases: the ownership trigger looks up each case's cell in the roster
        # (~35 us a row with them, ~300 us without: the planner guesses blind)
        cur.execute("ANALYZE officer, officer_cell")
        cur.execute(
            """
            INSERT INTO case_file (kind, family, channel, cell_code, division_code, chain_code, level, owner_code,
                                   state, version, routing, opened_at, respond_by, resolve_by, head_hash)
            SELECT k.kind, CASE WHEN k.kind = 'hardship' THEN 'hardship' ELSE 'dispute' END, 'sync',
                   c.code, substr(c.code, 1, 12), c.code, 5, c.code,
                   CASE WHEN (g / %s) %% 5 = 0 THEN (ARRAY['new', 'accepted', 'in_progress'])[1 + g %% 3]
                        WHEN (g / %s) %% 5 = 1 THEN 'resolved' ELSE 'closed' END,
                   1, '{"rule": "bench"}'::jsonb, o.opened, o.opened + interval '2 days',
                   o.opened + interval '20 days', repeat('0', 64)
            FROM generate_series(0::bigint, %s - 1) g
            JOIN cells c ON c.n = g %% %s
            CROSS JOIN LATERAL (SELECT (ARRAY['wage_arrears', 'labour_contract', 'dismissal', 'social_insurance',
                                 'work_injury', 'hardship'])[1 + (g / 7) %% 6] AS kind) k
            CROSS JOIN LATERAL (SELECT now() - ((g * 7919) %% 400) * interval '1 day' AS opened) o
            """,
            (n_cells, n_cells, n_cases, n_cells),
        )
        cur.execute(  # officer accounts tied to the roster: their cells are read from it per request
            "INSERT INTO app_user (login, password_hash, role, scope_code, officer_id) "
            "SELECT 'wg' || n, %s, 'grid_officer', substr(code, 1, 12), o.id FROM cells "
            "JOIN officer o ON o.source_record_id = 'wg' || cells.n AND o.source IS NULL",
            (pw,),
        )
        cur.execute(
            """
            INSERT INTO web_session (token_hash, user_id, csrf_token, expires_at)
            SELECT sha256(convert_to('bench-token-' || u.login, 'UTF8')), u.id, 'x', now() + interval '1 day'
            FROM app_user u
            """
        )
        cur.execute("VACUUM ANALYZE")
    conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    env.update(GRIDFLOW_DATABASE_URL=url, GRIDFLOW_WEB_COOKIE_SECURE="false", GRIDFLOW_WEB_POOL_MAX="16")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "grid.web.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=PROJECT_ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("uvicorn did not start")


def server_cpu(proc: subprocess.Popen[bytes]) -> float:
    p = psutil.Process(proc.pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_cpu(url: str) -> float:
    """CPU seconds of the PostgreSQL backends serving the bench database (as seen by psutil)."""
    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
            )
            pids = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the generator must cost far less
    CPU than the server it measures (httpx costs ~4 ms per request, as much as the app)."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str, cookie: str) -> tuple[int, bytes]:
        """One GET; a reused connection the server closed meanwhile (keep-alive timeout) is
        retried once on a fresh one, as any HTTP client does."""
        reused = bool(self.idle)
        reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
        try:
            return await self._exchange(reader, writer, path, cookie)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            writer.close()
            if not reused:
                raise
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, path, cookie)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, cookie: str
    ) -> tuple[int, bytes]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nCookie: {cookie}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return status, body

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def load(
    base: str, *, rate: float, seconds: float, n_users: int, cookie: str
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    client = RawClient(base)
    samples: list[str] = []

    async def one() -> None:
        nonlocal errors
        user = f"wg{rng.randrange(n_users)}"
        t0 = time.perf_counter()
        try:
            status, body = await client.get("/inbox", f"{cookie}=bench-token-{user}")
            if status != 200 or (b"data-case" not in body and "没有符合条件的案件".encode() not in body):
                errors += 1
                samples.append(f"{user}: HTTP {status} {body[:160]!r}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors += 1
            samples.append(f"{user}: {type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - t0)

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await client.close()
    for line in samples[:5]:
        print("error:", line)
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with scratch_database() as url:
        _, t = timed(lambda: seed(url, n_cells=args.cells, n_cases=args.cases))
        print(t.line("seed", args.cases))
        proc, base = start_server(url, args.workers)
        try:
            asyncio.run(
                load(base, rate=args.rate, seconds=args.warmup, n_users=args.cells, cookie="gridflow_session")
            )
            cpu0, pg0, w0, gen0 = (
                server_cpu(proc),
                postgres_cpu(url),
                time.perf_counter(),
                time.process_time(),
            )
            lat, errors = asyncio.run(
                load(
                    base, rate=args.rate, seconds=args.seconds, n_users=args.cells, cookie="gridflow_session"
                )
            )
            wall = time.perf_counter() - w0
            cpu, pg = server_cpu(proc) - cpu0, postgres_cpu(url) - pg0
            gen = time.process_time() - gen0
            load_avg = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    n = len(lat)
    p50, p95, p99 = (pct(lat, q) * 1000 for q in (0.5, 0.95, 0.99))
    cpu_ms = cpu / n * 1000
    print(
        f"inbox: {n} requests in {wall:.1f} s ({n / wall:.1f}/s achieved, target {args.rate:.0f}/s), "
        f"{errors} errors"
    )
    print(f"latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}  max {max(lat) * 1000:.1f}")
    print(
        f"CPU per request: web {cpu_ms:.2f} ms (uvicorn x{args.workers}), PostgreSQL backends "
        f"{pg / n * 1000:.2f} ms"
    )
    print(
        f"load generator (this process) {gen / n * 1000:.2f} ms CPU/request; machine: {os.cpu_count()} CPUs, "
        f"1-min load average at the end {load_avg:.1f} (other work on the machine skews latency)"
    )
    print(
        f"p95 <= 200 ms: {verdict(p95 <= 200)}; web CPU <= 5 ms/request: {verdict(cpu_ms <= 5)}; "
        f"errors: {verdict(errors == 0)}"
    )


if __name__ == "__main__":
    main()
