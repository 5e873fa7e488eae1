"""Sandbox fault switches, by config and by request, against the real connector over real HTTP.

Every test asserts the fault actually fired (FaultPlan.fired), so none can pass by accident.
The flow-level consequences (what is written, what fails the run) are in test_fault_matrix.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from shapely.geometry import box

from connectors.checks import SchemaDrift, check_schema
from connectors.config import SourceConfig, SourceRejected, SourceUnavailable, load_source_config
from connectors.http import HttpSource, TokenBucket
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import SandboxDataset
from connectors.sandbox.faults import FaultPlan, stale_versions, write_drop_file
from connectors.validate import CHINA_TZ, validate_workers

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=CHINA_TZ)
CELLS = [("420502001001001", box(111.28, 30.68, 111.30, 30.70))]
YICHANG = load_source_config(Path(__file__).parents[2] / "config" / "sources" / "yichang.toml")


@pytest.fixture(scope="module")
def dataset() -> SandboxDataset:
    return SandboxDataset(
        CELLS, city_code="420500000000", n_workers=300, n_enterprises=40, n_cases=60, seed=4, as_of=AS_OF
    )


@pytest.fixture(scope="module")
def sandbox(dataset: SandboxDataset) -> Iterator[SandboxServer]:
    """One server without a configured plan: request-level faults only."""
    with SandboxServer(create_app(dataset)) as server:
        yield server


def config(base_url: str, **over: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {**YICHANG.model_dump(), "name": "faulty", "base_url": base_url, "page_size": 100, **over}
    )


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def ids(pages: Any, field: str = "ywid") -> list[str]:
    return [r[field] for p in pages for r in p.records]


def all_ids(dataset: SandboxDataset, entity: str = "workers") -> list[str]:
    return [r.record_id for r in dataset.rows(entity)]


# --- by request ---------------------------------------------------------------------------------


def get(server: SandboxServer, fault: str, *, header: bool = False, **params: Any) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        if header:
            return c.get(
                "/api/v1/workers", params={"limit": 50, **params}, headers={"X-Sandbox-Fault": fault}
            )
        return c.get("/api/v1/workers", params={"limit": 50, "fault": fault, **params})


@pytest.mark.parametrize(
    "header", [pytest.param(False, id="?fault="), pytest.param(True, id="X-Sandbox-Fault")]
)
@pytest.mark.parametrize(
    ("fault", "check"),
    [
        pytest.param("5xx", lambda r, ds: r.status_code == 503, id="5xx"),
        pytest.param(
            "429",
            lambda r, ds: r.status_code == 429 and r.headers["Retry-After"] == "1",
            id="429 with Retry-After",
        ),
        pytest.param(
            "truncate", lambda r, ds: r.status_code == 200 and not _is_json(r.content), id="truncated body"
        ),
        pytest.param(
            "shuffle",
            lambda r, ds: [i["ywid"] for i in r.json()["items"]] == all_ids(ds)[:50][::-1],
            id="rows out of order",
        ),
        pytest.param(
            "drift",
            lambda r, ds: all("sfzh" not in i and "sfzh_new" in i for i in r.json()["items"]),
            id="schema drift renames the ID field",
        ),
        pytest.param(
            "empty",
            lambda r, ds: r.json() == {"items": [], "next_cursor": None, "total": 0},
            id="an empty day",
        ),
        pytest.param(
            "duplicate",
            lambda r, ds: [i["ywid"] for i in r.json()["items"]] == all_ids(ds)[:3] + all_ids(ds)[:50],
            id="duplicate rows in the page",
        ),
        pytest.param(
            "5xx,429", lambda r, ds: r.status_code == 503, id="several faults: the first that answers wins"
        ),
    ],
)
def test_faults_by_request(
    sandbox: SandboxServer, dataset: SandboxDataset, fault: str, check: Any, header: bool
) -> None:
    """Rule: ?fault=NAME (or the X-Sandbox-Fault header) applies that fault to that request only."""
    assert check(get(sandbox, fault, header=header), dataset)
    assert get(sandbox, "").status_code == 200, "the next plain request is served normally"


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def test_slow_by_request(sandbox: SandboxServer) -> None:
    """Rule: ?fault=slow stalls the body half-way (2 s) but still sends a complete page."""
    start = time.monotonic()
    response = get(sandbox, "slow")
    assert time.monotonic() - start >= 1.9
    assert len(response.json()["items"]) == 50


def test_overlap_by_request_repeats_the_previous_pages_tail(
    sandbox: SandboxServer, dataset: SandboxDataset
) -> None:
    """Rule: with ?fault=duplicate a page after the first starts with the previous page's last rows."""
    with httpx.Client(base_url=sandbox.base_url) as c:
        first = c.get("/api/v1/workers", params={"limit": 50}).json()
        second = c.get(
            "/api/v1/workers", params={"limit": 50, "cursor": first["next_cursor"], "fault": "duplicate"}
        )
    got = [i["ywid"] for i in second.json()["items"]]
    assert got[:6] == all_ids(dataset)[47:50] * 2 and got[6:] == all_ids(dataset)[50:100]


