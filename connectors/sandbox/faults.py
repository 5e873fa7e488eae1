"""Fault switches for the sandbox grid system: everything a real city's system does to us.

Two ways to switch a fault on:

* **by config** - a :class:`FaultPlan` passed to :func:`connectors.sandbox.app.create_app`
  (``faults=``). The plan is mutable and counts what it did (:attr:`FaultPlan.fired`), so a test
  can change it between two runs and prove that each fault really fired;
* **by request** - ``?fault=5xx,slow`` or the header ``X-Sandbox-Fault: 5xx,slow`` applies the
  named faults to that one request (names in :data:`REQUEST_FAULTS`). A source config can carry
  the query in its ``path_template`` (``/api/v1/{entity}?fault=drift``).

The faults, and what a correct connector + flow does about them:

=====================  ==========================================================================
``server_errors``      the first N page requests (after ``errors_after``) answer ``error_status``
                       (503); N < 0 = every request (a persistent outage). Retried, then the run
                       fails with one sentence and the committed pages stay committed.
``rate_limited``       the first N requests answer 429 with ``Retry-After: retry_after_s``: honoured.
``slow``               the first N bodies stall ``slow_s`` seconds half-way: a read timeout, retried.
``truncated``          the first N bodies are cut in half (a 200 with invalid JSON): retried.
``overlap``            every page after the first repeats the previous page's last N rows
                       (duplicates across pages): upserts are idempotent, nothing is duplicated.
``repeat_in_page``     the first N rows of each page are sent twice in it: collapsed.
``reverse_pages``      the rows of each page come in reverse order (out of order).
``replay``             old versions of records (see :func:`stale_versions`) are served after the
                       last row, whatever ``updated_since`` says (a replay from a backup log):
                       the version guard keeps the newer row.
``renamed``            schema drift: fields renamed in every row (``{"workers": {"sfzh": ...}}``):
                       the run fails before anything of that page is written.
``volume``             only this share of the rows is served (``0.0`` = an empty day): the run
                       fails as suspicious when history says the day is usually bigger.
``hidden``             record ids withheld (not yet committed); revealing them later with an older
                       update time is a late commit, which ``lookback_s`` catches.
=====================  ==========================================================================

File drops (:func:`write_drop_file`): GBK/GB18030, UTF-8 with or without BOM and XLSX files, with
or without the ``NAME.sha256`` manifest, and partial files cut in the middle of a row.

Nothing here logs row contents.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from connectors.sandbox.data import SandboxDataset

__all__ = [
    "REQUEST_FAULTS",
    "FaultPlan",
    "stale_versions",
    "write_drop_file",
]

#: Fault names accepted by request (``?fault=`` or ``X-Sandbox-Fault``), each for that request only.
REQUEST_FAULTS = ("5xx", "429", "slow", "truncate", "duplicate", "shuffle", "drift", "empty")

#: Sort key of replayed rows: after every real row whatever its update time.
_TAIL_EPOCH = 2**53

#: The field renamed by the request-level ``drift`` fault: the entity's identifying required field.
_DRIFT_FIELD = {"workers": "id_number", "enterprises": "uscc", "cases": "kind"}

Key = tuple[int, str]


@dataclass
class FaultPlan:
    """Which faults the sandbox applies. Mutable: tests switch faults between runs.

    ``entities`` limits the plan to some entities (None = all). :attr:`fired` counts each fault
    each time it fired (``"5xx"``, ``"429"``, ``"slow"``, ``"truncate"``, ``"overlap"``,
    ``"repeat"``, ``"reverse"``, ``"replay"``, ``"drift"``, ``"volume"``, ``"hidden"``).
    """

    server_errors: int = 0
    error_status: int = 503
    errors_after: int = 0
    rate_limited: int = 0
    retry_after_s: int = 1
    slow: int = 0
    slow_s: float = 2.0
    truncated: int = 0
    overlap: int = 0
    repeat_in_page: int = 0
    reverse_pages: bool = False
    replay: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    renamed: dict[str, dict[str, str]] = field(default_factory=dict)
    volume: float | None = None
    hidden: dict[str, set[str]] = field(default_factory=dict)
    entities: frozenset[str] | None = None
    fired: Counter[str] = field(default_factory=Counter, init=False, compare=False)
    requests: int = field(default=0, init=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_names(cls, names: Iterable[str], mapping: Mapping[str, Mapping[str, str]]) -> FaultPlan:
        """A one-request plan from fault names (see :data:`REQUEST_FAULTS`); unknown names raise."""
        plan = cls()
        for raw in names:
            name = raw.strip().lower()
            if not name:
                continue
            if name == "5xx":
                plan.server_errors = 1
            elif name == "429":
                plan.rate_limited = 1
            elif name == "slow":
                plan.slow = 1
            elif name == "truncate":
                plan.truncated = 1
            elif name == "duplicate":
                plan.overlap = plan.repeat_in_page = 3
            elif name == "shuffle":
                plan.reverse_pages = True
            elif name == "drift":
                plan.renamed = {
                    entity: {fields[_DRIFT_FIELD[entity]]: fields[_DRIFT_FIELD[entity]] + "_new"}
                    for entity, fields in mapping.items()
                    if entity in _DRIFT_FIELD and _DRIFT_FIELD[entity] in fields
                }
            elif name == "empty":
                plan.volume = 0.0
            else:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(REQUEST_FAULTS)}")
        return plan

    @classmethod
    def parse(cls, spec: str, mapping: Mapping[str, Mapping[str, str]]) -> FaultPlan:
        """A plan from a command-line spec: ``5xx=3,429=2,slow=1,truncate=1,overlap=5,shuffle,
        drift,empty,volume=0.3,errors_after=2`` (a bare name is the request-level fault)."""
        plan = cls()
        ints = {
            "5xx": "server_errors",
            "429": "rate_limited",
            "slow": "slow",
            "truncate": "truncated",
            "overlap": "overlap",
            "repeat": "repeat_in_page",
            "errors_after": "errors_after",
            "retry_after": "retry_after_s",
        }
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, _, value = part.partition("=")
            name = name.strip().lower()
            if value and name in ints:
                setattr(plan, ints[name], int(value))
            elif value and name == "volume":
                plan.volume = float(value)
            elif value and name == "slow_s":
                plan.slow_s = float(value)
            elif not value:
                bare, default = cls.from_names([name], mapping), cls()
                for f in dataclasses.fields(cls):
                    if f.init and getattr(bare, f.name) != getattr(default, f.name):
                        setattr(plan, f.name, getattr(bare, f.name))
            else:
                raise ValueError(f"unknown fault setting {name!r}")
        return plan

    # -- the engine (called by the app) ---------------------------------------------------------

    def applies(self, entity: str) -> bool:
        return self.entities is None or entity in self.entities

    def _fire(self, name: str, n: int = 1) -> None:
        self.fired[name] += n

    def answer_before(self, entity: str) -> Response | None:
        """5xx or 429 instead of the page (counts the request)."""
        with self._lock:
            self.requests += 1
            n = self.requests
            if n > self.errors_after and (self.server_errors < 0 or self.fired["5xx"] < self.server_errors):
                self._fire("5xx")
                return JSONResponse({"error": "sandbox fault: server error"}, status_code=self.error_status)
            if self.fired["429"] < self.rate_limited:
                self._fire("429")
                return JSONResponse(
                    {"error": "sandbox fault: too many requests"},
                    status_code=429,
                    headers={"Retry-After": str(self.retry_after_s)},
                )
        return None

    def reshape(
        self, entity: str, keys: list[Key], rows: list[dict[str, Any]]
    ) -> tuple[list[Key], list[dict[str, Any]]]:
        """The served sequence: hidden and volume filters, replayed versions at the tail."""
        hidden = self.hidden.get(entity)
        if hidden or self.volume is not None:
            kept = [
                (k, r)
                for k, r in zip(keys, rows, strict=True)
                if not (hidden and k[1] in hidden) and (self.volume is None or _kept(k[1], self.volume))
            ]
            with self._lock:
                if hidden:
                    self._fire("hidden")
                if self.volume is not None:
                    self._fire("volume")
            keys, rows = [k for k, _ in kept], [r for _, r in kept]
        replay = self.replay.get(entity)
        if replay:
            keys = [*keys, *((_TAIL_EPOCH, f"~{i:08d}") for i in range(len(replay)))]
            rows = [*rows, *replay]
        return keys, rows

    def shape_page(
        self,
        entity: str,
        rows: list[dict[str, Any]],
        first: int,
        start: int,
        end: int,
        items: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """``items`` (the page ``rows[start:end]``, maybe shaped by another plan already) after
        overlap with the previous page, repeats, reordering and renaming."""
        lo = max(first, start - self.overlap) if start > first else start
        items = [*rows[lo:start], *items]
        n_replay = len(self.replay.get(entity, ()))
        replayed = max(0, end - max(lo, len(rows) - n_replay)) if n_replay else 0
        with self._lock:
            if lo < start:
                self._fire("overlap", start - lo)
            if self.repeat_in_page and items:
                self._fire("repeat")
            if self.reverse_pages and len(items) > 1:
                self._fire("reverse")
            if replayed:
                self._fire("replay", replayed)
        if self.repeat_in_page:
            items = items[: self.repeat_in_page] + items
        if self.reverse_pages:
            items.reverse()
        renames = self.renamed.get(entity)
        if renames and items:
            items = [{renames.get(k, k): v for k, v in row.items()} for row in items]
            with self._lock:
                self._fire("drift")
        return items

    def respond(self, body: dict[str, Any]) -> Response | None:
        """A slow or truncated answer instead of the normal one (None = answer normally)."""
        with self._lock:
            slow = self.fired["slow"] < self.slow
            if slow:
                self._fire("slow")
            cut = self.fired["truncate"] < self.truncated
            if cut:
                self._fire("truncate")
        if not (slow or cut):
            return None
        payload = json.dumps(body, ensure_ascii=False).encode()
        if cut:
            payload = payload[: max(1, len(payload) // 2)]
        if not slow:
            return Response(payload, media_type="application/json")
        delay = self.slow_s
        half = len(payload) // 2

        async def trickle() -> AsyncIterator[bytes]:
            yield payload[:half]
            await asyncio.sleep(delay)
            yield payload[half:]

        return StreamingResponse(trickle(), media_type="application/json")


def _kept(record_id: str, share: float) -> bool:
    """Deterministic sampling by record id (the same rows every request)."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    h = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:4], "big")
    return h / 2**32 < share


