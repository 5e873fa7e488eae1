"""Connections to the gridflow database (psycopg2) with failures stated in one sentence."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions

from grid.settings import Settings, get_settings


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; the message is one sentence without credentials."""


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, fit for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***", dsn))


def connect(
    dsn: str | None = None, *, settings: Settings | None = None, role: str | None = None
) -> psycopg2.extensions.connection:
    """Open a connection (as the owner, or as database role ``role``: ``grid.settings.FLOWS_ROLE``
    for the flows); an unreachable server raises DatabaseUnavailable."""
    s = settings or get_settings()
    target = dsn or (s.db_dsn(role) if role else s.dsn)
    try:
        conn = psycopg2.connect(target, connect_timeout=10, application_name="gridflow")
    except psycopg2.OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        raise DatabaseUnavailable(
            f"database unreachable at {redact_dsn(target)}: {first} "
            "(start it with `gridflow db up` or set GRIDFLOW_DATABASE_URL)"
        ) from None
    return conn


@contextmanager
def transaction(conn: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    """One transaction: commit on success, roll back on any error."""
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def fetch_one(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The single row a statement must return (RETURNING, count(*)); a missing row is a bug."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("expected one row, got none")
    return tuple(row)


def fetch_named(cur: psycopg2.extensions.cursor) -> dict[str, Any] | None:
    """The next row as a mapping of column name to value (None when there is none): read by
    name, never by position."""
    row = cur.fetchone()
    if row is None or cur.description is None:
        return None
    return dict(zip([d.name for d in cur.description], row, strict=True))
