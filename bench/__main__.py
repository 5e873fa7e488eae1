"""Run the benchmarks: `python -m bench` (spatial core, quick) or `python -m bench all`.

Each benchmark prints its figures next to a baseline measured in the same run, and whether the
issue's target is met. The sweep, re-route, web, coverage, dashboard and sync benchmarks build large
datasets in a throwaway database and take minutes; they run only with `all` (or one by one:
`python -m bench.bench_sync`).
"""

from __future__ import annotations

import subprocess
import sys

QUICK = ["bench.bench_placement", "bench.bench_crs", "bench.bench_address", "bench.bench_validate"]
SLOW = [
    "bench.bench_sweep",
    "bench.bench_reroute",
    "bench.bench_web",
    "bench.bench_coverage",
    "bench.bench_dashboard",
    "bench.bench_sync",
]


def main(argv: list[str]) -> int:
    modules = QUICK + (SLOW if argv[:1] == ["all"] else [])
    failed = 0
    for module in modules:
        print(f"\n=== {module}", flush=True)
        failed += subprocess.call([sys.executable, "-m", module]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
