"""Notices and administration over real HTTP (the app under uvicorn on loopback): a failed robot
delivery shown on /admin/outbox and put back in the queue; the per-user 通知 list with its unread
count and read marks; the reveal log page and ``gridflow reveals list``."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg2
import pytest

from grid.accounts.access import Role
from grid.accounts.users import add_user
from grid.cases.notify import Robot, Routing
from grid.cases.outbox import deliver
from tests.grid.test_notify import WECOM_KEY, Receiver
from tests.web.conftest import PASSWORD, LiveServer, Tree

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def live(app_factory: Any) -> Iterator[str]:
    with LiveServer(app_factory(cookie_secure=False)) as base:
        yield base


def _sign_in(base: str, login: str) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=base, follow_redirects=False, timeout=20)
    r = c.post("/api/v1/session", json={"login": login, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c, str(r.json()["csrf_token"])


def _user(tree: Tree, role: Role) -> str:
    return next(u for u, (r, *_) in tree.users.items() if r is role)


def _one(conn: Any, sql: str, *args: Any) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def test_a_failed_delivery_shows_on_the_admin_page_and_is_retried_from_it(
    tree: Tree, live: str, owner_conn: Any, database_url: str
) -> None:
    """Delivery rule: a robot that keeps failing leaves the notice failed with its error; the
    admin's /admin/outbox shows it (province too; a county may not open the page), 重新投递 puts
    it back in the queue with who did it, and the next delivery gets it through."""
    case_id = tree.cases["c1"]
    notice_id = _one(owner_conn, "SELECT min(id) FROM notification_outbox WHERE case_id = %s", case_id)[0]
    with owner_conn.cursor() as cur:
        cur.execute(
            "UPDATE notification_outbox SET next_attempt_at = 'infinity' WHERE id <> %s AND delivered_at IS NULL",
            (notice_id,),
        )
        cur.execute(
            "UPDATE notification_outbox SET next_attempt_at = now(), attempts = 0, failed_at = NULL, "
            "delivered_at = NULL WHERE id = %s",
            (notice_id,),
        )
    receiver = Receiver()
    receiver.thread.start()
    try:
        robot = Robot(
            "city_group", "wecom", f"{receiver.base}/cgi-bin/webhook/send?key={WECOM_KEY}", codes=(tree.city,)
        )
        receiver.http_status = 503
        conn = psycopg2.connect(database_url)
        try:
            with httpx.Client(timeout=5) as client:
                failed = deliver(conn, routing=Routing((robot,)), client=client, max_attempts=1)
            assert (failed.attempted, failed.failed) == (1, 1)

            admin, csrf = _sign_in(live, _user(tree, Role.ADMIN))
            page = admin.get("/admin/outbox")  # failed notices first by default
            assert page.status_code == 200
            row = re.search(rf'<tr data-notice="{notice_id}" data-status="(\w+)">(.*?)</tr>', page.text, re.S)
            assert row is not None and row.group(1) == "failed"
            assert "HTTP 503" in row.group(2) and "投递失败" in row.group(2) and "重新投递" in row.group(2)
            assert "city_group" in row.group(2)  # the route it took
            prov, _ = _sign_in(live, _user(tree, Role.PROVINCE))
            assert f'data-notice="{notice_id}"' in prov.get("/admin/outbox").text
            county, county_csrf = _sign_in(live, next(u for u in tree.users if u.startswith("cty1")))
            assert county.get("/admin/outbox").status_code == 403
            assert (
                county.post(f"/admin/outbox/{notice_id}/retry", data={"csrf": county_csrf}).status_code == 403
            )
            assert admin.post(f"/admin/outbox/{notice_id}/retry", data={"csrf": "wrong"}).status_code == 403

            r = admin.post(f"/admin/outbox/{notice_id}/retry", data={"csrf": csrf})
            assert r.status_code == 303
            assert _one(
                owner_conn,
                "SELECT failed_at IS NULL, attempts, requeued_by FROM notification_outbox WHERE id = %s",
                notice_id,
            ) == (True, 0, _user(tree, Role.ADMIN))
            assert admin.post(f"/admin/outbox/{notice_id}/retry", data={"csrf": csrf}).status_code == 404

            receiver.http_status = 200
            with httpx.Client(timeout=5) as client:
                ok = deliver(conn, routing=Routing((robot,)), client=client)
            assert (ok.attempted, ok.delivered) == (1, 1)
        finally:
            conn.close()
        delivered = admin.get("/admin/outbox", params={"status": "delivered"}).text
        assert re.search(rf'<tr data-notice="{notice_id}" data-status="delivered">', delivered)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert [b["msgtype"] for _, b in receiver.got] == ["markdown"]


def _marks(conn: Any, user_id: int) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT notice_id, read_at FROM notice_read WHERE user_id = %s ORDER BY notice_id", (user_id,)
        )
        return list(cur.fetchall())


def test_the_notice_list_shows_a_users_own_notices_with_an_unread_count_and_read_marks(
    tree: Tree, live: str, owner_conn: Any, database_url: str
) -> None:
    """In-app rule: a unit's user sees the notices addressed to its unit (an officer those of its
    cells), newest first, the unread count in the nav; marking read is per user and refused for a
    notice that is not the user's."""
    town2 = tree.towns[1]
    login = f"town2n{secrets.token_hex(3)}"
    conn = psycopg2.connect(database_url)
    try:
        fresh = add_user(conn, login=login, password=PASSWORD, role=Role.TOWN, scope_code=town2)
    finally:
        conn.close()
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT id, topic FROM notification_outbox WHERE recipient_code = %s ORDER BY id DESC", (town2,)
        )
        mine = cur.fetchall()
        cur.execute(
            "SELECT id FROM notification_outbox WHERE recipient_code = ANY(%s) ORDER BY id",
            ([tree.towns[0], tree.cells[0]],),
        )
        others = [r[0] for r in cur.fetchall()]
    assert mine and others, "the tree has notices for town 2 and for others"
    other_town2 = next(u for u, (r, s, _) in tree.users.items() if r is Role.TOWN and s == town2)
    before = _marks(owner_conn, tree.user_ids[other_town2])
    c, csrf = _sign_in(live, login)
    page = c.get("/notices")
    assert page.status_code == 200
    listed = [int(x) for x in re.findall(r'<tr data-notice="(\d+)"', page.text)]
    assert listed == [i for i, _ in mine]
    assert "新案件派单" in page.text
    badge = re.search(r'data-testid="unread">(\d+)<', page.text)
    assert badge is not None and int(badge.group(1)) == len(mine)

    first = mine[0][0]
    assert c.post(f"/notices/{first}/read", data={"csrf": csrf}).status_code == 303
    api = c.get("/api/v1/notices").json()
    assert api["unread"] == len(mine) - 1
    assert {n["id"]: n["read"] for n in api["notices"]}[first] is True
    assert all(
        set(n["details"])
        <= {
            "kind_zh",
            "severity_zh",
            "level_zh",
            "state",
            "owner_code",
            "criticised_unit",
            "resolve_by",
            "due_at",
            "workers_affected",
            "dual_report",
        }
        for n in api["notices"]
    )
    # someone else's notice: not found, nothing written
    r = c.post(f"/api/v1/notices/{others[0]}/read", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404
    assert c.post(f"/api/v1/notices/{first}/read").status_code == 403  # no CSRF header
    assert c.post("/api/v1/notices/read-all", headers={"X-CSRF-Token": csrf}).json() == {
        "marked": len(mine) - 1
    }
    assert c.get("/api/v1/notices", params={"unread": "true"}).json()["notices"] == []
    assert 'data-testid="unread"' not in c.get("/notices").text
    # the read marks are this user's alone: the tree's town-2 user's marks did not change
    assert _marks(owner_conn, tree.user_ids[other_town2]) == before
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM notice_read WHERE user_id = %s AND notice_id = ANY(%s)", (fresh, others)
        )
        assert cur.fetchone() == (0,)
    assert [n for n, _ in _marks(owner_conn, fresh)] == sorted(i for i, _ in mine)
    # an officer's notices are those of its cells
    officer = next(
        u for u, (r, _, cells) in tree.users.items() if r is Role.GRID_OFFICER and cells == [tree.cells[0]]
    )
    oc, _ = _sign_in(live, officer)
    got = {n["recipient_code"] for n in oc.get("/api/v1/notices", params={"limit": 200}).json()["notices"]}
    assert got == {tree.cells[0]}


