"""The roster as a fourth synced entity: officers from the city's grid system own the cases of their
cells after the nightly sync, bad roster rows are quarantined with their reason, and an officer who
leaves hands their open cases to the community union in the roster page's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connectors.reasons import Reason
from connectors.sandbox.app import SandboxServer, correct_record, create_app
from connectors.sandbox.data import SandboxDataset
from grid.store.db import connect
from tests.conftest import SAMPLE_CITY, SANDBOX_AS_OF, write_sources
from tests.flows.helpers import query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow]

SOURCE = "roster_city"


def test_the_synced_roster_owns_the_cases_of_its_cells_and_a_leaver_hands_them_on(
    prefect_harness, loaded_world, tmp_path: Path
) -> None:
    from flows.nightly_sync import sync_source
    from grid.cases.owners import ensure_units

    dataset = SandboxDataset(
        [(c.code, c.geometry) for c in loaded_world.cells],
        city_code=SAMPLE_CITY,
        n_workers=400,
        n_enterprises=60,
        n_cases=150,
        seed=23,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in loaded_world.divisions},
        roster=True,
    )
    conn = connect()
    try:
        ensure_units(conn, scope=SAMPLE_CITY)
        ensure_units(conn, scope="420000000000")
    finally:
        conn.close()
    labels = dataset.labels("grid_officers")
    reasons = {str(r) for r in Reason}
    bad = {rid: lab for rid, lab in labels.items() if lab in reasons}
    assert set(bad.values()) == {"missing_record_id", "bad_phone", "unknown_cell", "missing_field"}
    app = create_app(dataset)
    with SandboxServer(app) as server:
        write_sources(tmp_path, with_cases=True, with_roster=True, **{SOURCE: server.base_url})
        with sources_env(tmp_path):
            first = sync_source(SOURCE)
            assert first["status"] == "completed"

            # every good roster row is loaded (active or not), every bad one quarantined with its reason
            loaded = dict(query("SELECT source_record_id, active FROM officer WHERE source = %s", SOURCE))
            assert loaded == {rid: lab == "ok" for rid, lab in labels.items() if lab not in reasons}
            quarantined = query(
                "SELECT coalesce(source_record_id, ''), reason_code FROM quarantine "
                "WHERE source = %s AND entity = 'grid_officers'",
                SOURCE,
            )
            assert sorted(r for _, r in quarantined) == sorted(bad.values())
            assert {rid for rid, _ in quarantined if rid} == {rid for rid, lab in bad.items()
                                                            if lab != "missing_record_id"}  # fmt: skip
            # the phone is protected: HMAC + mask + ciphertext, never the number in clear
            phones = query("SELECT phone_masked, phone_hmac IS NOT NULL, phone_enc IS NOT NULL FROM officer "
                           "WHERE source = %s AND active LIMIT 5", SOURCE)  # fmt: skip
            assert all("****" in m and h and e for m, h, e in phones)

            # ownership: a case in a cell with an active officer is owned by one of them, else no officer
            rows = query(
                """
                SELECT c.id, c.owner_code, c.owner_officer, c.cell_code,
                       ARRAY(SELECT oc.officer_id FROM officer_cell oc JOIN officer o ON o.id = oc.officer_id
                             WHERE o.active AND oc.cell_code = c.cell_code ORDER BY 1)
                FROM case_file c JOIN case_intake i ON i.case_id = c.id
                WHERE i.source_ref LIKE %s AND c.level = 5 AND c.cell_code IS NOT NULL
                """,
                f"{SOURCE}:%",
            )
            staffed = [r for r in rows if r[4]]
            unstaffed = [r for r in rows if not r[4]]
            assert staffed, "no case landed in a cell with an officer: the test proves nothing"
            assert all(owner == cell and officer in officers for _, owner, officer, cell, officers in staffed)
            assert all(owner == cell[:12] and officer is None for _, owner, officer, cell, _ in unstaffed)

            # a replay of the unchanged night changes nothing
            second = sync_source(SOURCE)
            assert second["status"] == "completed" and second["loaded"] == 0

            # an officer leaves (the city marks them 离岗): their open cases go to the community union
            case_id, cell, officer_id = staffed[0][0], staffed[0][3], staffed[0][2]
            code = query("SELECT source_record_id FROM officer WHERE id = %s", officer_id)[0][0]
            row = dict(next(r.row for r in dataset.rows("grid_officers") if r.record_id == code))
            later = datetime.fromisoformat(SANDBOX_AS_OF) + timedelta(hours=1)
            row.update(zgzt="0", gxsj=later.strftime("%Y-%m-%d %H:%M:%S"))
            correct_record(app, "grid_officers", code, row, updated_at=later)
            open_before = query(
                "SELECT count(*) FROM case_file WHERE owner_officer = %s AND state NOT IN ('resolved', 'closed')",
                officer_id,
            )[0][0]
            third = sync_source(SOURCE)
            assert third["status"] == "completed"
    assert query("SELECT active FROM officer WHERE id = %s", officer_id) == [(False,)]
    assert query(
        "SELECT count(*) FROM case_file WHERE owner_officer = %s AND state NOT IN ('resolved', 'closed')",
        officer_id,
    ) == [(0,)]
    moved = query(
        """
        SELECT e.case_id, e.actor, e.payload->>'roster', e.payload->>'officer', e.owner_after
        FROM case_event e WHERE e.action = 'reassign' AND e.payload->>'officer' = %s
        """,
        code,
    )
    assert len(moved) == open_before >= 1
    assert (case_id, f"roster:{SOURCE}", "left", code, cell[:12]) in moved
