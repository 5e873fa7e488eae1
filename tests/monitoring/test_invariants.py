"""The day's invariants (grid/monitoring/invariants.py) hold after a real sync, sweep and coverage
snapshot, and catch what they are for: a record silently dropped in the write path, a rewritten
event, a second open case, a tampered snapshot. The clock: a sync ``as_of`` a past time takes its
cases in at that time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.config import load_all_sources
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import SandboxDataset
from grid.clock import local_day
from grid.monitoring import invariants as inv
from grid.store.db import connect, transaction
from grid.workdays import SHANGHAI
from gridflow_cli.simulate import coverage_of, sweep_at, truth_from_source
from tests.conftest import SAMPLE_CITY, SANDBOX_AS_OF, fresh_database, load_world, write_sources
from tests.flows.helpers import query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow]

AS_OF = "2026-11-21T02:00:00+08:00"


def _dataset(world: Any, *, seed: int, cases: int) -> SandboxDataset:
    return SandboxDataset(
        [(c.code, c.geometry) for c in world.cells],
        city_code=SAMPLE_CITY,
        n_workers=300,
        n_enterprises=40,
        n_cases=cases,
        seed=seed,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in world.divisions},
    )


@pytest.fixture(scope="module")
def synced(
    prefect_harness: None, loaded_world: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One city synced ``as_of`` a past night with case reports, swept now, snapshot computed, in
    a database of its own: the invariants read the whole database, and other modules of the session
    leave cases in the shared one that break them on purpose (e.g. several open cases of a worker)."""
    with fresh_database("gridflow_invariants") as url:
        load_world(url, loaded_world)
        yield from _synced(loaded_world, tmp_path_factory)


