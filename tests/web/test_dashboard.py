"""Province and city dashboards: numbers and rates from hand-written snapshot rows, choropleth,
trend lines, drill-down, ranking, exports, scope and the absence of personal data.

The divisions are the sample world (Hubei's real province/city/county polygons, Yichang's towns
and communities generated). Snapshot rows are written here by hand on dates of 2031, which no
other test uses, and removed at the end of the module; every request names its date (``on=``)
so snapshots written by other tests of the session cannot change what these pages show.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg2
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from grid.accounts.access import Role
from grid.accounts.users import add_user
from grid.monitoring import choropleth
from grid.monitoring.coverage import COUNT_FIELDS, RATES, Counts
from grid.store.db import transaction
from grid.web.dashboard import RANK_PAGE
from tests.pii_scan import find_pii
from tests.web.conftest import PASSWORD, client, login

pytestmark = pytest.mark.db

PROVINCE = "420000000000"
CITY = "420500000000"  # Yichang
OTHER_CITY = "420100000000"  # Wuhan
DATES = [date(2031, 3, 1), date(2031, 3, 15), date(2031, 4, 1), date(2031, 4, 15), date(2031, 5, 1)]
LATEST = DATES[-1]
ON = f"on={LATEST.isoformat()}"


def counts(**kw: int) -> Counts:
    return Counts(**kw)


# Yichang on the latest date: every rate is a round figure, disputes has no denominator.
CITY_COUNTS = counts(
    enterprises=200,
    enterprises_union=150,  # 75.0%
    workers=1000,
    workers_mapped=875,  # 87.5%
    disputes=0,  # — (undefined)
    hardship=8,
    hardship_helped=6,  # 75.0%
    cases=40,
    responded_on_time=30,  # 75.0%
    resolved=20,  # 50.0%
    due=16,
    resolved_on_time=12,  # 75.0%
    overdue=3,
    overdue_response=2,
)
# Yichang's union coverage and dispute rates over the five dates (the 3rd has no disputes).
CITY_TREND = [
    counts(enterprises=200, enterprises_union=100, disputes=10, disputes_resolved=5, disputes_on_time=2),
    counts(enterprises=200, enterprises_union=120, disputes=10, disputes_resolved=6, disputes_on_time=3),
    counts(enterprises=200, enterprises_union=140, disputes=0),
    counts(enterprises=200, enterprises_union=146, disputes=4, disputes_resolved=4, disputes_on_time=4),
    CITY_COUNTS,
]


@dataclass
class DashWorld:
    counties: list[str]  # Yichang's county-level divisions, by code
    names: dict[str, str]
    town: str  # first town of counties[0]
    community: str  # first community of that town
    rows: dict[str, Counts] = field(default_factory=dict)  # code -> counts on LATEST
    users: dict[str, str] = field(default_factory=dict)  # role name -> login


def county_counts(counties: list[str]) -> dict[str, Counts]:
    """k0: 96% union (q4), 9/10 on time; k1: 40% (q0), 18/20 on time (same rate, more due: ranks
    above k0); k2: no enterprises (q-na), nothing due; k3: no row at all; the rest 80% (q2), 4/5."""
    out = {
        counties[0]: counts(
            enterprises=100,
            enterprises_union=96,
            due=10,
            resolved_on_time=9,
            cases=12,
            responded_on_time=12,
            resolved=10,
            overdue=1,
        ),
        counties[1]: counts(
            enterprises=100,
            enterprises_union=40,
            due=20,
            resolved_on_time=18,
            cases=20,
            responded_on_time=10,
            resolved=19,
            overdue=2,
            overdue_response=1,
        ),
        counties[2]: counts(enterprises=0, workers=10, workers_mapped=10),
    }
    for k in counties[4:]:
        out[k] = counts(enterprises=50, enterprises_union=40, due=5, resolved_on_time=4, cases=5, resolved=5)
    return out


def _insert(
    cur: psycopg2.extensions.cursor, day: date, code: str, level: int, parent: str | None, c: Counts
) -> None:
    cols = ", ".join(COUNT_FIELDS)
    cur.execute(
        f"INSERT INTO coverage_snapshot (snapshot_date, division_code, level, parent_code, {cols}) "
        f"VALUES (%s, %s, %s, %s, {', '.join(['%s'] * len(COUNT_FIELDS))})",
        (day, code, level, parent, *(c.count(col) for col in COUNT_FIELDS)),
    )


def seed_dashboard(database_url: str) -> DashWorld:
    conn = psycopg2.connect(database_url)
    try:
        with transaction(conn) as cur:
            cur.execute("DELETE FROM coverage_run WHERE snapshot_date = ANY(%s)", (DATES,))
            cur.execute(
                "SELECT code, name, parent_code, level FROM division WHERE valid_to IS NULL AND code LIKE '42%%'"
            )
            rows = cur.fetchall()
            names = {str(r[0]): str(r[1]) for r in rows}
            kids: dict[str, list[str]] = {}
            for code, _, parent, _ in rows:
                kids.setdefault(str(parent), []).append(str(code))
            counties = sorted(kids[CITY])
            town = sorted(kids[counties[0]])[0]
            community = sorted(kids[town])[0]
            world = DashWorld(counties, names, town, community)
            for day in DATES:
                cur.execute(
                    "INSERT INTO coverage_run (snapshot_date, as_of, divisions) VALUES (%s, %s, 0)",
                    (day, f"{day.isoformat()}T06:00:00+08:00"),
                )
            for day, c in zip(DATES, CITY_TREND, strict=True):
                _insert(cur, day, CITY, 2, PROVINCE, c)
            world.rows = {
                PROVINCE: counts(enterprises=1000, enterprises_union=900, due=100, resolved_on_time=90),
                CITY: CITY_COUNTS,
                **county_counts(counties),
                town: counts(enterprises=10, enterprises_union=7, workers=20, workers_mapped=19),
                community: counts(enterprises=4, enterprises_union=4, hardship=2, hardship_helped=1),
            }
            for code, c in world.rows.items():
                if code == CITY:
                    continue
                level = {PROVINCE: 1, town: 4, community: 5}.get(code, 3)
                parent = None if code == PROVINCE else {town: counties[0], community: town}.get(code, CITY)
                _insert(cur, LATEST, code, level, parent, c)
    finally:
        conn.close()
    tag = secrets.token_hex(3)
    owner = psycopg2.connect(database_url)
    try:
        for name, role, scope in [
            ("province", Role.PROVINCE, PROVINCE),
            ("city", Role.CITY, CITY),
            ("other_city", Role.CITY, OTHER_CITY),
            ("county", Role.COUNTY, counties[0]),
            ("town", Role.TOWN, town),
            ("admin", Role.ADMIN, CITY),
        ]:
            login_name = f"dash{name.replace('_', '')}{tag}"
            add_user(owner, login=login_name, password=PASSWORD, role=role, scope_code=scope)
            world.users[name] = login_name
        officer = f"dashoff{tag}"
        add_user(
            owner,
            login=officer,
            password=PASSWORD,
            role=Role.GRID_OFFICER,
            scope_code=community,
            cells=[community + "001"],
        )
        world.users["officer"] = officer
    finally:
        owner.close()
    return world


def unseed_dashboard(database_url: str) -> None:
    conn = psycopg2.connect(database_url)
    try:
        with transaction(conn) as cur:
            cur.execute("DELETE FROM coverage_run WHERE snapshot_date = ANY(%s)", (DATES,))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def dash(database_url: str, loaded_world: Any) -> Iterator[DashWorld]:
    world = seed_dashboard(database_url)
    yield world
    unseed_dashboard(database_url)


@pytest.fixture(scope="module")
def as_user(web_app: Any, dash: DashWorld) -> Any:
    clients: dict[str, TestClient] = {}

    def get(role: str) -> TestClient:
        if role not in clients:
            c = client(web_app)
            login(c, dash.users[role])
            clients[role] = c
        return clients[role]

    return get


def text_of(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', html)
    assert m, f"no element {testid}"
    return m.group(1).strip()


def child_rows(html: str) -> dict[str, dict[str, str]]:
    """code -> {metric: cell text} of the children table."""
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r'<tr data-testid="child-row" data-code="(\d{12})">(.*?)</tr>', html, re.S):
        out[m.group(1)] = dict(re.findall(r'data-metric="(\w+)"[^>]*>([^<]*)<', m.group(2)))
    return out


def shapes(html: str, testid: str = "choropleth") -> list[dict[str, str]]:
    svg = re.search(rf'<svg[^>]*data-testid="{testid}".*?</svg>', html, re.S)
    assert svg, f"no {testid} svg"
    return [
        {"d": m.group(1), "class": m.group(2), "code": m.group(3) or ""}
        for m in re.finditer(
            r'<path d="([^"]*)" class="shape ([^"]*)" (?:data-code="(\d+)" )?data-testid="shape"',
            svg.group(0),
        )
    ]


# ----------------------------------------------------------------------------- the division page


def test_division_page_shows_the_four_fulls_and_supervision_rates_of_the_latest_snapshot(
    as_user: Any, dash: DashWorld
) -> None:
    r = as_user("city").get(f"/dashboard/{CITY}?{ON}")
    assert r.status_code == 200
    html = r.text
    assert text_of(html, "snapshot-date") == LATEST.isoformat()
    assert text_of(html, "rate-union") == "75.0%"
    assert text_of(html, "ratio-union") == "150/200"
    assert text_of(html, "rate-workers") == "87.5%"
    assert text_of(html, "rate-hardship") == "75.0%"
    assert text_of(html, "rate-response") == "75.0%"
    assert text_of(html, "rate-resolution") == "50.0%"
    assert text_of(html, "rate-on_time") == "75.0%"
    assert text_of(html, "ratio-on_time") == "12/16"
    assert text_of(html, "count-overdue") == "3"
    assert text_of(html, "count-overdue_response") == "2"


def test_records_quarantined_whole_and_field_problems_are_noted_beside_the_registry_rates(
    as_user: Any, dash: DashWorld, database_url: str
) -> None:
    """Rule (issue #21): beside 职工信息掌握率 / 工会组织覆盖率 the page shows the records quarantined
    whole (not in the rate) as "另有 N 条待核实" and the records counted despite a field problem;
    the definition under the four fulls says the denominator is every stored record. A division
    without notes shows none."""
    conn = psycopg2.connect(database_url)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "INSERT INTO coverage_note (snapshot_date, division_code, workers_pending, enterprises_pending,"
                " workers_field_problems, enterprises_field_problems) VALUES (%s, %s, 7, 0, 12, 3)",
                (LATEST, CITY),
            )
        html = as_user("city").get(f"/dashboard/{CITY}?{ON}").text
        assert text_of(html, "rate-workers") == "87.5%"  # the note does not change the rate
        assert text_of(html, "pending-workers") == "另有 7 条待核实"
        assert text_of(html, "field-problems-workers") == "其中 12 条字段待核实"
        assert text_of(html, "field-problems-union") == "其中 3 条字段待核实"
        assert 'data-testid="pending-union"' not in html
        assert "分母为本单位已入库的全部职工" in text_of(html, "def-registry")
        en = as_user("city").get(f"/dashboard/{CITY}?{ON}&lang=en").text
        assert text_of(en, "pending-workers") == "7 more awaiting verification (quarantined, not counted)"
        county = as_user("city").get(f"/dashboard/{dash.counties[0]}?{ON}").text
        assert 'data-testid="pending-workers"' not in county
    finally:
        with transaction(conn) as cur:
            cur.execute(
                "DELETE FROM coverage_note WHERE snapshot_date = %s AND division_code = %s", (LATEST, CITY)
            )
        conn.close()


def test_a_rate_with_zero_denominator_is_shown_as_a_dash_not_zero(as_user: Any, dash: DashWorld) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}").text
    assert text_of(html, "rate-disputes") == "—"
    assert text_of(html, "rate-disputes_on_time") == "—"
    assert text_of(html, "ratio-disputes") == "0/0"
    # in the children table too: county k2 has no enterprises
    assert child_rows(html)[dash.counties[2]]["union"] == "—"


def test_children_table_lists_every_child_with_its_rates_and_no_data_marked(
    as_user: Any, dash: DashWorld
) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}").text
    rows = child_rows(html)
    assert sorted(rows) == dash.counties
    k0, k1, _, k3 = dash.counties[:4]
    assert rows[k0]["union"] == "96.0%" and rows[k0]["on_time"] == "90.0%" and rows[k0]["overdue"] == "1"
    assert rows[k1]["union"] == "40.0%" and rows[k1]["on_time"] == "90.0%" and rows[k1]["overdue"] == "2"
    assert all(v in ("—",) for v in rows[k3].values())  # no snapshot row at all
    row_k3 = re.search(rf'<tr data-testid="child-row" data-code="{k3}">(.*?)</tr>', html, re.S)
    assert row_k3 and 'data-testid="no-data"' in row_k3.group(1)


def test_choropleth_has_one_shape_per_child_coloured_by_its_class(as_user: Any, dash: DashWorld) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}").text
    got = {s["code"]: s["class"] for s in shapes(html)}
    assert sorted(got) == dash.counties
    k0, k1, k2, k3, *rest = dash.counties
    assert got[k0] == "q4"  # 96%
    assert got[k1] == "q0"  # 40%
    assert got[k2] == "q-na"  # no enterprises: rate undefined
    assert got[k3] == "q-nodata"  # no snapshot row
    assert {got[k] for k in rest} == {"q2"}  # 80%
    legend = re.search(r'data-testid="legend".*?</ul>', html, re.S)
    assert legend and all(
        f'class="sw {c}"' in legend.group(0) for c in (*choropleth.CLASSES, "q-na", "q-nodata")
    )


def test_the_metric_parameter_recolours_the_map(as_user: Any, dash: DashWorld) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}&metric=on_time").text
    got = {s["code"]: s["class"] for s in shapes(html)}
    k0, k1, k2, k3, *rest = dash.counties
    assert got[k0] == got[k1] == "q3"  # 90%
    assert got[k2] == "q-na"  # nothing due
    assert got[k3] == "q-nodata"
    assert {got[k] for k in rest} == {"q2"}  # 80%
    # an unknown metric falls back to union coverage
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}&metric=drop_table").text
    assert {s["code"]: s["class"] for s in shapes(html)}[k1] == "q0"


def test_every_child_shape_and_row_links_to_the_childs_page(as_user: Any, dash: DashWorld) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}").text
    for k in dash.counties:
        assert re.search(rf'<a href="/dashboard/{k}\?[^"]*" data-code="{k}"><path', html), k
        assert re.search(rf'data-code="{k}">\s*<td><a href="/dashboard/{k}\?', html), k


def test_drill_down_from_province_to_community(as_user: Any, dash: DashWorld) -> None:
    c = as_user("province")
    chain = [PROVINCE, CITY, dash.counties[0], dash.town, dash.community]
    for parent, child in itertools.pairwise(chain):
        html = c.get(f"/dashboard/{parent}?{ON}").text
        assert child in {s["code"] for s in shapes(html)}, (parent, child)
        assert f'href="/dashboard/{child}?' in html
    html = c.get(f"/dashboard/{dash.community}?{ON}").text
    assert text_of(html, "division-name").startswith(dash.names[dash.community])
    assert text_of(html, "rate-union") == "100.0%"
    assert text_of(html, "rate-hardship") == "50.0%"
    # the breadcrumbs lead back up through every level
    crumbs = re.search(r'data-testid="crumbs".*?</nav>', html, re.S)
    assert crumbs
    for code in chain[:-1]:
        assert f'href="/dashboard/{code}?' in crumbs.group(0)


def test_community_page_draws_its_cells_without_metrics_or_cell_codes(
    as_user: Any, dash: DashWorld, loaded_world: Any
) -> None:
    html = as_user("province").get(f"/dashboard/{dash.community}?{ON}").text
    cells = [c for c in loaded_world.cells if c.community_code == dash.community]
    drawn = shapes(html, "cellmap")
    assert len(drawn) == len(cells) > 0
    assert {s["class"] for s in drawn} == {"cell"}
    assert 'data-testid="choropleth"' not in html
    assert not any(c.code in html for c in cells)


def test_trend_lines_follow_the_snapshots_and_break_where_a_rate_is_undefined(
    as_user: Any, dash: DashWorld
) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}&days=90").text
    start = LATEST - timedelta(days=89)

    def xy(svg: str, series: str) -> list[list[tuple[float, float]]]:
        runs = re.findall(rf'<polyline class="s\d" data-series="{series}" points="([^"]*)"', svg)
        dots = re.findall(rf'<circle class="s\d" data-series="{series}" cx="([^"]*)" cy="([^"]*)"', svg)
        out = [[tuple(map(float, p.split(","))) for p in run.split()] for run in runs]
        return out + [[(float(x), float(y))] for x, y in dots]

    def expected(day: date, rate: float) -> tuple[float, float]:
        return (round(34 + 260 * (day - start).days / 89, 1), round(98 - 90 * rate, 1))

    union_svg = re.search(r'<svg[^>]*data-testid="trend-union".*?</svg>', html, re.S)
    assert union_svg
    assert xy(union_svg.group(0), "union") == [
        [expected(d, c.enterprises_union / c.enterprises) for d, c in zip(DATES, CITY_TREND, strict=True)]
    ]
    disputes_svg = re.search(r'<svg[^>]*data-testid="trend-disputes".*?</svg>', html, re.S)
    assert disputes_svg
    runs = xy(disputes_svg.group(0), "disputes")
    # 3rd date has no disputes: two runs, before and after it
    assert sorted(runs, key=len) == sorted(
        [
            [expected(DATES[0], 0.5), expected(DATES[1], 0.6)],
            [expected(DATES[3], 1.0)],
        ],
        key=len,
    )
    assert len(xy(disputes_svg.group(0), "disputes_on_time")) == 2


def test_a_date_before_any_snapshot_shows_no_numbers(as_user: Any, dash: DashWorld) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?on=2001-01-01").text
    assert 'data-testid="no-snapshot"' in html
    assert text_of(html, "rate-union") == "—"
    assert {s["class"] for s in shapes(html)} == {"q-nodata"}


def test_english_labels_on_request(as_user: Any, dash: DashWorld) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}&lang=en").text
    assert "Union coverage" in html and "On-time rate" in html
    html = as_user("city").get(f"/dashboard/{CITY}?{ON}&lang=zh").text
    assert "工会组织覆盖率" in html and "按时办结率" in html


# ----------------------------------------------------------------------------- who sees what


def test_dashboard_root_redirects_to_the_users_scope(as_user: Any, dash: DashWorld) -> None:
    for role, scope in (("province", PROVINCE), ("city", CITY), ("county", dash.counties[0])):
        r = as_user(role).get("/dashboard")
        assert r.status_code == 303 and r.headers["location"] == f"/dashboard/{scope}"


def test_a_city_user_gets_404_for_another_city_exactly_as_for_a_missing_division(
    as_user: Any, dash: DashWorld
) -> None:
    c = as_user("other_city")
    assert c.get(f"/dashboard/{OTHER_CITY}?{ON}").status_code == 200
    for path in ("", "/ranking", "/export.csv", "/export.xlsx"):
        outside = c.get(f"/dashboard/{CITY}{path}?{ON}")
        missing = c.get(f"/dashboard/429999000000{path}?{ON}")
        assert outside.status_code == missing.status_code == 404
        assert outside.text == missing.text
        assert dash.names[CITY] not in outside.text
    # the province above it is outside a city's scope too; a county user cannot look up at its city
    assert c.get(f"/dashboard/{PROVINCE}?{ON}").status_code == 404
    assert as_user("county").get(f"/dashboard/{CITY}?{ON}").status_code == 404
    assert as_user("county").get(f"/dashboard/{dash.counties[1]}?{ON}").status_code == 404
    assert as_user("county").get(f"/dashboard/{dash.town}?{ON}").status_code == 200


def test_grid_officers_get_403_and_anonymous_users_the_login_page(
    as_user: Any, web_app: Any, dash: DashWorld
) -> None:
    c = as_user("officer")
    for path in ("/dashboard", f"/dashboard/{dash.community}", f"/dashboard/{CITY}/export.csv"):
        assert c.get(path).status_code == 403, path
    anon = client(web_app)
    for path in (
        "/dashboard",
        f"/dashboard/{CITY}",
        f"/dashboard/{CITY}/ranking",
        f"/dashboard/{CITY}/export.csv",
    ):
        r = anon.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path


def test_town_union_staff_see_their_own_dashboard_and_the_link_to_it_but_officers_do_not(
    as_user: Any, dash: DashWorld
) -> None:
    """Every role but grid officers may open the dashboards of their own scope; the navigation
    offers the link exactly to them, and sync health only from county level up."""
    town = as_user("town")
    page = town.get(f"/dashboard/{dash.town}?{ON}")
    assert page.status_code == 200
    assert 'href="/dashboard"' in page.text and 'href="/health"' not in page.text
    assert town.get(f"/dashboard/{dash.counties[0]}?{ON}").status_code == 404  # above its scope
    inbox = as_user("officer").get("/inbox")
    assert inbox.status_code == 200 and 'href="/dashboard"' not in inbox.text
    county = as_user("county").get(f"/dashboard/{dash.counties[0]}?{ON}").text
    assert 'href="/dashboard"' in county and 'href="/health"' in county


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/dashboard/{city}", 200, id="own scope"),
        pytest.param("/dashboard/{city}/export.csv", 200, id="own scope csv"),
        pytest.param("/dashboard/{other}", 404, id="another city"),
        pytest.param("/dashboard/{other}/ranking", 404, id="another city ranking"),
        pytest.param("/dashboard/{other}/export.csv", 404, id="another city csv"),
        pytest.param("/dashboard/{other}/export.xlsx", 404, id="another city xlsx"),
        pytest.param("/dashboard/{province}", 404, id="above its scope"),
    ],
)
def test_an_administrators_scope_applies_to_dashboards_and_exports(
    path: str, status: int, as_user: Any, dash: DashWorld
) -> None:
    """Rule: an admin scoped to a city sees that city's dashboards and exports and nothing else."""
    url = path.format(city=CITY, other=OTHER_CITY, province=PROVINCE)
    assert as_user("admin").get(f"{url}?{ON}").status_code == status


def test_no_personal_data_on_any_dashboard_page_or_export(as_user: Any, dash: DashWorld) -> None:
    c = as_user("province")
    texts = []
    for code in (PROVINCE, CITY, dash.counties[0], dash.town, dash.community):
        for path in ("", "/ranking", "/export.csv"):
            if path == "/ranking" and code == dash.community:
                continue
            r = c.get(f"/dashboard/{code}{path}?{ON}")
            assert r.status_code == 200, (code, path)
            texts.append(r.content.decode("utf-8-sig"))
    texts.append(c.get(f"/dashboard/{CITY}/ranking?{ON}&level=5").text)
    wb = load_workbook(io.BytesIO(c.get(f"/dashboard/{CITY}/export.xlsx?{ON}").content))
    texts.append(" ".join(str(v) for ws in wb for row in ws.iter_rows(values_only=True) for v in row))
    masked = re.compile(r"\d{3}\*{8,}\d{3}[\dXx]|1\d{2}\*{4}\d{4}")
    for text in texts:
        assert find_pii(text) == []
        assert not masked.search(text)
    # the scanner does find what it looks for
    assert find_pii("id 420502198001010019 tel 13800001234")


# ----------------------------------------------------------------------------- ranking


def _ranking(html: str) -> list[tuple[str, str, str, str]]:
    """(code, status, position, on-time cell) in page order."""
    out = []
    for m in re.finditer(
        r'<tr data-testid="rank-row" data-code="(\d{12})" data-status="(\w+)">(.*?)</tr>', html, re.S
    ):
        pos = re.search(r'data-testid="position">([^<]*)<', m.group(3))
        on_time = re.search(r'data-metric="on_time"[^>]*>([^<]*)<', m.group(3))
        assert pos and on_time
        out.append((m.group(1), m.group(2), pos.group(1), on_time.group(1)))
    return out


def test_ranking_by_on_time_rate_ties_by_more_due_then_code_no_cases_due_last(
    as_user: Any, dash: DashWorld
) -> None:
    html = as_user("city").get(f"/dashboard/{CITY}/ranking?{ON}").text
    rows = _ranking(html)
    k0, k1, k2, k3, *rest = dash.counties
    # k1 and k0 both 90%: k1 has 20 due, k0 10; the rest 80% with equal due: by code
    assert [r[0] for r in rows] == [k1, k0, *sorted(rest), k2, k3]
    assert [r[2] for r in rows] == [str(i) for i in range(1, len(rest) + 3)] + ["", ""]
    assert rows[0][3] == rows[1][3] == "90.0%"
    assert {r[3] for r in rows[2 : 2 + len(rest)]} == {"80.0%"}
    assert rows[-2][1:] == ("no_due", "", "无到期案件")
    assert rows[-1][1:] == ("no_data", "", "无数据")
    row_k1 = re.search(rf'data-code="{k1}"[^>]*>(.*?)</tr>', html, re.S)
    assert row_k1
    cells = dict(re.findall(r'data-metric="(\w+)"[^>]*>([^<]*)<', row_k1.group(1)))
    assert cells == {
        "on_time": "90.0%",
        "response": "50.0%",
        "resolution": "95.0%",
        "overdue": "2",
        "overdue_response": "1",
    }


def test_ranking_of_a_lower_level_inside_the_division(as_user: Any, dash: DashWorld) -> None:
    c = as_user("city")
    rows = _ranking(c.get(f"/dashboard/{CITY}/ranking?{ON}&level=4").text)
    towns = sorted(
        k for k, n in dash.names.items() if k.startswith(CITY[:4]) and k[6:] != "000000" and k[9:] == "000"
    )
    assert sorted(r[0] for r in rows) == towns
    # only one town has a row, and nothing due there: no town is ranked
    assert {r[1] for r in rows} == {"no_due", "no_data"}
    assert [r[0] for r in rows if r[1] == "no_due"] == [dash.town]
    # a level not below the division is refused; a province user ranks Yichang's counties the same way
    assert c.get(f"/dashboard/{CITY}/ranking?{ON}&level=2").status_code == 400
    assert c.get(f"/dashboard/{CITY}/ranking?{ON}&level=x").status_code == 400
    prov = _ranking(as_user("province").get(f"/dashboard/{CITY}/ranking?{ON}").text)
    assert prov == _ranking(c.get(f"/dashboard/{CITY}/ranking?{ON}").text)


def test_a_long_ranking_is_paged_and_the_xlsx_export_carries_all_of_it(as_user: Any, dash: DashWorld) -> None:
    c = as_user("city")
    communities = sorted(k for k in dash.names if k.startswith(CITY[:4]) and k[9:] != "000")
    assert len(communities) > RANK_PAGE  # the sample world has ~500
    first = c.get(f"/dashboard/{CITY}/ranking?{ON}&level=5").text
    second = c.get(f"/dashboard/{CITY}/ranking?{ON}&level=5&page=2").text
    assert 'data-testid="pager"' in first
    assert text_of(first, "rank-total") == f"共{len(communities)}个单位"
    rows = _ranking(first) + _ranking(second)
    assert len(_ranking(first)) == RANK_PAGE
    assert sorted(r[0] for r in rows) == communities
    # a page past the end shows the last page
    assert _ranking(c.get(f"/dashboard/{CITY}/ranking?{ON}&level=5&page=99").text) == _ranking(second)
    wb = load_workbook(io.BytesIO(c.get(f"/dashboard/{CITY}/export.xlsx?{ON}&level=5").content))
    ranked = [row[1] for row in wb["排名"].iter_rows(min_row=2, values_only=True)]
    assert ranked == [r[0] for r in rows]
    assert c.get(f"/dashboard/{CITY}/export.xlsx?{ON}&level=1").status_code == 400


# ----------------------------------------------------------------------------- exports


def _expected_rows(dash: DashWorld) -> dict[str, Counts | None]:
    return {CITY: CITY_COUNTS, **{k: dash.rows.get(k) for k in dash.counties}}


def test_csv_export_is_utf8_with_bom_and_parses_back_to_the_same_numbers(
    as_user: Any, dash: DashWorld
) -> None:
    r = as_user("city").get(f"/dashboard/{CITY}/export.csv?{ON}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    header, body = rows[0], rows[1:]
    assert header[:5] == ["行", "单位代码", "单位名称", "层级", "统计日期"]
    assert "工会组织覆盖率（%）" in header and "企业数" in header
    got = {row[1]: dict(zip(header, row, strict=True)) for row in body}
    assert list(got) == [CITY, *dash.counties]
    assert got[CITY]["行"] == "本级" and got[dash.counties[0]]["行"] == "下级"
    for code, c in _expected_rows(dash).items():
        line = got[code]
        if c is None:
            assert line["企业数"] == "" and line["工会组织覆盖率（%）"] == "" and line["统计日期"] == ""
            continue
        assert line["统计日期"] == LATEST.isoformat()
        assert line["企业数"] == str(c.enterprises) and line["已建会企业数"] == str(c.enterprises_union)
        assert line["已到期数"] == str(c.due) and line["超期未办结数"] == str(c.overdue)
        for m in RATES:
            rate = c.rate(m)
            cell = line[f"{m.label_zh}（%）"]
            assert cell == ("" if rate is None else f"{rate * 100:.2f}"), (code, m.name)
    assert got[CITY]["劳资纠纷调解率（%）"] == ""  # undefined, not 0
    assert got[dash.counties[1]]["按时办结率排名"] == "1" and got[dash.counties[0]]["按时办结率排名"] == "2"
    en = list(csv.reader(io.StringIO(as_user("city").get(f"/dashboard/{CITY}/export.csv?{ON}&lang=en").text)))
    assert en[0][:3] == ["\ufeffRow", "Code", "Name"] and "Union coverage (%)" in en[0]


def test_xlsx_export_parses_back_to_the_same_numbers(as_user: Any, dash: DashWorld) -> None:
    r = as_user("city").get(f"/dashboard/{CITY}/export.xlsx?{ON}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["汇总", "排名", "趋势", "说明"]
    ws = wb["汇总"]
    values = list(ws.iter_rows(values_only=True))
    header = list(values[0])
    got = {row[1]: dict(zip(header, row, strict=True)) for row in values[1:]}
    for code, c in _expected_rows(dash).items():
        line = got[code]
        if c is None:
            assert line["企业数"] is None and line["工会组织覆盖率（%）"] is None
            continue
        assert line["统计日期"].date() == LATEST
        for col in COUNT_FIELDS:
            assert line[next(h for h in header if h == _zh_count(col))] == c.count(col), (code, col)
        for m in RATES:
            assert line[f"{m.label_zh}（%）"] == c.rate(m), (code, m.name)
    assert ws.cell(row=2, column=header.index("工会组织覆盖率（%）") + 1).number_format == "0.0%"
    ranking = list(wb["排名"].iter_rows(values_only=True))
    assert [row[1] for row in ranking[1:3]] == [dash.counties[1], dash.counties[0]]
    assert ranking[1][3] == 0.9 and ranking[1][4] == 20
    trend = list(wb["趋势"].iter_rows(values_only=True))
    assert [row[0].date() for row in trend[1:]] == DATES
    assert [row[1] for row in trend[1:]] == [c.rate("union") for c in CITY_TREND]


def _zh_count(col: str) -> str:
    from grid.monitoring.exports import COUNT_LABELS

    return COUNT_LABELS[col][0]


# ----------------------------------------------------------------------------- geometry


SQUARE = "MULTIPOLYGON((({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0})))"


def test_projection_puts_north_up_scales_x_by_cos_latitude_and_fits_the_canvas(
    conn: psycopg2.extensions.connection,
) -> None:
    parent, north, south = "429800000000", "429802000000", "429801000000"
    with conn.cursor() as cur:
        for code, level, par, (x0, y0, x1, y1) in [
            (parent, 2, PROVINCE, (110, 30, 111, 32)),
            (south, 3, parent, (110, 30, 111, 31)),
            (north, 3, parent, (110, 31, 111, 32)),
        ]:
            cur.execute(
                "INSERT INTO division (code, level, name, parent_code, geom, source) "
                "VALUES (%s, %s, %s, %s, ST_GeomFromText(%s, 4326), 'test')",
                (code, level, f"测试{code}", par, SQUARE.format(x0=x0, y0=y0, x1=x1, y1=y1)),
            )
    g = choropleth.geometry(conn, source="children", code=parent, prefix="42")
    # extent 1 deg x 2 deg at 31 N: height is the long side -> 1000 units; width 1000/2 * cos(31 deg)
    assert g.height == 1000.0
    assert g.width == pytest.approx(500 * 0.857167, abs=0.1)
    by_code = {s.code: s for s in g.shapes}

    def ys(path: str) -> list[float]:
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path)]
        return nums[1::2]

    assert sorted(set(ys(by_code[north].path))) == [0.0, 500.0]  # the north square is on top
    assert sorted(set(ys(by_code[south].path))) == [500.0, 1000.0]
    assert 0 < by_code[north].label_y < 500 < by_code[south].label_y < 1000
    # another scope sees none of it
    assert choropleth.geometry(conn, source="children", code=parent, prefix="43").shapes == ()


def test_geometry_is_cached_until_a_boundary_changes(conn: psycopg2.extensions.connection) -> None:
    parent, child = "429700000000", "429701000000"
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO division (code, level, name, parent_code, geom, source) VALUES "
            "(%s, 2, 'p', %s, NULL, 'test'), (%s, 3, 'c', %s, ST_GeomFromText(%s, 4326), 'test')",
            (parent, PROVINCE, child, parent, SQUARE.format(x0=110, y0=30, x1=111, y1=31)),
        )
    first = choropleth.geometry(conn, source="children", code=parent, prefix="42")
    hits = choropleth.CACHE.hits
    assert choropleth.geometry(conn, source="children", code=parent, prefix="42") is first
    assert choropleth.CACHE.hits == hits + 1
    with conn.cursor() as cur:  # a new boundary: a triangle in place of the square
        cur.execute(
            "UPDATE division SET geom = ST_GeomFromText('MULTIPOLYGON(((110 30,111 30,110 31,110 30)))', 4326) "
            "WHERE code = %s",
            (child,),
        )
    second = choropleth.geometry(conn, source="children", code=parent, prefix="42")
    assert second is not first
    assert second.shapes[0].path.count(" ") < first.shapes[0].path.count(" ")


