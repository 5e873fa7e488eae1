"""Per-source configuration: one TOML file per city under ``config/sources/``.

A file describes where a city's grid system is, how to page it, which coordinate system it
declares and how its field names map onto the canonical record fields. Secrets are never in the
file: ``token_env`` names the environment variable that holds the bearer token.

Example (``config/sources/yichang.toml``)::

    name = "yichang"
    display_name = "宜昌市网格化管理平台"
    city_code = "420500000000"
    kind = "http"
    base_url = "http://127.0.0.1:8765"
    token_env = "GRIDFLOW_SOURCE_YICHANG_TOKEN"
    crs = "gcj02"
    entities = ["enterprises", "workers"]

    [mapping.workers]
    source_record_id = "ywid"
    ...

A file-drop city (``kind = "file"``) names a ``folder`` instead of a ``base_url``::

    kind = "file"
    folder = "/srv/drop/xiangyang"     # relative paths are relative to this config file
    file_pattern = "{entity}*"          # per entity; .csv and .xlsx files only
    ready = "manifest"                  # NAME.sha256 must match (or "settle": unchanged settle_s)
    settle_s = 300
    encoding = "gb18030"                # optional override; detected when absent

HTTP sources whose API pages by offset set ``paging = "offset"`` (see :mod:`connectors.http` for
how the cursor is kept so that offset paging resumes as safely as keyset paging).

HTTP sources may set ``lookback_s`` (each incremental run re-reads that much before its watermark,
so records committed late are not missed) and ``rate_limit_per_s`` (a token bucket shared by
every request to that source in the process).

Loading validates everything a nightly run would otherwise trip over at 2 a.m.: known canonical
fields, required ones present, a supported CRS, a city-level division code. When a city is synced
is not a per-source setting: every enabled city is synced by the `nightly-sync/nightly` deployment
(its schedule is in prefect.yaml), and an old file that still sets `schedule` is refused by name.
A mapping may describe an entity the source does not (yet) sync; it is validated all the same.
"""

from __future__ import annotations

import codecs
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.records import CANONICAL_FIELDS

__all__ = [
    "SourceConfig",
    "SourceConfigError",
    "SourceRejected",
    "SourceUnavailable",
    "load_all_sources",
    "load_source_config",
]


class SourceUnavailable(RuntimeError):
    """A source could not be read (after retries). The message is one sentence, safe to log:
    it names the source, its base URL and what went wrong, never a token or a record."""


class SourceRejected(SourceUnavailable):
    """The source answered but refused the request or sent something unusable (HTTP 4xx other than
    429, a body that is not the expected page). Retrying will not help; a person must look."""


class SourceConfigError(ValueError):
    """One or more source files are invalid; the message names each file and each problem."""


_CITY_CODE_RE = re.compile(r"^\d{4}0{8}$")

Entity = Literal["enterprises", "workers", "grid_officers", "cases"]
#: Load order: workers reference enterprises; the roster (grid officers) comes before case reports,
#: so a report's cell finds its officer; case reports reference all.
_ENTITY_ORDER: tuple[Entity, ...] = ("enterprises", "workers", "grid_officers", "cases")


def _default_entities() -> list[Entity]:
    return ["enterprises", "workers"]


