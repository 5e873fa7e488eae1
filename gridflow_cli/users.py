"""``gridflow users ...``: web accounts (argon2id hashes; the password never on the command line).

Registered by ``gridflow_cli.main``::

    from gridflow_cli.users import app as users_app
    app.add_typer(users_app, name="users")
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

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
    ],
    scope: Annotated[str, typer.Option("--scope", help="12-digit division code of the account's unit.")],
    cell: Annotated[
        list[str] | None, typer.Option("--cell", help="A grid officer's 15-digit cell (repeatable).")
    ] = None,
) -> None:
    """Create an account. The password comes from GRIDFLOW_NEW_USER_PASSWORD or a prompt."""
    import psycopg2

    from grid.accounts.access import Role, ScopeConfigError
    from grid.accounts.sessions import MIN_PASSWORD, add_user
    from grid.store.db import DatabaseUnavailable, connect

    try:
        r = Role(role)
    except ValueError:
        _fail(f"unknown role {role!r}; use one of {', '.join(x.value for x in Role)}")
    password = os.environ.get(PASSWORD_ENV) or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    if len(password) < MIN_PASSWORD:
        _fail(f"a password needs at least {MIN_PASSWORD} characters")
    try:
        conn = connect()
    except DatabaseUnavailable as exc:
        _fail(str(exc))
    try:
        user_id = add_user(
            conn, login=login, password=password, role=r, scope_code=scope, cells=list(cell or [])
        )
    except ScopeConfigError as exc:
        _fail(str(exc))
    except psycopg2.errors.UniqueViolation:
        _fail(f"an account {login!r} already exists")
    except psycopg2.errors.CheckViolation:
        _fail("the login must be 3-64 characters: lower case letters, digits, _ . -")
    finally:
        conn.close()
    typer.echo(f"account {login} created (id {user_id}, role {r.value}, scope {scope})")
