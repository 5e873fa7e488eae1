"""HttpSource against the sandbox over real HTTP on loopback: paging, updated_since, resume from a
stored cursor, retries with backoff, and one-sentence failures. No mocks: every test talks to a
uvicorn server on a free port (the sandbox, or a tiny ASGI app that misbehaves on purpose)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from shapely.geometry import box

from connectors.config import SourceConfig, SourceRejected, SourceUnavailable, load_source_config
from connectors.http import MAX_BY_ID, HttpSource
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import SandboxDataset
from connectors.source import Page, Source
from connectors.validate import CHINA_TZ, validate_workers
from tests.sandbox_labels import split_labels

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=CHINA_TZ)
CELLS = [
    ("420502001001001", box(111.28, 30.68, 111.30, 30.70)),
    ("420506100001001", box(111.32, 30.76, 111.35, 30.79)),
]
TOKEN_ENV = "GRIDFLOW_SOURCE_YICHANG_TOKEN"
YICHANG = load_source_config(Path(__file__).parents[2] / "config" / "sources" / "yichang.toml")


def config(base_url: str, **over: Any) -> SourceConfig:
    return SourceConfig.model_validate({**YICHANG.model_dump(), "base_url": base_url, **over})


@pytest.fixture(scope="module")
def dataset() -> SandboxDataset:
    return SandboxDataset(
        CELLS, city_code="420500000000", n_workers=2500, n_enterprises=300, seed=3, as_of=AS_OF
    )


@pytest.fixture(scope="module")
def sandbox(dataset: SandboxDataset) -> Iterator[SandboxServer]:
    with SandboxServer(create_app(dataset)) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


class Sleeps(list[float]):
    """Records backoff sleeps instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- paging -----------------------------------------------------------------------------------


def test_http_source_is_a_source(sandbox: SandboxServer) -> None:
    """Rule: HttpSource implements the Source protocol the nightly flow calls."""
    with HttpSource(config(sandbox.base_url)) as source:
        assert isinstance(source, Source)
        assert source.name == "yichang"


@pytest.mark.parametrize(
    "page_size", [pytest.param(500, id="page size 500"), pytest.param(77, id="page size 77")]
)
def test_pages_return_every_record_once_in_order(
    sandbox: SandboxServer, dataset: SandboxDataset, page_size: int
) -> None:
    """Rule: following the keyset cursor yields every record exactly once, in source order, with
    cursor_before/cursor_after chaining and None after the last page."""
    with HttpSource(config(sandbox.base_url, page_size=page_size)) as source:
        pages = list(source.pages("workers", since=None))
    ids = [row["ywid"] for p in pages for row in p.records]
    assert ids == [r.record_id for r in dataset.rows("workers")]
    assert len(ids) == len(set(ids)) == 2500
    assert [p.page_no for p in pages] == list(range(1, len(pages) + 1))
    assert pages[0].cursor_before is None and pages[-1].cursor_after is None
    assert all(a.cursor_after == b.cursor_before for a, b in itertools.pairwise(pages))
    assert all(p.total == 2500 and p.entity == "workers" and p.fetched_at.tzinfo for p in pages)


def test_updated_since_returns_only_newer_records(sandbox: SandboxServer, dataset: SandboxDataset) -> None:
    """Rule: since= is passed as updated_since and is inclusive."""
    since = (AS_OF - timedelta(days=60)).isoformat()
    with HttpSource(config(sandbox.base_url, page_size=100)) as source:
        got = [row["ywid"] for p in source.pages("workers", since=since) for row in p.records]
    expected = [r.record_id for r in dataset.rows("workers") if r.updated_at >= AS_OF - timedelta(days=60)]
    assert got == expected
    assert 0 < len(got) < 2500


def test_resume_from_a_stored_cursor(sandbox: SandboxServer) -> None:
    """Rule: fetch_page(cursor=<cursor_after of a committed page>) continues exactly after it."""
    with HttpSource(config(sandbox.base_url, page_size=200)) as source:
        all_ids = [row["ywid"] for p in source.pages("enterprises", since=None) for row in p.records]
        first = source.fetch_page("enterprises", cursor=None, since=None)
        resumed = source.fetch_page("enterprises", cursor=first.cursor_after, since=None)
    assert [r["ywid"] for r in first.records + resumed.records] == all_ids[:400]


