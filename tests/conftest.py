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
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

# Keys and environment must be in place before any gridflow module reads settings.
os.environ["GRIDFLOW_ENV"] = "test"
os.environ["GRIDFLOW_PAGE_RETRY_DELAY_S"] = "0"
os.environ.setdefault("GRIDFLOW_HMAC_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
os.environ.setdefault("GRIDFLOW_ENCRYPTION_KEY", base64.b64encode(secrets.token_bytes(32)).decode())

from grid.settings import get_settings

# After the whole session: no plaintext ID or phone number in the database, logs or Prefect.
pytest_plugins = ["tests.pii_scan"]


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@contextmanager
def fresh_database(prefix: str = "gridflow_test") -> Iterator[str]:
    """A fresh, migrated database on the real cluster, named in ``GRIDFLOW_DATABASE_URL`` while
    open (the previous value restored after), then dropped. The session's database is one; a module
    whose flows load whole cities and change their grids (the province and simulation tests) takes
    its own, so what it leaves behind cannot change what later modules read."""
    from grid.store import migrate
    from grid.store.cluster import Cluster

    base = get_settings()
    if base.private_cluster:
        cluster = Cluster(base)
        cluster.start()
        cluster.ensure_database("gridflow")
    admin_url = base.dsn
    name = f"{prefix}_{secrets.token_hex(4)}"
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


def load_world(url: str, world) -> None:  # type: ignore[no-untyped-def]
    """Load a built sample world into the database at ``url`` (valid from 2026-01-01)."""
    from datetime import date

    from grid.store import world as store_world
    from grid.store.db import connect, transaction

    conn = connect(url)
    try:
        with transaction(conn) as cur:
            store_world.load_sample_world(cur, world, label="sample", valid_from=date(2026, 1, 1))
    finally:
        conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this session on the real cluster."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """ONE Prefect test harness per session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to the session's database. What a test commits (``transaction(conn)``
    commits) stays for the rest of the session, so tests use codes of their own; only work left
    uncommitted when the test ends is rolled back."""
    c = psycopg2.connect(database_url)
    try:
        yield c
    finally:
        if not c.closed:
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


# -- the sample world and the sandbox city, shared by grid and flow tests ------------------------

SAMPLE_CITY = "420500000000"
SANDBOX_AS_OF = "2026-11-20T22:00:00+08:00"


@pytest.fixture(scope="session")
def sample_world():  # type: ignore[no-untyped-def]
    from geodata.world import build_sample_world

    return build_sample_world(SAMPLE_CITY, cells_target=2000)


@pytest.fixture(scope="session")
def loaded_world(database_url: str, sample_world):  # type: ignore[no-untyped-def]
    """The sample world in the session database: Hubei's real divisions, generated cells."""
    load_world(database_url, sample_world)
    return sample_world


@pytest.fixture(scope="session")
def sandbox_dataset(sample_world):  # type: ignore[no-untyped-def]
    from datetime import datetime

    from connectors.sandbox.data import SandboxDataset

    return SandboxDataset(
        [(c.code, c.geometry) for c in sample_world.cells],
        city_code=SAMPLE_CITY,
        n_workers=3000,
        n_enterprises=300,
        seed=7,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in sample_world.divisions},
    )


@pytest.fixture(scope="session")
def sandbox_url(sandbox_dataset) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The sandbox city grid system served over real HTTP on loopback."""
    from connectors.sandbox.app import SandboxServer, create_app

    with SandboxServer(create_app(sandbox_dataset)) as server:
        yield server.base_url


def write_sources(directory, *, with_cases: bool = False, with_roster: bool = False, **sources: str) -> None:  # type: ignore[no-untyped-def]
    """Copy the bundled Yichang config under other names/base URLs into ``directory``
    (without case reports unless ``with_cases``, without the roster unless ``with_roster``: the
    shared sandbox dataset has neither)."""
    from grid.settings import PROJECT_ROOT

    template = (PROJECT_ROOT / "config" / "sources" / "yichang.toml").read_text(encoding="utf-8")
    for name, url in sources.items():
        text = (
            template.replace('name = "yichang"', f'name = "{name}"')
            .replace('base_url = "http://127.0.0.1:8765"', f'base_url = "{url}"')
            .replace("max_attempts = 5", "max_attempts = 2")
            .replace("backoff_base_s = 0.5", "backoff_base_s = 0.05")
        )
        entities = ["enterprises", "workers"] + ["grid_officers"] * with_roster + ["cases"] * with_cases
        text = text.replace(
            'entities = ["enterprises", "workers", "grid_officers", "cases"]',
            "entities = [" + ", ".join(f'"{e}"' for e in entities) + "]",
        )
        (directory / f"{name}.toml").write_text(text, encoding="utf-8")
