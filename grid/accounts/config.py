"""Web settings from ``GRIDFLOW_WEB_*`` variables (the environment, then ``.env``, as
:class:`grid.settings.Settings`); refuses unsafe cookies in production."""

from __future__ import annotations

from functools import lru_cache

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from grid.settings import get_settings


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDFLOW_WEB_", env_file=".env", extra="ignore")

    #: defaults to the main database as the login ``gridflow_web`` (``Settings.db_dsn``)
    database_url: str | None = None
    db_role: str = "gridflow_app"
    pool_max: int = 16
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    cookie_secure: bool = True
    login_max_failures: int = 5  # per login name within the window
    client_max_failures: int = 30  # per client address within the window
    login_window_minutes: int = 15
    #: Days ended sessions and login attempts are kept for a security review, then purged (the
    #: throttle looks back only ``login_window_minutes``; a client address is personal data).
    login_history_days: int = 30
    #: Addresses of reverse proxies whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed
    #: (comma-separated IPs or networks; default none: the peer address is the client). uvicorn is
    #: started with ``--no-proxy-headers`` so only this list decides.
    trusted_proxies: str = ""

    @model_validator(mode="after")
    def _refuse_insecure_cookie(self) -> WebSettings:
        if not self.cookie_secure and get_settings().env == "production":
            raise ValueError("GRIDFLOW_WEB_COOKIE_SECURE=false is not allowed in production")
        return self

    @property
    def cookie_name(self) -> str:
        return "__Host-gridflow" if self.cookie_secure else "gridflow_session"


@lru_cache(maxsize=1)
def get_web_settings() -> WebSettings:
    return WebSettings()
