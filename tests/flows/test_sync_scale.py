"""Province-scale sync behaviour: parallel cities, one run per source, full resync, Dask chunks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.sandbox.app import SandboxServer, create_app
from tests.conftest import write_sources
from tests.flows.helpers import env, fingerprint, query, sources_env
from tests.sandbox_labels import quarantined_labels

pytestmark = [pytest.mark.db, pytest.mark.flow]


def _down_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_one_failing_city_does_not_stop_the_others(
    prefect_harness, loaded_world, sandbox_url, tmp_path: Path
) -> None:
    """Cities sync in parallel; the parent run fails naming only the city that failed."""
    from flows.nightly_sync import SyncFailed, nightly_sync

    write_sources(tmp_path, par_a=sandbox_url, par_b=sandbox_url, par_down=_down_url())
    with sources_env(tmp_path), pytest.raises(SyncFailed) as info:
        nightly_sync(sources=["par_a", "par_down", "par_b"])
    message = str(info.value)
    assert "par_down" in message and "par_a" not in message and "par_b" not in message
    statuses = dict(query("SELECT source, status FROM sync_run WHERE source LIKE 'par_%%'"))
    assert statuses == {"par_a": "completed", "par_b": "completed", "par_down": "failed"}
    assert fingerprint("par_a")["worker"][0] > 0
    assert fingerprint("par_a") == fingerprint("par_b")


def test_two_runs_of_one_source_started_together_write_no_duplicates(
    prefect_harness, loaded_world, sandbox_url, sandbox_dataset, tmp_path: Path
) -> None:
    """A second run of a source while one holds it is a no-op; the tables hold each record once."""
    from flows.nightly_sync import sync_source

    write_sources(tmp_path, twin=sandbox_url)
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(sync_source("twin"))

    with sources_env(tmp_path):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(r["status"] for r in results) in (["completed", "skipped"], ["completed", "completed"])
    labels = sandbox_dataset.labels("workers")
    good = len(labels) - len(quarantined_labels("workers", labels))  # loaded: all but record problems
    rows = query("SELECT count(*), count(DISTINCT source_record_id) FROM worker WHERE source = 'twin'")[0]
    assert rows == (good, good)
    dup_q = query(
        "SELECT count(*) FROM (SELECT raw_hmac, reason_code FROM quarantine WHERE source = 'twin'"
        " GROUP BY 1, 2 HAVING count(*) > 1) d"
    )[0][0]
    assert dup_q == 0


class _Without:
    """The sandbox dataset with some worker records gone from the city's system."""

    def __init__(self, dataset: Any, gone: set[str]) -> None:
        self._d, self._gone = dataset, gone
        self.entities, self.city_code, self.crs = dataset.entities, dataset.city_code, dataset.crs

    def rows(self, entity: str) -> Sequence[Any]:
        rows = self._d.rows(entity)
        return [r for r in rows if r.record_id not in self._gone] if entity == "workers" else rows


def test_full_resync_soft_deletes_records_gone_from_two_snapshots(
    prefect_harness, loaded_world, sandbox_dataset, tmp_path: Path
) -> None:
    """Full mode sees disappearances: after two full snapshots without a record it is soft-deleted."""
    from flows.nightly_sync import sync_source

    labels = sandbox_dataset.labels("workers")
    gone = {rid for rid, label in list(labels.items())[:40] if label == "ok"}
    assert len(gone) >= 20
    with (
        SandboxServer(create_app(sandbox_dataset)) as full_server,
        SandboxServer(
            create_app(_Without(sandbox_dataset, gone))  # type: ignore[arg-type]
        ) as partial_server,
    ):
        write_sources(tmp_path, fullsrc=full_server.base_url)
        with sources_env(tmp_path):
            sync_source("fullsrc", full=True)
        write_sources(tmp_path, fullsrc=partial_server.base_url)
        with sources_env(tmp_path):
            once = sync_source("fullsrc", full=True)
            twice = sync_source("fullsrc", full=True)
    assert (once["missing"], once["soft_deleted"]) == (len(gone), 0)
    assert (twice["missing"], twice["soft_deleted"]) == (len(gone), len(gone))
    deleted = {
        r[0]
        for r in query(
            "SELECT source_record_id FROM worker WHERE source = 'fullsrc' AND deleted_at IS NOT NULL"
        )
    }
    assert deleted == gone


def test_dask_cluster_path_yields_the_same_rows_as_threads(
    prefect_harness, loaded_world, sandbox_url, tmp_path: Path
) -> None:
    """Chunks prepared on a local Dask cluster (worker processes) give exactly the thread path's rows."""
    from distributed import Client, LocalCluster

    from flows.nightly_sync import nightly_sync

    write_sources(tmp_path, via_threads=sandbox_url, via_dask=sandbox_url)
    with sources_env(tmp_path):
        nightly_sync(sources=["via_threads"])
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            with env(GRIDFLOW_DASK_ADDRESS=cluster.scheduler_address):
                nightly_sync(sources=["via_dask"])
            with Client(cluster) as client:
                built = client.run(_contexts_built)
    assert fingerprint("via_dask") == fingerprint("via_threads")
    assert fingerprint("via_dask")["worker"][0] > 0
    assert sum(built.values()) > 0, "chunks were prepared in the Dask worker processes"


def _contexts_built() -> int:
    import flows.pipeline

    return len(flows.pipeline._contexts)


def test_a_whole_stream_refetch_skips_the_same_records_with_or_without_the_version_map(
    prefect_harness, loaded_world, sandbox_url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipping rule: a run that fetches a whole stream again (cursor and watermark gone) skips
    every stored record at its version and writes nothing — whether it holds the stream's
    versions in memory or, past GRIDFLOW_VERSION_MAP_LIMIT, looks them up page by page."""
    from flows.nightly_sync import sync_source
    from grid.sync import store as sync

    lookups: list[str] = []
    real_lookup = sync.existing_versions

    def counted(cur: Any, *, source: str, entity: str, ids: Sequence[str]) -> Any:
        lookups.append(source)
        return real_lookup(cur, source=source, entity=entity, ids=ids)

    monkeypatch.setattr(sync, "existing_versions", counted)  # a spy: the real lookup still runs
    write_sources(tmp_path, mapped=sandbox_url, perpage=sandbox_url)
    rows = {}
    for name, limit in (("mapped", "2000000"), ("perpage", "1")):
        with sources_env(tmp_path), env(GRIDFLOW_VERSION_MAP_LIMIT=limit):
            first = sync_source(name)
            before = fingerprint(name)
            query("DELETE FROM source_cursor WHERE source = %s RETURNING 1", name)
            again = sync_source(name)
        assert fingerprint(name) == before
        assert (lookups.count(name) > 0) == (name == "perpage")  # the path each limit chose
        assert again["loaded"] == 0
        assert again["received"] == first["received"]
        assert again["unchanged"] == first["loaded"] + first["unchanged"]
        rows[name] = (first, again, before)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("source", "run_id")}  # noqa: E731
    assert strip(rows["mapped"][1]) == strip(rows["perpage"][1])
    assert {t: n for t, (n, _) in rows["mapped"][2].items()} == {
        t: n for t, (n, _) in rows["perpage"][2].items()
    }
