"""Case reports raised in a city's grid system become cases during the nightly sync."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from connectors.reasons import Reason
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import SandboxDataset
from grid.store.db import connect
from tests.conftest import SAMPLE_CITY, SANDBOX_AS_OF, write_sources
from tests.flows.helpers import query, sources_env

pytestmark = [pytest.mark.db, pytest.mark.flow]


def test_sync_takes_in_case_reports_once_and_quarantines_bad_ones(
    prefect_harness, loaded_world, tmp_path: Path
) -> None:
    """Every good report opens a case or attaches to an open one (one intake row each, routed to a
    unit on its chain); bad reports are quarantined with their reason; a replay takes nothing."""
    from flows.nightly_sync import sync_source
    from grid.cases.owners import ensure_units

    dataset = SandboxDataset(
        [(c.code, c.geometry) for c in loaded_world.cells],
        city_code=SAMPLE_CITY,
        n_workers=400,
        n_enterprises=60,
        n_cases=120,
        seed=11,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in loaded_world.divisions},
    )
    conn = connect()
    try:
        ensure_units(conn, scope=SAMPLE_CITY)
        ensure_units(conn, scope="420000000000")
    finally:
        conn.close()
    labels = dataset.labels("cases")
    bad_reasons = {str(r) for r in Reason}
    bad = {rid: label for rid, label in labels.items() if label in bad_reasons}
    good = set(labels) - set(bad)
    assert bad and good
    with SandboxServer(create_app(dataset)) as server:
        write_sources(tmp_path, with_cases=True, intake_city=server.base_url)
        with sources_env(tmp_path):
            first = sync_source("intake_city")
            second = sync_source("intake_city")
    taken = {ref.split(":", 1)[1] for (ref,) in query("SELECT source_ref FROM case_intake WHERE source_ref LIKE %s",
                                                      "intake_city:%")}  # fmt: skip
    assert taken == good
    quarantined = dict(query("SELECT source_record_id, reason_code FROM quarantine WHERE source = %s AND entity = "
                             "'cases'", "intake_city"))  # fmt: skip
    assert quarantined == bad
    orphans = query(
        "SELECT count(*) FROM case_file c JOIN case_intake i ON i.case_id = c.id"
        " WHERE i.source_ref LIKE 'intake_city:%%' AND c.owner_code IS NULL"
    )[0][0]
    assert orphans == 0
    assert first["status"] == "completed" and second["loaded"] == 0
    _details_are_sealed()


def _details_are_sealed() -> None:
    """Rule: a report's description, amount claimed and address are kept sealed (one AES-GCM blob
    per case) and the address masked; no column of a case holds the free text."""
    from grid.cases.details import unseal
    from grid.people import vault_from_settings

    vault = vault_from_settings()
    rows = query(
        "SELECT c.details_enc, c.address_masked, row_to_json(c)::text FROM case_file c"
        " JOIN case_intake i ON i.case_id = c.id AND NOT i.attached WHERE i.source_ref LIKE 'intake_city:%%'"
    )
    assert rows and all(blob is not None for blob, _, _ in rows)
    opened = [(unseal(bytes(blob), vault), masked, text) for blob, masked, text in rows]
    assert all(d.description and d.address for d, _, _ in opened)
    assert any(d.amount is not None for d, _, _ in opened)
    with_phone = [(d, text) for d, _, text in opened if d.description and "联系电话" in d.description]
    assert with_phone, "the sandbox writes phone numbers into some descriptions"
    for d, masked, text in opened:
        assert masked.endswith("****") and not any(ch.isdigit() for ch in masked)
        assert d.description not in text and (d.address or "") not in text