def test_dense_boundaries_are_simplified_relative_to_the_parents_extent(
    conn: psycopg2.extensions.connection,
) -> None:
    parent, child = "429600000000", "429601000000"
    with conn.cursor() as cur:  # a disc of 10,001 vertices, 1 degree across
        cur.execute(
            "INSERT INTO division (code, level, name, parent_code, geom, source) VALUES "
            "(%s, 2, 'p', %s, NULL, 'test'), "
            "(%s, 3, 'c', %s, ST_Multi(ST_Buffer(ST_SetSRID(ST_Point(111, 31), 4326), 0.5, 2500)), 'test')",
            (parent, PROVINCE, child, parent),
        )
        cur.execute("SELECT ST_NPoints(geom) FROM division WHERE code = %s", (child,))
        raw = int(cur.fetchone()[0])  # type: ignore[index]
    g = choropleth.geometry(conn, source="children", code=parent, prefix="42")
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", g.shapes[0].path)]
    assert raw == 10_001
    # a 1000-unit disc kept to ~0.7 unit: some tens of vertices, not thousands
    assert 20 < len(nums) // 2 < 300
    assert g.height == 1000.0 and max(nums[1::2]) == pytest.approx(1000.0, abs=1.0)
    assert max(nums[0::2]) == pytest.approx(1000 * 0.857167, abs=1.0)


