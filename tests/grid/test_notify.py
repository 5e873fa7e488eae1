"""Notices that arrive: WeCom and DingTalk robots in their own formats, routed per unit, cell or
officer from the notify file, against a real loopback receiver that checks each format — DingTalk's
signature included — and answers as the real services do (HTTP 200 with ``errcode``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg2
import pytest

from grid.cases.intake import open_case
from grid.cases.notify import NotifyConfigError, Robot, Routing, load_routing, markdown, signed_url
from grid.cases.outbox import ALLOWED_KEYS, Backoff, deliver
from tests.grid.test_case_store import RULES, T0, make_world, report, rows, worker

pytestmark = pytest.mark.db

WECOM_KEY = "wecom-key-123"
DING_TOKEN = "ding-token-456"
DING_SECRET = "SECabcdef0123456789"
PII = ("张三", "13800001234", "420502198001011234")


class Receiver:
    """WeCom at ``/cgi-bin/webhook/send?key=…`` and DingTalk at ``/robot/send?access_token=…``,
    checking what the real services check; ``errcode`` answers what they answer."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.wecom_errcode = 0  # what WeCom answers (93000: invalid webhook URL)
        self.http_status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if outer.http_status != 200:
                    self._answer(outer.http_status, {"errcode": -1, "errmsg": "down"})
                    return
                if url.path == "/cgi-bin/webhook/send":
                    code = outer._check_wecom(q, body)
                else:
                    code = outer._check_dingtalk(q, body)
                if code == 0:
                    outer.got.append((url.path, body))
                self._answer(200, {"errcode": code, "errmsg": "ok" if code == 0 else "refused"})

            def _answer(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _check_wecom(self, q: dict[str, str], body: dict[str, Any]) -> int:
        if q.get("key") != WECOM_KEY:
            return 93000
        if set(body) != {"msgtype", "markdown"} or body["msgtype"] != "markdown":
            return 40008  # invalid message type
        content = body["markdown"].get("content")
        if set(body["markdown"]) != {"content"} or not isinstance(content, str) or not content:
            return 40058
        if len(content.encode()) > 4096:
            return 40058
        return self.wecom_errcode

    def _check_dingtalk(self, q: dict[str, str], body: dict[str, Any]) -> int:
        if q.get("access_token") != DING_TOKEN:
            return 300001
        ts, sign = q.get("timestamp", ""), q.get("sign", "")
        if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600 * 1000:
            return 310000
        want = base64.b64encode(
            hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(want, sign):  # parse_qs has already url-decoded it
            return 310000
        md = body.get("markdown", {})
        if (
            body.get("msgtype") != "markdown"
            or set(md) != {"title", "text"}
            or not md["title"]
            or not md["text"]
        ):
            return 40035
        return 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def _only_case(conn: psycopg2.extensions.connection, keep: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE notification_outbox SET next_attempt_at = 'infinity' WHERE case_id <> %s AND delivered_at IS NULL",
            (keep,),
        )
    conn.commit()


def _state(conn: psycopg2.extensions.connection, cid: int) -> list[tuple[Any, ...]]:
    return rows(
        conn,
        "SELECT topic, target, recipient_code, attempts, delivered_at IS NOT NULL, failed_at IS NOT NULL, "
        "last_error, delivered_via FROM notification_outbox WHERE case_id = %s ORDER BY id",
        cid,
    )


def _collective(conn: psycopg2.extensions.connection) -> tuple[Any, int]:
    """A collective incident: assigned (union, county), dual report (government, county) and
    dual report (union, city)."""
    world = make_world(conn)
    res = open_case(
        conn,
        report=report(world, severity="collective_incident", workers_affected=40, worker_hmac=worker()),
        rules=RULES,
        actor="t",
        at=T0,
    )
    _only_case(conn, res.case_id)
    return world, res.case_id


def test_wecom_and_dingtalk_robots_get_their_own_formats_signed_and_routed_most_specific_first(
    conn: psycopg2.extensions.connection, receiver: Receiver
) -> None:
    """Delivery rule: a robot of the recipient's own code wins; a government dual report goes to
    the robot of the unit above that serves ``government``; DingTalk posts carry a valid
    signature; every message is markdown built from allow-listed keys only; the route is stored."""
    world, cid = _collective(conn)
    routing = Routing(
        robots=(
            Robot(
                "county_wecom",
                "wecom",
                f"{receiver.base}/cgi-bin/webhook/send?key={WECOM_KEY}",
                None,
                codes=(world.county,),
            ),
            Robot(
                "city_ding",
                "dingtalk",
                f"{receiver.base}/robot/send?access_token={DING_TOKEN}",
                DING_SECRET,
                codes=(world.city,),
                targets=("union", "government"),
            ),
        ),
        case_url="https://grid.example/cases/{case_id}",
    )
    with httpx.Client(timeout=5) as client:
        rep = deliver(conn, routing=routing, client=client, now=T0)
    assert (rep.attempted, rep.delivered, rep.retrying, rep.failed) == (3, 3, 0, 0)
    assert [(s[0], s[1], s[2], s[4], s[7]) for s in _state(conn, cid)] == [
        ("assigned", "union", world.county, True, "robot:county_wecom (own code)"),
        ("dual_report", "government", world.county, True, f"robot:city_ding (unit above {world.city})"),
        ("dual_report", "union", world.city, True, "robot:city_ding (own code)"),
    ]
    paths = sorted(p for p, _ in receiver.got)
    assert paths == ["/cgi-bin/webhook/send", "/robot/send", "/robot/send"]
    wecom = next(b for p, b in receiver.got if p == "/cgi-bin/webhook/send")
    assert wecom["markdown"]["content"].startswith("### 新案件派单 · 案件 ")
    assert f"承办单位：{world.county}" in wecom["markdown"]["content"]
    assert f"https://grid.example/cases/{cid}" in wecom["markdown"]["content"]
    # officers read local times and Chinese labels, not UTC ISO strings and enum values
    assert re.search(r"- 办结时限：\d{4}-\d\d-\d\d \d\d:\d\d\n", wecom["markdown"]["content"])
    assert "- 状态：待受理\n" in wecom["markdown"]["content"]
    dings = [b for p, b in receiver.got if p == "/robot/send"]
    assert {b["markdown"]["title"] for b in dings} == {f"苗头性问题/突发性群体性事件报告 · 案件 {cid}"}
    assert all("双报告" in b["markdown"]["text"] for b in dings)
    for _, body in receiver.got:
        assert not any(p in json.dumps(body, ensure_ascii=False) for p in PII)


def test_a_notice_to_an_officers_cell_goes_to_the_robot_of_the_officer_who_owns_the_case(
    conn: psycopg2.extensions.connection, receiver: Receiver
) -> None:
    """Delivery rule: a notice addressed to a cell goes to the robot listing the roster id of the
    officer who owns the case there (``case_file.owner_officer``), before the cell's own robot."""
    world = make_world(conn)
    res = open_case(conn, report=report(world, worker_hmac=worker()), rules=RULES, actor="t", at=T0)
    _only_case(conn, res.case_id)
    [(roster_id, cell)] = rows(
        conn,
        "SELECT o.source_record_id, c.owner_code FROM case_file c JOIN officer o ON o.id = c.owner_officer "
        "WHERE c.id = %s",
        res.case_id,
    )
    hook = f"{receiver.base}/cgi-bin/webhook/send?key={WECOM_KEY}"
    routing = Routing(
        robots=(
            Robot("cell_group", "wecom", hook, None, codes=(cell,)),
            Robot("someone_else", "wecom", hook, None, officers=("not-" + roster_id,)),
            Robot("own_officer", "wecom", hook, None, officers=(roster_id,)),
        )
    )
    with httpx.Client(timeout=5) as client:
        rep = deliver(conn, routing=routing, client=client, now=T0)
    assert rep.delivered >= 1
    assigned = [s for s in _state(conn, res.case_id) if s[0] == "assigned"]
    assert [(s[2], s[4], s[7]) for s in assigned] == [(cell, True, "robot:own_officer (officer)")]


def test_a_bad_dingtalk_signature_is_refused_and_the_notice_retried_with_backoff(
    conn: psycopg2.extensions.connection, receiver: Receiver
) -> None:
    """DingTalk answers HTTP 200 with errcode 310000 to a wrong signature: that is a failure,
    stored as the errcode (no URL, no body), retried after the backoff."""
    world, cid = _collective(conn)
    ding = Robot(
        "city_ding",
        "dingtalk",
        f"{receiver.base}/robot/send?access_token={DING_TOKEN}",
        "SECwrong",
        codes=(world.city,),
        targets=("union", "government"),
    )
    with httpx.Client(timeout=5) as client:
        rep = deliver(conn, routing=Routing((ding,)), client=client, now=T0, backoff=Backoff(base_s=60))
        assert (rep.attempted, rep.retrying, rep.errors) == (3, 3, {"errcode 310000": 3})
        assert (
            deliver(conn, routing=Routing((ding,)), client=client, now=T0 + timedelta(seconds=30)).attempted
            == 0
        )
        fixed = Robot(ding.name, ding.kind, ding.url, DING_SECRET, ding.codes, targets=ding.targets)
        later = deliver(conn, routing=Routing((fixed,)), client=client, now=T0 + timedelta(seconds=61))
    assert (later.attempted, later.delivered) == (3, 3)
    assert {(s[3], s[4], s[6]) for s in _state(conn, cid)} == {(2, True, "errcode 310000")}
    assert receiver.got


def test_a_nonzero_errcode_is_retried_then_marked_failed(
    conn: psycopg2.extensions.connection, receiver: Receiver
) -> None:
    """WeCom answers HTTP 200 with errcode 93000 for a revoked robot: after max_attempts the
    notice is failed and kept for an operator, its error an errcode."""
    world, cid = _collective(conn)
    receiver.wecom_errcode = 93000
    wecom = Robot(
        "county_wecom",
        "wecom",
        f"{receiver.base}/cgi-bin/webhook/send?key={WECOM_KEY}",
        None,
        codes=(world.county,),
    )
    with httpx.Client(timeout=5) as client:
        for day in range(3):
            deliver(
                conn, routing=Routing((wecom,)), client=client, now=T0 + timedelta(days=day), max_attempts=3
            )
    got = _state(conn, cid)
    # the government copy has no route (the robot serves the union only) and waits untouched
    assert [(s[0], s[1], s[3], s[4], s[5], s[6]) for s in got] == [
        ("assigned", "union", 3, False, True, "errcode 93000"),
        ("dual_report", "government", 0, False, False, None),
        ("dual_report", "union", 0, False, False, None),
    ]
    assert receiver.got == []


CELL = "420502001001001"


@pytest.mark.parametrize(
    ("target", "recipient", "via"),
    [
        pytest.param("union", CELL, "robot:officer (officer)", id="the owning officer's own robot wins"),
        pytest.param("union", CELL, "robot:cell (own code)", id="a cell's robot when its officer has none"),
        pytest.param(
            "union",
            "420502001002001",
            "robot:town (unit above 420502001000)",
            id="a cell without a robot: the nearest unit above",
        ),
        pytest.param(
            "union",
            "420502001001",
            "robot:town (unit above 420502001000)",
            id="a community without a robot: its town's",
        ),
        pytest.param(
            "union", "420502002000", "robot:city (unit above 420500000000)", id="another town: up to the city"
        ),
        pytest.param(
            "government",
            "420502001000",
            "webhook:government",
            id="the union robots do not take government copies: the generic webhook",
        ),
        pytest.param("union", "430100000000", "webhook:union", id="outside every robot: the generic webhook"),
    ],
)
def test_routing_takes_the_most_specific_rule_and_says_which(target: str, recipient: str, via: str) -> None:
    routing = Routing(
        robots=(
            Robot("city", "dingtalk", "https://x/1", "s", codes=("420500000000",)),
            Robot("town", "wecom", "https://x/2", codes=("420502001000",)),
            Robot("cell", "wecom", "https://x/3", codes=(CELL,)),
            Robot("officer", "wecom", "https://x/4", officers=("wg7",)),
        ),
        webhooks={"union": "https://u", "government": "https://g"},
    )
    # the case on CELL is owned by roster officer wg7 (the deliverer reads it from case_file)
    route = routing.route(target, recipient, "wg7" if via.endswith("(officer)") else None)
    assert route is not None and route.via == via


def test_without_any_route_a_notice_waits() -> None:
    assert (
        Routing((Robot("t", "wecom", "https://x", codes=("420502001000",)),)).route("union", "430100000000")
        is None
    )


def test_the_message_text_carries_allow_listed_keys_only() -> None:
    payload = {
        "topic_zh": "逾期催办",
        "case_id": 7,
        "owner_code": "420502001000",
        "worker_name": PII[0],
        "phone": PII[1],
    }
    text = markdown(payload)
    assert "420502001000" in text and "逾期催办" in text
    assert PII[0] not in text and PII[1] not in text
    assert {"owner_code", "case_id", "topic_zh"} <= ALLOWED_KEYS


def test_dingtalk_signature_matches_the_documented_recipe() -> None:
    url = signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=T", DING_SECRET, timestamp_ms=1700000000000
    )
    q = parse_qs(urlsplit(url).query)
    want = base64.b64encode(
        hmac.new(DING_SECRET.encode(), f"1700000000000\n{DING_SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    assert q["timestamp"] == ["1700000000000"] and q["sign"] == [want] and q["access_token"] == ["T"]


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "notify.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_the_notify_file_takes_secrets_from_the_state_folder_not_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys" / "notify"
    keys.mkdir(parents=True)
    (keys / "city_ding.url").write_text("https://oapi.dingtalk.com/robot/send?access_token=T\n")
    (keys / "city_ding.secret").write_text("SECxyz\n")
    path = _write(tmp_path, '[robots.city_ding]\nkind = "dingtalk"\ncodes = ["420500000000"]\n')
    routing = load_routing(path, webhooks={}, state_dir=tmp_path)
    (robot,) = routing.robots
    assert (robot.url, robot.secret, robot.targets) == (
        "https://oapi.dingtalk.com/robot/send?access_token=T",
        "SECxyz",
        ("union",),
    )
    assert "SECxyz" not in repr(routing) and "access_token" not in repr(routing)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[robots.a]\nkind = "wecom"\ncodes = ["420500000000"]\n',
            "GRIDFLOW_NOTIFY_A_URL",
            id="a robot without its URL names the variable",
        ),
        pytest.param(
            '[robots.a]\nkind = "slack"\ncodes = ["420500000000"]\n', "kind must be", id="an unknown kind"
        ),
        pytest.param('[robots.a]\nkind = "wecom"\ncodes = ["4205"]\n', "not a 12-digit", id="a bad code"),
        pytest.param('[robots.a]\nkind = "wecom"\n', "no codes and no officers", id="a robot for nobody"),
        pytest.param(
            '[robots.a]\nkind = "wecom"\ncodes = ["420500000000"]\nurl = "https://x"\n',
            "unknown keys",
            id="a URL in the file is refused",
        ),
        pytest.param(
            '[robots.a]\nkind = "wecom"\ncodes = ["420500000000"]\ntargets = ["x"]\n',
            "targets",
            id="an unknown target",
        ),
        pytest.param("[robots\n", "not valid TOML", id="broken TOML"),
    ],
)
def test_a_bad_notify_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NotifyConfigError, match=message):
        load_routing(_write(tmp_path, text), webhooks={}, state_dir=tmp_path)


