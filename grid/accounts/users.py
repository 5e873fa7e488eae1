"""Account administration: accounts tied to the roster, list, disable, enable, reset a password,
change a role; every change audited in ``account_audit`` (who, what, when) in its transaction.

The CLI calls these as the database owner; the admin page (``grid/web/admin_users.py``) as the web
role with ``gridflow.admin`` stated for an administrator's scope (row-level security of 0012), so a
page never reaches an account outside its administrator's scope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg2.extensions

from geodata.codes import own_prefix
from grid.accounts.access import Principal, Role, check_role_scope
from grid.accounts.sessions import CELLS_OF_USER, hash_password
from grid.store.db import transaction

Conn = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

AUDIT_ACTIONS: Final = ("add", "disable", "enable", "reset_password", "set_role")


class AccountError(ValueError):
    """An account change that cannot be made (unknown account or officer, a role that does not fit)."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    login: str
    role: Role
    scope_code: str
    active: bool
    officer_code: str | None  # the roster id of a tied officer
    officer_name: str | None  # a staff name (shown plainly to administrators and supervisors)
    officer_active: bool | None
    cells: tuple[str, ...]  # now: from the roster for a tied account
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: datetime
    actor: str
    login: str
    action: str
    detail: dict[str, Any]


def audit(
    cur: Cursor,
    *,
    actor: str,
    user_id: int,
    login: str,
    scope_code: str,
    action: str,
    detail: Mapping[str, Any],
) -> None:
    """One audit row (no password, no personal data: roles, codes and flags only)."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    cur.execute(
        "INSERT INTO account_audit (actor, user_id, login, scope_code, action, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, user_id, login, scope_code, action, json.dumps(dict(detail), sort_keys=True)),
    )


def find_officer(cur: Cursor, code: str, *, source: str | None = None) -> tuple[int, str, list[str]]:
    """An active officer of the roster by its roster id: (officer id, community scope, cells)."""
    cur.execute(
        """
        SELECT o.id, o.source, ARRAY(SELECT oc.cell_code FROM officer_cell oc WHERE oc.officer_id = o.id
                                     ORDER BY oc.cell_code)
        FROM officer o WHERE o.source_record_id = %s AND o.active AND (%s::text IS NULL OR o.source = %s)
        ORDER BY o.id
        """,
        (code, source, source),
    )
    rows = cur.fetchall()
    if not rows:
        raise AccountError(f"no active officer {code!r} on the roster" + (f" of {source}" if source else ""))
    if len(rows) > 1:
        names = ", ".join(str(r[1]) for r in rows)
        raise AccountError(f"officer {code!r} is on several rosters ({names}); name one with --source")
    oid, _src, cells = rows[0]
    if not cells:
        raise AccountError(f"officer {code!r} serves no cell on the roster")
    return int(oid), str(cells[0])[:12], [str(c) for c in cells]


def add_user(
    conn: Conn,
    *,
    login: str,
    password: str,
    role: Role,
    scope_code: str | None,
    cells: list[str] | None = None,
    officer: str | None = None,
    officer_source: str | None = None,
    actor: str = "cli",
) -> int:
    """Create an account, audited. With ``officer`` (a roster id) a grid officer's account whose
    scope and cells follow the roster: nothing is copied but the community it starts in."""
    cells = sorted(set(cells or []))
    pw = hash_password(password)
    with transaction(conn) as cur:
        officer_id: int | None = None
        if officer is not None:
            if role is not Role.GRID_OFFICER or cells:
                raise AccountError("--officer makes a grid_officer account whose cells come from the roster")
            officer_id, community, roster_cells = find_officer(cur, officer, source=officer_source)
            if scope_code not in (None, community):
                raise AccountError(f"officer {officer!r} serves community {community}, not {scope_code}")
            scope_code = community
            check_role_scope(role, scope_code, [c for c in roster_cells if c.startswith(community)])
        else:
            if scope_code is None:
                raise AccountError("an account needs --scope (or --officer)")
            check_role_scope(role, scope_code, cells)
        cur.execute(
            "INSERT INTO app_user (login, password_hash, role, scope_code, officer_id) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (login.strip().lower(), pw, role.value, scope_code, officer_id),
        )
        row = cur.fetchone()
        assert row is not None
        user_id = int(row[0])
        for c in cells:
            cur.execute("INSERT INTO user_cell (user_id, cell_code) VALUES (%s, %s)", (user_id, c))
        detail: dict[str, Any] = {"role": role.value, "scope": scope_code}
        if officer is not None:
            detail["officer"] = officer
        if cells:
            detail["cells"] = cells
        audit(
            cur,
            actor=actor,
            user_id=user_id,
            login=login.strip().lower(),
            scope_code=scope_code,
            action="add",
            detail=detail,
        )
    return user_id


def state_admin(conn: Conn, admin: Principal) -> None:
    """State an administrator's scope for the transaction now starting (row-level security of 0012)."""
    if admin.role is not Role.ADMIN:
        raise PermissionError("only an administrator manages accounts")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT set_config('gridflow.scope', %s, true), set_config('gridflow.cells', '', true), "
            "set_config('gridflow.admin', 'on', true)",
            (own_prefix(admin.scope_code),),
        )


