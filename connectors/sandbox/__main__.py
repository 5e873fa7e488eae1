"""Run the sandbox grid system: ``python -m connectors.sandbox --port 8765``.

Builds the sample city's cells (:func:`geodata.world.build_sample_world`), generates the records
and serves them on 127.0.0.1. The bearer token, if any, is read from the environment variable named
by ``--token-env`` (by default the one ``config/sources/yichang.toml`` reads, so setting it once
configures both sides); without it the API is open.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from datetime import time as dtime

from connectors.sandbox.app import serve_sandbox
from connectors.sandbox.data import SandboxDataset
from connectors.validate import CHINA_TZ

log = logging.getLogger("connectors.sandbox")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m connectors.sandbox", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--city", default="420500000000", help="12-digit city code (default: Yichang)")
    p.add_argument("--workers", type=int, default=20_000, help="number of worker rows")
    p.add_argument("--enterprises", type=int, default=2_000, help="number of enterprise rows")
    p.add_argument("--cells", type=int, default=2_000, help="approximate number of grid cells")
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--bad-fraction", type=float, default=0.03, help="share of deliberately bad rows")
    p.add_argument("--crs", default="gcj02", help="coordinate system of exported points")
    p.add_argument(
        "--as-of",
        default=None,
        help="ISO timestamp the data is 'current' at (default: today 00:00 Asia/Shanghai)",
    )
    p.add_argument("--token-env", default="GRIDFLOW_SOURCE_YICHANG_TOKEN")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.as_of:
        as_of = datetime.fromisoformat(args.as_of)
    else:
        as_of = datetime.combine(datetime.now(CHINA_TZ).date(), dtime(), CHINA_TZ)

    from geodata.world import build_sample_world

    t0 = time.perf_counter()
    world = build_sample_world(args.city, cells_target=args.cells)
    t1 = time.perf_counter()
    dataset = SandboxDataset(
        [(c.code, c.geometry) for c in world.cells],
        city_code=args.city,
        n_workers=args.workers,
        n_enterprises=args.enterprises,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        crs=args.crs,
        as_of=as_of,
        names={d.code: d.name for d in world.divisions},
    )
    t2 = time.perf_counter()
    log.info(
        "sandbox: %d cells in %.1f s; %d enterprises and %d workers in %.1f s (as of %s, crs %s)",
        len(world.cells),
        t1 - t0,
        args.enterprises,
        args.workers,
        t2 - t1,
        dataset.as_of.isoformat(),
        dataset.crs,
    )
    token = os.environ.get(args.token_env, "").strip() or None
    log.info("sandbox: bearer token %s", f"required (from {args.token_env})" if token else "not required")
    serve_sandbox(args.host, args.port, dataset, token=token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
