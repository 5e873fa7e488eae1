"""Run the sandbox grid system: ``python -m connectors.sandbox --port 8765``.

Builds the sample city's cells (:func:`geodata.world.build_sample_world`), generates the records
and serves them on 127.0.0.1. The bearer token, if any, is read from the environment variable named
by ``--token-env`` (by default the one ``config/sources/yichang.toml`` reads, so setting it once
configures both sides); without it the API is open.

Faults: ``--faults "5xx=3,429=2,slow=1,truncate=1,overlap=5,shuffle,drift,volume=0.3"`` switches
them on for every request (see :mod:`connectors.sandbox.faults`); any request can also ask for
some with ``?fault=...``. ``--write-files DIR`` writes the records as a file drop instead of
serving them (``--file-format csv|xlsx``, ``--encoding gbk``, ``--partial`` for files cut
mid-row and without their manifest).

``python -m connectors.sandbox province [--volume V] [--seed S] [--start-date D]`` serves the
sandbox province instead: every sandboxed city of the source files, each on its own timeline with
the ``/_sim/*`` control API (``docs/SANDBOX-TIMELINE.md``); ``province-drop --source S --day N``
writes one day's drop of a file-drop city.
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
from pathlib import Path

from connectors.sandbox.app import serve_sandbox
from connectors.sandbox.data import SandboxDataset
from connectors.sandbox.faults import FaultPlan, write_drop_file
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
    p.add_argument("--cases", type=int, default=300, help="number of case reports")
    p.add_argument("--faults", default="", help="fault spec, e.g. '5xx=3,429=1,shuffle,drift'")
    p.add_argument("--write-files", default=None, metavar="DIR", help="write a file drop instead of serving")
    p.add_argument("--file-format", choices=("csv", "xlsx"), default="csv")
    p.add_argument("--encoding", default="utf-8", help="CSV encoding of --write-files (e.g. gbk)")
    p.add_argument("--partial", action="store_true", help="files cut mid-row and without manifest")
    p.add_argument("--no-roster", action="store_true", help="serve no grid officers (entity grid_officers)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("province", "province-drop"):
        from connectors.sandbox.sim import main_province, main_province_drop

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return (main_province if argv[0] == "province" else main_province_drop)(argv[1:])
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
        n_cases=args.cases if args.workers and args.enterprises else 0,
        roster=not args.no_roster,
    )
    t2 = time.perf_counter()
    log.info(
        "sandbox: %d cells in %.1f s; %d enterprises, %d workers, %d case reports in %.1f s (as of %s, crs %s)",
        len(world.cells),
        t1 - t0,
        args.enterprises,
        args.workers,
        len(dataset.rows("cases")) if "cases" in dataset.entities else 0,
        t2 - t1,
        dataset.as_of.isoformat(),
        dataset.crs,
    )
    if args.write_files:
        folder = Path(args.write_files)
        stamp = dataset.as_of.strftime("%Y%m%d")
        for entity in dataset.entities:
            path = write_drop_file(
                folder,
                f"{entity}_{stamp}.{args.file_format}",
                [r.row for r in dataset.rows(entity)],
                header=list(dataset.mapping[entity].values()),
                fmt=args.file_format,
                encoding=args.encoding,
                manifest=not args.partial,
                cut_mid_row=args.partial,
            )
            log.info("sandbox: wrote %s (%d rows)", path, len(dataset.rows(entity)))
        return 0
    faults = FaultPlan.parse(args.faults, dataset.mapping) if args.faults else None
    if faults is not None:
        log.info("sandbox: faults on: %s", args.faults)
    token = os.environ.get(args.token_env, "").strip() or None
    log.info("sandbox: bearer token %s", f"required (from {args.token_env})" if token else "not required")
    serve_sandbox(args.host, args.port, dataset, token=token, faults=faults)
    return 0


if __name__ == "__main__":
    sys.exit(main())
