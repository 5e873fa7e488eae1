"""The fault matrix: each fault of a city's system, through the real connector AND the real nightly
flow (``flows.nightly_sync.sync_source`` under the session's Prefect harness), into PostgreSQL.

After every case an oracle checks the database against the sandbox's ground truth
(``SandboxDataset.labels``):

* **nothing lost** - every good record is loaded (and not soft-deleted), every bad record is
  quarantined with exactly its labelled reason;
* **nothing duplicated** - one row per source record id, one open quarantine row per record and
  reason;
* **nothing stale** - every loaded row carries the record's newest update time (an older version,
  replayed or out of order, never overwrites a newer one);
* **every reject with a reason code** from the closed list, with a detail.

Faults that must fail the run (breaking schema drift, a suspicious day, a persistent outage) must
fail it with one sentence and write nothing for that page. Every case also asserts that its fault
fired (``FaultPlan.fired``), so no case can pass by the fault silently not happening.

Each case uses its own source name, sources directory (GRIDFLOW_SOURCES_DIR) and sandbox server.
The dataset is small (290 records, pages of 100) to keep the suite quick.

Flow hooks these cases rely on (see the issue 4 report): ``check_schema`` and ``volume_check``
called in ``flows.nightly_sync._sync_entity`` between fetch and write, and ``fetch_page`` opening
its source with ``connectors.sources.open_source`` (file drops).
"""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.reasons import Reason
from connectors.sandbox.app import SandboxServer, create_app
from connectors.sandbox.data import SandboxDataset
from connectors.sandbox.faults import FaultPlan, stale_versions, write_drop_file
from tests.conftest import SAMPLE_CITY, SANDBOX_AS_OF, write_sources
from tests.flows.helpers import fingerprint, query, sources_env
from tests.sandbox_labels import split_labels

pytestmark = [pytest.mark.db, pytest.mark.flow]

ENTITIES = ("enterprises", "workers")
TABLE = {"enterprises": "enterprise", "workers": "worker"}
REASONS = {r.value for r in Reason}
_names = itertools.count(1)


@pytest.fixture(scope="module")
def dataset(sample_world: Any) -> SandboxDataset:
    """A small city: 50 enterprises and 240 workers with 5% bad rows of every kind."""
    return SandboxDataset(
        [(c.code, c.geometry) for c in sample_world.cells],
        city_code=SAMPLE_CITY,
        n_workers=240,
        n_enterprises=50,
        seed=21,
        bad_fraction=0.05,
        as_of=datetime.fromisoformat(SANDBOX_AS_OF),
        names={d.code: d.name for d in sample_world.divisions},
    )


class Case:
    """One fault case: a sandbox with a plan, a source pointing at it, runs of the real flow."""

    def __init__(
        self,
        directory: Path,
        dataset: SandboxDataset,
        plan: FaultPlan,
        *,
        label: str,
        folder: Path | None = None,
        **config: str,
    ) -> None:
        self.name = f"fm_{next(_names)}_{label}"
        self.dataset = dataset
        self.plan = plan
        self.directory = directory
        self.server = SandboxServer(create_app(dataset, faults=plan))
        self.folder = folder
        self.config = config

    def __enter__(self) -> Case:
        self.server.__enter__()
        write_sources(self.directory, **{self.name: self.server.base_url})
        path = self.directory / f"{self.name}.toml"
        text = path.read_text(encoding="utf-8").replace("page_size = 500", "page_size = 100")
        for old, new in self.config.items():
            text = text.replace(old, new)
        if self.folder is not None:  # a file drop instead of the HTTP API
            text = text.replace('kind = "http"', f'kind = "file"\nfolder = "{self.folder}"')
            text = "\n".join(line for line in text.splitlines() if not line.startswith("base_url"))
        path.write_text(text, encoding="utf-8")
        self._env = sources_env(self.directory)
        self._env.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._env.__exit__(None, None, None)
        self.server.__exit__(None, None, None)

    def sync(self, *, full: bool = False) -> dict[str, Any]:
        from flows.nightly_sync import sync_source

        return sync_source(self.name, full=full)

    def fails(self, *, full: bool = False) -> str:
        """Run the flow expecting failure; the message (one sentence) and the run row agree."""
        with pytest.raises(Exception) as info:
            self.sync(full=full)
        message = str(info.value)
        assert message and "\n" not in message and "Traceback" not in message
        status, error = query(
            "SELECT status, error FROM sync_run WHERE source = %s ORDER BY id DESC LIMIT 1", self.name
        )[0]
        assert status == "failed" and error and "\n" not in error
        return message