def test_the_reveal_log_is_for_the_admin_over_http_and_on_the_command_line(
    tree: Tree, live: str, owner_conn: Any
) -> None:
    """Privacy rule: every reveal is in the log (who, which field, which case, why, when); the
    admin's /admin/reveals shows it, filtered and paged; province and unit roles may not open it;
    ``gridflow reveals list`` prints the same rows."""
    from typer.testing import CliRunner

    from gridflow_cli.main import app

    case_id = tree.cases["c8"]
    reason = f"核实欠薪人员联系方式{secrets.token_hex(2)}"
    revealer = next(u for u in tree.users if u.startswith("cty2"))
    c, csrf = _sign_in(live, revealer)
    r = c.post(
        f"/api/v1/cases/{case_id}/reveal",
        json={"field": "worker_phone", "reason": reason},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200
    admin, _ = _sign_in(live, _user(tree, Role.ADMIN))
    page = admin.get("/admin/reveals", params={"case": str(case_id), "user": revealer})
    assert page.status_code == 200
    rows = re.findall(r'<tr data-reveal="\d+">(.*?)</tr>', page.text, re.S)
    assert (
        rows
        and reason in rows[0]
        and revealer in rows[0]
        and "手机号" in rows[0]
        and f"#{case_id}" in rows[0]
    )
    assert tree.plain[case_id]["phone"] not in page.text
    none = admin.get("/admin/reveals", params={"case": str(case_id), "since": "2999-01-01"}).text
    assert "没有符合条件的查看记录" in none
    for role in (Role.PROVINCE, Role.CITY, Role.COUNTY, Role.GRID_OFFICER):
        other, _ = _sign_in(live, _user(tree, role))
        assert other.get("/admin/reveals").status_code == 403, role
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reveal_audit WHERE case_id = %s AND reason = %s", (case_id, reason))
        assert cur.fetchone() == (1,)
    out = CliRunner().invoke(app, ["reveals", "list", "--case", str(case_id), "--user", revealer])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if reason in x)
    assert line.split("\t")[1:4] == [revealer, "worker_phone", str(case_id)]
    bad = CliRunner().invoke(app, ["reveals", "list", "--since", "yesterday"])
    assert bad.exit_code == 1 and "not an ISO date" in bad.output


