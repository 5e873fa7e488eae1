"""Schema migrations with alembic (revisions in grid/store/migrations/versions)."""

from __future__ import annotations

from pathlib import Path

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

    command.upgrade(alembic_config(dsn), revision)
    conn = psycopg2.connect(dsn)
    try:
        sync_service_passwords(conn, get_settings())
    finally:
        conn.close()


def downgrade(dsn: str, revision: str) -> None:
    command.downgrade(alembic_config(dsn), revision)
