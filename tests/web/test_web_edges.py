"""The web's edges: the client address is believed from X-Forwarded-For only behind a configured
proxy, a throttled correct password is no failure, logout ends the session whatever the token, and
the API docs come from installed files and work offline under the CSP."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from typing import Any

import httpx
import psycopg2
import pytest
from playwright.sync_api import Browser

from grid.accounts.access import Role
from grid.accounts.sessions import _login_key
from grid.accounts.users import add_user
from grid.settings import get_settings
from gridflow_cli.services import services
from tests.web.conftest import PASSWORD, LiveServer, Tree, client, login

SPOOFED = "203.0.113.7"


def _attempts(owner_conn: Any, login_name: str) -> list[tuple[str, bool]]:
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT client, success FROM login_attempt WHERE login_key = %s ORDER BY id",
            (_login_key(login_name),),
        )
        return [(str(r[0]), bool(r[1])) for r in cur.fetchall()]


def _fresh_user(database_url: str, tree: Tree) -> str:
    name = f"edge{secrets.token_hex(4)}"
    conn = psycopg2.connect(database_url)
    try:
        add_user(conn, login=name, password=PASSWORD, role=Role.CITY, scope_code=tree.city)
    finally:
        conn.close()
    return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_web_service_ignores_x_forwarded_for_from_loopback(
    database_url: str, tree: Tree, owner_conn: Any
) -> None:
    """Rule: started as `gridflow services up web` starts it, uvicorn believes no forwarded header
    (its default trusts loopback, so any local client could name its address)."""
    port = _free_port()
    settings = get_settings().model_copy(update={"web_port": port})
    argv = services(settings)["web"].argv
    assert "--no-proxy-headers" in argv
    env = {**os.environ, "GRIDFLOW_WEB_COOKIE_SECURE": "false"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the web service did not start"
            time.sleep(0.3)
        name = _fresh_user(database_url, tree)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/session",
            json={"login": name, "password": "wrong password!"},
            headers={"X-Forwarded-For": SPOOFED, "X-Real-IP": SPOOFED},
        )
        assert r.status_code == 401
        assert _attempts(owner_conn, name) == [("127.0.0.1", False)]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_x_forwarded_for_is_believed_only_from_a_configured_proxy(
    app_factory: Any, database_url: str, tree: Tree, owner_conn: Any
) -> None:
    name = _fresh_user(database_url, tree)
    plain = client(app_factory())
    plain.post(
        "/api/v1/session",
        json={"login": name, "password": "wrong password!"},
        headers={"X-Forwarded-For": SPOOFED},
    )
    behind = client(app_factory(trusted_proxies="10.0.0.0/8, testclient"))
    behind.post(
        "/api/v1/session",
        json={"login": name, "password": "wrong password!"},
        headers={"X-Forwarded-For": SPOOFED},
    )
    assert _attempts(owner_conn, name) == [("testclient", False), (SPOOFED, False)]


def test_a_correct_password_refused_by_the_throttle_is_not_counted_as_a_failure(
    app_factory: Any, database_url: str, tree: Tree, owner_conn: Any
) -> None:
    name = _fresh_user(database_url, tree)
    c = client(app_factory(login_max_failures=2))
    for _ in range(2):
        assert (
            c.post("/api/v1/session", json={"login": name, "password": "wrong password!"}).status_code == 401
        )
    refused = c.post("/api/v1/session", json={"login": name, "password": PASSWORD})
    assert refused.status_code == 401  # throttled: the same answer as a wrong password
    assert _attempts(owner_conn, name) == [("testclient", False), ("testclient", False)]


def test_logout_without_a_csrf_token_still_ends_the_session_server_side(
    web_app: Any, tree: Tree, owner_conn: Any
) -> None:
    c = client(web_app)
    login(c, next(u for u in tree.users if u.startswith("town1")))
    token = c.cookies.get(web_app.state.gridflow.web.cookie_name)
    assert token and c.get("/inbox").status_code == 200
    out = c.post("/logout", data={})
    assert out.status_code == 303
    again = client(web_app)
    again.cookies.set(web_app.state.gridflow.web.cookie_name, token)
    assert again.get("/inbox").status_code == 303  # the old token no longer opens anything
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT revoked_at IS NOT NULL FROM web_session WHERE token_hash = sha256(%s::bytea)",
            (token.encode(),),
        )
        assert cur.fetchone() == (True,)


def test_api_docs_come_from_installed_files_with_no_inline_script(web_app: Any) -> None:
    c = client(web_app)
    page = c.get("/api/docs")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from another host
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)  # no inline script for the CSP
    for asset in assets:
        r = c.get(asset)
        assert r.status_code == 200 and len(r.content) > 50, asset


def test_api_docs_render_offline_in_a_browser(app_factory: Any, browser: Browser) -> None:
    with LiveServer(app_factory(cookie_secure=False)) as url:
        context = browser.new_context()
        blocked: list[str] = []

        def only_loopback(route: Any) -> None:
            if route.request.url.startswith(url):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_loopback)
        errors: list[str] = []
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{url}/api/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "gridflow" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock").count() > 5
        assert blocked == [] and not [e for e in errors if "Content Security Policy" in e], (blocked, errors)
        context.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param(
            "POST", "/api/v1/session", {"login": "a\x00b", "password": "x"}, 401, id="NUL in a login"
        ),
        pytest.param(
            "POST", "/api/v1/session", {"login": "a", "password": "p\x00w"}, 401, id="NUL in a password"
        ),
        pytest.param("GET", "/api/v1/cases?offset=99999999999999999999", None, 422, id="offset past bigint"),
        pytest.param("GET", "/api/v1/ledger?period=2026%00", None, 422, id="NUL in a query parameter"),
    ],
)
def test_inputs_postgresql_cannot_hold_are_answered_not_crashed(
    app_factory: Any, tree: Tree, method: str, path: str, body: dict[str, str] | None, status: int
) -> None:
    """Rule (found by the API fuzzing): a NUL in the credentials is a failed login like any other,
    and a case-list offset beyond what PostgreSQL can count is a 422 — never a 500."""
    c = client(app_factory())
    if method == "GET":
        login(c, next(u for u in tree.users if u.startswith("town1")))
    r = c.request(method, path, json=body)
    assert r.status_code == status, r.text
