"""The sandbox grid system: deterministic, realistic rows with a known mix of bad ones, and an API
whose keyset paging neither loses nor repeats rows."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import shapely
from shapely.geometry import box
from stdnum.cn import ric, uscc

from connectors.reasons import Reason
from connectors.records import Reject
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import (
    ENTERPRISE_BAD_KINDS,
    WORKER_BAD_KINDS,
    YICHANG_MAPPING,
    SandboxDataset,
)
from connectors.validate import CHINA_TZ, validate_enterprises, validate_workers
from geodata.crs import gcj02_to_wgs84
from tests.sandbox_labels import split_labels

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=CHINA_TZ)
CELLS = [
    ("420502001001001", box(111.28, 30.68, 111.30, 30.70)),  # 西陵区
    ("420506100001001", box(111.32, 30.76, 111.35, 30.79)),  # 夷陵区
    ("420581001001001", box(111.40, 30.35, 111.43, 30.38)),  # 宜都市
]
VALIDATORS: dict[str, Callable[..., tuple[list[Any], list[Reject]]]] = {
    "enterprises": validate_enterprises,
    "workers": validate_workers,
}


def make(seed: int = 7, n_workers: int = 3000, n_enterprises: int = 400, **kw: object) -> SandboxDataset:
    return SandboxDataset(
        CELLS,
        city_code="420500000000",
        n_workers=n_workers,
        n_enterprises=n_enterprises,
        seed=seed,
        as_of=AS_OF,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def dataset() -> SandboxDataset:
    return make()


def test_same_seed_same_rows_other_seed_other_rows(dataset: SandboxDataset) -> None:
    """Rule: generation is deterministic in its seed."""
    again = make()
    for entity in ("enterprises", "workers"):
        assert again.rows(entity) == dataset.rows(entity)
    other = make(seed=8)
    assert other.workers != dataset.workers


def test_rows_use_the_citys_field_names(dataset: SandboxDataset) -> None:
    """Rule: rows come in Yichang's own field names, exactly the ones its source config maps."""
    for entity in ("enterprises", "workers"):
        expected = set(YICHANG_MAPPING[entity].values())
        assert all(set(row) == expected for row in (r.row for r in dataset.rows(entity)))


@pytest.mark.parametrize(
    ("entity", "kinds"),
    [
        pytest.param("workers", WORKER_BAD_KINDS, id="workers: every bad kind in equal share"),
        pytest.param("enterprises", ENTERPRISE_BAD_KINDS, id="enterprises: every bad kind in equal share"),
    ],
)
def test_bad_row_mix(dataset: SandboxDataset, entity: str, kinds: tuple[Reason, ...]) -> None:
    """Rule: bad_fraction of the rows are bad, spread evenly over the kinds of defect."""
    counts = Counter(dataset.labels(entity).values())
    n = len(dataset.rows(entity))
    n_bad = sum(counts[k.value] for k in kinds)
    assert n_bad == round(n * 0.03)
    assert max(counts[k.value] for k in kinds) - min(counts[k.value] for k in kinds) <= 1
    assert counts["address_only"] > 0


@pytest.mark.parametrize("entity", ["enterprises", "workers"])
def test_validation_rejects_exactly_the_bad_rows_for_their_reason(
    dataset: SandboxDataset, entity: str
) -> None:
    """Rule: every deliberately bad row is rejected with its labelled reason when its defect is a
    record problem, or accepted with one field problem of that reason (issue #21); every other row
    (including messy-but-valid variants: legacy IDs, full-width digits, address-only) is accepted
    without a problem."""
    labels = dataset.labels(entity)
    records, rejects = VALIDATORS[entity](
        [r.row for r in dataset.rows(entity)],
        mapping=YICHANG_MAPPING[entity],
        default_crs="gcj02",
        today=AS_OF.date(),
    )
    whole, kept = split_labels(entity, labels)
    assert {r.source_record_id: r.reason.value for r in rejects} == whole
    assert {r.source_record_id: [p.reason.value for p in r.problems] for r in records if r.problems} == {
        k: [v] for k, v in kept.items()
    }
    assert whole and kept, "the sandbox has record problems and field problems"
    assert len(records) + len(rejects) == len(labels)
    variants = Counter(labels[r.source_record_id] for r in records)
    if entity == "workers":
        assert {"legacy_id", "fullwidth_id", "lowercase_x", "address_only"} <= set(variants)
    else:
        assert {"agricultural_uscc", "address_only"} <= set(variants)


