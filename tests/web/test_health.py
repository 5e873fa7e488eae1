"""Sync health page and quarantine drill-down over HTTP (real app, real PostgreSQL, RLS role).

Runs and quarantine rows are seeded for the web tree's own source (``webtest<cc>``), so nothing
here depends on a sync having run.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from connectors.reasons import Reason
from grid.monitoring.alert_rules import Freshness, load_alerts
from grid.people import vault_from_settings
from grid.sync.health import freshness, quarantine_trend, sources_health
from grid.web.i18n_health import STRINGS
from tests.conftest import write_sources
from tests.flows.helpers import sources_env
from tests.web.conftest import Tree, client, login

pytestmark = pytest.mark.db

# Valid-format personal values that only ever exist encrypted in the database.
PLAIN_ID = "420502198001011234"  # check digit fixed below
PLAIN_PHONE = "13912345678"
PLAIN_NAME = "欧阳明华"


def _valid_id(body17: str) -> str:
    c = (1 - 2 * int(body17, 13)) % 11
    return body17 + ("X" if c == 10 else str(c))


@pytest.fixture(scope="module")
def seeded(
    tree: Tree, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A completed run 30 h ago (freshness: warn), then a failed one, and three open quarantine rows."""
    source = f"webtest{tree.city[2:4]}"
    vault = vault_from_settings()
    plain_id = _valid_id(PLAIN_ID[:17])
    failed_flow = str(uuid.uuid4())
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    now = datetime.now(UTC)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO sync_run (source, status, started_at, finished_at, received, loaded, quarantined, counts,"
            " flow_run_id) VALUES (%s, 'completed', %s, %s, 100, 95, 5, %s, %s) RETURNING id",
            (
                source,
                now - timedelta(hours=30, minutes=2),
                now - timedelta(hours=30),
                json.dumps(
                    {
                        "quarantined_by_reason": {"bad_phone": 3, "bad_id_checksum": 2},
                        "field_problems_by_reason": {"bad_phone": 4, "out_of_china": 1},
                    }
                ),
                str(uuid.uuid4()),
            ),
        )
        ok_run = cur.fetchone()[0]  # type: ignore[index]
        cur.execute(
            "INSERT INTO sync_run (source, status, started_at, finished_at, error, flow_run_id)"
            " VALUES (%s, 'failed', %s, %s, %s, %s) RETURNING id",
            (source, now - timedelta(minutes=5), now - timedelta(minutes=4),
             "source webtest: HTTP 503 after 2 attempts", failed_flow),
        )  # fmt: skip
        failed_run = cur.fetchone()[0]  # type: ignore[index]
        qids = []
        for i, (reason, raw) in enumerate(
            [
                ("bad_phone", {"ywid": "r1", "sfzh": plain_id, "lxdh": PLAIN_PHONE, "xm": PLAIN_NAME}),
                ("bad_id_checksum", {"ywid": "r2", "sfzh": plain_id[:17] + "0", "lxdh": "", "xm": "张三"}),
                ("bad_phone", {"ywid": "r3", "sfzh": plain_id, "lxdh": "12345", "xm": "李四"}),
            ]
        ):
            text = json.dumps(raw, ensure_ascii=False, sort_keys=True)
            cur.execute(
                "INSERT INTO quarantine (source, entity, run_id, last_run_id, source_record_id, reason_code, field,"
                " detail, raw_hmac, raw_enc) VALUES (%s, 'workers', %s, %s, %s, %s, 'lxdh', 'rule', %s, %s)"
                " RETURNING id",
                (source, ok_run, ok_run, raw["ywid"] + str(i), reason,
                 vault.mac(text, purpose="raw"), vault.encrypt(text, purpose="raw")),
            )  # fmt: skip
            qids.append(cur.fetchone()[0])  # type: ignore[index]
        for rid, reason, fld, raw in [
            ("f1", "bad_phone", "phone", {"lxdh": "12345"}),
            ("f2", "bad_phone", "phone", {"lxdh": PLAIN_PHONE[:10]}),
            ("f3", "out_of_china", "lon", {"jd": "139.69", "wd": "35.69"}),
        ]:
            text = json.dumps(raw, ensure_ascii=False, sort_keys=True)
            cur.execute(
                "INSERT INTO field_problem (source, entity, source_record_id, field, reason_code, detail, raw_enc,"
                " run_id, last_run_id) VALUES (%s, 'workers', %s, %s, %s, 'rule', %s, %s, %s)",
                (source, rid, fld, reason, vault.encrypt(text, purpose="raw"), ok_run, ok_run),
            )
    conf = tmp_path_factory.mktemp("health-sources")
    write_sources(conf, **{source: "http://127.0.0.1:9"})
    with sources_env(Path(conf)):
        yield {
            "source": source,
            "qids": qids,
            "failed_run": failed_run,
            "failed_flow": failed_flow,
            "plain_id": plain_id,
        }
    conn.close()


