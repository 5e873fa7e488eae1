"""The coverage-report flow through the Prefect harness: snapshot written, run recorded, artifacts."""

from __future__ import annotations

from datetime import date, datetime

import psycopg2
import pytest

from tests.monitoring.coverage_seed import SH, P, province

pytestmark = [pytest.mark.db, pytest.mark.flow]
__all__ = ["province"]  # the fixture, imported so pytest finds it


def test_the_flow_writes_the_snapshot_records_its_run_and_publishes_the_summary(
    prefect_harness: None, province: list[date], database_url: str
) -> None:
    """Flow rule: a run computes the date's snapshot, records its flow run id on the run row and
    publishes a markdown and a table artifact of provinces and cities (counts and rates only); the
    fallback run (skip_if_fresh) then finds the date current and does nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.coverage_report import ARTIFACT_KEY, TABLE_ARTIFACT_KEY, coverage_report

    day = date(2026, 7, 14)
    province.append(day)
    state = coverage_report(snapshot_date=day.isoformat(), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT flow_run_id, as_of FROM coverage_run WHERE snapshot_date = %s", (day,))
            run = cur.fetchone()
            cur.execute(
                "SELECT workers, workers_mapped, cases FROM coverage_snapshot"
                " WHERE snapshot_date = %s AND division_code = %s",
                (day, P),
            )
            province_row = cur.fetchone()
    finally:
        conn.close()
    assert run is not None and run[0] == str(flow_run_id)
    assert run[1] == datetime(2026, 7, 15, tzinfo=SH)  # a past date: as of the end of that day
    # 27 live workers, 18 in cells; 14 cases: the 13 of 2026-07-13 plus c11, opened 2026-07-14 09:00
    assert province_row == (27, 18, 14)
    assert result["skipped"] is False and result["provinces"][P]["cases"] == 14

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY, TABLE_ARTIFACT_KEY]))
        )
    ours = {a.key: a for a in arts if a.flow_run_id == flow_run_id}
    assert set(ours) == {ARTIFACT_KEY, TABLE_ARTIFACT_KEY}
    md = str(ours[ARTIFACT_KEY].data)
    assert f"({P})" in md and "| 18 | 27 | 66.7% |" in md  # workers mapped 18 / 27
    table = ours[TABLE_ARTIFACT_KEY].data
    assert f"'code': '{P}'" in str(table) or f'"code": "{P}"' in str(table)

    again = coverage_report(snapshot_date=day.isoformat(), skip_if_fresh=True)
    assert again == {"snapshot_date": day.isoformat(), "skipped": True}
