"""``gridflow officers import``: a city's roster spreadsheet through the same validation, quarantine
and versioned write as the sync; and accounts tied to the roster (``gridflow users add --officer``)
whose cells follow it."""

from __future__ import annotations

import csv
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.sandbox.roster import ROSTER_MAPPING, roster_rows
from grid.store.db import connect, transaction
from gridflow_cli.main import app
from tests.conftest import SANDBOX_AS_OF, write_sources
from tests.flows.helpers import sources_env

pytestmark = pytest.mark.db


def _q(sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROSTER_MAPPING.values()))
        w.writeheader()
        w.writerows(rows)


def test_a_roster_spreadsheet_is_validated_quarantined_and_loaded_with_bad_rows_named_by_line(
    loaded_world: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    name = f"sheet{secrets.token_hex(3)}"
    cells = [c.code for c in loaded_world.cells][:120]
    rows = roster_rows(cells, seed=5, as_of=datetime.fromisoformat(SANDBOX_AS_OF))
    bad = {r.label for r in rows if r.label not in ("ok", "inactive")}
    assert bad == {"missing_record_id", "bad_phone", "unknown_cell", "missing_field"}
    sheet = tmp_path / "roster.csv"
    _write_csv(sheet, [r.row for r in rows])
    write_sources(tmp_path, **{name: "http://127.0.0.1:9"})
    runner = CliRunner()
    with sources_env(tmp_path):
        out = runner.invoke(app, ["officers", "import", str(sheet), "--source", name])
    assert out.exit_code == 0, out.output
    good = [r for r in rows if r.label in ("ok", "inactive")]
    assert (
        f"received {len(rows)}, loaded {len(good)}, unchanged 0, quarantined {len(rows) - len(good)}"
        in out.output
    )
    # each bad row named by its line (header = line 1) and reason code, without a name or phone
    for i, r in enumerate(rows):
        if r.label in bad:
            assert f"line {i + 2}: {r.label}" in out.output
            assert str(r.row["xm"]) not in out.output or not r.row["xm"]
            assert str(r.row["lxdh"]) not in out.output
    assert _q("SELECT count(*) FROM officer WHERE source = %s", name) == [(len(good),)]
    assert _q("SELECT count(*) FROM quarantine WHERE source = %s AND entity = 'grid_officers'", name) == [
        (len(rows) - len(good),)
    ]
    # the same sheet again changes nothing
    with sources_env(tmp_path):
        again = runner.invoke(app, ["officers", "import", str(sheet), "--source", name])
    assert again.exit_code == 0 and f"loaded 0, unchanged {len(good)}" in again.output

    # an officer missing from two complete rosters in a row is gone (inactive, soft-deleted)
    leaver = next(r for r in good if r.label == "ok")
    _write_csv(sheet, [r.row for r in rows if r.record_id != leaver.record_id])
    with sources_env(tmp_path):
        runner.invoke(app, ["officers", "import", str(sheet), "--source", name])
        assert _q("SELECT active FROM officer WHERE source = %s AND source_record_id = %s", name,
                  leaver.record_id) == [(True,)]  # fmt: skip
        last = runner.invoke(app, ["officers", "import", str(sheet), "--source", name])
    assert "gone (missing twice): 1" in last.output
    assert _q("SELECT active, deleted_at IS NOT NULL FROM officer WHERE source = %s AND source_record_id = %s",
              name, leaver.record_id) == [(False, True)]  # fmt: skip


def test_an_account_tied_to_the_roster_follows_it(
    loaded_world: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """``users add --officer``: scope and cells come from the roster and change when it changes;
    list / disable / enable / reset-password / set-role are audited."""
    from grid.accounts.config import WebSettings
    from grid.accounts.sessions import LoginFailed, login, resume

    name = f"acct{secrets.token_hex(3)}"
    cells = [c.code for c in loaded_world.cells][200:260]
    as_of = datetime.fromisoformat(SANDBOX_AS_OF)
    rows = [r for r in roster_rows(cells, seed=9, as_of=as_of) if r.label == "ok"]
    officer = rows[0]
    sheet = tmp_path / "roster.csv"
    _write_csv(sheet, [r.row for r in rows])
    write_sources(tmp_path, **{name: "http://127.0.0.1:9"})
    runner = CliRunner()
    monkeypatch.setenv("GRIDFLOW_NEW_USER_PASSWORD", "a long enough secret")
    login_name = f"wg-{name}"
    with sources_env(tmp_path):
        assert runner.invoke(app, ["officers", "import", str(sheet), "--source", name]).exit_code == 0
        add = runner.invoke(
            app, ["users", "add", login_name, "--officer", officer.record_id, "--source", name]
        )
        assert add.exit_code == 0, add.output
        first_cells = str(officer.row["fzwg"]).split(",")
        assert f"scope {first_cells[0][:12]}" in add.output and "cells follow the roster" in add.output
        web = WebSettings()
        conn = connect()
        try:
            s = login(conn, login=login_name, password="a long enough secret", client="t", web=web)
            assert s.principal.cells == tuple(sorted(first_cells)) and s.principal.officer_id is not None
            # the roster moves the officer to another cell: the next request sees the new cells
            moved = dict(officer.row)
            moved.update(fzwg=cells[-1], gxsj=(as_of + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S"))
            _write_csv(sheet, [moved, *(r.row for r in rows[1:])])
            assert runner.invoke(app, ["officers", "import", str(sheet), "--source", name]).exit_code == 0
            now = resume(conn, token=s.token, web=web)
            assert now is not None and now.principal.cells == (cells[-1],)
            # disabled: the session is revoked and the login refused; enabled again: it signs in
            assert runner.invoke(app, ["users", "disable", login_name]).exit_code == 0
            assert resume(conn, token=s.token, web=web) is None
            with pytest.raises(LoginFailed):
                login(conn, login=login_name, password="a long enough secret", client="t", web=web)
            assert _q("SELECT revoked_at IS NOT NULL FROM web_session WHERE token_hash = sha256(%s::bytea)",
                      s.token.encode()) == [(True,)]  # fmt: skip
            assert runner.invoke(app, ["users", "enable", login_name]).exit_code == 0
            monkeypatch.setenv("GRIDFLOW_NEW_USER_PASSWORD", "another long secret")
            assert runner.invoke(app, ["users", "reset-password", login_name]).exit_code == 0
            login(conn, login=login_name, password="another long secret", client="t", web=web)
        finally:
            conn.close()
        refused = runner.invoke(app, ["users", "set-role", login_name, "--role", "community"])
        assert refused.exit_code == 1 and "follows the roster" in refused.output
        listed = runner.invoke(app, ["users", "list", "--scope", cells[-1][:12]])
        assert login_name in listed.output and officer.record_id in listed.output
        audit = runner.invoke(app, ["users", "audit", login_name])
    actions = [line.split()[4] for line in audit.output.splitlines() if login_name in line]
    assert actions == ["reset_password", "enable", "disable", "add"]
    assert "secret" not in audit.output
