"""HttpSource: pages of raw rows from a municipal grid API (the sandbox, and cities' real APIs of
the same page style).

The page style: ``GET {base_url}{path_template}?limit=N[&updated_since=ISO][&cursor=C]`` with an
optional ``Authorization: Bearer <token>`` header, answering
``{"items": [...], "next_cursor": "..." | null, "total": N}``. A query string in
``path_template`` (``/api/v1/{entity}?format=json``) is sent with every request.

By id: ``GET {base_url}{path}/by-id?id=A&id=B[&fixed query]`` (``path`` being ``path_template``
without its query) answering ``{"items": [...]}``, the current version of each named record, for
re-taking quarantined records (:meth:`HttpSource.fetch_by_id`). A source without that endpoint
answers 404 or 405.

Failures: transient ones (connection errors and timeouts, HTTP 5xx, HTTP 429, and a JSON body cut
short — it starts like JSON but does not parse, as when a proxy drops the connection mid-body) are
retried with exponential backoff and jitter, honouring ``Retry-After``, up to
``config.max_attempts`` attempts; then :class:`SourceUnavailable` is raised with one sentence
naming the source, the base URL and the last problem. Anything retrying cannot fix (HTTP 4xx, a
body that is not JSON at all, JSON that is not a page) raises :class:`SourceRejected` (a subclass)
at once. Neither message contains the token, query values beyond the base URL, or anything from a
response body (which may hold personal data).

Offset paging (``config.paging = "offset"``, e.g. 荆州): ``?offset=K&limit=N[&updated_since=ISO]``
over rows ordered by (update time, id); ``next_cursor`` is ignored, a page shorter than ``limit``
is the last. A bare offset is not a safe cursor: a row updated while we page leaves its place, the
rows after it shift down by one and the next offset skips one. So the cursor this class hands out
(and the flow stores with the page, in the page's transaction) is ``o1.`` + (the update time T of
the page's last row, the number of rows at exactly T read so far); the next page asks
``updated_since=T&offset=<that number - offset_overlap>``. Rows before T no longer matter, rows
updated meanwhile move past T (and are read there), and the overlap re-reads the last rows of T in
case rows of that same second left (a re-read is an "unchanged" upsert). A crash resumes from the
stored cursor exactly as with keyset paging. A last row whose update time is unreadable keeps the
previous time and the plain offset.

Incremental reads: ``since`` is moved back by ``config.lookback_s`` before it is sent, so a record
committed late (its update time already behind our watermark) is still read. The caller passes the
same ``since`` for every page of a stream, so the keyset cursor stays consistent.

Rate limit: with ``config.rate_limit_per_s`` every request (retries included) first takes a token
from a bucket shared by all :class:`HttpSource` objects of that source in the process (the nightly
flow opens one per page), refilled at that rate with a burst of one second's worth.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import json
import logging
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import httpx
import orjson

from connectors.config import SourceConfig, SourceRejected, SourceUnavailable
from connectors.source import Page

__all__ = ["MAX_BY_ID", "HttpSource", "SourceRejected", "SourceUnavailable", "TokenBucket"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_USER_AGENT = "gridflow-connector/0.1"
#: Ids per ``by-id`` request (what the sandbox and the cities' APIs accept at most).
MAX_BY_ID = 1_000
#: What :meth:`HttpSource._get` returns for a 404/405 when told the endpoint may be absent.
_ABSENT = object()


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` banked.

    :meth:`take` blocks (through ``sleep``) until a token is available. Thread-safe.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token; returns the seconds waited for it."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                wait = (1.0 - self._tokens) / self.rate
            self._sleep(wait)
            waited += wait


_BUCKETS: dict[tuple[str, float], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def _shared_bucket(source: str, rate: float) -> TokenBucket:
    """The process-wide bucket of a source (one per source name and rate)."""
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get((source, rate))
        if bucket is None:
            bucket = _BUCKETS[(source, rate)] = TokenBucket(rate)
        return bucket


class _CutShort(Exception):
    """A 2xx body that starts like JSON but does not parse: retried like a dropped connection."""


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (~20 ms), and a source is
    opened for every page fetched."""
    return httpx.create_ssl_context()


