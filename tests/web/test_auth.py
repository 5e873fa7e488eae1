"""Accounts and sessions: argon2id, login without user enumeration, throttling, cookie flags, CSRF,
idle and absolute expiry, logout, stale forms, security headers, the users CLI, the RLS role."""

from __future__ import annotations

import re
from typing import Any

import psycopg2
import pytest
from typer.testing import CliRunner

from tests.web.conftest import PASSWORD, Tree, client, login, version_of

pytestmark = pytest.mark.db


def _login_form(c: Any, user: str, password: str) -> Any:
    page = c.get("/login")
    assert page.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    return c.post("/login", data={"csrf": token.group(1), "login": user, "password": password})


def test_password_stored_as_argon2id(tree: Tree, owner_conn: psycopg2.extensions.connection) -> None:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT password_hash FROM app_user WHERE id = ANY(%s)", (list(tree.user_ids.values()),))
        hashes = [r[0] for r in cur.fetchall()]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)


def test_login_sets_secure_session_cookie_and_lands_on_inbox(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    user = next(u for u in tree.users if u.startswith("off1"))
    r = _login_form(c, user, PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/inbox"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-gridflow=")
    for flag in ("HttpOnly", "Secure", "Path=/", "SameSite=lax"):
        assert flag.lower() in cookie.lower(), flag
    inbox = c.get("/inbox")
    assert inbox.status_code == 200 and "我的案件" in inbox.text
    assert inbox.headers["content-security-policy"].startswith("default-src 'self'")
    assert inbox.headers["x-frame-options"] == "DENY"
    assert inbox.headers["cache-control"] == "no-store"


def test_no_user_enumeration(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    user = next(u for u in tree.users if u.startswith("town1"))
    wrong = _login_form(c, user, "not the password")
    unknown = _login_form(c, "nobody-" + user, "not the password")
    assert wrong.status_code == unknown.status_code == 401
    msg = "登录名或密码错误，或尝试次数过多，请稍后再试。"
    assert msg in wrong.text and msg in unknown.text
    api_wrong = c.post("/api/v1/session", json={"login": user, "password": "x" * 12})
    api_unknown = c.post("/api/v1/session", json={"login": "zz" + user, "password": "x" * 12})
    assert api_wrong.status_code == api_unknown.status_code == 401
    assert api_wrong.json() == api_unknown.json()


def test_login_throttled_after_repeated_failures(app_factory: Any, database_url: str) -> None:
    from grid.accounts.access import Role
    from grid.accounts.users import add_user

    conn = psycopg2.connect(database_url)
    try:
        add_user(conn, login="throttle-me", password=PASSWORD, role=Role.PROVINCE, scope_code="420000000000")
    finally:
        conn.close()
    c = client(app_factory(login_max_failures=3))
    for _ in range(3):
        assert (
            c.post("/api/v1/session", json={"login": "throttle-me", "password": "wrong password"}).status_code
            == 401
        )
    # now even the right password is refused, with the same answer
    r = c.post("/api/v1/session", json={"login": "throttle-me", "password": PASSWORD})
    assert r.status_code == 401


def test_login_form_needs_its_csrf_token(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    user = next(iter(tree.users))
    c.get("/login")
    r = c.post("/login", data={"csrf": "forged", "login": user, "password": PASSWORD})
    assert r.status_code == 400
    assert "set-cookie" not in r.headers or "__Host-gridflow" not in r.headers.get("set-cookie", "")


def test_csrf_required_on_forms_and_api(tree: Tree, web_app: Any, owner_conn: Any) -> None:
    c = client(web_app)
    user = next(u for u in tree.users if u.startswith("off1"))
    csrf = login(c, user)
    case_id = tree.cases["c1"]
    v = version_of(owner_conn, case_id)
    r = c.post(f"/cases/{case_id}/actions/note", data={"version": str(v), "text": "无令牌"})
    assert r.status_code == 403
    r = c.post(f"/api/v1/cases/{case_id}/actions/note", json={"version": v, "text": "无令牌"})
    assert r.status_code == 403
    r = c.post(
        f"/api/v1/cases/{case_id}/actions/note",
        json={"version": v, "text": "有令牌"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200, r.text
    assert version_of(owner_conn, case_id) == v + 1


def test_stale_form_gets_conflict_message_not_overwrite(tree: Tree, web_app: Any, owner_conn: Any) -> None:
    c = client(web_app)
    user = next(u for u in tree.users if u.startswith("off1"))
    login(c, user)
    case_id = tree.cases["c1"]
    page = c.get(f"/cases/{case_id}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    v = version_of(owner_conn, case_id)
    ok = c.post(
        f"/cases/{case_id}/actions/note",
        data={"csrf": csrf.group(1), "version": str(v), "text": "第一条备注"},
    )
    assert ok.status_code == 303
    stale = c.post(
        f"/cases/{case_id}/actions/note",
        data={"csrf": csrf.group(1), "version": str(v), "text": "第二条备注"},
    )
    assert stale.status_code == 409
    assert "该案件已被他人更新" in stale.text and f"当前版本 {v + 1}" in stale.text
    assert version_of(owner_conn, case_id) == v + 1
    api = c.post(
        f"/api/v1/cases/{case_id}/actions/note",
        json={"version": v, "text": "第三条备注"},
        headers={"X-CSRF-Token": csrf.group(1)},
    )
    assert api.status_code == 409 and api.json()["detail"]["stale"] is True
    assert api.json()["detail"]["current_version"] == v + 1


def test_idle_and_absolute_expiry_and_logout(tree: Tree, web_app: Any, owner_conn: Any) -> None:
    user = next(u for u in tree.users if u.startswith("town1"))
    uid = tree.user_ids[user]
    c = client(web_app)
    login(c, user)
    assert c.get("/api/v1/me").status_code == 200
    with owner_conn.cursor() as cur:
        cur.execute(
            "UPDATE web_session SET last_seen_at = now() - interval '31 minutes' WHERE user_id = %s", (uid,)
        )
    assert c.get("/api/v1/me").status_code == 401
    assert c.get("/inbox").headers["location"] == "/login"
    c2 = client(web_app)
    login(c2, user)
    with owner_conn.cursor() as cur:
        cur.execute(
            "UPDATE web_session SET expires_at = now() - interval '1 second' WHERE user_id = %s AND revoked_at IS NULL",
            (uid,),
        )
    assert c2.get("/api/v1/me").status_code == 401
    c3 = client(web_app)
    csrf = login(c3, user)
    assert c3.post("/logout", data={"csrf": csrf}).status_code == 303
    assert c3.get("/api/v1/me").status_code == 401


def test_unauthenticated_requests_are_refused(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    case_id = tree.cases["c1"]
    for path in ("/inbox", "/subtree", f"/cases/{case_id}", "/ledger"):
        assert c.get(path).headers.get("location") == "/login", path
    for path in ("/api/v1/me", "/api/v1/cases", f"/api/v1/cases/{case_id}", "/api/v1/ledger"):
        assert c.get(path).status_code == 401, path
    assert (
        c.post(
            f"/api/v1/cases/{case_id}/reveal", json={"field": "worker_id", "reason": "测试理由"}
        ).status_code
        == 401
    )


def test_healthz_sync_page_and_openapi(web_app: Any, tree: Tree) -> None:
    c = client(web_app)
    assert c.get("/healthz").text == "ok"
    # the sync overview is for signed-in users only (it names sources and their errors)
    anonymous = c.get("/")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    login(c, next(u for u in tree.users if u.startswith("city")))
    assert c.get("/").status_code == 200
    spec = c.get("/api/openapi.json").json()
    for path in (
        "/api/v1/cases",
        "/api/v1/cases/{case_id}",
        "/api/v1/cases/{case_id}/actions/{action}",
        "/api/v1/cases/{case_id}/reveal",
        "/api/v1/ledger",
        "/api/v1/session",
    ):
        assert path in spec["paths"], path


def test_english_switch(tree: Tree, web_app: Any) -> None:
    c = client(web_app)
    assert "登录" in c.get("/login").text
    assert "Sign in" in c.get("/login?lang=en").text
    assert "Sign in" in c.get("/login").text  # remembered


def test_users_cli_adds_account_with_password_from_env(tree: Tree, owner_conn: Any, monkeypatch: Any) -> None:
    from gridflow_cli.users import app

    monkeypatch.setenv("GRIDFLOW_NEW_USER_PASSWORD", "a long enough secret")
    runner = CliRunner()
    cell = tree.cells[1]
    r = runner.invoke(
        app, ["add", "cli-officer", "--role", "grid_officer", "--scope", cell[:12], "--cell", cell]
    )
    assert r.exit_code == 0, r.output
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT u.role, u.scope_code, array_agg(c.cell_code) FROM app_user u JOIN user_cell c ON c.user_id = u.id "
            "WHERE u.login = 'cli-officer' GROUP BY 1, 2"
        )
        assert cur.fetchone() == ("grid_officer", cell[:12], [cell])
    bad = runner.invoke(app, ["add", "cli-bad", "--role", "county", "--scope", cell[:12]])
    assert bad.exit_code == 1 and "county-level scope" in bad.output
    dup = runner.invoke(
        app, ["add", "cli-officer", "--role", "grid_officer", "--scope", cell[:12], "--cell", cell]
    )
    assert dup.exit_code == 1 and "already exists" in dup.output


def test_app_role_is_neither_owner_nor_superuser(database_url: str) -> None:
    conn = psycopg2.connect(database_url, options="-c role=gridflow_app")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT r.rolsuper, r.rolbypassrls, (SELECT tableowner FROM pg_tables WHERE tablename = 'case_file') "
                "FROM pg_roles r WHERE r.rolname = current_user"
            )
            row = cur.fetchone()
            assert row is not None and row[0] is False and row[1] is False and row[2] != "gridflow_app"
            cur.execute("SELECT count(*) FROM case_file")  # no scope stated: nothing visible
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_ended_sessions_and_old_login_attempts_are_purged_after_the_history_period(
    tree: Tree, owner_conn: psycopg2.extensions.connection
) -> None:
    """Retention rule: a session that ended (expired, idle past the limit or revoked) more than
    GRIDFLOW_WEB_LOGIN_HISTORY_DAYS ago is deleted, and so is a login attempt that old; a live
    session, a recently ended one and recent attempts stay."""
    from grid.accounts.config import WebSettings
    from grid.accounts.sessions import purge_login_history

    uid = next(iter(tree.user_ids.values()))
    sessions = {  # name -> (created/last seen, expires, revoked), as SQL expressions
        "live": ("now()", "now() + interval '1 hour'", "NULL"),
        "expired_long_ago": ("now() - interval '40 days'", "now() - interval '31 days'", "NULL"),
        "expired_lately": ("now() - interval '10 days'", "now() - interval '9 days'", "NULL"),
        "revoked_long_ago": (
            "now() - interval '35 days'",
            "now() + interval '1 hour'",
            "now() - interval '35 days'",
        ),
        "idle_long_ago": ("now() - interval '31 days'", "now() + interval '1 hour'", "NULL"),
    }
    with owner_conn.cursor() as cur:
        for name, (seen, expires, revoked) in sessions.items():
            cur.execute(
                "INSERT INTO web_session (token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at,"
                f" revoked_at) VALUES (sha256(%s::bytea), %s, 'x', {seen}, {seen}, {expires}, {revoked})",
                (f"purge-test-{name}".encode(), uid),
            )
        cur.execute(
            "INSERT INTO login_attempt (login_key, client, success, at) VALUES"
            " ('\\x01', '10.0.0.1', false, now() - interval '31 days'),"
            " ('\\x01', '10.0.0.1', false, now() - interval '29 days'), ('\\x01', '10.0.0.1', true, now())"
        )
        cur.execute("SELECT count(*) FROM login_attempt WHERE at < now() - interval '30 days'")
        old_attempts = cur.fetchone()[0]  # type: ignore[index]

    purged = purge_login_history(owner_conn, web=WebSettings(login_history_days=30))

    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT n FROM unnest(%s::text[]) n WHERE EXISTS"
            " (SELECT 1 FROM web_session WHERE token_hash = sha256(('purge-test-' || n)::bytea))",
            (list(sessions),),
        )
        left = sorted(n for (n,) in cur.fetchall())
        cur.execute("SELECT count(*) FROM login_attempt WHERE at < now() - interval '30 days'")
        assert cur.fetchone()[0] == 0  # type: ignore[index]
        cur.execute("SELECT count(*) FROM login_attempt WHERE client = '10.0.0.1'")
        assert cur.fetchone()[0] == 2  # type: ignore[index]
    assert left == ["expired_lately", "live"]
    assert purged["sessions"] >= 3 and purged["login_attempts"] == old_attempts
    with pytest.raises(ValueError, match="at least 1"):
        purge_login_history(owner_conn, web=WebSettings(login_history_days=0))
