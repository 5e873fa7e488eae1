"""``gridflow users ...``: web accounts (argon2id hashes; the password never on the command line).

Registered by ``gridflow_cli.main``::

    from gridflow_cli.users import app as users_app
    app.add_typer(users_app, name="users")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from gridflow_cli.common import connect_or_fail
from gridflow_cli.common import fail as _fail

app = typer.Typer(no_args_is_help=True, help="Web accounts: grid officers and supervising staff.")

PASSWORD_ENV = "GRIDFLOW_NEW_USER_PASSWORD"


@app.callback()
def users() -> None:
    """Web accounts (a group, so ``gridflow users add`` stays a subcommand)."""


@app.command("add")
def add(
    login: Annotated[str, typer.Argument(help="Login name (lower case letters, digits, _ . -).")],
    role: Annotated[
        str, typer.Option("--role", help="grid_officer, community, town, county, city, province or admin.")
    ] = "grid_officer",
    scope: Annotated[
        str | None, typer.Option("--scope", help="12-digit division code of the account's unit.")
    ] = None,
    cell: Annotated[
        list[str] | None, typer.Option("--cell", help="A grid officer's 15-digit cell (repeatable).")
    ] = None,
    officer: Annotated[
        str | None,
        typer.Option("--officer", help="The roster's officer id: the account's cells follow the roster."),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="The roster's source, when the officer id is on several.")
    ] = None,
) -> None:
    """Create an account. The password comes from GRIDFLOW_NEW_USER_PASSWORD or a prompt."""
    import psycopg2

    from grid.accounts.access import Role, ScopeConfigError
    from grid.accounts.sessions import MIN_PASSWORD
    from grid.accounts.users import AccountError, add_user

    try:
        r = Role(role)
    except ValueError:
        _fail(f"unknown role {role!r}; use one of {', '.join(x.value for x in Role)}")
    if officer is None and scope is None:
        _fail("an account needs --scope (or --officer ID for a grid officer on the roster)")
    password = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    if len(password) < MIN_PASSWORD:
        _fail(f"a password needs at least {MIN_PASSWORD} characters")
    conn = connect_or_fail()
    try:
        user_id = add_user(
            conn,
            login=login,
            password=password,
            role=r,
            scope_code=scope,
            cells=list(cell or []),
            officer=officer,
            officer_source=source,
            actor=_actor(),
        )
        with conn.cursor() as cur:
            cur.execute("SELECT scope_code FROM app_user WHERE id = %s", (user_id,))
            row = cur.fetchone()
        conn.rollback()
    except (ScopeConfigError, AccountError) as exc:
        _fail(str(exc))
    except psycopg2.errors.UniqueViolation:
        _fail(f"an account {login!r} already exists")
    except psycopg2.errors.CheckViolation:
        _fail("the login must be 3-64 characters: lower case letters, digits, _ . -")
    finally:
        conn.close()
    tied = f", officer {officer} (cells follow the roster)" if officer else ""
    typer.echo(
        f"account {login} created (id {user_id}, role {r.value}, scope {row[0] if row else scope}{tied})"
    )


def _actor() -> str:
    """Who made a change from the command line: the operating-system user (audited)."""
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@app.command("list")
def list_(
    scope: Annotated[str | None, typer.Option("--scope", help="Only accounts within this division.")] = None,
) -> None:
    """Accounts: login, role, scope, active, the roster officer and its cells now."""
    from grid.accounts.users import list_accounts

    conn = connect_or_fail()
    try:
        rows = list_accounts(conn, scope=scope)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        conn.close()
    typer.echo(f"{'login':<24}{'role':<14}{'scope':<14}{'active':<8}{'officer':<18}cells")
    for a in rows:
        officer = "-" if a.officer_code is None else a.officer_code + ("" if a.officer_active else " (left)")
        cells = ",".join(a.cells) if a.cells else "-"
        typer.echo(
            f"{a.login:<24}{a.role.value:<14}{a.scope_code:<14}{'yes' if a.active else 'NO':<8}"
            f"{officer:<18}{cells}"
        )
    typer.echo(f"{len(rows)} accounts")


def _change(what: str, fn: Callable[..., Any], **kw: Any) -> Any:
    from grid.accounts.users import AccountError

    conn = connect_or_fail()
    try:
        return fn(conn, actor=_actor(), **kw)
    except (AccountError, ValueError) as exc:
        _fail(f"cannot {what}: {exc}")
    finally:
        conn.close()


@app.command("disable")
def disable(login: Annotated[str, typer.Argument(help="The account's login.")]) -> None:
    """Disable an account: its sessions are revoked and it cannot sign in (audited)."""
    from grid.accounts.users import set_active

    changed = _change("disable", set_active, login=login, active=False)
    typer.echo(f"account {login} disabled" if changed else f"account {login} was already disabled")


@app.command("enable")
def enable(login: Annotated[str, typer.Argument(help="The account's login.")]) -> None:
    """Enable a disabled account again (audited)."""
    from grid.accounts.users import set_active

    changed = _change("enable", set_active, login=login, active=True)
    typer.echo(f"account {login} enabled" if changed else f"account {login} was already enabled")


@app.command("reset-password")
def reset_password_(login: Annotated[str, typer.Argument(help="The account's login.")]) -> None:
    """Set a new password (from GRIDFLOW_NEW_USER_PASSWORD or a prompt; audited, never logged)."""
    from grid.accounts.sessions import MIN_PASSWORD
    from grid.accounts.users import reset_password

    password = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "New password", hide_input=True, confirmation_prompt=True
    )
    if len(password) < MIN_PASSWORD:
        _fail(f"a password needs at least {MIN_PASSWORD} characters")
    _change("reset the password", reset_password, login=login, password=password)
    typer.echo(f"password of {login} reset")


@app.command("set-role")
def set_role_(
    login: Annotated[str, typer.Argument(help="The account's login.")],
    role: Annotated[str, typer.Option("--role", help="community, town, county, city, province or admin.")],
) -> None:
    """Change an account's role; its scope must be a division of the new role's level (audited)."""
    from grid.accounts.access import Role
    from grid.accounts.users import set_role

    try:
        r = Role(role)
    except ValueError:
        _fail(f"unknown role {role!r}; use one of {', '.join(x.value for x in Role)}")
    changed = _change("change the role", set_role, login=login, role=r)
    typer.echo(f"account {login} is now {r.value}" if changed else f"account {login} already is {r.value}")


@app.command("audit")
def audit_(
    login: Annotated[str | None, typer.Argument(help="Only this account's changes.")] = None,
) -> None:
    """Account changes, newest first: when, who, which account, what."""
    from grid.accounts.users import audit_log

    conn = connect_or_fail()
    try:
        rows = audit_log(conn, login=login)
    finally:
        conn.close()
    for r in rows:
        detail = " ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))
        typer.echo(f"{r.at:%Y-%m-%d %H:%M:%S%z}  {r.actor:<20}{r.login:<24}{r.action:<16}{detail}")