class SourceConfig(BaseModel):
    """One municipal source. Immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    display_name: Annotated[str, Field(min_length=1)]
    city_code: str
    kind: Literal["http", "file"]
    base_url: str | None = None
    token_env: Annotated[str | None, Field(pattern=r"^[A-Z][A-Z0-9_]*$")] = None
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    crs: str
    mapping: dict[Entity, dict[str, str]]
    entities: list[Entity] = Field(default_factory=_default_entities)
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    enabled: bool = True
    # Paging and retries for kind="http" (cities with the same page style differ only here).
    path_template: str = "/api/v1/{entity}"
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    backoff_base_s: Annotated[float, Field(ge=0, le=60)] = 0.5
    backoff_max_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    max_retry_after_s: Annotated[float, Field(ge=0, le=3600)] = 300.0
    #: Incremental runs ask for records updated since (watermark - lookback_s): a record committed
    #: late with an older update time is still seen. Re-reading costs only "unchanged" upserts.
    lookback_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 0.0
    #: How the city's API pages: ``cursor`` (keyset, ``?cursor=C`` from ``next_cursor``) or
    #: ``offset`` (``?offset=K``; the stored cursor is (last update time, rows read at that time),
    #: see :mod:`connectors.http`). ``offset_overlap`` rows are re-read at each offset page.
    paging: Literal["cursor", "offset"] = "cursor"
    offset_overlap: Annotated[int, Field(ge=0, le=1_000)] = 20
    #: Requests per second to this source (token bucket shared in the process); None = unlimited.
    rate_limit_per_s: Annotated[float | None, Field(gt=0, le=1000)] = None
    # File drops (kind="file").
    folder: Path | None = None
    file_pattern: str = "{entity}*"
    encoding: str | None = None
    ready: Literal["manifest", "settle"] = "manifest"
    settle_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    delimiter: Annotated[str | None, Field(min_length=1, max_length=1)] = None
    sheet: str | None = None
    ledger_path: Path | None = None

    @field_validator("city_code")
    @classmethod
    def _city_code(cls, v: str) -> str:
        if not _CITY_CODE_RE.match(v) or v[2:4] == "00":
            raise ValueError("must be a 12-digit city-level division code such as 420500000000")
        return v

    @field_validator("crs")
    @classmethod
    def _crs(cls, v: str) -> str:
        from connectors.validate import resolve_crs

        canonical = resolve_crs(v)
        if canonical is None:
            raise ValueError(f"unknown coordinate system {v!r} (use cgcs2000, wgs84, gcj02 or bd09)")
        return canonical

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    @field_validator("path_template")
    @classmethod
    def _path_template(cls, v: str) -> str:
        if not v.startswith("/") or "{entity}" not in v:
            raise ValueError("must start with '/' and contain '{entity}'")
        return v

    @field_validator("file_pattern")
    @classmethod
    def _file_pattern(cls, v: str) -> str:
        if "/" in v or "\\" in v or ".." in v:
            raise ValueError("must be a file name pattern inside the folder, without '/' or '..'")
        if "{entity}" not in v:
            raise ValueError("must contain '{entity}' (one drop folder serves several entities)")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return codecs.lookup(v).name
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (e.g. utf-8, utf-8-sig, gb18030)") from None

    @field_validator("entities")
    @classmethod
    def _entities(cls, v: list[Entity]) -> list[Entity]:
        if not v:
            raise ValueError("must name at least one entity")
        if len(set(v)) != len(v):
            raise ValueError("lists an entity twice")
        # Load order is fixed: workers reference enterprises by credit code.
        return [e for e in _ENTITY_ORDER if e in v]

    @model_validator(mode="before")
    @classmethod
    def _no_schedule(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schedule" in data:
            raise ValueError(
                "schedule: not a per-source setting (every enabled city is synced by the "
                "nightly-sync/nightly deployment, scheduled in prefect.yaml); remove the line"
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        if self.kind == "http" and not self.base_url:
            raise ValueError("base_url is required for kind 'http'")
        if self.kind == "file" and self.folder is None:
            raise ValueError("folder is required for kind 'file'")
        if self.paging == "offset" and self.offset_overlap >= self.page_size:
            raise ValueError("offset_overlap must be smaller than page_size, or offset paging never advances")
        problems: list[str] = []
        for entity in [e for e in _ENTITY_ORDER if e in self.entities or e in self.mapping]:
            fields = self.mapping.get(entity)
            if fields is None:
                problems.append(f"mapping.{entity} is missing")
                continue
            required, optional = CANONICAL_FIELDS[entity]
            missing = [f for f in required if not fields.get(f)]
            if missing:
                problems.append(f"mapping.{entity} lacks {', '.join(missing)}")
            unknown = sorted(set(fields) - set(required) - set(optional))
            if unknown:
                problems.append(
                    f"mapping.{entity} has unknown canonical fields {', '.join(unknown)} "
                    f"(known: {', '.join(required + optional)})"
                )
            if bool(fields.get("lon")) != bool(fields.get("lat")):
                problems.append(f"mapping.{entity} must name both lon and lat, or neither")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def token(self) -> str | None:
        """The bearer token from the environment, or None when unset (allowed for the sandbox).

        Never log the return value.
        """
        if not self.token_env:
            return None
        value = os.environ.get(self.token_env, "").strip()
        return value or None


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(file)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def load_source_config(path: str | os.PathLike[str]) -> SourceConfig:
    """Load and validate one source file. The file name (without ``.toml``) must equal ``name``.

    Raises :class:`SourceConfigError` with one line naming the file and every problem in it.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise SourceConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise SourceConfigError(f"{p}: not valid TOML ({e})") from None
    try:
        cfg = SourceConfig.model_validate(data)
    except ValidationError as e:
        raise SourceConfigError(f"{p}: {_describe(e)}") from None
    if cfg.name != p.stem:
        raise SourceConfigError(f"{p}: name {cfg.name!r} must match the file name {p.stem!r}")
    update: dict[str, Path] = {}
    for key in ("folder", "ledger_path"):
        value = getattr(cfg, key)
        if value is not None and not value.is_absolute():
            update[key] = (p.parent / value).resolve()
    return cfg.model_copy(update=update) if update else cfg


def load_all_sources(directory: str | os.PathLike[str]) -> list[SourceConfig]:
    """Load every ``*.toml`` in ``directory``, sorted by file name.

    All files are checked before anything is returned; if any is bad, one
    :class:`SourceConfigError` lists every bad file, one per line.
    """
    d = Path(directory)
    if not d.is_dir():
        raise SourceConfigError(f"{d}: not a directory")
    configs: list[SourceConfig] = []
    errors: list[str] = []
    for p in sorted(d.glob("*.toml")):
        try:
            configs.append(load_source_config(p))
        except SourceConfigError as e:
            errors.append(str(e))
    if errors:
        raise SourceConfigError("invalid source configuration:\n" + "\n".join(errors))
    return configs
