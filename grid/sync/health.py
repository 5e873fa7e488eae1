"""Sync health queries: per-source runs and freshness, the quarantine trend by reason, and the
masked drill-down into open quarantine rows.

Service functions take an explicit cursor and keyword-only arguments; the scope (a code prefix of
the sources' ``city_code``) is part of every query, and the web role's row-level security on
``quarantine`` applies the same rule. Nothing here returns a raw personal value: the drill-down
decrypts a quarantined record only to mask it (``grid.people`` masks).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg2.extensions

from grid.monitoring.alert_rules import Freshness
from grid.people import Vault, mask_id, mask_name, mask_phone
from grid.sync.reprocess import raw_record

Status = Literal["ok", "warn", "alarm", "never"]
# Distinct colours for the trend's reasons (colour-blind-safe palette, cycled).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")


def freshness(last_ok: datetime | None, *, now: datetime, limits: Freshness) -> tuple[Status, float | None]:
    """Status and age in hours of a source's last successful sync: warn past ``warn_hours``,
    alarm past ``alarm_hours``; never synced successfully is ``never`` (shown as an alarm)."""
    if last_ok is None:
        return "never", None
    age = (now - last_ok).total_seconds() / 3600
    if age > limits.alarm_hours:
        return "alarm", age
    if age > limits.warn_hours:
        return "warn", age
    return "ok", age


@dataclass(frozen=True)
class RunRow:
    id: int
    status: str
    mode: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    received: int
    loaded: int
    unchanged: int
    quarantined: int
    unmapped: int
    flow_run_id: str | None
    error: str | None
    by_reason: Mapping[str, int]
    #: fields of loaded records that failed their rule and were stored empty, by reason code
    field_problems_by_reason: Mapping[str, int] = field(default_factory=dict)

    @property
    def field_problems(self) -> int:
        return sum(self.field_problems_by_reason.values())


@dataclass
class SourceHealth:
    name: str
    display_name: str
    city_code: str
    enabled: bool
    last_ok_at: datetime | None
    status: Status
    age_hours: float | None
    runs: list[RunRow] = field(default_factory=list)
    open_by_reason: dict[str, int] = field(default_factory=dict)
    #: open field problems (records loaded, one field empty) by (reason code, canonical field)
    open_field_problems: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def open_total(self) -> int:
        return sum(self.open_by_reason.values())


def sources_health(
    cur: psycopg2.extensions.cursor,
    *,
    prefix: str,
    now: datetime,
    limits: Freshness,
    runs_per_source: int = 10,
    with_quarantine: bool = True,
    source: str | None = None,
) -> list[SourceHealth]:
    """Every source whose city code starts with ``prefix`` ('' = all), with its last runs; only
    ``source`` when given."""
    like = prefix + "%"
    cur.execute(
        """
        SELECT s.name, s.display_name, s.city_code, s.enabled,
               (SELECT max(r.finished_at) FROM sync_run r WHERE r.source = s.name AND r.status = 'completed'
                  AND r.mode <> 'reprocess')
        FROM source s WHERE s.city_code LIKE %s AND (%s::text IS NULL OR s.name = %s) ORDER BY s.name
        """,
        (like, source, source),
    )
    out: list[SourceHealth] = []
    for name, display, city, enabled, last_ok in cur.fetchall():
        status, age = freshness(last_ok, now=now, limits=limits)
        out.append(SourceHealth(name, display, city, enabled, last_ok, status, age))
    if not out:
        return out
    by_name = {s.name: s for s in out}
    cur.execute(
        """
        SELECT r.source, r.id, r.status, r.mode, r.started_at, r.finished_at, r.received, r.loaded, r.unchanged,
               r.quarantined, r.unmapped, r.flow_run_id, r.error, r.counts -> 'quarantined_by_reason',
               r.counts -> 'field_problems_by_reason'
        FROM source s CROSS JOIN LATERAL (
            SELECT * FROM sync_run r WHERE r.source = s.name ORDER BY r.id DESC LIMIT %s) r
        WHERE s.name = ANY(%s)
        ORDER BY r.source, r.id DESC
        """,
        (runs_per_source, list(by_name)),
    )
    for (
        src,
        rid,
        st,
        mode,
        started,
        finished,
        rec,
        loaded,
        unch,
        quar,
        unm,
        frid,
        err,
        reasons,
        problems,
    ) in cur.fetchall():
        duration = (finished - started).total_seconds() if finished else None
        by_name[src].runs.append(
            RunRow(
                rid, st, mode, started, finished, duration, rec, loaded, unch, quar, unm,
                str(frid) if frid else None, err, {str(k): int(v) for k, v in (reasons or {}).items()},
                {str(k): int(v) for k, v in (problems or {}).items()},
            )
        )  # fmt: skip
    if with_quarantine:
        cur.execute(
            """
            SELECT q.source, q.reason_code, count(*) FROM quarantine q
            WHERE q.resolved_at IS NULL AND q.source = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2
            """,
            (list(by_name),),
        )
        for src, reason, n in cur.fetchall():
            by_name[src].open_by_reason[reason] = int(n)
        cur.execute(
            """
            SELECT f.source, f.reason_code, f.field, count(*) FROM field_problem f
            WHERE f.settled_at IS NULL AND f.source = ANY(%s) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """,
            (list(by_name),),
        )
        for src, reason, fld, n in cur.fetchall():
            by_name[src].open_field_problems[(reason, fld)] = int(n)
    return out


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Trend:
    """A stacked bar per run (oldest left): quarantined records by reason; SVG geometry included."""

    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]  # x, run label
    legend: list[tuple[str, str]]  # reason, colour
    max_total: int


def quarantine_trend(runs: Sequence[RunRow], *, width: int = 360, height: int = 120) -> Trend:
    """Geometry of the quarantine trend of ``runs`` (newest first, as :func:`sources_health`
    returns them); reprocess runs are left out: they re-take, not receive, records."""
    series = [r for r in reversed(runs) if r.mode != "reprocess"]
    reasons = sorted({k for r in series for k in r.by_reason})
    colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(reasons)}
    top = max((sum(r.by_reason.values()) for r in series), default=0)
    plot_h = height - 18
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    if series:
        step = width / len(series)
        bw = max(2.0, step * 0.7)
        for i, r in enumerate(series):
            x = i * step + (step - bw) / 2
            y = float(plot_h)
            for k in reasons:
                n = r.by_reason.get(k, 0)
                if not n:
                    continue
                h = plot_h * n / top if top else 0.0
                y -= h
                bars.append(
                    Bar(round(x, 1), round(y, 1), round(bw, 1), round(h, 1), colours[k], f"#{r.id} {k}: {n}")
                )
            labels.append((round(x + bw / 2, 1), f"#{r.id}"))
    return Trend(width, height, bars, labels, [(k, colours[k]) for k in reasons], top)


# -- drill-down ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantineItem:
    id: int
    entity: str
    source_record_id: str | None
    reason_code: str
    field: str | None
    detail: str
    seen_count: int
    reprocess_count: int
    created_at: datetime
    id_masked: str
    phone_masked: str
    name_masked: str


_PERSON_FIELDS = {
    "workers": ("id_number", "phone", "name"),
    "enterprises": (None, "legal_rep_phone", None),
    "cases": ("worker_id_number", None, None),
    "grid_officers": (None, "phone", "name"),
}


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def masked_fields(
    raw: Mapping[str, Any], entity: str, mapping: Mapping[str, str] | None
) -> tuple[str, str, str]:
    """Masked ID, phone and name of a raw record (city field names via ``mapping``); '' when the
    record has none or the mapping is unknown. Never returns a raw value."""
    if not mapping:
        return "", "", ""
    id_f, phone_f, name_f = _PERSON_FIELDS.get(entity, (None, None, None))
    out: list[str] = []
    for canonical, mask in ((id_f, mask_id), (phone_f, mask_phone), (name_f, mask_name)):
        value = _text(raw.get(mapping[canonical])) if canonical and canonical in mapping else ""
        out.append(mask(value) if value else "")
    return out[0], out[1], out[2]


def source_mapping(sources_dir: Path, source: str) -> dict[str, dict[str, str]]:
    """entity -> canonical field -> the city's field name of one source, read from its config file
    ``<source>.toml`` (``[mapping.<entity>]``; the connectors validate these files and require the
    file name to be the source name, here it is only read). Empty when unreadable."""
    try:
        data = tomllib.loads((sources_dir / f"{source}.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    mapping = data.get("mapping")
    if data.get("name") != source or not isinstance(mapping, dict):
        return {}
    return {str(e): {str(k): str(v) for k, v in m.items()} for e, m in mapping.items() if isinstance(m, dict)}


def open_quarantine(
    cur: psycopg2.extensions.cursor,
    *,
    source: str,
    prefix: str,
    vault: Vault,
    mappings: Mapping[str, Mapping[str, str]],
    reason: str | None = None,
    limit: int = 200,
) -> list[QuarantineItem]:
    """Open quarantine rows of ``source`` (in scope ``prefix``), newest first, masked."""
    cur.execute(
        """
        SELECT q.id, q.entity, q.source_record_id, q.reason_code, q.field, q.detail, q.seen_count,
               q.reprocess_count, q.created_at, q.raw_enc
        FROM quarantine q JOIN source s ON s.name = q.source
        WHERE q.source = %s AND s.city_code LIKE %s AND q.resolved_at IS NULL
          AND (%s::text IS NULL OR q.reason_code = %s)
        ORDER BY q.id DESC LIMIT %s
        """,
        (source, prefix + "%", reason, reason, limit),
    )
    items: list[QuarantineItem] = []
    for qid, entity, rid, code, fld, detail, seen, reproc, created, raw_enc in cur.fetchall():
        try:
            raw = raw_record(vault, bytes(raw_enc))
        except Exception:  # a row encrypted under another key: show it without personal fields
            raw = {}
        id_m, phone_m, name_m = masked_fields(raw, entity, mappings.get(entity))
        items.append(
            QuarantineItem(qid, entity, rid, code, fld, detail, seen, reproc, created, id_m, phone_m, name_m)
        )
    return items


@dataclass(frozen=True)
class ReprocessRequest:
    id: int
    source: str
    n_records: int
    requested_by: str
    requested_at: datetime
    flow_run_id: str | None
    status: str
    result: dict[str, Any]
    finished_at: datetime | None


def get_request(cur: psycopg2.extensions.cursor, *, request_id: int, prefix: str) -> ReprocessRequest | None:
    cur.execute(
        """
        SELECT r.id, r.source, cardinality(r.quarantine_ids), r.requested_by, r.requested_at, r.flow_run_id,
               r.status, r.result, r.finished_at
        FROM reprocess_request r JOIN source s ON s.name = r.source
        WHERE r.id = %s AND s.city_code LIKE %s
        """,
        (request_id, prefix + "%"),
    )
    row = cur.fetchone()
    if row is None:
        return None
    rid, src, n, by, at, frid, status, result, fin = row
    return ReprocessRequest(rid, src, n, by, at, str(frid) if frid else None, status, dict(result or {}), fin)


def open_ids_of(
    cur: psycopg2.extensions.cursor, *, source: str, prefix: str, ids: Sequence[int]
) -> list[int]:
    """The ids among ``ids`` that are open quarantine rows of ``source`` in scope."""
    cur.execute(
        """
        SELECT q.id FROM quarantine q JOIN source s ON s.name = q.source
        WHERE q.id = ANY(%s) AND q.source = %s AND s.city_code LIKE %s AND q.resolved_at IS NULL ORDER BY q.id
        """,
        (list(ids), source, prefix + "%"),
    )
    return [int(r[0]) for r in cur.fetchall()]