def test_unknown_fault_is_400(sandbox: SandboxServer) -> None:
    """Rule: a fault name the sandbox does not know is refused, not ignored."""
    response = get(sandbox, "meteor")
    assert response.status_code == 400 and "unknown fault 'meteor'" in response.json()["error"]


def test_drift_by_source_config_path(sandbox: SandboxServer) -> None:
    """Rule: a source config can carry a request fault in path_template; the connector's page then
    fails the schema check with SchemaDrift naming the renamed field."""
    with HttpSource(config(sandbox.base_url, path_template="/api/v1/{entity}?fault=drift")) as source:
        page = source.fetch_page("workers", cursor=None, since=None)
    with pytest.raises(
        SchemaDrift, match=r"lacks the required field 'sfzh' \(id_number\).*'sfzh_new' may be"
    ):
        check_schema("workers", page.records, YICHANG.mapping["workers"])


# --- by config, through HttpSource --------------------------------------------------------------


@pytest.fixture
def serve(dataset: SandboxDataset) -> Iterator[Any]:
    """Start a sandbox with a given FaultPlan: ``server = serve(plan)``."""
    servers: list[SandboxServer] = []

    def start(plan: FaultPlan) -> SandboxServer:
        server = SandboxServer(create_app(dataset, faults=plan))
        server.__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__(None, None, None)


def test_a_burst_of_5xx_is_retried(serve: Any, dataset: SandboxDataset) -> None:
    """Rule: the first N requests answer 503; the connector backs off and then reads everything."""
    plan = FaultPlan(server_errors=2)
    sleeps = Sleeps()
    with HttpSource(config(serve(plan).base_url, max_attempts=3), sleep=sleeps) as source:
        assert ids(source.pages("workers", since=None)) == all_ids(dataset)
    assert plan.fired["5xx"] == 2 and len(sleeps) == 2


def test_persistent_5xx_fails_after_the_committed_pages(serve: Any) -> None:
    """Rule: a persistent outage after page 1 fails the read with one sentence after max_attempts."""
    plan = FaultPlan(server_errors=-1, errors_after=1)
    server = serve(plan)
    with HttpSource(config(server.base_url, max_attempts=3), sleep=Sleeps()) as source:
        pages = source.pages("workers", since=None)
        assert len(next(pages).records) == 100
        with pytest.raises(SourceUnavailable) as info:
            next(pages)
    assert str(info.value) == (
        f"source faulty unreachable at {server.base_url}: HTTP 503 Service Unavailable after 3 attempts"
    )
    assert plan.fired["5xx"] == 3


def test_429_retry_after_is_honoured(serve: Any) -> None:
    """Rule: 429 with Retry-After: the connector waits exactly that long, once."""
    plan = FaultPlan(rate_limited=1, retry_after_s=2)
    sleeps = Sleeps()
    with HttpSource(config(serve(plan).base_url), sleep=sleeps) as source:
        assert source.fetch_page("workers", cursor=None, since=None).records
    assert sleeps == [2.0] and plan.fired["429"] == 1


