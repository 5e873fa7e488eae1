"""How a run reads a stream: resume, full or incremental, decided by one pure function."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from grid.sync.store import StreamPlan, StreamPosition, plan_stream

W = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pos", "full", "plan", "whole"),
    [
        pytest.param(
            StreamPosition(None, None), False, StreamPlan(None, None, None), True, id="first run reads all"
        ),
        pytest.param(
            StreamPosition(None, W), False, StreamPlan(None, W, None), False, id="a night reads changes"
        ),
        pytest.param(
            StreamPosition("c", W), False, StreamPlan("c", W, None), False, id="a killed night resumes"
        ),
        pytest.param(
            StreamPosition(None, W), True, StreamPlan(None, None, 7), True, id="full starts a snapshot"
        ),
        pytest.param(
            StreamPosition("c", None, 3), False, StreamPlan("c", None, 3), True, id="a snapshot resumes"
        ),
        pytest.param(
            StreamPosition("c", W, 3), True, StreamPlan("c", W, 3), True, id="full resumes its snapshot"
        ),
    ],
)
def test_plan_stream(pos: StreamPosition, full: bool, plan: StreamPlan, whole: bool) -> None:
    assert plan_stream(pos, full=full, run_id=7) == plan
    assert plan.whole is whole
