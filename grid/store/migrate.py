"""Schema migrations with alembic (revisions in grid/store/migrations/versions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlalchemy_url(dsn: str) -> str:
    if dsn.startswith("postgresql://"):
        return "postgresql+psycopg2://" + dsn[len("postgresql://") :]
    if dsn.startswith("postgres://"):
        return "postgresql+psycopg2://" + dsn[len("postgres://") :]
    return dsn


def alembic_config(dsn: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _sqlalchemy_url(dsn).replace("%", "%%"))
    return cfg


def upgrade(dsn: str, revision: str = "heads") -> None:
    """Migrate to every head (branches made in parallel are linearised before release), then give
    the service login roles their configured passwords (when the migrating user may)."""
    import psycopg2

    from grid.settings import get_settings
    from grid.store.roles import sync_service_passwords

    conn = psycopg2.connect(dsn)
    try:
        require_utf8(conn)
        command.upgrade(alembic_config(dsn), revision)
        sync_service_passwords(conn, get_settings())
    finally:
        conn.close()


class WrongEncoding(RuntimeError):
    """The database is not UTF-8: gridflow keeps Chinese text, and the sync writes it to
    PostgreSQL as UTF-8 byte escapes (:func:`grid.store.copy.ascii_field`)."""


def require_utf8(conn: Any) -> None:
    """Refuse a database whose encoding is not UTF-8, before anything is written to it."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_database(), pg_encoding_to_char(encoding) FROM pg_database"
                    " WHERE datname = current_database()")  # fmt: skip
        name, encoding = cur.fetchone()
    conn.rollback()
    if encoding != "UTF8":
        raise WrongEncoding(
            f"database {name} is encoded {encoding}; gridflow needs a UTF-8 database"
            f" (CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0)"
        )


def downgrade(dsn: str, revision: str) -> None:
    command.downgrade(alembic_config(dsn), revision)
