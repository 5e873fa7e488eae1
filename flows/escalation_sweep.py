"""Escalation sweep: fire due supervision steps, deliver the outbox, and purge ended sessions and
old login attempts. Deployed every 15 minutes.

Thin Prefect wiring over :func:`grid.cases.sweep.sweep` (set-based, idempotent, ``SKIP LOCKED``)
and :func:`grid.cases.outbox.deliver` to the 企业微信/DingTalk robots of ``config/notify.toml`` or the
generic webhooks (the only step that touches the network, so the only task
with retries). Parameters are a time and a scope code — never personal data. ``now`` replays the
sweep at another time (also ``gridflow sweep --now ISO_TIME``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from grid.accounts import sessions
from grid.accounts.config import get_web_settings
from grid.cases.notify import load_routing
from grid.cases.outbox import deliver
from grid.cases.store import rules_from_settings
from grid.cases.sweep import sweep
from grid.settings import FLOWS_ROLE
from grid.store.db import connect


def parse_now(now: str | None, *, tz: Any) -> datetime:
    """The sweep time: an ISO time (without an offset: policy local time), or the current time."""
    if not now:
        return datetime.now(UTC)
    at = datetime.fromisoformat(now)
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


@task(cache_policy=NO_CACHE, task_run_name="sweep-due-steps")
def sweep_due_steps(at: datetime, scope: str | None, batch: int) -> dict[str, Any]:
    conn = connect(role=FLOWS_ROLE)
    try:
        return sweep(conn, now=at, rules=rules_from_settings(), batch=batch, scope=scope).as_dict()
    finally:
        conn.close()


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 60], task_run_name="deliver-outbox")
def deliver_outbox(at: datetime) -> dict[str, int]:
    routing = load_routing()
    if not routing:
        return {"attempted": 0, "delivered": 0, "retrying": 0, "failed": 0}
    conn = connect(role=FLOWS_ROLE)
    try:
        with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
            return deliver(conn, routing=routing, client=client, now=at).as_dict()
    finally:
        conn.close()


@task(cache_policy=NO_CACHE, task_run_name="purge-login-history")
def purge_login_history() -> dict[str, int]:
    """Ended sessions and old login attempts (see ``GRIDFLOW_WEB_LOGIN_HISTORY_DAYS``)."""
    conn = connect(role=FLOWS_ROLE)
    try:
        return sessions.purge_login_history(conn, web=get_web_settings())
    finally:
        conn.close()


@flow(name="escalation-sweep", log_prints=False)
def escalation_sweep(now: str | None = None, scope: str | None = None, batch: int = 1000) -> dict[str, Any]:
    """Sweep due steps at ``now`` (default: the current time) and deliver pending notices."""
    at = parse_now(now, tz=rules_from_settings().policy.calendar.tz)
    swept = sweep_due_steps(at, scope, batch)
    delivered = deliver_outbox(at)
    purged = purge_login_history()
    row = {
        **{k: v for k, v in swept.items() if k != "now"},
        "at": at.isoformat(),
        "scope": scope or "all",
        **{f"outbox_{k}": v for k, v in delivered.items()},
        **{f"purged_{k}": v for k, v in purged.items()},
    }
    create_table_artifact(
        key="escalation-sweep",
        table=[row],
        description="Escalation sweep: due steps fired (催办/通报/提级) and notices delivered",
    )
    return row
