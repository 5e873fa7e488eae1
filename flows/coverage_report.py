"""Coverage report: the day's coverage snapshot of every division, and a province summary artifact.

Deployed as ``coverage-report/after-nightly`` (prefect.yaml): triggered when a ``nightly-sync``
run ends Completed or Failed (one failed city must not leave the province without numbers), with a
06:00 Asia/Shanghai fallback that computes only if the day's snapshot is missing or older than the
last sync run.

Thin Prefect wiring over :func:`grid.monitoring.coverage.compute_snapshot` (set-based, one
transaction, idempotent per date). Parameters are a date and a flag; the artifacts carry counts
and rates of provinces and cities only — never a person.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from grid.cases.store import rules_from_settings
from grid.monitoring.coverage import (
    CoverageSummary,
    DivisionCoverage,
    as_of_for,
    compute_snapshot,
    headline,
    parse_date,
    percent,
    snapshot_is_current,
)
from grid.settings import FLOWS_ROLE
from grid.store.db import connect

ARTIFACT_KEY = "coverage-report"
TABLE_ARTIFACT_KEY = "coverage-cities"


@task(cache_policy=NO_CACHE, task_run_name="compute-coverage-{snapshot_date}")
def compute(
    snapshot_date: str, as_of: datetime, flow_run_id: str | None, skip_if_fresh: bool
) -> CoverageSummary | None:
    """The snapshot of one date (None when ``skip_if_fresh`` and it is already current)."""
    day = parse_date(snapshot_date)
    assert day is not None
    conn = connect(role=FLOWS_ROLE)
    try:
        if skip_if_fresh and snapshot_is_current(conn, day):
            return None
        return compute_snapshot(
            conn,
            snapshot_date=day,
            as_of=as_of,
            flow_run_id=UUID(flow_run_id) if flow_run_id else None,
            tz=rules_from_settings().policy.calendar.tz,
        )
    finally:
        conn.close()


def _table_row(d: DivisionCoverage) -> dict[str, Any]:
    row: dict[str, Any] = {"level": d.level, "code": d.code, "name": d.name}
    row.update(d.counts.as_dict())
    row.update({f"{r.name}_rate": percent(value) for r, _, _, value in headline(d.counts)})
    return row


def markdown(summary: CoverageSummary) -> str:
    """The province summary: the four fulls, the supervision rates and overdue counts."""
    tz = rules_from_settings().policy.calendar.tz
    lines = [
        f"# Coverage snapshot {summary.snapshot_date.isoformat()}",
        "",
        f"As of {summary.as_of.astimezone(tz):%Y-%m-%d %H:%M} ({tz}); {summary.divisions:,} divisions computed"
        + (f" in {summary.seconds:.1f} s." if summary.seconds is not None else "."),
        "",
    ]
    if not summary.provinces:
        lines.append("No enterprise, worker or case is attributed to any province yet.")
    for p in summary.provinces:
        lines += [
            f"## {p.name} ({p.code})",
            "",
            "| rate | numerator | denominator | value |",
            "|---|---:|---:|---:|",
        ]
        for r, num, den, value in headline(p.counts):
            lines.append(f"| {r.label_zh} {r.label_en} | {num:,} | {den:,} | {percent(value)} |")
        c = p.counts
        lines += [
            "",
            f"Overdue open cases: **{c.overdue:,}** past their resolution deadline, "
            f"**{c.overdue_response:,}** not accepted in time.",
            "",
            "| city | enterprises | union | workers | mapped | disputes | hardship | cases | on time | overdue |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for city in (x for x in summary.cities if x.code[:2] == p.code[:2]):
            k, rs = city.counts, city.counts.rates()
            lines.append(
                f"| {city.name} ({city.code}) | {k.enterprises:,} | {percent(rs['union'])} | {k.workers:,} | "
                f"{percent(rs['workers'])} | {k.disputes:,} | {k.hardship:,} | {k.cases:,} | "
                f"{percent(rs['on_time'])} | {k.overdue:,} |"
            )
        lines.append("")
    return "\n".join(lines)


@flow(name="coverage-report", log_prints=False)
def coverage_report(snapshot_date: str | None = None, skip_if_fresh: bool = False) -> dict[str, Any]:
    """Compute the coverage snapshot of ``snapshot_date`` (YYYY-MM-DD; default today in the policy
    time zone, as of now; a past date is computed as of the end of that day) and publish the
    province summary. ``skip_if_fresh`` (the fallback schedule) does nothing if that date's
    snapshot was computed after the last sync run finished."""
    tz = rules_from_settings().policy.calendar.tz
    day, as_of = as_of_for(parse_date(snapshot_date), now=datetime.now(UTC), tz=tz)
    run_id = flow_run.get_id()
    summary = compute(day.isoformat(), as_of, str(run_id) if run_id else None, skip_if_fresh)
    if summary is None:
        return {"snapshot_date": day.isoformat(), "skipped": True}
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=markdown(summary),
        description=f"Coverage snapshot {day.isoformat()}: four fulls and supervision rates (counts only)",
    )
    create_table_artifact(
        key=TABLE_ARTIFACT_KEY,
        table=[_table_row(d) for d in (*summary.provinces, *summary.cities)],
        description=f"Coverage snapshot {day.isoformat()}: provinces and their cities",
    )
    return {
        "snapshot_date": day.isoformat(),
        "as_of": summary.as_of.isoformat(),
        "skipped": False,
        "divisions": summary.divisions,
        "seconds": round(summary.seconds or 0.0, 2),
        "provinces": {p.code: p.counts.as_dict() for p in summary.provinces},
    }