def _synced(loaded_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from flows.nightly_sync import sync_source
    from grid.cases.owners import ensure_units

    conn = connect()
    try:
        ensure_units(conn, scope=SAMPLE_CITY)
        ensure_units(conn, scope="420000000000")
    finally:
        conn.close()
    folder = tmp_path_factory.mktemp("inv-sources")
    with SandboxServer(create_app(_dataset(loaded_world, seed=23, cases=80))) as server:
        write_sources(folder, with_cases=True, inv_city=server.base_url)
        with sources_env(folder):
            row = sync_source("inv_city", as_of=AS_OF)
            config = next(c for c in load_all_sources(folder) if c.name == "inv_city")
            truth = truth_from_source(config)
    now = datetime.now(UTC)
    sweep_at(now)
    coverage_of(local_day(now, SHANGHAI), now=now)
    yield row, truth, now


def test_a_sync_as_of_a_past_time_takes_its_cases_in_at_that_time(synced: Any) -> None:
    """The clock travels as the flow parameter: cases opened by the sync carry ``as_of``."""
    opened = query(
        "SELECT DISTINCT c.opened_at FROM case_file c JOIN case_intake i ON i.case_id = c.id"
        " WHERE i.source_ref LIKE 'inv_city:%%' AND NOT i.attached"
    )
    assert opened == [(datetime.fromisoformat(AS_OF),)]


def test_a_sync_refuses_an_as_of_in_the_future(prefect_harness: None) -> None:
    """Nothing in a simulation writes a date in the future."""
    from flows.nightly_sync import sync_source
    from grid.clock import FutureTime

    with pytest.raises(FutureTime):
        sync_source.fn("inv_city", as_of=(datetime.now(UTC) + timedelta(days=1)).isoformat())


def test_every_invariant_holds_after_a_real_sync_sweep_and_snapshot(synced: Any) -> None:
    """Records accounted for, one open case per party, due steps done once and not early, chains,
    ledger and coverage — each checks something (checked > 0) and finds nothing broken."""
    _, truth, now = synced
    conn = connect()
    try:
        checks = [
            inv.records_accounted(conn, source="inv_city", truth=truth),
            inv.one_open_case_per_party(conn),
            inv.escalation_steps_once(conn, swept_until=now),
            inv.hash_chains_verify(conn),
            inv.ledger_matches_events(conn),
            inv.coverage_matches_base_tables(conn, snapshot_date=local_day(now, SHANGHAI)),
            inv.no_plaintext_pii(conn),
        ]
    finally:
        conn.close()
    assert [(c.rule, c.examples) for c in checks if not c.ok] == []
    assert all(c.checked > 0 for c in checks), [(c.rule, c.checked) for c in checks]
    fired = query("SELECT count(*) FROM escalation_step WHERE outcome = 'fired'")[0][0]
    assert fired > 0  # the sweep 2 weeks after intake had due steps: the escalation check saw some


def test_a_record_dropped_in_the_write_path_is_caught(
    prefect_harness: None, loaded_world: Any, tmp_path: Path
) -> None:
    """A trigger that silently discards one worker's insert (the sync reports success) is found by
    the records invariant, naming that record; the others are accounted for."""
    from flows.nightly_sync import sync_source

    dataset = _dataset(loaded_world, seed=31, cases=0)
    with SandboxServer(create_app(dataset)) as server:
        write_sources(tmp_path, inv_broken=server.base_url)
        config = next(c for c in load_all_sources(tmp_path) if c.name == "inv_broken")
        truth = truth_from_source(config)
        labels = dataset.labels("workers")
        victim = sorted(rid for rid in truth["workers"] if labels.get(rid) in (None, "ok"))[0]
        conn = connect()
        try:
            with transaction(conn) as cur:
                cur.execute(
                    "CREATE FUNCTION test_drop_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    " IF NEW.source = 'inv_broken' AND NEW.source_record_id = %s THEN RETURN NULL; END IF;"
                    " RETURN NEW; END $$",
                    (victim,),
                )
                cur.execute(
                    "CREATE TRIGGER test_drop_one BEFORE INSERT ON worker FOR EACH ROW EXECUTE FUNCTION test_drop_one()"
                )
            with sources_env(tmp_path):
                row = sync_source("inv_broken")
            check = inv.records_accounted(conn, source="inv_broken", truth=truth)
        finally:
            with transaction(conn) as cur:
                cur.execute("DROP TRIGGER IF EXISTS test_drop_one ON worker")
                cur.execute("DROP FUNCTION IF EXISTS test_drop_one()")
            conn.close()
    assert row["status"] == "completed"  # the write path itself noticed nothing
    assert check.breaches == 1
    assert check.examples == [f"inv_broken workers {victim} lost (not stored, not quarantined)"]


def test_a_rewritten_event_and_a_tampered_snapshot_are_caught(synced: Any) -> None:
    """Changing one stored event's payload breaks its chain; changing one snapshot number breaks
    the coverage check (both restored afterwards)."""
    _, _, now = synced
    coverage_of(local_day(now, SHANGHAI), now=now)  # after the other tests' syncs
    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT case_id, seq, payload FROM case_event ORDER BY case_id, seq LIMIT 1")
            case_id, seq, payload = cur.fetchone()
            cur.execute("ALTER TABLE case_event DISABLE TRIGGER case_event_no_update")  # append-only
            cur.execute(
                "UPDATE case_event SET payload = payload || '{\"x\": 1}' WHERE case_id = %s AND seq = %s",
                (case_id, seq),
            )
            cur.execute("ALTER TABLE case_event ENABLE TRIGGER case_event_no_update")
            cur.execute(
                "UPDATE coverage_snapshot SET workers = workers + 1"
                " WHERE snapshot_date = %s AND division_code = %s",
                (local_day(now, SHANGHAI), SAMPLE_CITY),
            )
        chains = inv.hash_chains_verify(conn, case_ids=[case_id])
        coverage = inv.coverage_matches_base_tables(conn, snapshot_date=local_day(now, SHANGHAI))
    finally:
        from psycopg2.extras import Json

        with transaction(conn) as cur:
            cur.execute("ALTER TABLE case_event DISABLE TRIGGER case_event_no_update")
            cur.execute(
                "UPDATE case_event SET payload = %s WHERE case_id = %s AND seq = %s",
                (Json(payload), case_id, seq),
            )
            cur.execute("ALTER TABLE case_event ENABLE TRIGGER case_event_no_update")
            cur.execute(
                "UPDATE coverage_snapshot SET workers = workers - 1"
                " WHERE snapshot_date = %s AND division_code = %s",
                (local_day(now, SHANGHAI), SAMPLE_CITY),
            )
        conn.close()
    assert chains.breaches == 1 and chains.examples == [f"case {case_id}"]
    assert coverage.breaches == 1 and coverage.examples[0].startswith(f"workers of {SAMPLE_CITY}: snapshot")


def test_a_record_that_left_the_export_unseen_is_no_loss_but_a_present_one_is(database_url: str) -> None:
    """A worker who joined and left while the city's system was down was never readable: the
    records invariant does not require it; a present record that is missing is a loss."""
    truth = {
        "workers": {
            "left-unseen": inv.Expected(datetime(2026, 11, 3, tzinfo=UTC), "stored", present=False),
            "never-stored": inv.Expected(datetime(2026, 11, 3, tzinfo=UTC), "stored"),
        }
    }
    conn = connect()
    try:
        check = inv.records_accounted(conn, source="no_such_city", truth=truth)
    finally:
        conn.close()
    assert check.checked == 2
    assert check.examples == ["no_such_city workers never-stored lost (not stored, not quarantined)"]


def test_a_newer_version_with_unchanged_content_counts_as_stored(synced: Any) -> None:
    """The sync does not rewrite a newer version whose validated content is unchanged, so a stored
    version within the truth's ``[accept_from, latest]`` is the latest; outside it, a breach."""
    rid, stored = query(
        "SELECT source_record_id, source_updated_at FROM worker WHERE source = 'inv_city' LIMIT 1"
    )[0]
    later = stored + timedelta(days=3)
    conn = connect()
    try:
        same = inv.records_accounted(
            conn,
            source="inv_city",
            truth={"workers": {rid: inv.Expected(later, "stored", accept_from=stored)}},
        )
        newer = inv.records_accounted(
            conn, source="inv_city", truth={"workers": {rid: inv.Expected(later, "stored")}}
        )
    finally:
        conn.close()
    assert same.ok and same.checked == 1
    assert newer.breaches == 1 and f"{rid} stored at" in newer.examples[0]