def request_plan(request: Request, mapping: Mapping[str, Mapping[str, str]]) -> FaultPlan | None:
    """The one-request plan named by ``?fault=`` and/or ``X-Sandbox-Fault``; None if neither."""
    names = [
        *request.query_params.get("fault", "").split(","),
        *request.headers.get("x-sandbox-fault", "").split(","),
    ]
    names = [n for n in names if n.strip()]
    return FaultPlan.from_names(names, mapping) if names else None


# -- versions of records -----------------------------------------------------------------------


def stale_versions(
    dataset: SandboxDataset,
    entity: str,
    n: int,
    *,
    seed: int = 1,
    age: timedelta = timedelta(days=30),
    among: int | None = None,
) -> list[dict[str, Any]]:
    """Older versions of ``n`` good records of ``entity``: update time ``age`` earlier and a
    different (still valid) address, as a replay from a backup would send them. ``among`` picks
    them from the first ``among`` rows only (served on early pages, so the replay comes pages later).

    A correct load never lets one of them overwrite the current version.
    """
    mapping = dataset.mapping[entity]
    ts_field, addr_field = mapping["source_updated_at"], mapping.get("address")
    rng = random.Random(f"stale:{seed}:{entity}")
    good = [r for r in dataset.rows(entity)[:among] if r.label == "ok"]
    out: list[dict[str, Any]] = []
    for r in rng.sample(good, min(n, len(good))):
        row = dict(r.row)
        row[ts_field] = (r.updated_at - age).strftime("%Y-%m-%d %H:%M:%S")
        if addr_field and row.get(addr_field):
            row[addr_field] = str(row[addr_field]) + "（旧址）"
        out.append(row)
    return out


