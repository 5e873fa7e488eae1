"""Crash safety of OFFSET paging (荆州's page style, `paging = "offset"`), as for keyset paging: a
sync process SIGKILLed again and again at the fail points resumes from the cursor stored with the
last committed page - (update time, rows read at that time), not a bare offset - and its tables
end equal to a clean run's; records updated between two crashed runs are not skipped."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connectors.sandbox.app import SandboxServer, correct_record, create_app
from connectors.sandbox.fixes import FIXABLE, fixed_row
from tests.conftest import write_sources
from tests.flows.helpers import fingerprint, query, sources_env
from tests.flows.test_sync_crash import KILL_PLAN, _run_in_process

pytestmark = [pytest.mark.db, pytest.mark.flow, pytest.mark.slow]

KILLS = 8


def _offset_pages(directory: Path, **sources: str) -> None:
    write_sources(directory, **sources)
    for name in sources:
        path = directory / f"{name}.toml"
        text = path.read_text(encoding="utf-8").replace("page_size = 500", "page_size = 150")
        path.write_text(
            text.replace('path_template = "', 'paging = "offset"\noffset_overlap = 10\npath_template = "')
        )


def test_offset_paging_survives_sigkills_and_updates_between_runs(
    prefect_harness, loaded_world, sandbox_dataset, tmp_path: Path
) -> None:
    """Rule: with offset paging, SIGKILLs after fetch, before commit and after commit, with the
    city fixing records between the crashed runs, end in the same tables as a clean run over the
    same final data (nothing lost, nothing twice); every crashed run is marked crashed."""
    from prefect.settings import PREFECT_API_URL

    from flows.nightly_sync import sync_source

    api_url = str(PREFECT_API_URL.value())
    offsets: list[str | None] = []

    def record(entity, request):  # type: ignore[no-untyped-def]
        offsets.append(request.query_params.get("offset"))
        return None

    app = create_app(sandbox_dataset, hooks=[record])
    fixable = [
        (e, r.record_id)
        for e in ("workers", "enterprises")
        for r in sandbox_dataset.rows(e)
        if r.label in FIXABLE
    ][:KILLS]
    now = datetime.fromisoformat("2026-11-20T22:00:00+08:00")
    with SandboxServer(app) as server:
        _offset_pages(tmp_path, offset_crashy=server.base_url, offset_clean=server.base_url)
        with sources_env(tmp_path):
            kills = 0
            for i in range(KILLS + 40):
                point, nth = KILL_PLAN[i % len(KILL_PLAN)]
                rc = _run_in_process("offset_crashy", f"{point}:{nth}" if kills < KILLS else None, api_url)
                if rc == 0:
                    break
                kills += 1
                if i < len(fixable):  # the city fixes a record while the sync is down
                    entity, rid = fixable[i]
                    at = now + timedelta(minutes=i + 1)
                    correct_record(
                        app,
                        entity,
                        rid,
                        fixed_row(sandbox_dataset, entity, rid, updated_at=at),
                        updated_at=at,
                    )
            sync_source("offset_crashy")  # the fixes made after the interrupted stream had passed them
            sync_source("offset_clean")
    assert kills >= KILLS and rc == 0
    assert any(o not in (None, "0") for o in offsets), "offset paging was not used"
    assert fingerprint("offset_crashy") == fingerprint("offset_clean")
    assert fingerprint("offset_crashy")["worker"][0] > 0
    statuses = [s for (s,) in query("SELECT status FROM sync_run WHERE source = 'offset_crashy' ORDER BY id")]
    assert statuses.count("crashed") == kills and statuses[-1] == "completed"