def test_a_slow_body_times_out_and_is_retried(serve: Any, dataset: SandboxDataset) -> None:
    """Rule: a body that stalls beyond timeout_s is a transient failure: retried, then read."""
    plan = FaultPlan(slow=1, slow_s=1.5)
    sleeps = Sleeps()
    with HttpSource(config(serve(plan).base_url, timeout_s=0.5), sleep=sleeps) as source:
        page = source.fetch_page("workers", cursor=None, since=None)
    assert [r["ywid"] for r in page.records] == all_ids(dataset)[:100]
    assert plan.fired["slow"] == 1 and len(sleeps) == 1


@pytest.mark.parametrize(
    ("truncated", "attempts", "outcome"),
    [
        pytest.param(2, 3, "read", id="cut twice, read on the third attempt"),
        pytest.param(5, 3, "unavailable", id="cut every time: unavailable after max_attempts"),
    ],
)
def test_a_truncated_body_is_retried(serve: Any, truncated: int, attempts: int, outcome: str) -> None:
    """Rule: a 200 whose JSON is cut short is transient (retried), unlike a body that is not JSON."""
    plan = FaultPlan(truncated=truncated)
    server = serve(plan)
    with HttpSource(config(server.base_url, max_attempts=attempts), sleep=Sleeps()) as source:
        if outcome == "read":
            assert len(source.fetch_page("workers", cursor=None, since=None).records) == 100
        else:
            with pytest.raises(SourceUnavailable) as info:
                source.fetch_page("workers", cursor=None, since=None)
            assert str(info.value) == (
                f"source faulty unreachable at {server.base_url}: a page body cut short (invalid JSON) "
                "after 3 attempts"
            )
    assert plan.fired["truncate"] == min(truncated, attempts)


def test_overlapping_pages_and_repeats_deliver_duplicates_of_every_row(
    serve: Any, dataset: SandboxDataset
) -> None:
    """Rule: with overlap and repeats, rows arrive more than once but every row arrives."""
    plan = FaultPlan(overlap=7, repeat_in_page=2)
    with HttpSource(config(serve(plan).base_url)) as source:
        got = ids(source.pages("workers", since=None))
    assert set(got) == set(all_ids(dataset)) and len(got) == 300 + 2 * 7 + 3 * 2
    assert plan.fired["overlap"] == 14 and plan.fired["repeat"] == 3


def test_out_of_order_pages(serve: Any, dataset: SandboxDataset) -> None:
    """Rule: reversed pages still cover every row once (the keyset cursor is the server's)."""
    plan = FaultPlan(reverse_pages=True)
    with HttpSource(config(serve(plan).base_url)) as source:
        pages = list(source.pages("workers", since=None))
    assert ids(pages)[:100] == all_ids(dataset)[:100][::-1]
    assert sorted(ids(pages)) == sorted(all_ids(dataset)) and plan.fired["reverse"] == 3


def test_stale_replays_come_after_everything_whatever_since(serve: Any, dataset: SandboxDataset) -> None:
    """Rule: replayed old versions are served after the last row even to an incremental read."""
    old = stale_versions(dataset, "workers", 5)
    plan = FaultPlan(replay={"workers": old})
    since = (AS_OF + timedelta(days=1)).isoformat()
    with HttpSource(config(serve(plan).base_url)) as source:
        pages = list(source.pages("workers", since=since))
    assert [r for p in pages for r in p.records] == old and plan.fired["replay"] == 5


def test_stale_versions_are_older_valid_and_different(dataset: SandboxDataset) -> None:
    """Rule: a stale version is the same record, 30 days older, with another (valid) address."""
    current = {r.record_id: r for r in dataset.rows("workers")}
    old = stale_versions(dataset, "workers", 10)
    records, rejects = validate_workers(
        old, mapping=YICHANG.mapping["workers"], default_crs="gcj02", today=AS_OF.date()
    )
    assert rejects == [] and len(records) == 10
    for rec in records:
        now = current[rec.source_record_id]
        assert rec.source_updated_at == now.updated_at - timedelta(days=30)
        assert rec.address != now.row["jzdz"]