def test_gridflow_sweep_deliver_uses_the_notify_file_and_refuses_a_broken_one(
    conn: psycopg2.extensions.connection, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLI rule: ``gridflow sweep --deliver`` posts to the robots of GRIDFLOW_NOTIFY_FILE and says
    how many; a robot without its URL is one clear sentence and exit 1, nothing posted."""
    from typer.testing import CliRunner

    from grid.settings import get_settings
    from gridflow_cli.main import app

    world, cid = _collective(conn)
    path = _write(tmp_path, f'[robots.county_group]\nkind = "wecom"\ncodes = ["{world.county}"]\n')
    monkeypatch.setenv("GRIDFLOW_NOTIFY_FILE", str(path))
    get_settings.cache_clear()
    try:
        broken = CliRunner().invoke(app, ["sweep", "--scope", world.town, "--deliver"])
        assert broken.exit_code == 1 and "GRIDFLOW_NOTIFY_COUNTY_GROUP_URL" in broken.output
        assert "sweep at" not in broken.output  # refused before the sweep wrote anything
        monkeypatch.setenv(
            "GRIDFLOW_NOTIFY_COUNTY_GROUP_URL", f"{receiver.base}/cgi-bin/webhook/send?key={WECOM_KEY}"
        )
        out = CliRunner().invoke(app, ["sweep", "--scope", world.town, "--deliver"])
    finally:
        monkeypatch.delenv("GRIDFLOW_NOTIFY_FILE")
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    # the sweep fired the county's 催办 and 通报 (due since T0): with the 派单, three for its robot
    assert "outbox: 3 delivered, 0 to retry, 0 failed (robots: 1; webhooks: none)" in out.output
    assert [(s[0], s[4], s[7]) for s in _state(conn, cid) if s[4]] == [
        ("assigned", True, "robot:county_group (own code)"),
        ("remind", True, "robot:county_group (own code)"),
        ("criticise", True, "robot:county_group (own code)"),
    ]
    assert len(receiver.got) == 3
