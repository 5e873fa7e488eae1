"""Small timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import os
import resource
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds (this process, all threads) of one call."""

    wall_s: float
    cpu_s: float

    def line(self, label: str, n: int | None = None) -> str:
        """One report line: label, times and, for ``n`` items, items per second and CPU-second."""
        text = f"{label:<18}{self.wall_s:8.2f} s wall {self.cpu_s:8.2f} CPU-s"
        if n is not None:
            text += f"   {n / self.wall_s:>12,.0f} /s {n / self.cpu_s:>12,.0f} /CPU-s"
        return text


def timed(fn: Callable[[], T]) -> tuple[T, Timing]:
    """Call ``fn`` once and return its result with its wall and CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh, migrated database on the configured cluster (started if private), dropped afterwards."""
    import psycopg2

    from grid.settings import get_settings
    from grid.store import migrate

    settings = get_settings()
    if settings.private_cluster:
        from grid.store.cluster import Cluster

        cluster = Cluster(settings)
        cluster.start()
        cluster.ensure_database("gridflow")
    admin = psycopg2.connect(settings.dsn)
    admin.autocommit = True
    name = f"gridflow_bench_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = settings.dsn.rsplit("/", 1)[0] + "/" + name
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, its reaped children and its live children.

    Used to say where a benchmark's time went: the sync process, the sandbox serving it and the
    database cluster (its postmaster accumulates the time of every backend that has exited).
    """
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # fields[11:15] = utime, stime, cutime, cstime (after the state field at index 0)
        return sum(int(f) for f in fields[11:15]) / tick

    total = own(pid)
    for child in _children(pid):
        total += process_tree_cpu_s(child)
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(c) for c in text.split())
    return out


def cluster_pid(url: str) -> int | None:
    """The postmaster pid of a PostgreSQL cluster on this machine (None if not readable here)."""
    import psycopg2

    try:
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW data_directory")
                row = cur.fetchone()
        finally:
            conn.close()
        return int((Path(str(row[0])) / "postmaster.pid").read_text().split()[0]) if row else None
    except (OSError, ValueError, psycopg2.Error):
        return None


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, /proc/stat; idle and iowait excluded).

    The remainder after the processes a benchmark measures is everything else that ran meanwhile:
    for the sync, mostly the Prefect API server recording task runs (and other tenants' load)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")