@pytest.mark.parametrize(
    ("rate", "has_data", "cls"),
    [
        pytest.param(None, False, "q-nodata", id="no snapshot row: no data"),
        pytest.param(None, True, "q-na", id="denominator 0: not applicable"),
        pytest.param(0.0, True, "q0", id="0% lowest class"),
        pytest.param(0.4999, True, "q0", id="just under 50%"),
        pytest.param(0.5, True, "q1", id="50% opens the second class"),
        pytest.param(0.85, True, "q3", id="85% opens the fourth class"),
        pytest.param(0.95, True, "q4", id="95% is the top class"),
        pytest.param(1.0, True, "q4", id="100% top class"),
    ],
)
def test_colour_class_breaks(rate: float | None, has_data: bool, cls: str) -> None:
    assert choropleth.colour_class(rate, has_data=has_data) == cls


def test_rank_treats_equal_fractions_as_ties_and_orders_close_ones_exactly() -> None:
    from grid.monitoring.dashboard_data import DivisionInfo, rank

    def unit(n: int) -> DivisionInfo:
        return DivisionInfo(f"4205020010{n:02d}", 5, f"u{n}", None, True)

    units = [unit(n) for n in range(6)]
    by_code = {
        units[0].code: counts(due=3, resolved_on_time=1),  # 1/3
        units[1].code: counts(due=6, resolved_on_time=2),  # 2/6: the same rate, more due -> first
        units[2].code: counts(due=9_999_991, resolved_on_time=3_333_331),  # just above 1/3
        units[3].code: counts(due=0),  # nothing due
        units[5].code: counts(due=9_999_999, resolved_on_time=3_333_333),  # exactly 1/3, most due
    }
    rows = rank(units, by_code)
    assert [r.unit.code for r in rows] == [units[i].code for i in (2, 5, 1, 0, 3, 4)]
    assert [r.position for r in rows] == [1, 2, 3, 4, None, None]
    assert [r.status for r in rows][-2:] == ["no_due", "no_data"]