def _user(tree: Tree, prefix: str) -> str:
    return next(u for u in tree.users if u.startswith(prefix))


@pytest.mark.parametrize(
    ("hours", "status"),
    [
        pytest.param(None, "never", id="never synced is shown as never"),
        pytest.param(1.0, "ok", id="1 h old is fresh"),
        pytest.param(26.0, "ok", id="exactly 26 h is still fresh"),
        pytest.param(26.5, "warn", id="past 26 h warns"),
        pytest.param(48.0, "warn", id="exactly 48 h still only warns"),
        pytest.param(49.0, "alarm", id="past 48 h alarms"),
    ],
)
def test_freshness_warns_past_26_hours_and_alarms_past_48(hours: float | None, status: str) -> None:
    """Rule (issue #8): freshness from the last successful run; warn > 26 h, alarm > 48 h."""
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    last = None if hours is None else now - timedelta(hours=hours)
    assert freshness(last, now=now, limits=Freshness(warn_hours=26, alarm_hours=48))[0] == status


def test_thresholds_come_from_the_alerts_file() -> None:
    """Rule: the thresholds are configuration (config/alerts.toml), with the issue's defaults."""
    limits = load_alerts().freshness
    assert (limits.warn_hours, limits.alarm_hours) == (26, 48)


def test_health_page_shows_runs_failed_error_freshness_trend_and_prefect_links(
    web_app: Any, tree: Tree, seeded: dict[str, Any]
) -> None:
    """Rule (issue #8): per source the last runs with status and counts, a failed run's error,
    a freshness badge, a quarantine trend and a link from every run to its Prefect UI page."""
    c = client(web_app)
    login(c, _user(tree, "city"))
    r = c.get("/health")
    assert r.status_code == 200, r.text
    html = r.text
    section = html[html.index(f'data-source="{seeded["source"]}"') :]
    section = section[: section.index("</section>")]
    assert 'data-status="warn"' in section  # completed 30 h ago
    assert f'data-run="{seeded["failed_run"]}" data-status="failed"' in section
    assert "HTTP 503 after 2 attempts" in section
    assert f'/runs/flow-run/{seeded["failed_flow"]}"' in section
    assert len(re.findall(r'href="http://[^"]+/runs/flow-run/[0-9a-f-]{36}"', section)) == 2
    assert 'data-testid="trend"' in section and "<rect" in section
    assert "电话号码错误" in section  # reason legend in Chinese
    assert f'href="/health/{seeded["source"]}/quarantine"' in section
    assert "失败" in section
    en = c.get("/health?lang=en").text
    assert "Sync health" in en and "Getting stale" in en


def test_field_problems_are_shown_apart_from_records_quarantined_whole(
    web_app: Any, tree: Tree, seeded: dict[str, Any], database_url: str
) -> None:
    """Rule (issue #21): /health shows per run the field problems (records loaded with a field
    empty) in their own column beside the records quarantined whole, and per source the open field
    problems by reason and field in their own table — never a raw value. Row-level security
    hides another city's field problems as it hides its quarantine."""
    c = client(web_app)
    login(c, _user(tree, "city"))
    html = c.get("/health").text
    section = html[html.index(f'data-source="{seeded["source"]}"') :]
    section = section[: section.index("</section>")]
    assert re.findall(r'data-testid="run-field-problems">(\d+)<', section) == ["0", "5"]  # newest first
    table = section[section.index('data-testid="field-problems"') :]
    rows = re.findall(
        r'data-reason="(\w+)" data-field="(\w+)"><td>[^<]*</td><td>\w+</td><td class="num">(\d+)<', table
    )
    assert rows == [("bad_phone", "phone", "2"), ("out_of_china", "lon", "1")]
    assert "字段问题（记录已入库，该字段留空）" in section
    assert "12345" not in section and "139.69" not in section and PLAIN_PHONE[:10] not in section
    assert f"({len(seeded['qids'])})" in section  # the quarantine drill count is the whole records only
    conn = psycopg2.connect(database_url, options="-c role=gridflow_app")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('gridflow.scope', '4290', true)")
            cur.execute("SELECT count(*) FROM field_problem WHERE source = %s", (seeded["source"],))
            assert cur.fetchone() == (0,)
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('gridflow.scope', %s, true)", (tree.city[:4],))
            cur.execute("SELECT count(*) FROM field_problem WHERE source = %s", (seeded["source"],))
            assert cur.fetchone() == (3,)
        conn.rollback()
    finally:
        conn.close()


