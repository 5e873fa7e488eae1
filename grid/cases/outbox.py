"""Notifications through an outbox: rows written in the case's transaction, delivered later.

A notice is queued in the same transaction as the event it announces (so a rolled-back action
notifies nobody), then :func:`deliver` posts pending notices at least once (with an
``Idempotency-Key`` header so a receiver can drop repeats): to the 企业微信/DingTalk group robot of
the recipient unit, cell or officer, or of the nearest unit above it (``grid.cases.notify``,
``config/notify.toml``), else to the generic webhook of the notice's ``target`` (``union``: the
union units' system; ``government``: the same-level party committee and government contact for
dual reports). A failed post is retried with exponential backoff; after
``max_attempts`` it is marked failed and stays in the table for an operator.

Payloads are built from an allow-list of keys (codes, kinds, levels, counts and times), so no
personal data — names, ID or phone numbers, amounts of a worker's claim, officers' notes — can
reach a webhook. Errors stored in ``last_error`` are an HTTP status or an exception class name,
never a URL (webhook URLs may carry tokens) or a response body.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import httpx
import psycopg2.extensions
from psycopg2.extras import execute_values

from connectors.kinds import CaseKind, Severity
from geodata.codes import Level
from grid.settings import get_settings
from grid.store.db import transaction

if TYPE_CHECKING:
    from grid.cases.notify import Routing

TARGETS: Final = ("union", "government")

TOPIC_ZH: Final[Mapping[str, str]] = {
    "assigned": "新案件派单",
    "dual_report": "苗头性问题/突发性群体性事件报告",
    "remind": "逾期催办",
    "criticise": "逾期通报",
    "urge": "上级督办",
}

# Every key a notice payload may carry. Anything else is refused when the notice is built.
ALLOWED_KEYS: Final = frozenset(
    {
        "topic",
        "topic_zh",
        "case_id",
        "event_seq",
        "at",
        "kind",
        "kind_zh",
        "severity",
        "severity_zh",
        "level",
        "level_zh",
        "state",
        "owner_code",
        "recipient_code",
        "chain_code",
        "resolve_by",
        "due_at",
        "criticised_unit",
        "workers_affected",
        "dual_report",
    }
)

OUTBOX_COLUMNS: Final = (
    "case_id",
    "event_seq",
    "topic",
    "target",
    "recipient_code",
    "payload",
    "next_attempt_at",
)


class NoticeError(ValueError):
    """A notice that would carry a key outside the allow-list (possible personal data)."""


@dataclass(frozen=True, slots=True)
class Notice:
    case_id: int
    event_seq: int
    topic: str
    target: str
    recipient_code: str
    payload: dict[str, Any]
    not_before: datetime

    def row(self) -> tuple[Any, ...]:
        text = json.dumps(self.payload, ensure_ascii=False, separators=(",", ":"))
        return (
            self.case_id,
            self.event_seq,
            self.topic,
            self.target,
            self.recipient_code,
            text,
            self.not_before,
        )


def notice(
    *,
    topic: str,
    target: str,
    recipient_code: str,
    case_id: int,
    event_seq: int,
    at: datetime,
    kind: CaseKind | str,
    severity: Severity | str,
    level: Level | int,
    state: str,
    owner_code: str,
    extra: Mapping[str, Any] | None = None,
) -> Notice:
    """A notice with an allow-listed payload; ``extra`` keys must be in :data:`ALLOWED_KEYS`."""
    if topic not in TOPIC_ZH:
        raise NoticeError(f"unknown notice topic {topic!r}")
    if target not in TARGETS:
        raise NoticeError(f"unknown notice target {target!r}; expected one of {', '.join(TARGETS)}")
    k, s, lv = CaseKind(kind), Severity(severity), Level(int(level))
    payload: dict[str, Any] = {
        "topic": topic,
        "topic_zh": TOPIC_ZH[topic],
        "case_id": case_id,
        "event_seq": event_seq,
        "at": _utc_text(at),
        "kind": k.value,
        "kind_zh": k.label_zh,
        "severity": s.value,
        "severity_zh": s.label_zh,
        "level": lv.name.lower(),
        "level_zh": lv.label_zh,
        "state": state,
        "owner_code": owner_code,
        "recipient_code": recipient_code,
    }
    for key, value in (extra or {}).items():
        if key not in ALLOWED_KEYS:
            raise NoticeError(
                f"notice payload key {key!r} is not allow-listed (personal data must not leave)"
            )
        payload[key] = _plain(value)
    return Notice(case_id, event_seq, topic, target, recipient_code, payload, at)


@lru_cache(maxsize=8192)
def _utc_text(at: datetime) -> str:
    """A time as events spell it (``grid.cases.states``: UTC, microseconds, ``Z``)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise NoticeError(f"notice time {at.isoformat()} has no timezone")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value: Any) -> Any:
    """A JSON scalar spelt as in events (UTC times, Decimals as strings); only scalars are allowed."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, int | str):
        return value
    raise NoticeError(f"notice values are scalars, got {kind.__name__}")


def enqueue(cur: psycopg2.extensions.cursor, notices: Iterable[Notice]) -> int:
    """COPY notices into the outbox (inside the caller's transaction); returns how many."""
    return copy_csv(cur, "notification_outbox", OUTBOX_COLUMNS, (n.row() for n in notices))


def copy_csv(
    cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY rows in CSV format through the C ``csv`` writer: several times faster than the text
    format for JSON-heavy rows (the sweep writes tens of thousands per run).

    Values are written with ``str()``: ``None`` and the empty string both become NULL, booleans
    ``True``/``False``, times ISO with offset. No bytes (use ``grid.store.copy`` for bytea).

    PostgreSQL refuses COPY FROM into a table whose row-level security applies to the current role
    (the web's ``gridflow_app`` on ``escalation_step`` and ``notification_outbox``): there the rows
    go in by INSERT, checked by the policies, with the same NULL rule."""
    cur.execute("SELECT row_security_active(%s::regclass)", (table,))
    rls = cur.fetchone()
    if rls is not None and rls[0]:
        values = [tuple(None if v is None or str(v) == "" else str(v) for v in row) for row in rows]
        marks = ", ".join(["%s"] * len(columns))
        # one row per statement: a lone VALUES row takes each untyped literal as its column's type
        cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)
        return len(values)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    if n:
        buf.seek(0)
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)
    return n


# ----------------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt n+1 after n failures: ``base * factor**(n-1)``, capped."""

    base_s: float = 30.0
    factor: float = 4.0
    cap_s: float = 6 * 3600.0

    def delay(self, failures: int) -> timedelta:
        return timedelta(seconds=min(self.cap_s, self.base_s * self.factor ** max(failures - 1, 0)))


@dataclass
class DeliveryReport:
    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {
            "attempted": self.attempted,
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
        }


def targets_from_env() -> dict[str, str]:
    """Webhook URLs from the settings (environment or ``.env``: they may carry tokens, so never
    from a file in the repo).

    ``GRIDFLOW_WEBHOOKS='{"union": "https://...", "government": "https://..."}'``; unset = none.
    """
    var = "GRIDFLOW_WEBHOOKS"
    secret = get_settings().webhooks
    raw = "" if secret is None else secret.get_secret_value().strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"{var} must be a JSON object of target -> URL") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{var} must be a JSON object of target -> URL")
    unknown = sorted(set(data) - set(TARGETS))
    if unknown:
        raise ValueError(f"{var} names unknown targets {unknown}; expected {', '.join(TARGETS)}")
    return {str(k): str(v) for k, v in data.items()}


def deliver(
    conn: psycopg2.extensions.connection,
    *,
    client: httpx.Client,
    targets: Mapping[str, str] | None = None,
    routing: Routing | None = None,
    now: datetime | None = None,
    batch: int = 200,
    max_attempts: int = 8,
    backoff: Backoff | None = None,
    max_batches: int | None = None,
) -> DeliveryReport:
    """Post due notices that have a route (:mod:`grid.cases.notify`: a WeCom or DingTalk robot of
    the recipient or a unit above it, else the target's generic webhook); mark them delivered
    (with the rule that routed them, ``delivered_via``), retrying or failed.

    ``targets`` alone (target -> URL) is the generic webhooks without robots. One transaction per
    batch; rows are taken with ``FOR UPDATE SKIP LOCKED`` so two deliverers never post the same
    notice at once. Notices without a route wait.
    """
    from grid.cases.notify import Routing, post

    at = now or datetime.now(UTC)
    wait = backoff or Backoff()
    report = DeliveryReport()
    routes = routing if routing is not None else Routing((), dict(targets or {}))
    where = routes.sql_filter()
    unrouted: list[int] = []
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        with transaction(conn) as cur:
            cur.execute(
                """
                SELECT o.id, o.target, o.recipient_code, o.payload, o.attempts, off.officer
                FROM notification_outbox o
                LEFT JOIN LATERAL (
                    -- a notice to a cell goes to the roster officer who owns the case there
                    SELECT f.source_record_id AS officer FROM case_file c JOIN officer f ON f.id = c.owner_officer
                    WHERE c.id = o.case_id AND c.owner_code = o.recipient_code
                ) off ON true
                WHERE o.delivered_at IS NULL AND o.failed_at IS NULL AND o.next_attempt_at <= %(at)s
                  AND o.id <> ALL(%(skip)s::bigint[])
                  AND (o.target = ANY(%(hooks)s::text[])
                       OR EXISTS (SELECT 1 FROM unnest(%(pre)s::text[], %(pre_t)s::text[]) r(p, t)
                                  WHERE r.t = o.target AND left(o.recipient_code, length(r.p)) = r.p)
                       OR EXISTS (SELECT 1 FROM unnest(%(eq)s::text[], %(eq_t)s::text[]) r(e, t)
                                  WHERE r.t = o.target AND r.e IN (o.recipient_code, off.officer)))
                ORDER BY o.next_attempt_at, o.id
                LIMIT %(batch)s
                FOR UPDATE OF o SKIP LOCKED
                """,
                {"at": at, "skip": unrouted, "batch": batch, **where},
            )
            rows = cur.fetchall()
            if not rows:
                break
            updates: list[
                tuple[int, datetime | None, datetime | None, datetime | None, str | None, str | None]
            ] = []
            for notice_id, target, recipient, payload, attempts, officer in rows:
                route = routes.route(target, recipient, officer)
                if route is None:
                    unrouted.append(notice_id)
                    continue
                report.attempted += 1
                body = {**payload, "notice_id": notice_id}
                error = post(client, route, body, notice_id=notice_id, case_url=routes.case_url)
                if error is None:
                    report.delivered += 1
                    updates.append((notice_id, at, None, None, None, route.via))
                    continue
                report.errors[error] = report.errors.get(error, 0) + 1
                failures = attempts + 1
                if failures >= max_attempts:
                    report.failed += 1
                    updates.append((notice_id, None, at, None, error, route.via))
                else:
                    report.retrying += 1
                    updates.append((notice_id, None, None, at + wait.delay(failures), error, route.via))
            if not updates:
                continue
            execute_values(
                cur,
                """
                UPDATE notification_outbox o SET
                    attempts = o.attempts + 1,
                    delivered_at = v.delivered_at,
                    failed_at = v.failed_at,
                    next_attempt_at = COALESCE(v.next_at, o.next_attempt_at),
                    last_error = COALESCE(v.err, o.last_error),
                    delivered_via = v.via
                FROM (VALUES %s) AS v(id, delivered_at, failed_at, next_at, err, via)
                WHERE o.id = v.id
                """,
                updates,
                template="(%s::bigint, %s::timestamptz, %s::timestamptz, %s::timestamptz, %s::text, %s::text)",
                page_size=max(len(updates), 1),
            )
    return report
