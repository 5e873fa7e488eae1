"""The sandbox grid system's HTTP API: the page style :class:`connectors.http.HttpSource` reads.

``GET /api/v1/{entity}?updated_since=ISO&cursor=C&limit=N`` answers
``{"items": [...], "next_cursor": "..." | null, "total": N}``:

* rows ordered by (update time, record id); ``updated_since`` is inclusive (naive = Asia/Shanghai);
* ``cursor`` is an opaque keyset position (the last row's update time and id), so paging neither
  skips nor repeats rows however the data changes; ``next_cursor`` is null on the last page;
* ``limit`` defaults to 100 and is clamped to 1..1000, as municipal APIs do;
* ``offset=K`` instead of ``cursor`` starts at the K-th row matching ``updated_since`` (the page
  style of cities whose APIs page by offset, e.g. 荆州's);
* ``total`` counts the rows matching ``updated_since`` (not the cursor);
* ``Authorization: Bearer <token>`` is required when the app was created with a token.

``GET /api/v1/{entity}/by-id?id=A&id=B`` answers ``{"items": [...], "missing": [...]}``: the
current version of each named record (at most 1,000 ids), for re-taking quarantined records.

``GET /health`` answers without a token.

Corrections: :func:`correct_record` replaces a record by a newer version while the app runs (the
city fixed its data), and :func:`connectors.sandbox.fixes.fixed_row` builds such a version of a
bad row.

Fault switches: a :class:`connectors.sandbox.faults.FaultPlan` (``faults=``) or, per request,
``?fault=5xx,drift`` / ``X-Sandbox-Fault`` (see :mod:`connectors.sandbox.faults`): 5xx, 429 with
``Retry-After``, slow and truncated bodies, duplicate and out-of-order rows, stale replays, schema
drift, an empty or thin day, late commits. Other misbehaviour plugs in as ``hooks``: callables run
before a page is served that may return a response instead.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hmac
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from connectors.sandbox.data import DatasetLike, SandboxDataset
from connectors.sandbox.faults import FaultPlan, request_plan
from connectors.validate import FieldError, parse_timestamp

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_BY_ID",
    "MAX_LIMIT",
    "RequestHook",
    "SandboxServer",
    "correct_record",
    "create_app",
    "serve_sandbox",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_BY_ID = 1_000

#: Runs before a page is served: ``(entity, request) -> a response to send instead, or None``.
RequestHook = Callable[[str, Request], Response | None]


def _encode_cursor(epoch: int, record_id: str) -> str:
    raw = json.dumps([epoch, record_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        epoch, record_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("cursor is not one this API issued") from None
    if not isinstance(epoch, int) or not isinstance(record_id, str):
        raise ValueError("cursor is not one this API issued")
    return epoch, record_id


def _json(body: object) -> Response:
    """A JSON answer serialised by orjson: a 10,000-row page costs a fifth of what the standard
    library's encoder does, and the sandbox shares the machine with the sync it serves."""
    try:
        return Response(orjson.dumps(body), media_type="application/json")
    except TypeError:  # something orjson does not serialise (a non-string key from a fault): stdlib
        return JSONResponse(body)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    dataset: DatasetLike,
    *,
    token: str | None = None,
    hooks: Sequence[RequestHook] = (),
    faults: FaultPlan | None = None,
    max_limit: int = MAX_LIMIT,
) -> FastAPI:
    """A FastAPI app serving ``dataset``; ``token`` turns on bearer auth; ``hooks`` see every page;
    ``faults`` switches faults on (the plan may be changed while the app runs); a page never
    exceeds ``max_limit`` rows (10,000 by default, so bulk benchmarks need few round trips)."""
    app = FastAPI(title="gridflow sandbox grid system", version="1", docs_url=None, redoc_url=None)
    keys = {
        e: [(int(r.updated_at.timestamp()), r.record_id) for r in dataset.rows(e)] for e in dataset.entities
    }
    served = {e: [r.row for r in dataset.rows(e)] for e in dataset.entities}
    mapping: dict[str, dict[str, str]] = getattr(dataset, "mapping", None) or {}  # duck-typed datasets
    expected = f"Bearer {token}".encode() if token else None
    by_id = {e: {r.record_id: r.row for r in dataset.rows(e)} for e in dataset.entities}
    lock = threading.Lock()

    def correct(entity: str, record_id: str, row: dict[str, object], epoch: int) -> None:
        """Serve ``row`` as the newest version of ``record_id`` (moved to its new update time)."""
        with lock:  # copy on write: a page being served keeps the lists it started with
            entity_keys, rows = list(keys[entity]), list(served[entity])
            for i, (_, rid) in enumerate(entity_keys):
                if rid == record_id:
                    del entity_keys[i], rows[i]
                    break
            at = bisect.bisect_left(entity_keys, (epoch, record_id))
            entity_keys.insert(at, (epoch, record_id))
            rows.insert(at, row)
            keys[entity], served[entity] = entity_keys, rows
            by_id[entity][record_id] = row

    app.state.correct = correct

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        return hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)

    @app.get("/health")
    def health() -> dict[str, object]:
        return {
            "status": "ok",
            "city_code": dataset.city_code,
            "crs": dataset.crs,
            "counts": {e: len(k) for e, k in keys.items()},
        }

    @app.get("/api/v1/{entity}/by-id")
    def records_by_id(entity: str, request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if entity not in keys:
            return _error(404, f"unknown entity; known: {', '.join(keys)}")
        ids = request.query_params.getlist("id")
        if not ids or len(ids) > MAX_BY_ID:
            return _error(400, f"give 1 to {MAX_BY_ID} id parameters")
        with lock:
            found = {i: by_id[entity][i] for i in ids if i in by_id[entity]}
        return _json({"items": list(found.values()), "missing": [i for i in ids if i not in found]})

    @app.get("/api/v1/{entity}")
    def page(
        entity: str,
        request: Request,
        updated_since: str | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int | None = None,
    ) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if entity not in keys:
            return _error(404, f"unknown entity; known: {', '.join(keys)}")
        for hook in hooks:
            replacement = hook(entity, request)
            if replacement is not None:
                return replacement
        try:
            plans = [p for p in (faults, request_plan(request, mapping)) if p and p.applies(entity)]
        except ValueError as e:
            return _error(400, str(e))
        for plan in plans:
            early = plan.answer_before(entity)
            if early is not None:
                return early
        with lock:
            entity_keys, rows = keys[entity], served[entity]
        for plan in plans:
            entity_keys, rows = plan.reshape(entity, entity_keys, rows)
        first = 0
        if updated_since:
            try:
                since = parse_timestamp(updated_since, field="updated_since")
            except FieldError:
                return _error(400, "updated_since is not an ISO 8601 timestamp")
            if since is not None:
                first = bisect.bisect_left(entity_keys, (math.ceil(since.timestamp()), ""))
        start = first
        if cursor:
            try:
                position = _decode_cursor(cursor)
            except ValueError as e:
                return _error(400, str(e))
            start = max(first, bisect.bisect_right(entity_keys, position))
        elif offset is not None:  # offset paging: rows from ``offset`` in the updated_since order
            if offset < 0:
                return _error(400, "offset must not be negative")
            start = min(first + offset, len(rows))
        limit = min(max(limit, 1), max_limit)
        end = min(start + limit, len(rows))
        next_cursor = _encode_cursor(*entity_keys[end - 1]) if end < len(rows) and end > start else None
        items = rows[start:end]
        for plan in plans:
            items = plan.shape_page(entity, rows, first, start, end, items)
        body = {"items": items, "next_cursor": next_cursor, "total": len(rows) - first}
        for plan in plans:
            answer = plan.respond(body)
            if answer is not None:
                return answer
        return _json(body)

    return app


def correct_record(
    app: FastAPI, entity: str, record_id: str, row: dict[str, object], *, updated_at: datetime
) -> None:
    """The city fixed a record: ``app`` serves ``row`` (city field names, as
    :func:`connectors.sandbox.fixes.fixed_row` builds it) as the newest version of ``record_id``
    from now on, in pages (at its new update time) and by id."""
    app.state.correct(entity, record_id, dict(row), int(updated_at.timestamp()))


def serve_sandbox(
    host: str,
    port: int,
    dataset: SandboxDataset,
    *,
    token: str | None = None,
    faults: FaultPlan | None = None,
) -> None:
    """Serve the sandbox with uvicorn until interrupted (blocking)."""
    uvicorn.run(create_app(dataset, token=token, faults=faults), host=host, port=port, log_level="info")


class SandboxServer:
    """Run an ASGI app (the sandbox, or any test app) with uvicorn in a background thread.

    ``with SandboxServer(create_app(ds)) as server: HttpSource(... base_url=server.base_url ...)``.
    Port 0 picks a free loopback port; the socket is bound before the thread starts, so there is
    no window in which another process can take it.
    """

    def __init__(self, app: Callable[..., object], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="sandbox-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> SandboxServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise RuntimeError(f"sandbox server did not start on {self.base_url}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()