def test_pages_validate_into_records_and_the_labelled_rejects(
    sandbox: SandboxServer, dataset: SandboxDataset
) -> None:
    """Rule: rows fetched over HTTP validate exactly like the generated rows: every bad row with a
    record problem rejected with its labelled reason (issue #21: the others are loaded with a
    field problem of that reason)."""
    labels = dataset.labels("workers")
    rejected: dict[str, str] = {}
    with HttpSource(config(sandbox.base_url)) as source:
        for page in source.pages("workers", since=None):
            _, rejects = validate_workers(
                page.records,
                mapping=YICHANG.mapping["workers"],
                default_crs=YICHANG.crs,
                today=AS_OF.date(),
            )
            rejected.update({r.source_record_id or "": r.reason.value for r in rejects})
    assert rejected == split_labels("workers", labels)[0]


def test_page_repr_carries_no_rows(sandbox: SandboxServer) -> None:
    """Rule: a Page in a log line shows counts and cursors, never rows."""
    with HttpSource(config(sandbox.base_url, page_size=5)) as source:
        page = source.fetch_page("workers", cursor=None, since=None)
    assert isinstance(page, Page)
    assert page.records[0]["sfzh"] not in repr(page) and "5 rows" in repr(page)


# --- tokens -----------------------------------------------------------------------------------


def test_token_from_the_environment_is_sent(dataset: SandboxDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule: the bearer token comes from the variable named by token_env."""
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    with (
        SandboxServer(create_app(dataset, token="s3cret-token")) as server,
        HttpSource(config(server.base_url)) as source,
    ):
        assert len(source.fetch_page("enterprises", cursor=None, since=None).records) == 300


def test_missing_token_is_refused_in_one_sentence_without_the_token(
    dataset: SandboxDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: HTTP 401 is not retried; the error names the env var, never a token value."""
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-value")
    sleeps = Sleeps()
    with (
        SandboxServer(create_app(dataset, token="s3cret-token")) as server,
        HttpSource(config(server.base_url), sleep=sleeps) as source,
        pytest.raises(SourceRejected) as exc,
    ):
        source.fetch_page("workers", cursor=None, since=None)
    message = str(exc.value)
    assert message == (
        f"source yichang at {server.base_url} refused the request: HTTP 401 Unauthorized "
        f"(check the token in {TOKEN_ENV})"
    )
    assert "wrong-token-value" not in message and "s3cret" not in message
    assert sleeps == []


# --- retries and failures ---------------------------------------------------------------------


def flaky_app(dataset: SandboxDataset, failures: list[Response]) -> tuple[FastAPI, list[str]]:
    """The sandbox with a hook that answers the queued failure responses first."""
    calls: list[str] = []

    def hook(entity: str, request: Request) -> Response | None:
        calls.append(entity)
        return failures.pop(0) if failures else None

    return create_app(dataset, hooks=[hook]), calls


def test_retries_a_503_then_succeeds(dataset: SandboxDataset) -> None:
    """Rule: 5xx is transient: retried with exponential backoff and jitter, then the page is returned."""
    app, calls = flaky_app(dataset, [PlainTextResponse("busy", status_code=503) for _ in range(3)])
    sleeps = Sleeps()
    with SandboxServer(app) as server, HttpSource(config(server.base_url), sleep=sleeps) as source:
        page = source.fetch_page("enterprises", cursor=None, since=None)
    assert len(page.records) == 300
    assert len(calls) == 4
    assert len(sleeps) == 3
    for attempt, slept in enumerate(sleeps, start=1):
        full = YICHANG.backoff_base_s * 2 ** (attempt - 1)
        assert full / 2 <= slept <= full, "backoff doubles per attempt, jittered within its upper half"


def test_retry_after_on_429_is_honoured(dataset: SandboxDataset) -> None:
    """Rule: 429 is retried after the server's Retry-After seconds, not our own backoff."""
    app, _ = flaky_app(dataset, [JSONResponse({}, status_code=429, headers={"Retry-After": "7"})])
    sleeps = Sleeps()
    with SandboxServer(app) as server, HttpSource(config(server.base_url), sleep=sleeps) as source:
        assert source.fetch_page("enterprises", cursor=None, since=None).records
    assert sleeps == [7.0]


def test_retry_after_beyond_the_limit_fails_at_once(dataset: SandboxDataset) -> None:
    """Rule: a server asking us to wait longer than max_retry_after_s is unavailable now."""
    app, calls = flaky_app(dataset, [JSONResponse({}, status_code=503, headers={"Retry-After": "3600"})])
    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url), sleep=Sleeps()) as source,
        pytest.raises(SourceUnavailable, match=r"asked to retry after 3600 s, more than the 300 s allowed"),
    ):
        source.fetch_page("enterprises", cursor=None, since=None)
    assert len(calls) == 1


