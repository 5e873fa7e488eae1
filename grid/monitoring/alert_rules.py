"""The alert rules file (``config/alerts.toml``): source freshness thresholds (read by the
health pages) and the automations to install (read by :mod:`flows.alerts`), validated at load."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grid.settings import get_settings

SYNCED_EVENT = "gridflow.source.synced"
SOURCE_RESOURCE_PREFIX = "gridflow.source."
WEBHOOK_ENV = "GRIDFLOW_ALERT_WEBHOOK"
TAG = "gridflow"


class AlertsConfigError(ValueError):
    """The alerts file is missing or invalid (one sentence naming the file and the problem)."""


class Freshness(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warn_hours: float = Field(26.0, gt=0)
    alarm_hours: float = Field(48.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Freshness:
        if self.alarm_hours < self.warn_hours:
            raise ValueError("alarm_hours must not be below warn_hours")
        return self


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_name: str = Field("gridflow-alerts", pattern=r"^[a-z0-9-]+$")


class AutomationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    kind: Literal["flow-run-failed", "source-stale"]
    flows: list[str] = Field(default_factory=list)
    states: list[Literal["Failed", "Crashed", "TimedOut", "Cancelled"]] = Field(
        default_factory=lambda: ["Failed", "Crashed"]  # type: ignore[arg-type]
    )
    stale_hours: float | None = Field(None, gt=0)
    enabled: bool = True

    @model_validator(mode="after")
    def _fits_kind(self) -> AutomationConfig:
        if self.kind == "flow-run-failed" and not self.flows:
            raise ValueError(f"automation {self.name}: a flow-run-failed automation needs flows")
        if self.kind == "source-stale" and self.stale_hours is not None and self.stale_hours * 3600 < 10:
            raise ValueError(f"automation {self.name}: stale_hours must be at least 10 seconds")
        return self


class AlertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    freshness: Freshness = Field(default_factory=Freshness)  # type: ignore[arg-type]
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)  # type: ignore[arg-type]
    automations: list[AutomationConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        names = [a.name for a in self.automations]
        if len(names) != len(set(names)):
            raise ValueError("automation names must be unique")
        return self


def alerts_file() -> Path:
    return get_settings().alerts_file


def load_alerts(path: Path | None = None) -> AlertsConfig:
    """The validated alerts file (``GRIDFLOW_ALERTS_FILE`` or ``config/alerts.toml``)."""
    path = path or alerts_file()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AlertsConfigError(f"{path}: no such alerts file") from None
    except tomllib.TOMLDecodeError as exc:
        raise AlertsConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return AlertsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise AlertsConfigError(f"{path}: {where}: {first['msg']}") from None


def check_webhook_url(url: str) -> str:
    url = url.strip()
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise AlertsConfigError("the alert webhook must be an http(s) URL")
    return url