def test_the_reveal_log_is_paged_newest_first_within_the_admins_scope(
    tree: Tree, owner_conn: Any, database_url: str
) -> None:
    """Paging rule: newest first, ``limit`` rows and whether more follow; an admin of another
    province reads none of these (row-level security and the scope filter); a province account
    is refused by the service too."""
    from grid.accounts.access import Principal
    from grid.accounts.reveals import list_reveals

    case_id = tree.cases["c5"]
    user_id = tree.user_ids[next(u for u in tree.users if u.startswith("cty2"))]
    tag = secrets.token_hex(2)
    with owner_conn.cursor() as cur:
        for n in range(3):
            cur.execute(
                "INSERT INTO reveal_audit (user_id, login, case_id, field, reason, at) "
                "VALUES (%s, %s, %s, 'worker_name', %s, now() + make_interval(secs => %s))",
                (user_id, f"pager{tag}", case_id, f"分页测试{n}", n),
            )
    admin = tree.principal(_user(tree, Role.ADMIN))
    app = psycopg2.connect(database_url, options="-c role=gridflow_app")
    try:
        first = list_reveals(app, principal=admin, login=f"pager{tag}", limit=2)
        second = list_reveals(app, principal=admin, login=f"pager{tag}", limit=2, offset=2)
        assert [r.reason for r in first.rows] == ["分页测试2", "分页测试1"] and first.has_more
        assert [r.reason for r in second.rows] == ["分页测试0"] and not second.has_more
        elsewhere = Principal(admin.user_id, admin.login, Role.ADMIN, "430000000000")
        assert list_reveals(app, principal=elsewhere, login=f"pager{tag}").rows == []
        with pytest.raises(PermissionError):
            list_reveals(app, principal=tree.principal(_user(tree, Role.PROVINCE)))
    finally:
        app.close()