@pytest.mark.parametrize(
    ("volume", "expected_share"),
    [pytest.param(0.0, 0.0, id="an empty day"), pytest.param(0.3, 0.3, id="a thin day")],
)
def test_volume(serve: Any, dataset: SandboxDataset, volume: float, expected_share: float) -> None:
    """Rule: only a share of the rows is served, and total says so (what the volume check sees)."""
    plan = FaultPlan(volume=volume)
    with HttpSource(config(serve(plan).base_url)) as source:
        pages = list(source.pages("workers", since=None))
    n = len(ids(pages))
    assert pages[0].total == n and abs(n - expected_share * 300) <= 30
    assert set(ids(pages)) <= set(all_ids(dataset)) and plan.fired["volume"] >= 1


def test_entities_limit_the_plan(serve: Any, dataset: SandboxDataset) -> None:
    """Rule: a plan limited to some entities leaves the others alone."""
    plan = FaultPlan(volume=0.0, entities=frozenset({"workers"}))
    with HttpSource(config(serve(plan).base_url)) as source:
        assert ids(source.pages("enterprises", since=None)) == all_ids(dataset, "enterprises")
        assert ids(source.pages("workers", since=None)) == []


def test_case_reports_are_served(sandbox: SandboxServer, dataset: SandboxDataset) -> None:
    """Rule: the sandbox serves its case reports as entity "cases", paged like the others."""
    with HttpSource(config(sandbox.base_url, entities=["enterprises", "workers", "cases"])) as source:
        assert ids(source.pages("cases", since=None)) == all_ids(dataset, "cases")


# --- late commits and the lookback window --------------------------------------------------------


@pytest.mark.parametrize(
    ("lookback_s", "late_seen"),
    [
        pytest.param(0, False, id="without lookback a late commit is missed"),
        pytest.param(3 * 86_400, True, id="a 3-day lookback catches it"),
    ],
)
def test_lookback_catches_records_committed_late(
    serve: Any, dataset: SandboxDataset, lookback_s: float, late_seen: bool
) -> None:
    """Rule: records committed after the watermark passed their update time are read again on the
    next incremental run only within the lookback window (since - lookback_s)."""
    rows = dataset.rows("workers")
    newest = rows[-1].updated_at
    late = {r.record_id for r in rows if newest - timedelta(days=2) <= r.updated_at < newest}
    assert late, "the sandbox has a nightly delta"
    plan = FaultPlan(hidden={"workers": set(late)})
    with HttpSource(config(serve(plan).base_url, lookback_s=lookback_s)) as source:
        first = ids(source.pages("workers", since=None))
        assert late.isdisjoint(first)
        plan.hidden = {}  # the late records are committed now, with their old update times
        second = ids(source.pages("workers", since=newest.isoformat()))
    assert late <= set(second) if late_seen else late.isdisjoint(second)
    assert plan.fired["hidden"] >= 1


# --- rate limit ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket() -> None:
    """Rule: a burst of one second's worth, then one token every 1/rate seconds."""
    clock = FakeClock()
    bucket = TokenBucket(4, clock=clock, sleep=clock.sleep)
    waits = [bucket.take() for _ in range(8)]
    assert waits[:4] == [0, 0, 0, 0] and waits[4:] == pytest.approx([0.25] * 4)
    assert clock.now == pytest.approx(1.0)


def test_rate_limit_paces_every_request_of_a_source(serve: Any) -> None:
    """Rule: with rate_limit_per_s each request, retries included, takes a token first."""
    plan = FaultPlan(server_errors=1)
    clock = FakeClock()
    bucket = TokenBucket(2, clock=clock, sleep=clock.sleep)
    with HttpSource(
        config(serve(plan).base_url, rate_limit_per_s=2), bucket=bucket, sleep=Sleeps()
    ) as source:
        pages = list(source.pages("workers", since=None))
    assert len(pages) == 3 and clock.now == pytest.approx(1.0)  # 4 requests: 2 free, 2 paced at 0.5 s


