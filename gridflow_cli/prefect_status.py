"""What the operator sees of Prefect in ``gridflow status``: each deployment's schedules and next
scheduled run (from the Prefect API), and the server services' failures (from its log)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class DeploymentLine:
    name: str  # flow/deployment
    schedules: tuple[str, ...]  # "cron 0 2 * * * (Asia/Shanghai)", "every 900 s", …
    active: bool  # at least one schedule is active and the deployment is not paused
    next_run: datetime | None  # the earliest Scheduled flow run


def _describe(schedule: object) -> str:
    cron = getattr(schedule, "cron", None)
    if cron:
        return f"cron {cron} ({getattr(schedule, 'timezone', None) or 'UTC'})"
    interval = getattr(schedule, "interval", None)
    if interval is not None:
        return f"every {int(interval.total_seconds())} s"
    rrule = getattr(schedule, "rrule", None)
    return f"rrule {rrule}" if rrule else type(schedule).__name__


def deployment_lines() -> list[DeploymentLine]:
    """Every deployment on the server (PREFECT_API_URL / PREFECT_API_AUTH_STRING from the env)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    lines = []
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        for d in client.read_deployments():
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=1,
            )
            active = not d.paused and any(s.active for s in d.schedules)
            lines.append(
                DeploymentLine(
                    name=f"{flows.get(d.flow_id, '?')}/{d.name}",
                    schedules=tuple(_describe(s.schedule) for s in d.schedules if s.active),
                    active=active,
                    next_run=runs[0].expected_start_time if runs else None,
                )
            )
    return sorted(lines, key=lambda x: x.name)


def format_deployments(lines: list[DeploymentLine]) -> list[str]:
    """A table with column headers; next runs in Asia/Shanghai."""
    rows = [("deployment", "schedule", "active", "next scheduled run (Asia/Shanghai)")]
    for line in lines:
        nxt = line.next_run.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if line.next_run else "—"
        if not line.schedules:
            schedule, nxt = "none (trigger or on demand)", "—" if line.next_run is None else nxt
        else:
            schedule = "; ".join(line.schedules)
            if line.active and line.next_run is None:
                nxt = "none yet (scheduler has not run)"
        rows.append((line.name, schedule, "yes" if line.active else "no", nxt))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]


_LOGGER = re.compile(r"\|\s*(ERROR|CRITICAL)\s*\|\s*([\w.]+)")
_RECORD = re.compile(r"^\d\d:\d\d")  # a new log record starts with its time
_CHAIN = ("Traceback", "During handling", "The above exception")


@dataclass(frozen=True)
class ServerProblem:
    where: str  # the logger that reported it, e.g. prefect.server.services.scheduler
    error: str  # the exception line (or the ERROR message), cut to 160 characters
    count: int


def _read_traceback(lines: list[str], i: int) -> tuple[str | None, int]:
    """From the ``Traceback`` line at ``i``: the (last, when chained) exception line, and the
    index after the block."""
    exc, j = None, i + 1
    while j < len(lines):
        line = lines[j]
        if not line.strip() or line.startswith((" ", "\t", *_CHAIN)):
            j += 1
            continue
        if _RECORD.match(line):
            break
        exc, j = line.strip(), j + 1
        if j < len(lines) and (not lines[j].strip() or lines[j].startswith(_CHAIN)):
            continue  # a chained exception follows
        break
    return exc, j


def server_problems(log_text: str) -> list[ServerProblem]:
    """ERROR lines and tracebacks of the Prefect server's log, grouped by the logger that wrote
    them (``prefect server`` for a bare traceback) and the exception."""
    lines = log_text.splitlines()
    found: dict[tuple[str, str], int] = {}

    def add(where: str, error: str) -> None:
        key = (where, error[:160])
        found[key] = found.get(key, 0) + 1

    i = 0
    while i < len(lines):
        line = lines[i]
        logged = _LOGGER.search(line)
        if logged:
            message = line.split(" - ", 1)[1].strip() if " - " in line else line.strip()
            if i + 1 < len(lines) and lines[i + 1].startswith("Traceback"):
                exc, i = _read_traceback(lines, i + 1)
                add(logged.group(2), exc or message)
            else:
                add(logged.group(2), message)
                i += 1
        elif line.startswith("Traceback (most recent call last)"):
            exc, i = _read_traceback(lines, i)
            add("prefect server", exc or "traceback")
        else:
            i += 1
    return [ServerProblem(w, e, n) for (w, e), n in sorted(found.items())]