def test_good_workers_have_real_format_ids_and_names(dataset: SandboxDataset) -> None:
    """Rule: ID numbers pass the MOD 11-2 check, birth years are 1960-2005, area codes are real
    county codes; names are 2-3 Chinese characters; addresses are in Yichang."""
    ok = [r.row for r in dataset.rows("workers") if r.label == "ok"]
    for row in ok:
        sfzh = row["sfzh"]
        assert ric.calc_check_digit(sfzh) == sfzh[-1]
        assert 1960 <= int(sfzh[6:10]) <= 2005
        assert 2 <= len(row["xm"]) <= 3 and all("\u4e00" <= c <= "\u9fff" for c in row["xm"])
        assert row["jzdz"].startswith("湖北省宜昌市")
    areas = Counter(r["sfzh"][:6] for r in ok)
    assert areas.most_common(1)[0][0] in {"420502", "420506", "420581"}
    assert any(not a.startswith("4205") for a in areas), "some workers come from elsewhere"


def test_good_enterprises_have_valid_credit_codes(dataset: SandboxDataset) -> None:
    """Rule: credit codes carry a correct GB 32100 check character and the county's region code."""
    for r in dataset.rows("enterprises"):
        if r.label in ("ok", "address_only"):
            code = r.row["tyxydm"]
            assert uscc.is_valid(code)
            assert code[2:8] in {"420502", "420506", "420581"}


def test_points_are_gcj02_inside_the_cells(dataset: SandboxDataset) -> None:
    """Rule: exported points are GCJ-02; converted back to WGS84 they lie inside a cell."""
    rows = [r.row for r in dataset.rows("workers") if r.label == "ok"]
    lon = np.array([float(r["jd"]) for r in rows])
    lat = np.array([float(r["wd"]) for r in rows])
    wlon, wlat = gcj02_to_wgs84(lon, lat)
    union = shapely.union_all([poly for _, poly in CELLS])
    assert shapely.contains_xy(union.buffer(1e-7), wlon, wlat).all()
    assert not shapely.contains_xy(union, lon, lat).all(), "GCJ-02 differs from WGS84 by hundreds of metres"


def test_update_times_spread_so_updated_since_returns_a_subset(dataset: SandboxDataset) -> None:
    """Rule: a nightly delta (last day) is a small share; bulk imports share one timestamp."""
    times = [r.updated_at for r in dataset.rows("workers")]
    recent = sum(t >= AS_OF - timedelta(days=1) for t in times)
    assert 0 < recent < 0.05 * len(times)
    assert Counter(times).most_common(1)[0][1] > 100, "bulk imports share a timestamp"
    assert max(times) <= AS_OF


# --- the API --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(dataset: SandboxDataset) -> Iterator[httpx.Client]:
    """The sandbox over real HTTP on a free loopback port."""
    with SandboxServer(create_app(dataset)) as server, httpx.Client(base_url=server.base_url) as c:
        yield c