def test_quarantine_drill_down_is_masked_and_filtered_by_reason(
    web_app: Any, tree: Tree, seeded: dict[str, Any]
) -> None:
    """Rule (domain §6): the drill-down shows masked ID, phone and name only — never raw values."""
    c = client(web_app)
    login(c, _user(tree, "prov"))
    r = c.get(f"/health/{seeded['source']}/quarantine")
    assert r.status_code == 200, r.text
    html = r.text
    for qid in seeded["qids"]:
        assert f'data-qid="{qid}"' in html
    pid = seeded["plain_id"]
    assert pid[:3] + "*" * 11 + pid[-4:] in html
    assert "139****5678" in html and "欧**华" in html
    for plain in (pid, PLAIN_PHONE, PLAIN_NAME, "12345"):
        assert plain not in html
    assert "<td>职工</td>" in html and "<td>workers</td>" not in html  # the UI speaks Chinese first
    only = c.get(f"/health/{seeded['source']}/quarantine?reason=bad_id_checksum").text
    assert only.count("data-qid=") == 1


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        pytest.param("off1", "/health", 403, id="grid officer: no health page"),
        pytest.param("town1", "/health", 403, id="town: no health page"),
        pytest.param("cty1", "/health", 200, id="county: health page of its city"),
        pytest.param("cty1", "/health/{src}/quarantine", 403, id="county: no drill-down"),
        pytest.param("other", "/health/{src}/quarantine", 404, id="another city: no such source"),
        pytest.param("city", "/health/{src}/quarantine", 200, id="own city: drill-down"),
    ],
)
def test_health_pages_follow_role_and_scope(
    web_app: Any, tree: Tree, seeded: dict[str, Any], who: str, path: str, status: int
) -> None:
    """Rule: city users see their city's sources; province/admin all; people views only from city up."""
    c = client(web_app)
    login(c, _user(tree, who))
    r = c.get(path.replace("{src}", seeded["source"]))
    assert r.status_code == status
    if who == "cty1" and status == 200:
        assert f'data-source="{seeded["source"]}"' in r.text
        assert 'data-testid="drill"' not in r.text


def test_other_city_does_not_see_the_source_on_the_health_page(
    web_app: Any, tree: Tree, seeded: dict[str, Any]
) -> None:
    c = client(web_app)
    login(c, _user(tree, "other"))
    r = c.get("/health")
    assert r.status_code == 200 and f'data-source="{seeded["source"]}"' not in r.text


def test_reprocess_post_needs_csrf_and_a_choice(web_app: Any, tree: Tree, seeded: dict[str, Any]) -> None:
    """Rule: the reprocess form is CSRF-protected; an empty or foreign choice is a clear 400."""
    c = client(web_app)
    csrf = login(c, _user(tree, "city"))
    url = f"/health/{seeded['source']}/reprocess"
    assert c.post(url, data={"qid": str(seeded["qids"][0])}).status_code == 403
    assert c.post(url, data={"csrf": "wrong", "qid": str(seeded["qids"][0])}).status_code == 403
    r = c.post(url, data={"csrf": csrf})
    assert r.status_code == 400 and "请至少选择" in r.text
    assert c.post(url, data={"csrf": csrf, "qid": "999999999"}).status_code == 400


def test_row_level_security_hides_quarantine_of_other_cities(
    database_url: str, tree: Tree, seeded: dict[str, Any]
) -> None:
    """Rule: the database is the second lock — the web role with another city's scope reads no
    quarantine row of this source even without the application's filter."""
    conn = psycopg2.connect(database_url, options="-c role=gridflow_app")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('gridflow.scope', '4290', true)")
            cur.execute("SELECT count(*) FROM quarantine WHERE source = %s", (seeded["source"],))
            assert cur.fetchone() == (0,)
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('gridflow.scope', %s, true)", (tree.city[:4],))
            cur.execute("SELECT count(*) FROM quarantine WHERE source = %s", (seeded["source"],))
            assert cur.fetchone() == (3,)
        conn.rollback()
    finally:
        conn.close()


def test_trend_stacks_quarantine_by_reason_per_run_oldest_first(
    database_url: str, tree: Tree, seeded: dict[str, Any]
) -> None:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            (health,) = [
                s
                for s in sources_health(cur, prefix=tree.city[:4], now=datetime.now(UTC), limits=Freshness())
                if s.name == seeded["source"]
            ]
        trend = quarantine_trend(health.runs)
        assert [lab for _, lab in trend.labels][-1] == f"#{seeded['failed_run']}"
        assert {r for r, _ in trend.legend} == {"bad_phone", "bad_id_checksum"}
        assert trend.max_total == 5 and len(trend.bars) == 2
    finally:
        conn.close()


def test_every_reason_code_has_its_chinese_label_on_the_page() -> None:
    """Rule: the page's reason labels are the closed list's labels (connectors.reasons)."""
    for reason in Reason:
        assert STRINGS[f"reason_{reason.value}"][0] == reason.label_zh
