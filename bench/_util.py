"""Small timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
