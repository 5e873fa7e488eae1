"""Configuration from ``GRIDFLOW_*`` environment variables (pydantic-settings).

Secrets (HMAC and encryption keys, source tokens) come from the environment only. In
``development`` and ``test`` a missing key is replaced by a random key kept in the state folder
(mode 0600), so a fresh clone runs; any other environment refuses to start without real keys.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_PORT = 54329
_PLACEHOLDERS = {"", "changeme", "change-me", "placeholder", "secret"}

# Database roles by job (migration 0007 creates the login roles; README "Database roles"):
#: owns the schema and runs migrations (the private cluster's bootstrap superuser, or the user
#: of GRIDFLOW_DATABASE_URL); the CLI's administrative commands connect as it.
OWNER_ROLE = "gridflow"
#: the web app's login: owns nothing, NOINHERIT, may only ``SET ROLE gridflow_app`` (under RLS).
WEB_ROLE = "gridflow_web"
#: the flows' login: DML on the tables the flows write, no DDL, owns nothing.
FLOWS_ROLE = "gridflow_flows"
#: Login roles whose passwords production must be given (``GRIDFLOW_DB_PASSWORD_<ROLE>``).
SERVICE_ROLES = (WEB_ROLE, FLOWS_ROLE)


def db_password_env(role: str) -> str:
    """The environment variable holding the password of database role ``role``."""
    return "GRIDFLOW_DB_PASSWORD_" + role.upper()


class ConfigError(RuntimeError):
    """Configuration that must not be used (one clear sentence)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDFLOW_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    state_dir: Path = PROJECT_ROOT / ".state"
    database_url: str | None = Field(
        default=None, description="A server to use instead of the project-private cluster."
    )
    pg_port: int | None = Field(
        default=None, description="Port of the private cluster; by default 54329, or a free one if taken."
    )
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")
    prefect_port: int = 4200
    prefect_host: str = Field(
        default="127.0.0.1", description="Address the Prefect server binds to; loopback unless configured."
    )
    #: ``user:password`` for the Prefect API's basic auth (server and every client). In development
    #: a random one is kept in ``<state>/keys/prefect-api.auth``; production refuses to start without it.
    prefect_auth_string: SecretStr | None = None
    #: SQLAlchemy URL (``postgresql+asyncpg://…``) of the Prefect server's own database. By default
    #: the ``prefect`` database of the project's private cluster, owned by the login role ``prefect``.
    prefect_database_url: SecretStr | None = None
    prefect_database_name: str = Field(default="prefect", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    #: Prefect's db vacuum service deletes flow runs (with their task runs, logs and artifacts) this
    #: many days after they ended, and events after ``prefect_event_retention_days``.
    prefect_retention_days: int = Field(default=90, ge=1)
    prefect_event_retention_days: int = Field(default=30, ge=1)
    prefect_ui_url: str | None = Field(
        default=None, description="Base URL of the Prefect UI for links; by default the local server's."
    )
    sandbox_port: int = 8765
    #: The sandbox province (``gridflow services up sandbox``): scale of every city (1.0 = the demo:
    #: 宜昌 20,000 workers, 荆州 12,000, 襄阳 10,000) and the seed of its timelines.
    sandbox_volume: float = Field(default=1.0, gt=0, le=10)
    sandbox_seed: int = 20260101
    web_port: int = 8000
    sources_dir: Path = PROJECT_ROOT / "config" / "sources"
    policy_file: Path = PROJECT_ROOT / "config" / "policy" / "default.toml"
    sample_city: str = "420500000000"
    sample_cells: int = 2000
    sample_workers: int = 20000
    sample_enterprises: int = 2000
    page_retries: int = 1
    max_parallel_sources: int = 4
    chunk_size: int = 2500
    #: Largest stream whose stored versions a run that fetches the whole stream keeps in memory
    #: (~150 bytes a record); a larger one is looked up page by page.
    version_map_limit: int = 2_000_000
    #: Threads preparing a sync's chunks (without a Dask cluster). One: preparing is Python under
    #: the GIL, and a second thread only contends for it (bench_sync: 59 against 63-74 us of CPU
    #: per record in all, and a slower run); the page's database write and the next page's fetch
    #: already run beside it.
    prep_workers: int = 1
    dask_address: str | None = None
    page_retry_delay_s: float = 10.0
    hmac_key: SecretStr | None = None
    encryption_key: SecretStr | None = None
    #: Case notices: a JSON object of target -> webhook URL (URLs may carry tokens).
    webhooks: SecretStr | None = None
    #: Case notices to 企业微信/DingTalk group robots (``grid.cases.notify``): which robot serves
    #: which unit, cell or officer. URLs and signing secrets are not in it (see the file).
    notify_file: Path = PROJECT_ROOT / "config" / "notify.toml"
    #: Where the alert automations post (``gridflow alerts install`` without ``--webhook``).
    alert_webhook: SecretStr | None = None
    alerts_file: Path = PROJECT_ROOT / "config" / "alerts.toml"

    @model_validator(mode="after")
    def _refuse_unsafe_keys(self) -> Settings:
        if self.env == "production":
            for field in ("hmac_key", "encryption_key", "prefect_auth_string"):
                value = getattr(self, field)
                if value is None or value.get_secret_value().strip().lower() in _PLACEHOLDERS:
                    raise ConfigError(
                        f"GRIDFLOW_{field.upper()} must be set to a real secret outside development"
                    )
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def private_cluster(self) -> bool:
        return self.database_url is None

    @property
    def pg_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def cluster_port(self) -> int:
        """The private cluster's port: as configured, else as chosen when it was created."""
        if self.pg_port is not None:
            return self.pg_port
        remembered = self.pg_dir / "port"
        if remembered.exists():
            return int(remembered.read_text().strip())
        return DEFAULT_PG_PORT

    @property
    def dsn(self) -> str:
        """libpq connection string of the database gridflow uses, as its owner (migrations, CLI)."""
        return self.db_dsn(OWNER_ROLE)

    def db_password(self, role: str) -> str:
        """The password of database role ``role``: ``GRIDFLOW_DB_PASSWORD_<ROLE>`` when set (required
        in production), else in development/test a random one kept in ``<state>/keys/db-<role>.password``
        (mode 0600, created on first use)."""
        value = os.environ.get(db_password_env(role), "")
        if value.strip():
            if self.env == "production" and value.strip().lower() in _PLACEHOLDERS:
                raise ConfigError(f"{db_password_env(role)} must be set to a real secret in production")
            return value
        if self.env == "production":
            raise ConfigError(f"{db_password_env(role)} is required in production")
        return _dev_secret(self.state_dir / "keys" / f"db-{role}.password")

    def db_dsn(self, role: str, database: str | None = None) -> str:
        """libpq URL for database role ``role`` (and ``database``, by default gridflow's own).

        With ``GRIDFLOW_DATABASE_URL`` the owner's URL is that URL as given; another role gets the
        same server and database with its own name and :meth:`db_password`. On the private cluster
        every role logs in over 127.0.0.1 with its password (SCRAM; the cluster trusts nobody).
        """
        if self.database_url:
            parts = urlsplit(self.database_url)
            if role != OWNER_ROLE:
                host = parts.hostname or ""
                host = f"[{host}]" if ":" in host else host
                port = f":{parts.port}" if parts.port else ""
                secret = quote(self.db_password(role), safe="")
                parts = parts._replace(netloc=f"{quote(role, safe='')}:{secret}@{host}{port}")
            if database is not None:
                parts = parts._replace(path="/" + database)
            return urlunsplit(parts)
        secret = quote(self.db_password(role), safe="")
        return f"postgresql://{role}:{secret}@127.0.0.1:{self.cluster_port}/{database or 'gridflow'}"

    @property
    def prefect_api_url(self) -> str:
        host = "127.0.0.1" if self.prefect_host in ("0.0.0.0", "::", "") else self.prefect_host
        return f"http://{host}:{self.prefect_port}/api"

    def prefect_auth(self) -> str:
        """``user:password`` of the Prefect API (basic auth); never log it."""
        if self.prefect_auth_string is not None and self.prefect_auth_string.get_secret_value().strip():
            value = self.prefect_auth_string.get_secret_value().strip()
            user, sep, password = value.partition(":")
            if not (user and sep and password):
                raise ConfigError("GRIDFLOW_PREFECT_AUTH_STRING must have the form user:password")
            return value
        if self.env == "production":
            raise ConfigError("GRIDFLOW_PREFECT_AUTH_STRING is required in production")
        return "gridflow:" + _dev_secret(self.state_dir / "keys" / "prefect-api.auth")

    def prefect_db_password(self) -> str:
        """Password of the private cluster's ``prefect`` login role (``GRIDFLOW_DB_PASSWORD_PREFECT``,
        or in development ``<state>/keys/db-prefect.password``)."""
        return self.db_password(self.prefect_database_name)

    @property
    def prefect_db_url(self) -> str:
        """Where the Prefect server keeps its state: never SQLite. Contains a password."""
        if self.prefect_database_url is not None:
            return self.prefect_database_url.get_secret_value()
        if not self.private_cluster:
            raise ConfigError(
                "GRIDFLOW_DATABASE_URL names an external server: set GRIDFLOW_PREFECT_DATABASE_URL "
                "(postgresql+asyncpg://USER:PASSWORD@HOST:PORT/prefect) for the Prefect server's database"
            )
        name = self.prefect_database_name
        return self.db_dsn(name, name).replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def prefect_ui(self) -> str:
        """Base URL of the Prefect UI (run pages are ``<ui>/runs/flow-run/<id>``)."""
        return (self.prefect_ui_url or f"http://127.0.0.1:{self.prefect_port}").rstrip("/")

    def flow_run_url(self, flow_run_id: object) -> str | None:
        """The Prefect UI page of a flow run (None without an id)."""
        return f"{self.prefect_ui}/runs/flow-run/{flow_run_id}" if flow_run_id else None

    def key_bytes(self, which: Literal["hmac", "encryption"]) -> bytes:
        """32-byte key; in development/test a random one kept in the state folder."""
        value = self.hmac_key if which == "hmac" else self.encryption_key
        if value is not None and value.get_secret_value().strip():
            raw = value.get_secret_value().strip()
            try:
                key = base64.b64decode(raw, validate=True)
            except ValueError as exc:
                raise ConfigError(f"GRIDFLOW_{which.upper()}_KEY must be base64") from exc
            if len(key) != 32:
                raise ConfigError(f"GRIDFLOW_{which.upper()}_KEY must decode to 32 bytes")
            return key
        if self.env == "production":
            raise ConfigError(f"GRIDFLOW_{which.upper()}_KEY is required in production")
        return _dev_key(self.state_dir / "keys" / f"{which}.key")


def _dev_key(path: Path) -> bytes:
    return base64.b64decode(_dev_secret(path, lambda: base64.b64encode(secrets.token_bytes(32)).decode()))


def _dev_secret(path: Path, make: Callable[[], str] | None = None) -> str:
    """A development secret kept in ``path`` (mode 0600), created once (a URL-safe token by default)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make() if make is not None else secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