# -- file drops --------------------------------------------------------------------------------

FileFormat = Literal["csv", "xlsx"]


def _csv_bytes(header: Sequence[str], rows: Sequence[Mapping[str, Any]], encoding: str) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if row.get(h) is None else row.get(h) for h in header])
    return buf.getvalue().encode(encoding)


def _xlsx_bytes(header: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("导出数据")
    ws.append(list(header))
    for row in rows:
        ws.append([row.get(h) for h in header])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write_drop_file(
    folder: Path,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    header: Sequence[str] | None = None,
    fmt: FileFormat = "csv",
    encoding: str = "utf-8",
    manifest: bool = True,
    cut_mid_row: bool = False,
    mtime: datetime | None = None,
) -> Path:
    """Write rows as a city would drop them: ``folder/name`` plus ``name.sha256`` (sha256sum format).

    ``encoding`` applies to CSV (``"gbk"``, ``"gb18030"``, ``"utf-8"``, ``"utf-8-sig"`` with BOM).
    ``cut_mid_row`` leaves the file as an interrupted upload does: stopped in the middle of a row
    about two thirds in, while the manifest (if written) carries the hash of the complete file, as
    the sender computed it. ``mtime`` backdates the file (for settle-window tests).
    """
    folder.mkdir(parents=True, exist_ok=True)
    fields = list(header) if header is not None else list(rows[0]) if rows else []
    data = _csv_bytes(fields, rows, encoding) if fmt == "csv" else _xlsx_bytes(fields, rows)
    path = folder / name
    digest = hashlib.sha256(data).hexdigest()
    if cut_mid_row:
        nl = data.find(b"\n", len(data) * 2 // 3)
        nxt = data.find(b"\n", nl + 1) if nl >= 0 else -1
        cut = max(1, len(data) - 5) if nl < 0 or nxt < 0 else nl + 1 + max(1, (nxt - nl) // 2)
        data = data[:cut]
    path.write_bytes(data)
    if manifest:
        (folder / f"{name}.sha256").write_text(f"{digest}  {name}\n", encoding="ascii")
    if mtime is not None:
        stamp = mtime.timestamp()
        os.utime(path, (stamp, stamp))
    return path