class HttpSource:
    """A :class:`connectors.source.Source` over HTTP.

    ``client`` lets the caller share a connection pool or add transport-level behaviour; a client
    passed in is not closed by :meth:`close`. ``sleep`` and ``rng`` make backoff testable;
    ``bucket`` replaces the shared rate-limit bucket (tests).
    """

    def __init__(
        self,
        config: SourceConfig,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        if config.kind != "http" or not config.base_url:
            raise ValueError(f"source {config.name} is not an http source with a base_url")
        self.name = config.name
        self.config = config
        self.base_url: str = config.base_url
        self._owns_client = client is None
        self._client = (
            client if client is not None else httpx.Client(timeout=config.timeout_s, verify=_tls_context())
        )
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._bucket = bucket
        if bucket is None and config.rate_limit_per_s is not None:
            self._bucket = _shared_bucket(config.name, config.rate_limit_per_s)
        self._headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        token = config.token()
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        elif config.token_env:
            log.info("source %s: %s is not set, calling without a token", self.name, config.token_env)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpSource(name={self.name!r}, base_url={self.base_url!r})"

    # -- Source ---------------------------------------------------------------------------------

    def pages(self, entity: str, *, since: str | None) -> Iterator[Page]:
        """Every page of ``entity`` updated at or after ``since``, following the keyset cursor."""
        cursor: str | None = None
        seen: set[str] = set()
        page_no = 1
        while True:
            page = self.fetch_page(entity, cursor=cursor, since=since, page_no=page_no)
            yield page
            if page.cursor_after is None:
                return
            if page.cursor_after in seen:
                raise SourceRejected(
                    f"source {self.name} at {self.base_url} returned a cursor for {entity} it had "
                    f"returned before (page {page.page_no}), so paging would never end"
                )
            seen.add(page.cursor_after)
            cursor = page.cursor_after
            page_no += 1

    def fetch_page(self, entity: str, *, cursor: str | None, since: str | None, page_no: int = 1) -> Page:
        """One page starting at ``cursor`` (None = the first page)."""
        if entity not in self.config.entities:
            raise ValueError(f"source {self.name} has no entity {entity!r}")
        if self.config.paging == "offset":
            return self._fetch_offset_page(entity, cursor=cursor, since=since, page_no=page_no)
        path, fixed = self._path_and_query(entity)
        params: dict[str, str | int] = dict(fixed)
        params["limit"] = self.config.page_size
        if since:
            params["updated_since"] = self._looked_back(since)
        if cursor:
            params["cursor"] = cursor
        url = self.base_url + path
        body = self._get(url, params, entity)
        items, next_cursor, total = self._parse(body, entity)
        log.debug("source %s: %s page %d, %d rows", self.name, entity, page_no, len(items))
        return Page(
            entity=entity,
            records=items,
            cursor_before=cursor,
            cursor_after=next_cursor,
            page_no=page_no,
            fetched_at=datetime.now(UTC),
            total=total,
        )

    def fetch_by_id(self, entity: str, ids: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """The source's current version of each record in ``ids`` (``GET {path}/by-id``, at most
        :data:`MAX_BY_ID` ids per request), keyed by its record id (the mapped
        ``source_record_id`` field, stripped); records the source no longer has are absent, and so
        are rows without a record id. None when the source has no by-id endpoint (HTTP 404/405)."""
        if entity not in self.config.entities:
            raise ValueError(f"source {self.name} has no entity {entity!r}")
        id_field = self.config.mapping[entity]["source_record_id"]
        path, fixed = self._path_and_query(entity)
        url = self.base_url + path + "/by-id"
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), MAX_BY_ID):
            params = httpx.QueryParams([*fixed, *(("id", i) for i in ids[start : start + MAX_BY_ID])])
            body = self._get(url, params, entity, absent_ok=True)
            if body is _ABSENT:
                log.info("source %s: no by-id endpoint for %s", self.name, entity)
                return None
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise SourceRejected(
                    f"source {self.name} at {self.base_url} sent a {entity} by-id answer without an "
                    "'items' list"
                )
            for row in items:
                if isinstance(row, dict) and row.get(id_field) not in (None, ""):
                    found[str(row[id_field]).strip()] = row
        return found

    def _fetch_offset_page(self, entity: str, *, cursor: str | None, since: str | None, page_no: int) -> Page:
        """One page of an offset-paged API (see the module docstring for the cursor)."""
        if cursor:
            page_since, seen_at_since = self._decode_offset_cursor(cursor)
            offset = max(0, seen_at_since - self.config.offset_overlap)
        else:
            page_since, seen_at_since, offset = (self._looked_back(since) if since else None), 0, 0
        path, fixed = self._path_and_query(entity)
        params: dict[str, str | int] = dict(fixed)
        params["limit"] = self.config.page_size
        params["offset"] = offset
        if page_since:
            params["updated_since"] = page_since
        body = self._get(self.base_url + path, params, entity)
        items, _, total = self._parse(body, entity)
        next_cursor = None
        if len(items) >= self.config.page_size:
            next_cursor = self._next_offset_cursor(entity, items, page_since, offset)
        log.debug(
            "source %s: %s page %d (offset %d), %d rows", self.name, entity, page_no, offset, len(items)
        )
        return Page(
            entity=entity,
            records=items,
            cursor_before=cursor,
            cursor_after=next_cursor,
            page_no=page_no,
            fetched_at=datetime.now(UTC),
            total=total,
        )

    def _next_offset_cursor(
        self, entity: str, items: Sequence[dict[str, Any]], page_since: str | None, offset: int
    ) -> str:
        from connectors.validate import FieldError, parse_timestamp

        field = self.config.mapping[entity]["source_updated_at"]  # type: ignore[index]

        def when(row: dict[str, Any]) -> datetime | None:
            try:
                return parse_timestamp(row.get(field) if isinstance(row, dict) else None, field=field)
            except FieldError:
                return None

        last = when(items[-1])
        since_at = None
        if page_since:
            try:
                since_at = parse_timestamp(page_since, field="since")
            except FieldError:
                since_at = None
        if last is None or (since_at is not None and last <= since_at):
            # the whole page sits at the page's own time (or the time is unreadable): plain offset
            return _encode_offset_cursor(page_since, offset + len(items))
        at_last = 0
        for row in reversed(items):
            if when(row) != last:
                break
            at_last += 1
        return _encode_offset_cursor(last.isoformat(), at_last)

    def _decode_offset_cursor(self, cursor: str) -> tuple[str | None, int]:
        try:
            if not cursor.startswith("o1."):
                raise ValueError
            raw = base64.urlsafe_b64decode(cursor[3:] + "=" * (-len(cursor[3:]) % 4))
            since, count = json.loads(raw)
            if not (since is None or isinstance(since, str)) or not isinstance(count, int) or count < 0:
                raise ValueError
        except (ValueError, TypeError, binascii.Error):
            raise SourceRejected(
                f"source {self.name}: the stored page cursor is not an offset cursor this connector "
                'issued (was the source switched to paging = "offset" mid-stream?)'
            ) from None
        return since, count

    # -- internals ------------------------------------------------------------------------------

    def _path_and_query(self, entity: str) -> tuple[str, list[tuple[str, str]]]:
        """``path_template`` for ``entity`` split into its path and its fixed query parameters.

        A query in path_template holds fixed parameters some APIs need (``?format=json``); httpx
        would drop it when params are given, so the callers merge it into theirs."""
        path, _, fixed = self.config.path_template.format(entity=entity).partition("?")
        return path, urllib.parse.parse_qsl(fixed)

    def _looked_back(self, since: str) -> str:
        """``since`` moved back by the lookback window (unchanged if unreadable: the source says so)."""
        lookback = self.config.lookback_s
        if not lookback:
            return since
        from connectors.validate import FieldError, parse_timestamp

        try:
            when = parse_timestamp(since, field="since")
        except FieldError:
            return since
        if when is None:
            return since
        return (when - timedelta(seconds=lookback)).isoformat()

    def _get(self, url: str, params: Mapping[str, str | int], entity: str, *, absent_ok: bool = False) -> Any:
        """The decoded JSON body of a 2xx answer, after retries of transient failures.

        ``params`` may be an :class:`httpx.QueryParams` (a parameter repeated). With ``absent_ok``
        an HTTP 404 or 405 (no such endpoint) returns :data:`_ABSENT` instead of raising."""
        cfg = self.config
        problem = "no attempt made"
        for attempt in range(1, cfg.max_attempts + 1):
            if self._bucket is not None:
                self._bucket.take()
            try:
                response = self._client.get(url, params=params, headers=self._headers)
            except httpx.TransportError as e:
                problem = _describe_transport_error(e, cfg.timeout_s)
                wait = self._backoff(attempt)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        return self._json(response, entity)
                    except _CutShort:
                        problem = "a page body cut short (invalid JSON)"
                        wait = self._backoff(attempt)
                else:
                    problem = _status_text(status)
                    if absent_ok and status in (404, 405):
                        return _ABSENT
                    if status not in _RETRY_STATUS:
                        raise SourceRejected(self._rejected_sentence(status))
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                    response.close()
                    if retry_after is not None and retry_after > cfg.max_retry_after_s:
                        raise SourceUnavailable(
                            f"source {self.name} at {self.base_url} answered {problem} and asked to retry "
                            f"after {retry_after:.0f} s, more than the {cfg.max_retry_after_s:.0f} s allowed"
                        )
                    wait = retry_after if retry_after is not None else self._backoff(attempt)
            if attempt == cfg.max_attempts:
                break
            log.warning(
                "source %s: %s; retrying in %.1f s (attempt %d of %d)",
                self.name,
                problem,
                wait,
                attempt,
                cfg.max_attempts,
            )
            self._sleep(wait)
        attempts = "1 attempt" if cfg.max_attempts == 1 else f"{cfg.max_attempts} attempts"
        raise SourceUnavailable(
            f"source {self.name} unreachable at {self.base_url}: {problem} after {attempts}"
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniformly between half and all of base * 2^(attempt-1)."""
        cfg = self.config
        delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2.0 ** (attempt - 1))
        return delay / 2 + self._rng.uniform(0.0, delay / 2)

    def _rejected_sentence(self, status: int) -> str:
        hint = ""
        if status in (401, 403):
            hint = (
                f" (check the token in {self.config.token_env})"
                if self.config.token_env
                else " (the source needs a token: set token_env)"
            )
        elif status == 404:
            hint = " (check base_url and path_template)"
        return f"source {self.name} at {self.base_url} refused the request: {_status_text(status)}{hint}"

    def _bad(self, entity: str, what: str) -> SourceRejected:
        return SourceRejected(f"source {self.name} at {self.base_url} sent a {entity} page {what}")

    def _json(self, response: httpx.Response, entity: str) -> Any:
        try:
            return orjson.loads(response.content)  # several times faster than json for big pages
        except ValueError:
            head = response.content[:64].lstrip()
            if head[:1] in (b"{", b"["):
                raise _CutShort() from None
            raise self._bad(entity, "that is not JSON") from None

    def _parse(self, body: Any, entity: str) -> tuple[list[dict[str, Any]], str | None, int | None]:
        def bad(what: str) -> SourceRejected:
            return self._bad(entity, what)

        if not isinstance(body, dict):
            raise bad("that is not a JSON object")
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad("without an 'items' list of objects")
        next_cursor = body.get("next_cursor")
        if next_cursor is not None and not isinstance(next_cursor, str):
            raise bad("whose 'next_cursor' is not a string or null")
        total = body.get("total")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
            raise bad("whose 'total' is not an integer")
        return items, next_cursor or None, total


def _encode_offset_cursor(since: str | None, count: int) -> str:
    raw = json.dumps([since, count], separators=(",", ":")).encode()
    return "o1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _describe_transport_error(e: httpx.TransportError, timeout_s: float) -> str:
    """A short, value-free phrase for a transport failure."""
    if isinstance(e, httpx.ConnectTimeout):
        return f"connect timed out after {timeout_s:g} s"
    if isinstance(e, httpx.TimeoutException):
        return f"no response within {timeout_s:g} s"
    text = str(e).lower()
    if isinstance(e, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "name or service" in text or "nodename" in text or "getaddrinfo" in text or "resolve" in text:
            return "host name not found"
        if "unreachable" in text:
            return "network unreachable"
        return "cannot connect"
    if isinstance(e, httpx.RemoteProtocolError):
        return "connection closed mid-response"
    if isinstance(e, httpx.ReadError | httpx.WriteError):
        return "connection reset"
    return f"transport error ({type(e).__name__})"


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