_ACCOUNT_COLUMNS = f"""
    u.id, u.login, u.role, u.scope_code, u.active, o.source_record_id, o.name, o.active, {CELLS_OF_USER}, u.created_at
"""


def _account(row: tuple[Any, ...]) -> Account:
    return Account(
        int(row[0]),
        str(row[1]),
        Role(row[2]),
        str(row[3]),
        bool(row[4]),
        row[5],
        row[6],
        row[7],
        tuple(str(c) for c in row[8]),
        row[9],
    )


def list_accounts(conn: Conn, *, scope: str | None = None, admin: Principal | None = None) -> list[Account]:
    """Accounts, by login; ``scope`` narrows to a subtree (an officer's account by its cells now,
    too). As the web: ``admin``'s scope only."""
    prefix = own_prefix(scope) if scope else ""
    with transaction(conn) as cur:
        if admin is not None:
            state_admin(conn, admin)
        cur.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM app_user u LEFT JOIN officer o ON o.id = u.officer_id "
            f"WHERE u.scope_code LIKE %s OR EXISTS (SELECT 1 FROM unnest({CELLS_OF_USER}) c WHERE c LIKE %s) "
            "ORDER BY u.login",
            (prefix + "%", prefix + "%"),
        )
        return [_account(r) for r in cur.fetchall()]


def _lock(cur: Cursor, login: str) -> tuple[int, str, str, bool, int | None]:
    cur.execute(
        "SELECT id, role, scope_code, active, officer_id FROM app_user WHERE login = %s FOR UPDATE",
        (login.strip().lower(),),
    )
    row = cur.fetchone()
    if row is None:
        raise AccountError(f"no account {login!r}")
    return int(row[0]), str(row[1]), str(row[2]), bool(row[3]), row[4]


def set_active(conn: Conn, *, login: str, active: bool, actor: str, admin: Principal | None = None) -> bool:
    """Disable (its sessions revoked: it cannot sign in or go on) or enable an account; False when it
    already was so (nothing written)."""
    with transaction(conn) as cur:
        if admin is not None:
            state_admin(conn, admin)
        uid, _role, scope, was, _off = _lock(cur, login)
        if admin is not None and uid == admin.user_id and not active:
            raise AccountError("an administrator cannot disable its own account")
        if was == active:
            return False
        cur.execute("UPDATE app_user SET active = %s, updated_at = now() WHERE id = %s", (active, uid))
        revoked = 0
        if not active:
            cur.execute("SELECT gridflow_revoke_sessions(%s)", (uid,))
            r = cur.fetchone()
            revoked = int(r[0]) if r else 0
        detail = {"sessions_revoked": revoked} if not active else {}
        audit(
            cur,
            actor=actor,
            user_id=uid,
            login=login.strip().lower(),
            scope_code=scope,
            action="enable" if active else "disable",
            detail=detail,
        )
    return True


def reset_password(
    conn: Conn, *, login: str, password: str, actor: str, admin: Principal | None = None
) -> None:
    """A new password (the old sessions stay; disable the account to end them)."""
    pw = hash_password(password)
    with transaction(conn) as cur:
        if admin is not None:
            state_admin(conn, admin)
        uid, _role, scope, _active, _off = _lock(cur, login)
        cur.execute("UPDATE app_user SET password_hash = %s, updated_at = now() WHERE id = %s", (pw, uid))
        audit(
            cur,
            actor=actor,
            user_id=uid,
            login=login.strip().lower(),
            scope_code=scope,
            action="reset_password",
            detail={},
        )


def set_role(conn: Conn, *, login: str, role: Role, actor: str, admin: Principal | None = None) -> bool:
    """Change the role of an account whose scope fits the new role (a division of its level; the
    scope itself is kept). An officer's account keeps its cells; a unit role cannot have any."""
    with transaction(conn) as cur:
        if admin is not None:
            state_admin(conn, admin)
        uid, old, scope, _active, officer_id = _lock(cur, login)
        if old == role.value:
            return False
        if officer_id is not None or role is Role.GRID_OFFICER:
            raise AccountError("a grid officer's account follows the roster: add a new account instead")
        cur.execute("SELECT count(*) FROM user_cell WHERE user_id = %s", (uid,))
        r = cur.fetchone()
        if r and int(r[0]):
            raise AccountError("this account has cells: only a grid officer has cells")
        check_role_scope(role, scope, [])
        cur.execute("UPDATE app_user SET role = %s, updated_at = now() WHERE id = %s", (role.value, uid))
        audit(
            cur,
            actor=actor,
            user_id=uid,
            login=login.strip().lower(),
            scope_code=scope,
            action="set_role",
            detail={"from": old, "to": role.value},
        )
    return True


def audit_log(
    conn: Conn, *, login: str | None = None, admin: Principal | None = None, limit: int = 200
) -> list[AuditRow]:
    """The newest account changes first (of one account with ``login``)."""
    with transaction(conn) as cur:
        if admin is not None:
            state_admin(conn, admin)
        cur.execute(
            "SELECT at, actor, login, action, detail FROM account_audit "
            "WHERE (%s::text IS NULL OR login = %s) ORDER BY at DESC, id DESC LIMIT %s",
            (login, login, limit),
        )
        return [AuditRow(r[0], str(r[1]), str(r[2]), str(r[3]), dict(r[4])) for r in cur.fetchall()]