@pytest.fixture
def case(tmp_path: Path, dataset: SandboxDataset, prefect_harness: None, loaded_world: Any) -> Iterator[Any]:
    """``with case(plan, **toml_replacements) as c: c.sync()`` - cleaned up after the test."""
    opened: list[Case] = []

    def make(plan: FaultPlan | None = None, *, label: str, folder: Path | None = None, **config: str) -> Case:
        c = Case(
            tmp_path / f"sources{len(opened)}",
            dataset,
            plan or FaultPlan(),
            label=label,
            folder=folder,
            **config,
        )
        c.directory.mkdir()
        opened.append(c)
        return c

    yield make


def oracle(
    source: str,
    dataset: SandboxDataset,
    *,
    entities: tuple[str, ...] = ENTITIES,
    hidden: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Nothing lost, nothing duplicated, nothing stale, every reject with a reason code."""
    for entity in entities:
        labels = {k: v for k, v in dataset.labels(entity).items() if k not in hidden}
        newest = dataset.updated_at(entity)
        # Issue #21: a bad row whose defect is a record problem is quarantined; one whose defect
        # is a field problem is loaded with that field empty and a field problem of its reason.
        bad, kept = split_labels(entity, labels)
        rows = query(
            f"SELECT source_record_id, source_updated_at, deleted_at IS NULL FROM {TABLE[entity]} WHERE source = %s",
            source,
        )
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), f"{entity}: a record is stored twice"
        loaded = {rid: ts for rid, ts, alive in rows if alive}
        assert set(loaded) == set(labels) - set(bad), f"{entity}: lost or extra records"
        stale = [rid for rid, ts in loaded.items() if ts != newest[rid]]
        assert not stale, f"{entity}: {len(stale)} rows hold an older version"
        quarantined = query(
            "SELECT source_record_id, reason_code, detail FROM quarantine"
            " WHERE source = %s AND entity = %s AND resolved_at IS NULL",
            source,
            entity,
        )
        assert all(reason in REASONS and detail for _, reason, detail in quarantined), (
            "a reject without a reason"
        )
        pairs = Counter((rid, reason) for rid, reason, _ in quarantined)
        assert all(n == 1 for n in pairs.values()), f"{entity}: a reject is quarantined twice"
        for rid, reason in pairs:
            expected = bad.get(rid, "duplicate_in_page")  # a superseded version in the same page
            assert reason == expected, f"{entity}: record quarantined for {reason}, expected {expected}"
        assert set(bad.items()) <= set(pairs), f"{entity}: a bad record is not quarantined"
        if entity == "cases":
            continue
        problems = query(
            "SELECT source_record_id, reason_code FROM field_problem WHERE source = %s AND entity = %s"
            " AND settled_at IS NULL",
            source,
            entity,
        )
        assert len(problems) == len({rid for rid, _ in problems}), f"{entity}: a field problem twice"
        assert dict(problems) == kept, f"{entity}: field problems differ from the labelled defects"


def nothing_written(source: str, entity: str) -> None:
    """No row, no quarantine and no cursor advance for that entity."""
    assert query(f"SELECT count(*) FROM {TABLE[entity]} WHERE source = %s", source) == [(0,)]
    assert query("SELECT count(*) FROM quarantine WHERE source = %s AND entity = %s", source, entity) == [
        (0,)
    ]
    assert query(
        "SELECT count(*) FROM source_cursor WHERE source = %s AND entity = %s"
        " AND (cursor IS NOT NULL OR since IS NOT NULL)",
        source,
        entity,
    ) == [(0,)]


# --- faults the run survives ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "plan", "config", "fired"),
    [
        pytest.param(
            "burst", FaultPlan(server_errors=3), {}, {"5xx": 3}, id="5xx burst: retried by connector and task"
        ),
        pytest.param(
            "ratelimit", FaultPlan(rate_limited=2, retry_after_s=1), {}, {"429": 2}, id="429 with Retry-After"
        ),
        pytest.param(
            "slow",
            FaultPlan(slow=1, slow_s=2.5),
            {"timeout_s = 30": "timeout_s = 1"},
            {"slow": 1},
            id="slow body beyond the timeout",
        ),
        pytest.param(
            "cut", FaultPlan(truncated=2), {}, {"truncate": 2}, id="truncated body (invalid JSON), twice"
        ),
        pytest.param(
            "dups",
            FaultPlan(overlap=7, repeat_in_page=3),
            {},
            {"overlap": 7 * 2, "repeat": 4},
            id="duplicate records across and within pages",
        ),
        pytest.param(
            "order", FaultPlan(reverse_pages=True), {}, {"reverse": 4}, id="out-of-order rows in pages"
        ),
    ],
)
def test_the_run_survives_and_the_oracle_holds(
    case: Any,
    dataset: SandboxDataset,
    label: str,
    plan: FaultPlan,
    config: dict[str, str],
    fired: dict[str, int],
) -> None:
    """Rule: transient faults and messy paging are absorbed: the run completes and the database
    holds every record exactly once, at its newest version, bad ones quarantined with reasons."""
    with case(plan, label=label, **config) as c:
        row = c.sync()
        assert row["status"] == "completed"
        oracle(c.name, dataset)
    for name, n in fired.items():
        assert plan.fired[name] >= n, f"the fault {name} did not fire: {dict(plan.fired)}"


def test_versions_out_of_order_in_one_run_keep_the_newest(case: Any, dataset: SandboxDataset) -> None:
    """Rule: old versions arriving pages after the newer ones (out of order) never overwrite them."""
    plan = FaultPlan(
        replay={
            "enterprises": stale_versions(dataset, "enterprises", 5, among=30),
            "workers": stale_versions(dataset, "workers", 12, among=90),
        }
    )
    with case(plan, label="ooo") as c:
        c.sync()
        oracle(c.name, dataset)
    assert plan.fired["replay"] == 17


def test_a_stale_replay_in_a_later_run_changes_nothing(case: Any, dataset: SandboxDataset) -> None:
    """Rule: serve v2, then a replay of v1 (whatever updated_since says): the rows stay v2, and
    the tables are byte-for-byte what they were."""
    plan = FaultPlan()
    with case(plan, label="replay") as c:
        c.sync()
        before = fingerprint(c.name)
        plan.replay = {
            "enterprises": stale_versions(dataset, "enterprises", 10),
            "workers": stale_versions(dataset, "workers", 30),
        }
        row = c.sync()
        assert row["status"] == "completed" and row["loaded"] == 0
        assert fingerprint(c.name) == before
        oracle(c.name, dataset)
    assert plan.fired["replay"] == 40


def test_records_committed_late_are_caught_by_the_lookback(case: Any, dataset: SandboxDataset) -> None:
    """Rule: records the city commits after our watermark passed their update time are loaded by
    the next incremental run thanks to lookback_s."""
    rows = dataset.rows("workers")
    newest = rows[-1].updated_at
    late = {
        r.record_id for r in rows if newest - timedelta(days=2) <= r.updated_at < newest and r.label == "ok"
    }
    assert late
    plan = FaultPlan(hidden={"workers": set(late)})
    with case(
        plan, label="late", **{"max_retry_after_s = 300": "max_retry_after_s = 300\nlookback_s = 259200"}
    ) as c:
        c.sync()
        oracle(c.name, dataset, hidden=late)
        plan.hidden = {}
        c.sync()
        oracle(c.name, dataset)
    assert plan.fired["hidden"] >= 1


# --- faults that must fail the run ---------------------------------------------------------------


def test_a_persistent_outage_fails_the_run_and_the_next_run_resumes(
    case: Any, dataset: SandboxDataset
) -> None:
    """Rule: 5xx on every request after the first two pages: the run fails with one sentence
    naming the source, the committed pages stay committed, nothing of the failing page is
    written, and the next run (source back) resumes from the cursor: nothing lost or doubled."""
    plan = FaultPlan(server_errors=-1, errors_after=2)
    with case(plan, label="outage") as c:
        message = c.fails()
        assert c.name in message and "HTTP 503" in message and "unreachable" in message
        assert query("SELECT count(*) FROM enterprise WHERE source = %s", c.name)[0][0] > 0
        workers_before = query("SELECT count(*) FROM worker WHERE source = %s", c.name)[0][0]
        assert 0 < workers_before < 240, "page 1 of workers committed, the rest not"
        plan.server_errors = 0
        c.sync()
        oracle(c.name, dataset)
    assert plan.fired["5xx"] >= 4


def test_breaking_schema_drift_fails_before_anything_of_the_page_is_written(
    case: Any, dataset: SandboxDataset
) -> None:
    """Rule: a required field renamed by the city (sfzh -> sfzhm in every worker row) fails the run
    with one sentence naming the field, never a value, and writes nothing for workers (no rows,
    no quarantine, no cursor advance); enterprises, synced first, are unaffected. Once the city
    fixes its export the next run loads everything.

    Needs: check_schema(entity, page.records, mapping) in the flow before write_page."""
    plan = FaultPlan(renamed={"workers": {"sfzh": "sfzhm"}})
    with case(plan, label="drift") as c:
        message = c.fails()
        assert "'sfzh' (id_number)" in message and "'sfzhm'" in message
        assert all(r.row["sfzh"] not in message for r in dataset.rows("workers"))
        nothing_written(c.name, "workers")
        oracle(c.name, dataset, entities=("enterprises",))
        plan.renamed = {}
        c.sync()
        oracle(c.name, dataset)
    assert plan.fired["drift"] >= 1


def test_a_suspicious_day_fails_instead_of_being_loaded(case: Any, dataset: SandboxDataset) -> None:
    """Rule: after three normal full runs, a day with under half the usual volume (a thin export,
    then an empty one) fails with one sentence and changes nothing in the tables.

    Needs: volume_check(page.total, <received of the last completed runs of the same source,
    entity and mode>) in the flow on the first page of each stream, before write_page."""
    plan = FaultPlan()
    with case(plan, label="thin") as c:
        for _ in range(3):
            assert c.sync(full=True)["status"] == "completed"
        before = fingerprint(c.name)
        for share in (0.3, 0.0):
            plan.volume = share
            message = c.fails(full=True)
            assert "under 50% of the usual" in message
            assert fingerprint(c.name) == before
        plan.volume = None
        c.sync(full=True)
        oracle(c.name, dataset)
    assert plan.fired["volume"] >= 2


# --- file drops ---------------------------------------------------------------------------------


def test_a_file_drop_in_gbk_with_a_partial_file_and_a_redelivery(
    case: Any, dataset: SandboxDataset, tmp_path: Path
) -> None:
    """Rule: a city dropping GBK CSV and XLSX files: a file cut mid-row (manifest of the whole) is
    not read; once complete it is; the same file delivered again is not read again, and a new
    export of the same records changes nothing.

    Needs: fetch_page opening its source with connectors.sources.open_source(config)."""
    drop = tmp_path / "drop"
    enterprises = [r.row for r in dataset.rows("enterprises")]
    workers = [r.row for r in dataset.rows("workers")]
    write_drop_file(drop, "enterprises_20261120.csv", enterprises, encoding="gbk")
    write_drop_file(drop, "workers_20261120.xlsx", workers, fmt="xlsx", cut_mid_row=True)
    with case(label="files", folder=drop) as c:
        c.sync()
        oracle(c.name, dataset, entities=("enterprises",))
        nothing_written(c.name, "workers")
        write_drop_file(drop, "workers_20261120.xlsx", workers, fmt="xlsx")  # the upload completes
        c.sync()
        oracle(c.name, dataset)
        before = fingerprint(c.name)
        # The same files delivered again (byte for byte, under other names): never read again.
        shutil.copy(drop / "workers_20261120.xlsx", drop / "workers_20261120_again.xlsx")
        shutil.copy(drop / "workers_20261120.xlsx.sha256", drop / "workers_20261120_again.xlsx.sha256")
        write_drop_file(drop, "enterprises_20261120_resent.csv", enterprises, encoding="gbk")
        row = c.sync()
        assert row["received"] == 0 and fingerprint(c.name) == before
        # A fresh export of the same records (a new XLSX, so a new hash) is read, and changes nothing.
        write_drop_file(drop, "workers_20261121.xlsx", workers, fmt="xlsx")
        row = c.sync()
        assert row["received"] == 240 and row["loaded"] == 0 and fingerprint(c.name) == before
