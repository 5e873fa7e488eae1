"""``/admin/users``: account administration for the admin role, audited, and the database's half.

Through the app: every role of the seeded tree is refused the page and its actions except the
administrator; the administrator disables (sessions revoked, no sign-in), enables, resets a password
and changes a role, each audited. Against the database alone: the web role changes or reads no
account and no audit row unless an administrator's scope is stated, and never outside it.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg2
import pytest

from grid.accounts.access import Role
from grid.accounts.users import add_user
from tests.web.conftest import PASSWORD, Tree, client, login

pytestmark = pytest.mark.db


def _fresh(owner_conn: Any, tree: Tree, role: Role = Role.CITY) -> str:
    name = f"adm-target-{secrets.token_hex(3)}"
    add_user(owner_conn, login=name, password=PASSWORD, role=role, scope_code=tree.city)
    return name


def test_only_the_administrator_opens_the_page_or_changes_an_account(
    tree: Tree, web_app: Any, owner_conn: Any
) -> None:
    target = _fresh(owner_conn, tree)
    anonymous = client(web_app)
    assert anonymous.get("/admin/users").status_code == 303
    for user, (role, _scope, _cells) in tree.users.items():
        c = client(web_app)
        csrf = login(c, user)
        page = c.get("/admin/users")
        assert (page.status_code == 200) is (role is Role.ADMIN), (user, page.status_code)
        r = c.post(f"/admin/users/{target}/disable", data={"csrf": csrf})
        if role is Role.ADMIN:
            assert r.status_code == 200 and "已停用" in r.text
            assert c.post(f"/admin/users/{target}/enable", data={"csrf": csrf}).status_code == 200
        else:
            assert r.status_code == 403, (user, r.status_code)
    with owner_conn.cursor() as cur:
        cur.execute("SELECT active FROM app_user WHERE login = %s", (target,))
        assert cur.fetchone() == (True,)
        cur.execute("SELECT action FROM account_audit WHERE login = %s ORDER BY id", (target,))
        assert [r[0] for r in cur.fetchall()] == [
            "add",
            "disable",
            "enable",
        ]  # the refused ones wrote nothing


def test_the_administrator_disables_enables_resets_and_sets_a_role_each_audited(
    tree: Tree, web_app: Any, owner_conn: Any
) -> None:
    admin = next(u for u in tree.users if u.startswith("adm"))
    target = _fresh(owner_conn, tree)
    victim = client(web_app)
    login(victim, target)
    assert victim.get("/api/v1/me").status_code == 200
    c = client(web_app)
    csrf = login(c, admin)
    page = c.get("/admin/users")
    assert target in page.text and "账号管理" in page.text
    # without the form's CSRF token nothing happens
    assert c.post(f"/admin/users/{target}/disable", data={"csrf": "wrong"}).status_code == 403
    r = c.post(f"/admin/users/{target}/disable", data={"csrf": csrf})
    assert r.status_code == 200 and f"账号 {target} 已停用" in r.text
    assert victim.get("/api/v1/me").status_code == 401  # the session was revoked
    assert (
        client(web_app).post("/api/v1/session", json={"login": target, "password": PASSWORD}).status_code
        == 401
    )
    assert c.post(f"/admin/users/{target}/enable", data={"csrf": csrf}).status_code == 200
    new = "a brand new secret"
    assert (
        c.post(f"/admin/users/{target}/reset_password", data={"csrf": csrf, "password": "short"}).status_code
        == 400
    )
    assert (
        c.post(f"/admin/users/{target}/reset_password", data={"csrf": csrf, "password": new}).status_code
        == 200
    )
    assert client(web_app).post("/api/v1/session", json={"login": target, "password": new}).status_code == 200
    assert c.post(f"/admin/users/{target}/set_role", data={"csrf": csrf, "role": "admin"}).status_code == 200
    refused = c.post(f"/admin/users/{target}/set_role", data={"csrf": csrf, "role": "county"})
    assert refused.status_code == 400 and "county-level scope" in refused.text
    self_disable = c.post(f"/admin/users/{admin}/disable", data={"csrf": csrf})
    assert self_disable.status_code == 400
    with owner_conn.cursor() as cur:
        cur.execute("SELECT actor, action, detail FROM account_audit WHERE login = %s ORDER BY id", (target,))
        rows = cur.fetchall()
    assert [a for _, a, _ in rows] == ["add", "disable", "enable", "reset_password", "set_role"]
    assert {actor for actor, _, _ in rows[1:]} == {f"web:{admin}"}
    assert rows[-1][2] == {"from": "city", "to": "admin"}
    assert new not in str(rows)
    assert 'data-audit="set_role"' in c.get("/admin/users").text


def test_the_database_lets_the_web_change_accounts_only_for_a_stated_administrator_scope(
    tree: Tree, owner_conn: Any, database_url: str
) -> None:
    target = _fresh(owner_conn, tree)
    conn = psycopg2.connect(database_url, options="-c role=gridflow_app")
    try:

        def attempt(scope: str | None) -> tuple[int, int]:
            with conn.cursor() as cur:
                if scope is not None:
                    cur.execute(
                        "SELECT set_config('gridflow.scope', %s, true), set_config('gridflow.admin', 'on', true)",
                        (scope,),
                    )
                cur.execute("UPDATE app_user SET active = false WHERE login = %s", (target,))
                updated = cur.rowcount
                cur.execute("SELECT count(*) FROM account_audit WHERE login = %s", (target,))
                seen = int(cur.fetchone()[0])
            conn.rollback()
            return updated, seen

        assert attempt(None) == (0, 0)  # nothing stated: nothing changes, nothing read
        assert attempt("43") == (0, 0)  # another province's administrator
        assert attempt(tree.city[:4]) == (1, 1)  # the administrator of the account's city
        with conn.cursor() as cur:  # scope stated, but no administrator: nothing
            cur.execute("SELECT set_config('gridflow.scope', %s, true)", (tree.city[:4],))
            cur.execute("UPDATE app_user SET active = false WHERE login = %s", (target,))
            assert cur.rowcount == 0
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("UPDATE app_user SET login = 'x' WHERE login = %s", (target,))
        conn.rollback()
    finally:
        conn.close()
    with owner_conn.cursor() as cur:
        cur.execute("SELECT active FROM app_user WHERE login = %s", (target,))
        assert cur.fetchone() == (True,)
