"""Test session: a throwaway database on the real PostgreSQL/PostGIS cluster, keys for PII,
and the rule that a skipped test fails the run (a skip hides a missing component).

The cluster is the project-private one (started if needed, as ``gridflow db up`` does) unless
``GRIDFLOW_DATABASE_URL`` names a server; each session creates ``gridflow_test_<hex>`` there,
migrates it with alembic and drops it at the end.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

# Keys and environment must be in place before any gridflow module reads settings.
os.environ["GRIDFLOW_ENV"] = "test"
os.environ.setdefault("GRIDFLOW_HMAC_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
os.environ.setdefault("GRIDFLOW_ENCRYPTION_KEY", base64.b64encode(secrets.token_bytes(32)).decode())

from grid.settings import get_settings  # noqa: E402


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this session on the real cluster."""
    from grid.store import migrate
    from grid.store.cluster import Cluster

    base = get_settings()
    if base.private_cluster:
        cluster = Cluster(base)
        cluster.start()
        cluster.ensure_database("gridflow")
    admin_url = base.dsn
    name = f"gridflow_test_{secrets.token_hex(4)}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(admin_url, name)
    migrate.upgrade(url)
    previous = os.environ.get("GRIDFLOW_DATABASE_URL")
    os.environ["GRIDFLOW_DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("GRIDFLOW_DATABASE_URL", None)
        else:
            os.environ["GRIDFLOW_DATABASE_URL"] = previous
        get_settings.cache_clear()
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection whose work is rolled back after the test."""
    c = psycopg2.connect(database_url)
    try:
        yield c
    finally:
        c.rollback()
        c.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness: needs the session Prefect test harness")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a failure: CI must never pass with a component missing."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} test(s) were skipped; skips are failures here", red=True)
        session.exitstatus = 1
