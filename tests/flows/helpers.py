"""Helpers for sync tests: queries and content fingerprints of what a sync wrote."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grid.settings import get_settings
from grid.store.db import connect, transaction

# What a sync decides about a record — not when it ran, nor the random nonces of ciphertexts.
CONTENT = {
    "worker": "source_record_id, source_updated_at, id_hmac, id_masked, name_masked, gender, birth_year, "
    "phone_hmac, phone_masked, enterprise_uscc, ST_AsText(geom), cell_code, division_code, placement_method, "
    "unmapped_reason, row_hash, deleted_at IS NULL",
    "enterprise": "source_record_id, source_updated_at, uscc, name, union_established, employee_count, address, "
    "legal_rep_phone_hmac, ST_AsText(geom), cell_code, division_code, placement_method, unmapped_reason, row_hash, "
    "deleted_at IS NULL",
    "quarantine": "entity, source_record_id, reason_code, field, detail, raw_hmac, resolved_at IS NULL",
    "field_problem": "entity, source_record_id, field, reason_code, detail, settled_at IS NULL",
}


def query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def fingerprint(source: str) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the content columns of each table, for one source."""
    out = {}
    for table, cols in CONTENT.items():
        n, digest = query(
            f"SELECT count(*), md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM"
            f" (SELECT ROW({cols})::text AS x FROM {table} WHERE source = %s) t",
            source,
        )[0]
        out[table] = (n, digest)
    return out


@contextmanager
def env(**values: str) -> Iterator[None]:
    """Set GRIDFLOW_* variables for a block (settings re-read)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def service_passwords() -> dict[str, str]:
    """The session's database-role passwords as environment variables: what a process with another
    state folder (a second host) must be given, as the keys are (README "Running on several
    machines")."""
    from grid.settings import SERVICE_ROLES, db_password_env

    session = get_settings()
    return {db_password_env(role): session.db_password(role) for role in SERVICE_ROLES}


@contextmanager
def prefect_database(database_url: str, prefix: str) -> Iterator[str]:
    """A Prefect server's own database and login role on the session's cluster, made by the same
    function `gridflow db up` uses (``ensure_prefect_database``); yields its asyncpg URL and drops
    both afterwards."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    from grid.store.cluster import ensure_prefect_database

    name = f"{prefix}{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    parts = urlsplit(database_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    ensure_prefect_database(admin, name=name, password=password)
    try:
        yield f"postgresql+asyncpg://{name}:{password}@{parts.hostname}:{parts.port or 5432}/{name}"
    finally:
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')
        conn.close()


def sources_env(directory: Path) -> Any:
    return env(GRIDFLOW_SOURCES_DIR=str(directory))
