"""Web settings: one way in (environment, then ``.env``, like grid.settings) and no unsafe cookie
in production."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from grid.accounts.config import WebSettings
from grid.settings import get_settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_web_settings_read_dot_env_like_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    (tmp_path / ".env").write_text("GRIDFLOW_WEB_POOL_MAX=3\nGRIDFLOW_WEB_LOGIN_HISTORY_DAYS=9\n")
    monkeypatch.chdir(tmp_path)
    web = WebSettings()
    assert (web.pool_max, web.login_history_days) == (3, 9)


def test_an_insecure_cookie_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("GRIDFLOW_ENV", "production")
    monkeypatch.setenv("GRIDFLOW_HMAC_KEY", key)
    monkeypatch.setenv("GRIDFLOW_ENCRYPTION_KEY", key)
    monkeypatch.setenv("GRIDFLOW_PREFECT_AUTH_STRING", "gridflow:" + key)
    with pytest.raises(ValidationError, match="not allowed in production"):
        WebSettings(cookie_secure=False)
    assert WebSettings(cookie_secure=True).cookie_name == "__Host-gridflow"