def test_the_rate_limit_is_shared_by_every_source_object_of_a_source(serve: Any) -> None:
    """Rule: the flow opens a source per page, so the bucket belongs to the source, not the object."""
    server = serve(FaultPlan())
    name = f"paced_{time.monotonic_ns() % 10**9}"
    a = HttpSource(config(server.base_url, name=name, rate_limit_per_s=5))
    b = HttpSource(config(server.base_url, name=name, rate_limit_per_s=5))
    assert a._bucket is b._bucket is not None
    start = time.monotonic()
    for s in [a, b] * 4:
        s.fetch_page("enterprises", cursor=None, since=None)
    assert time.monotonic() - start >= 0.5  # 8 requests at 5/s with a burst of 5
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        pytest.param({"lookback_s": -1}, "lookback_s", id="negative lookback"),
        pytest.param({"rate_limit_per_s": 0}, "rate_limit_per_s", id="zero rate"),
    ],
)
def test_http_settings_are_checked(over: dict[str, Any], message: str) -> None:
    """Rule: lookback and rate limit must be sensible numbers."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        config("http://127.0.0.1:1", **over)


# --- the spec and the file faults ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("5xx=3,errors_after=2", {"server_errors": 3, "errors_after": 2}, id="counted 5xx"),
        pytest.param("429=2,retry_after=5", {"rate_limited": 2, "retry_after_s": 5}, id="429"),
        pytest.param("slow=1,slow_s=0.5,truncate=2", {"slow": 1, "slow_s": 0.5, "truncated": 2}, id="bodies"),
        pytest.param(
            "overlap=4,repeat=2,shuffle",
            {"overlap": 4, "repeat_in_page": 2, "reverse_pages": True},
            id="dups",
        ),
        pytest.param("drift", {"renamed": {"workers": {"sfzh": "sfzh_new"}}}, id="drift"),
        pytest.param("volume=0.3", {"volume": 0.3}, id="thin day"),
        pytest.param("empty", {"volume": 0.0}, id="empty day"),
    ],
)
def test_fault_spec(spec: str, expected: dict[str, Any]) -> None:
    """Rule: `python -m connectors.sandbox --faults SPEC` builds the plan the spec names."""
    plan = FaultPlan.parse(spec, {"workers": {"id_number": "sfzh"}})
    for attr, value in expected.items():
        assert getattr(plan, attr) == value


def test_a_partial_drop_file_is_cut_mid_row_and_its_manifest_is_of_the_whole(
    tmp_path: Path, dataset: SandboxDataset
) -> None:
    """Rule: the partial-file fault stops inside a row while the manifest holds the complete file's hash."""
    rows = [r.row for r in dataset.rows("workers")]
    full = write_drop_file(tmp_path / "a", "w.csv", rows, encoding="gbk")
    cut = write_drop_file(tmp_path / "b", "w.csv", rows, encoding="gbk", cut_mid_row=True)
    data = cut.read_bytes()
    assert full.read_bytes().startswith(data) and len(data) < len(full.read_bytes())
    assert not data.endswith(b"\n")
    manifest = (tmp_path / "b" / "w.csv.sha256").read_text(encoding="ascii").split()[0]
    assert manifest == hashlib.sha256(full.read_bytes()).hexdigest()
    assert Counter(data.decode("gbk", errors="replace"))["\n"] >= 200


def test_refused_body_is_still_refused_at_once(serve: Any) -> None:
    """Rule: only JSON that is cut short is retried; an HTML page is SourceRejected at once."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()
    calls: list[int] = []

    @app.get("/api/v1/{entity}")
    def page(entity: str) -> PlainTextResponse:
        calls.append(1)
        return PlainTextResponse("<html>系统维护中</html>")

    with (
        SandboxServer(app) as server,
        HttpSource(config(server.base_url), sleep=Sleeps()) as source,
        pytest.raises(SourceRejected, match="that is not JSON"),
    ):
        source.fetch_page("workers", cursor=None, since=None)
    assert calls == [1]
