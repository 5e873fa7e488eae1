"""What every ``gridflow`` command module shares: one-sentence failures and a database connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    import psycopg2.extensions


def fail(message: str) -> NoReturn:
    """Print one clear sentence and exit non-zero (no traceback wall)."""
    typer.secho(f"gridflow: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def connect_or_fail() -> psycopg2.extensions.connection:
    """A connection to the project database, or the reason there is none and exit 1."""
    from grid.store.db import DatabaseUnavailable, connect

    try:
        return connect()
    except DatabaseUnavailable as exc:
        fail(str(exc))
