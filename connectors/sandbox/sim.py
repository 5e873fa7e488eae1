"""Serving a sandbox province: one process, one loopback port per HTTP city, the control API.

See ``docs/SANDBOX-TIMELINE.md`` (the contract) and :mod:`connectors.sandbox.province` (the
timelines). :class:`ProvinceSandbox` builds every city's timeline, serves each HTTP city with the
data API of :mod:`connectors.sandbox.app` plus ``/_sim/*`` (day, outage, state, truth) and writes
each file city's drops. Tests use it in-process; ``python -m connectors.sandbox province`` (what
``gridflow services up sandbox`` starts) runs the same class in the foreground.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.faults import write_drop_file
from connectors.sandbox.province import CityPlan, CityTimeline

__all__ = ["DROP_ENCODING", "ProvinceSandbox", "write_day_drop"]

log = logging.getLogger("connectors.sandbox")

#: The file-drop city's exports: GBK CSV, as the city's old system writes them - strictly GB18030,
#: the national superset that is byte-identical to GBK for every GBK character and also encodes
#: the few rare place-name characters GBK lacks (a real town name of 襄阳 has one).
DROP_ENCODING = "gb18030"


def write_day_drop(timeline: CityTimeline, folder: Path) -> list[Path]:
    """Write the rows of the timeline's current day (day 0: every row) into ``folder`` as
    ``{entity}_{YYYYMMDD}.csv`` (GBK / GB18030, the city's own headers) with ``NAME.sha256`` manifests; an
    entity without a change that day gets no file. Returns the files written."""
    written = []
    stamp = timeline.date.strftime("%Y%m%d")
    for entity in timeline.plan.entities:
        rows = timeline.rows_of_today(entity)
        if not rows:
            continue
        header = list(timeline.plan.mapping[entity].values())
        written.append(
            write_drop_file(
                folder,
                f"{entity}_{stamp}.csv",
                [r.row for r in rows],
                header=header,
                fmt="csv",
                encoding=DROP_ENCODING,
            )
        )
    return written


class ProvinceSandbox:
    """Several sandbox cities, each on its own timeline, served from this process.

    ``ports`` overrides a city's port (0 = a free one; default: the port of its ``base_url``);
    ``drop_dirs`` overrides a file city's folder; ``worlds`` hands in cities' already built
    :class:`geodata.world.SampleWorld` (by source name); ``token`` (one for all, or by source name)
    turns on bearer auth on the data endpoints (``/_sim/*`` is loopback control and stays open).
    Use as a context manager.
    """

    def __init__(
        self,
        plans: Sequence[CityPlan],
        *,
        seed: int,
        volume: float,
        start_date: date,
        ports: Mapping[str, int] | None = None,
        drop_dirs: Mapping[str, Path] | None = None,
        token: str | Mapping[str, str | None] | None = None,
        host: str = "127.0.0.1",
        worlds: Mapping[str, Any] | None = None,
    ) -> None:
        if not plans:
            raise ValueError("a province needs at least one city")
        self.seed = seed
        self.volume = volume
        self.start_date = start_date
        self._host = host
        self._tokens = {p.source: token.get(p.source) if isinstance(token, Mapping) else token for p in plans}
        codes = [p.city_code for p in plans]
        self._timelines = {
            p.source: CityTimeline(
                p,
                seed=seed,
                volume=volume,
                start_date=start_date,
                province=codes,
                world=(worlds or {}).get(p.source),
            )
            for p in plans
        }
        self._ports = {p.source: (ports or {}).get(p.source, p.port or 0) for p in plans if p.kind == "http"}
        self._drops: dict[str, Path] = {}
        for p in plans:
            if p.kind == "file":
                folder = (drop_dirs or {}).get(p.source) or p.folder
                if folder is None:
                    raise ValueError(f"file city {p.source} has no folder")
                self._drops[p.source] = Path(folder)
        self._down: dict[str, bool] = dict.fromkeys(self._timelines, False)
        self._inner: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._servers: dict[str, SandboxServer] = {}
        self._stack = ExitStack()

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ProvinceSandbox:
        with self._lock:
            for source, folder in self._drops.items():
                write_day_drop(self._timelines[source], folder)
            for source in self._ports:
                self._inner[source] = create_app(
                    self._timelines[source].snapshot(), token=self._tokens[source]
                )
        try:
            for source, port in self._ports.items():
                server = SandboxServer(self._city_app(source), host=self._host, port=port)
                self._servers[source] = self._stack.enter_context(server)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    # -- control --------------------------------------------------------------------------------

    @property
    def sources(self) -> list[str]:
        return list(self._timelines)

    def timeline(self, source: str) -> CityTimeline:
        return self._timelines[source]

    def base_url(self, source: str) -> str:
        return self._servers[source].base_url

    def drop_dir(self, source: str) -> Path:
        return self._drops[source]

    @property
    def day(self) -> int:
        return min(t.day for t in self._timelines.values())

    def advance(self, day: int, day_date: date | None = None) -> None:
        """Every city to the end of ``day`` (forward only; ``day_date`` must be ``start_date +
        day`` when given). File cities get one drop per day passed."""
        expected = self.start_date.toordinal() + day
        if day_date is not None and day_date.toordinal() != expected:
            raise ValueError(
                f"day {day} is {date.fromordinal(expected).isoformat()}, not {day_date.isoformat()}"
            )
        with self._lock:
            if day < self.day:
                raise ValueError(f"the province is at day {self.day}; it only moves forward")
            for source, tl in self._timelines.items():
                if source in self._drops:
                    while tl.day < day:
                        tl.advance(tl.day + 1)
                        write_day_drop(tl, self._drops[source])
                else:
                    tl.advance(day)
                    self._inner[source] = create_app(tl.snapshot(), token=self._tokens[source])
        log.info("sandbox province: day %d (%s)", day, date.fromordinal(expected).isoformat())

    def set_down(self, source: str, down: bool) -> None:
        with self._lock:
            self._down[source] = down

    def truth(self, source: str, entity: str) -> list[dict[str, Any]]:
        with self._lock:
            return self._timelines[source].truth(entity)

    def state(self, source: str) -> dict[str, Any]:
        with self._lock:
            tl = self._timelines[source]
            return {
                "source": source,
                "city_code": tl.plan.city_code,
                "day": tl.day,
                "date": tl.date.isoformat(),
                "start_date": self.start_date.isoformat(),
                "down": self._down[source],
                "seed": self.seed,
                "volume": self.volume,
                "counts": tl.counts(),
            }

    # -- the per-city ASGI app ------------------------------------------------------------------

    def _city_app(self, source: str) -> Any:
        control = self._control_app(source)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"].startswith("/_sim"):
                await control(scope, receive, send)
                return
            with self._lock:
                down = self._down[source]
                inner = self._inner[source]
            if down:
                body = json.dumps({"error": f"{source} is down (simulated outage)"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await inner(scope, receive, send)

        return app

    def _control_app(self, source: str) -> FastAPI:
        app = FastAPI(title=f"sandbox control {source}", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/_sim/state")
        def get_state() -> dict[str, Any]:
            return self.state(source)

        @app.post("/_sim/day")
        async def post_day(request: Request) -> Any:
            try:
                body = await request.json()
                day = body["day"]
                if not isinstance(day, int) or isinstance(day, bool) or day < 0:
                    raise ValueError
                day_date = date.fromisoformat(body["date"])
            except (ValueError, KeyError, TypeError):
                return JSONResponse(
                    {"error": 'send {"day": N, "date": "YYYY-MM-DD"} with N a whole number >= 0'},
                    status_code=422,
                )
            try:
                self.advance(day, day_date)
            except ValueError as e:
                return JSONResponse({"error": str(e)}, status_code=409)
            return self.state(source)

        @app.post("/_sim/outage")
        async def post_outage(request: Request) -> Any:
            try:
                body = await request.json()
                down = body["down"]
                if not isinstance(down, bool):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return JSONResponse({"error": 'send {"down": true|false}'}, status_code=422)
            self.set_down(source, down)
            return self.state(source)

        @app.get("/_sim/truth")
        def get_truth(entity: str) -> Any:
            tl = self._timelines[source]
            if entity not in tl.plan.entities:
                return JSONResponse(
                    {"error": f"unknown entity; known: {', '.join(tl.plan.entities)}"}, status_code=404
                )
            with self._lock:
                return {
                    "entity": entity,
                    "day": tl.day,
                    "date": tl.date.isoformat(),
                    "items": tl.truth(entity),
                }

        return app


def _province_args(argv: Sequence[str], *, drop: bool) -> Any:
    import argparse
    import os

    p = argparse.ArgumentParser(
        prog=f"python -m connectors.sandbox {'province-drop' if drop else 'province'}",
        description=(
            "Write one day's file drop of a file-drop city of the sandbox province."
            if drop
            else "Serve the sandbox province: every sandboxed city of the sources dir on its own port."
        ),
    )
    p.add_argument("--sources-dir", default=os.environ.get("GRIDFLOW_SOURCES_DIR", "config/sources"))
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--volume", type=float, default=1.0, help="scale of every city (1.0 = the demo)")
    p.add_argument(
        "--cells", type=int, default=2_000, help="cells per city, as `gridflow world load --cells`"
    )
    p.add_argument("--start-date", default=None, help="date of day 0 (default: today, Asia/Shanghai)")
    p.add_argument(
        "--token-env",
        default=None,
        help="one variable holding the bearer token of every city (default: each file's)",
    )
    if drop:
        p.add_argument("--source", required=True, help="the file city's source name, e.g. xiangyang")
        p.add_argument("--day", type=int, required=True)
        p.add_argument("--folder", default=None, help="drop folder (default: the source file's folder)")
    else:
        p.add_argument(
            "--cities", default="", help="comma-separated source names (default: every sandboxed one)"
        )
    return p.parse_args(list(argv))


def _start_date(value: str | None) -> date:
    from datetime import datetime

    from connectors.validate import CHINA_TZ

    return date.fromisoformat(value) if value else datetime.now(CHINA_TZ).date()


def main_province(argv: Sequence[str]) -> int:
    """``python -m connectors.sandbox province``: serve the province in the foreground."""
    import os
    import time

    from connectors.config import load_all_sources
    from connectors.sandbox.province import province_plans

    args = _province_args(argv, drop=False)
    names = [n for n in args.cities.split(",") if n] or None
    plans = province_plans(args.sources_dir, names, cells_target=args.cells)
    # each city's bearer token from the variable its source file names, as the sync reads it
    tokens: dict[str, str | None] = {}
    for config in load_all_sources(args.sources_dir):
        env = args.token_env or config.token_env
        tokens[config.name] = (os.environ.get(env, "").strip() or None) if env else None
    t0 = time.perf_counter()
    with ProvinceSandbox(
        plans, seed=args.seed, volume=args.volume, start_date=_start_date(args.start_date), token=tokens
    ) as sandbox:
        for source in sandbox.sources:
            tl = sandbox.timeline(source)
            where = sandbox.base_url(source) if tl.plan.kind == "http" else str(sandbox.drop_dir(source))
            log.info(
                "sandbox province: %s (%s, %s) at %s: %s",
                source,
                tl.plan.city_code,
                tl.plan.crs,
                where,
                tl.counts(),
            )
        log.info(
            "sandbox province: ready in %.1f s (day 0 = %s)", time.perf_counter() - t0, sandbox.start_date
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def main_province_drop(argv: Sequence[str]) -> int:
    """``python -m connectors.sandbox province-drop``: write day N's drop of one file city."""
    from connectors.config import load_all_sources
    from connectors.sandbox.province import city_plan

    args = _province_args(argv, drop=True)
    configs = {c.name: c for c in load_all_sources(args.sources_dir)}
    if args.source not in configs or configs[args.source].kind != "file":
        raise SystemExit(f"{args.source}: no file-drop source of that name in {args.sources_dir}")
    plan = city_plan(configs[args.source], cells_target=args.cells)
    folder = Path(args.folder) if args.folder else plan.folder
    if folder is None:
        raise SystemExit(f"{args.source}: no folder")
    province = [c.city_code for c in configs.values() if c.enabled]
    tl = CityTimeline(
        plan, seed=args.seed, volume=args.volume, start_date=_start_date(args.start_date), province=province
    )
    tl.advance(args.day)
    for path in write_day_drop(tl, folder):
        log.info("sandbox: wrote %s", path)
    return 0