def test_persistent_503_gives_up_after_max_attempts(dataset: SandboxDataset) -> None:
    """Rule: after max_attempts the failure is one sentence naming source, URL and last problem."""
    app, calls = flaky_app(dataset, [PlainTextResponse("busy", status_code=503) for _ in range(10)])
    sleeps = Sleeps()
    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url, max_attempts=3), sleep=sleeps) as source,
        pytest.raises(SourceUnavailable) as exc,
    ):
        source.fetch_page("workers", cursor=None, since=None)
    assert str(exc.value) == (
        f"source yichang unreachable at {server.base_url}: HTTP 503 Service Unavailable after 3 attempts"
    )
    assert len(calls) == 3 and len(sleeps) == 2


def test_nothing_listening_is_one_clear_sentence() -> None:
    """Rule: connection refused is retried, then reported as one sentence with no chained
    traceback (no httpx/httpcore wall in the flow log)."""
    base_url = f"http://127.0.0.1:{free_port()}"
    sleeps = Sleeps()
    with (
        HttpSource(config(base_url, max_attempts=4), sleep=sleeps) as source,
        pytest.raises(SourceUnavailable) as exc,
    ):
        list(source.pages("workers", since="2026-02-01T00:00:00+08:00"))
    assert str(exc.value) == f"source yichang unreachable at {base_url}: connection refused after 4 attempts"
    assert exc.value.__cause__ is None and exc.value.__context__ is None
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(
            PlainTextResponse("<html>维护中</html>"), "sent a workers page that is not JSON", id="not JSON"
        ),
        pytest.param(JSONResponse({"data": []}), "without an 'items' list of objects", id="no items list"),
        pytest.param(
            JSONResponse({"items": [], "next_cursor": 5}),
            "'next_cursor' is not a string or null",
            id="bad cursor",
        ),
        pytest.param(
            PlainTextResponse("gone", status_code=404), "HTTP 404 Not Found (check base_url", id="404"
        ),
    ],
)
def test_unusable_answers_are_rejected_at_once(response: Response, expected: str) -> None:
    """Rule: answers retrying cannot fix (4xx, a body that is not a page) raise SourceRejected
    immediately, and the message never quotes the body."""
    app = FastAPI()
    calls: list[int] = []

    @app.get("/api/v1/{entity}")
    def page(entity: str) -> Response:
        calls.append(1)
        return response

    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url), sleep=Sleeps()) as source,
        pytest.raises(SourceRejected) as exc,
    ):
        source.fetch_page("workers", cursor=None, since=None)
    assert expected in str(exc.value)
    assert "维护中" not in str(exc.value) and "gone" not in str(exc.value)
    assert calls == [1]


def test_a_cursor_that_repeats_is_refused() -> None:
    """Rule: a source returning a cursor it returned before would page forever: SourceRejected."""
    app = FastAPI()

    @app.get("/api/v1/{entity}")
    def page(entity: str, cursor: str | None = None) -> dict[str, Any]:
        return {"items": [{"ywid": "1"}], "next_cursor": "same", "total": 1}

    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url)) as source,
        pytest.raises(SourceRejected, match="paging would never end"),
    ):
        list(source.pages("workers", since=None))


def test_unknown_entity_is_a_programming_error(sandbox: SandboxServer) -> None:
    """Rule: only the configured entities can be fetched."""
    with (
        HttpSource(config(sandbox.base_url)) as source,
        pytest.raises(ValueError, match="no entity 'parcels'"),
    ):
        source.fetch_page("parcels", cursor=None, since=None)


def test_since_after_every_update_gives_one_empty_last_page(sandbox: SandboxServer) -> None:
    """Rule: nothing changed since the watermark: one empty page, cursor_after None."""
    with HttpSource(config(sandbox.base_url)) as source:
        pages = list(source.pages("workers", since=(date(2030, 1, 1)).isoformat()))
    assert [len(p.records) for p in pages] == [0]
    assert pages[0].total == 0 and pages[0].cursor_after is None


# --- by id ------------------------------------------------------------------------------------


def by_id_app(answer: Callable[[list[str]], Response] | None = None) -> tuple[FastAPI, list[httpx.URL]]:
    """An app with only a ``by-id`` endpoint (any query allowed) that records each request's URL;
    ``answer`` builds the response from the ids (default: one row per id, its id padded)."""
    app = FastAPI()
    seen: list[httpx.URL] = []

    @app.get("/api/v1/{entity}/by-id")
    def by_id(entity: str, request: Request) -> Response:
        seen.append(httpx.URL(str(request.url)))
        ids = request.query_params.getlist("id")
        if answer is not None:
            return answer(ids)
        return JSONResponse({"items": [{"ywid": f" {i} ", "xm": "测试"} for i in ids]})

    return app, seen


