"""Crash safety: the sync process is SIGKILLed again and again and still ends exactly right.

Each crash run is a real `sync-source` flow run in its own Python process, reporting to the
session's Prefect harness, killed by SIGKILL at a fail point: after a page is fetched, after it
is written but before commit, or right after commit. The next run resumes from the last
committed page. After 20+ kills a final run completes, and the tables must equal a clean run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.sandbox.app import SandboxServer, create_app
from grid.settings import PROJECT_ROOT
from tests.conftest import write_sources
from tests.flows.helpers import fingerprint, query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

KILL_PLAN = [
    ("after_fetch", 2),
    ("before_commit", 2),
    ("after_commit", 1),
    ("before_commit", 1),
    ("after_fetch", 1),
    ("after_commit", 2),
]
KILLS = 21


def _small_pages(directory: Path, **sources: str) -> None:
    write_sources(directory, **sources)
    for name in sources:
        path = directory / f"{name}.toml"
        path.write_text(
            path.read_text(encoding="utf-8").replace("page_size = 500", "page_size = 150"), "utf-8"
        )


def _run_in_process(source: str, failpoint: str | None, api_url: str) -> int:
    env = {**os.environ, "PREFECT_API_URL": api_url, "GRIDFLOW_ENV": "test"}
    env.pop("GRIDFLOW_FAILPOINT", None)
    if failpoint:
        env["GRIDFLOW_FAILPOINT"] = failpoint
    code = f"from flows.nightly_sync import sync_source; sync_source({source!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"sync process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.returncode


def test_sigkill_at_any_point_loses_and_duplicates_nothing(
    prefect_harness, loaded_world, sandbox_dataset, tmp_path: Path
) -> None:
    """20+ SIGKILLs between fetch and write, between write and commit, and after commit: the final
    tables equal a clean run's, crashed runs are marked, and each resume re-fetches at most the
    one page that was in flight (these pages are new records: the sync fetches ahead only after a
    page of mostly unchanged ones, see test_nightly_sync's fetched-ahead rule)."""
    from prefect.settings import PREFECT_API_URL

    from flows.nightly_sync import sync_source

    api_url = str(PREFECT_API_URL.value())
    fetches: list[tuple[str, str | None, str | None]] = []

    def record(entity, request):  # type: ignore[no-untyped-def]
        fetches.append(
            (entity, request.query_params.get("cursor"), request.query_params.get("updated_since"))
        )
        return None

    with SandboxServer(create_app(sandbox_dataset, hooks=[record])) as server:
        _small_pages(tmp_path, crashy=server.base_url, clean=server.base_url)
        with sources_env(tmp_path):
            sync_source("clean")
            fetches.clear()
            kills, previous, refetched = 0, set(), []
            for i in range(KILLS + 40):
                point, nth = KILL_PLAN[i % len(KILL_PLAN)]
                start = len(fetches)
                rc = _run_in_process("crashy", f"{point}:{nth}" if kills < KILLS else None, api_url)
                keys = set(fetches[start:])
                # A resumed run also polls the watermark of streams that already ended (cursor
                # None, since set) — a new incremental query, not a page of the interrupted stream.
                again = {k for k in keys & previous if not (k[1] is None and k[2] is not None)}
                if i:
                    refetched.append(len(again))
                previous = keys
                if rc == 0:
                    break
                kills += 1
    assert kills >= 20, f"only {kills} kills before the run completed"
    assert rc == 0
    assert max(refetched) <= 1, refetched
    assert fingerprint("crashy") == fingerprint("clean")
    assert fingerprint("crashy")["worker"][0] > 0
    statuses = [s for (s,) in query("SELECT status FROM sync_run WHERE source = 'crashy' ORDER BY id")]
    assert statuses[-1] == "completed"
    assert statuses.count("crashed") == kills