def test_pages_cover_all_rows_in_order_once(dataset: SandboxDataset, client: httpx.Client) -> None:
    """Rule: following next_cursor returns every row exactly once, ordered by (update time, id),
    even where a page boundary falls inside a group sharing one timestamp."""
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 97}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/workers", params=params).json()
        assert body["total"] == 3000
        seen += [row["ywid"] for row in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [r.record_id for r in dataset.rows("workers")]


def test_updated_since_is_inclusive(dataset: SandboxDataset, client: httpx.Client) -> None:
    """Rule: updated_since returns the rows updated at or after it (naive = Asia/Shanghai)."""
    pivot = dataset.rows("workers")[1500].updated_at
    body = client.get(
        "/api/v1/workers", params={"updated_since": pivot.strftime("%Y-%m-%dT%H:%M:%S"), "limit": 1000}
    ).json()
    expected = [r.record_id for r in dataset.rows("workers") if r.updated_at >= pivot]
    assert body["total"] == len(expected)
    assert [row["ywid"] for row in body["items"]] == expected[:1000]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        pytest.param({"cursor": "not-a-cursor"}, 400, id="a cursor the API did not issue is 400"),
        pytest.param({"updated_since": "last tuesday"}, 400, id="an unreadable updated_since is 400"),
        pytest.param({"limit": 0}, 200, id="limit below 1 is clamped, not refused"),
    ],
)
def test_bad_parameters(client: httpx.Client, params: dict[str, str | int], status: int) -> None:
    """Rule: malformed parameters are refused with a JSON error; limits are clamped."""
    response = client.get("/api/v1/workers", params=params)
    assert response.status_code == status
    if status == 200:
        assert len(response.json()["items"]) == 1


def test_limit_is_clamped_to_the_app_maximum(dataset: SandboxDataset) -> None:
    """Rule: a page never exceeds the app's maximum rows whatever the caller asks."""
    with (
        SandboxServer(create_app(dataset, max_limit=1000)) as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        assert len(c.get("/api/v1/workers", params={"limit": 5000}).json()["items"]) == 1000


def test_unknown_entity_is_404_and_health_answers(client: httpx.Client) -> None:
    """Rule: only the dataset's entities exist; /health reports counts."""
    assert client.get("/api/v1/cases").status_code == 404
    assert client.get("/health").json()["counts"] == {"enterprises": 400, "workers": 3000}


@pytest.mark.parametrize(
    ("header", "status"),
    [
        pytest.param(None, 401, id="no token is 401"),
        pytest.param("Bearer wrong", 401, id="wrong token is 401"),
        pytest.param("Bearer s3cret", 200, id="right token is served"),
    ],
)
def test_bearer_token_when_configured(dataset: SandboxDataset, header: str | None, status: int) -> None:
    """Rule: with a token configured every page needs 'Authorization: Bearer <token>'."""
    headers = {"Authorization": header} if header else {}
    with (
        SandboxServer(create_app(dataset, token="s3cret")) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        assert client.get("/api/v1/enterprises", headers=headers).status_code == status
        assert client.get("/health").status_code == 200


@pytest.mark.slow
def test_sample_world_dataset_builds_20000_workers_quickly() -> None:
    """Rule: on the real sample city (Yichang's counties and generated cells) 20,000 workers and
    2,000 enterprises generate in about 3 s, every ok point lies in a cell, and addresses name the
    town of that cell."""
    from geodata.world import build_sample_world

    world = build_sample_world()
    cells = [(c.code, c.geometry) for c in world.cells]
    start = time.perf_counter()
    ds = SandboxDataset(
        cells,
        city_code="420500000000",
        as_of=AS_OF,
        names={d.code: d.name for d in world.divisions},
    )
    elapsed = time.perf_counter() - start
    assert elapsed < 6, f"{elapsed:.1f} s"  # target ~3 s; margin for a shared machine
    rows = [r.row for r in ds.rows("workers") if r.label == "ok"]
    wlon, wlat = gcj02_to_wgs84(
        np.array([float(r["jd"]) for r in rows]), np.array([float(r["wd"]) for r in rows])
    )
    city = shapely.union_all([c.geometry for c in world.cells]).buffer(1e-6)
    assert shapely.contains_xy(city, wlon, wlat).all()
    towns = {
        d.name
        for d in world.divisions
        if len(d.code) == 12 and d.code.endswith("000") and d.code[6:9] != "000"
    }
    assert sum(any(t in r["jzdz"] for t in towns) for r in rows) == len(rows)
    assert date(1960, 1, 1) <= min(date(int(r["sfzh"][6:10]), 1, 1) for r in rows)