def test_by_id_sends_at_most_1000_ids_per_request_and_keys_found_rows_by_record_id(
    sandbox: SandboxServer, dataset: SandboxDataset
) -> None:
    """Rule: fetch_by_id asks for the ids in batches of at most MAX_BY_ID (the sandbox refuses
    more), and returns the current row of every record the source has, keyed by its record id
    (the mapped source_record_id field); ids the source does not know are absent."""
    rows = {r.record_id: r.row for r in dataset.rows("workers")}
    ids = [*rows, "no-such-record"]
    sent: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks={"request": [sent.append]}) as client,
        HttpSource(config(sandbox.base_url), client=client) as source,
    ):
        found = source.fetch_by_id("workers", ids)
    assert MAX_BY_ID == 1000
    assert [len(r.url.params.get_list("id")) for r in sent] == [1000, 1000, 501]
    assert [r.url.params.get_list("id") for r in sent] == [ids[:1000], ids[1000:2000], ids[2000:]]
    assert {r.url.path for r in sent} == {"/api/v1/workers/by-id"}
    assert found == rows


def test_by_id_strips_record_ids_and_skips_rows_without_one() -> None:
    """Rule: found rows are keyed by the stripped text of their record id; a row without one (absent
    or blank) cannot be matched and is left out."""

    def answer(ids: list[str]) -> Response:
        return JSONResponse({"items": [{"ywid": " A1 "}, {"ywid": 7}, {"ywid": ""}, {"xm": "无ID"}, "junk"]})

    app, _ = by_id_app(answer)
    with SandboxServer(app) as server, HttpSource(config(server.base_url)) as source:
        found = source.fetch_by_id("workers", ["A1", "7"])
    assert found == {"A1": {"ywid": " A1 "}, "7": {"ywid": 7}}


def test_by_id_keeps_the_fixed_query_of_path_template_and_puts_by_id_on_the_path() -> None:
    """Rule: with a fixed query in path_template (``/api/v1/{entity}?format=json``), /by-id goes on
    the path and the fixed parameters are sent with the ids, as pages send them."""
    app, seen = by_id_app()
    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url, path_template="/api/v1/{entity}?format=json")) as source,
    ):
        found = source.fetch_by_id("enterprises", ["E1", "E2"])
    assert found == {"E1": {"ywid": " E1 ", "xm": "测试"}, "E2": {"ywid": " E2 ", "xm": "测试"}}
    (url,) = seen
    assert url.path == "/api/v1/enterprises/by-id"
    assert url.params.get_list("format") == ["json"]
    assert url.params.get_list("id") == ["E1", "E2"]


@pytest.mark.parametrize(
    "method", [pytest.param("page only", id="404 no route"), pytest.param("post", id="405 POST only")]
)
def test_by_id_without_the_endpoint_is_none_at_once(method: str) -> None:
    """Rule: a source without a by-id endpoint (HTTP 404 or 405) gives None, without retrying, so
    the reprocess re-validates the stored raw records instead."""
    app = FastAPI()
    calls: list[str] = []

    @app.get("/api/v1/{entity}")
    def page(entity: str) -> dict[str, Any]:
        calls.append("page")
        return {"items": [], "next_cursor": None, "total": 0}

    if method == "post":

        @app.post("/api/v1/{entity}/by-id")
        def by_id(entity: str) -> dict[str, Any]:
            calls.append("post")
            return {"items": []}

    sleeps = Sleeps()
    with SandboxServer(app) as server, HttpSource(config(server.base_url), sleep=sleeps) as source:
        assert source.fetch_by_id("workers", ["A1"]) is None
    assert calls == [] and sleeps == []


def test_by_id_answer_without_items_is_rejected_in_one_sentence() -> None:
    """Rule: a by-id answer that is not ``{"items": [...]}`` raises SourceRejected naming the
    source and URL, never quoting the body."""
    app, seen = by_id_app(lambda ids: JSONResponse({"records": [{"ywid": "A1", "sfzh": "维护中"}]}))
    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url), sleep=Sleeps()) as source,
        pytest.raises(SourceRejected) as exc,
    ):
        source.fetch_by_id("workers", ["A1"])
    assert str(exc.value) == (
        f"source yichang at {server.base_url} sent a workers by-id answer without an 'items' list"
    )
    assert len(seen) == 1
