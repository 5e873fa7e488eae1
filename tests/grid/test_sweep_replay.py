"""Sweep replay without writes: ``gridflow sweep --now T --dry-run`` says what would be reminded
(催办), criticised (通报) and escalated at T and leaves every table as it was; a sweep at a time after
the database clock is refused unless it is a drill (``--commit``), whose events say ``replayed``."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg2.extensions
import pytest
import typer
from typer.testing import CliRunner

from grid.cases.intake import open_case
from grid.cases.queries import events_of
from grid.cases.states import Action
from grid.cases.sweep import FutureSweep, sweep
from grid.store.db import transaction
from gridflow_cli.cases import sweep_command
from tests.grid.test_case_store import RULES, World, make_world, report

pytestmark = pytest.mark.db

SH = ZoneInfo("Asia/Shanghai")


def checksums(conn: psycopg2.extensions.connection) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the sorted rows of every table in the database's own schema."""
    out: dict[str, tuple[int, str]] = {}
    with transaction(conn) as cur:
        cur.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
            "'information_schema') ORDER BY 1, 2"
        )
        tables = [(str(s), str(t)) for s, t in cur.fetchall()]
        for schema, table in tables:
            cur.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                f'FROM "{schema}"."{table}" t'
            )
            n, digest = cur.fetchone()  # type: ignore[misc]
            out[f"{schema}.{table}"] = (int(n), str(digest))
    return out


def _db_now(conn: psycopg2.extensions.connection) -> datetime:
    with transaction(conn) as cur:
        cur.execute("SELECT now()")
        row = cur.fetchone()
        assert row is not None
        return row[0].astimezone(SH)  # type: ignore[no-any-return]


def _overdue_next_month(conn: psycopg2.extensions.connection) -> tuple[World, int, datetime]:
    """A community case opened now: by next month both its reminder and criticism are due."""
    world = make_world(conn)
    now = _db_now(conn)
    cid = open_case(conn, report=report(world), rules=RULES, actor="t", at=now).case_id
    return world, cid, now + timedelta(days=31)


def _cli(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    app.command()(sweep_command)
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_dry_run_next_month_prints_counts_and_writes_nothing(conn: psycopg2.extensions.connection) -> None:
    """Rule: ``sweep --now <next month> --dry-run`` lists and counts the reminder, the criticism
    and the escalation it would make; every table's checksum is unchanged afterwards."""
    world, cid, next_month = _overdue_next_month(conn)
    before = checksums(conn)
    code, out = _cli("--now", next_month.isoformat(), "--scope", world.town, "--dry-run")
    assert code == 0, out
    assert "dry run (nothing written)" in out
    assert "1 reminded, 1 criticised, 1 escalated" in out
    assert f"case {cid}: remind due" in out and f"would remind {world.cells[0]}" in out
    assert f"would criticise_and_escalate {world.cells[0]} -> town {world.town}" in out
    assert checksums(conn) == before


def test_future_sweep_is_refused_without_commit(conn: psycopg2.extensions.connection) -> None:
    """Rule: a sweep never writes events dated after the database clock unless asked explicitly."""
    world, _, next_month = _overdue_next_month(conn)
    before = checksums(conn)
    code, out = _cli("--now", next_month.isoformat(), "--scope", world.town)
    assert code == 1
    assert "after the database clock" in out and "--dry-run" in out
    with pytest.raises(FutureSweep):
        sweep(conn, now=next_month, rules=RULES, scope=world.town)
    assert checksums(conn) == before


def test_a_drill_with_commit_writes_events_marked_replayed(conn: psycopg2.extensions.connection) -> None:
    """Rule: ``--commit`` writes the future-dated drill, and each event it writes says replayed."""
    world, cid, next_month = _overdue_next_month(conn)
    code, out = _cli("--now", next_month.isoformat(), "--scope", world.town, "--commit")
    assert code == 0, out
    assert "1 escalated" in out and "replayed" in out
    swept = [s.event for s in events_of(conn, case_id=cid) if s.event.actor == "system:sweep"]
    assert [e.action for e in swept] == [Action.URGE, Action.ESCALATE]
    assert all(e.payload.get("replayed") is True for e in swept)


def test_a_sweep_at_the_present_is_not_marked(conn: psycopg2.extensions.connection) -> None:
    """Rule: only future-dated sweeps are drills; a replay of a past time writes unmarked events."""
    world = make_world(conn)
    opened = _db_now(conn) - timedelta(days=40)
    cid = open_case(conn, report=report(world), rules=RULES, actor="t", at=opened).case_id
    rep = sweep(conn, now=_db_now(conn), rules=RULES, scope=world.town)
    assert (rep.reminded, rep.escalated, rep.replayed) == (1, 1, False)
    swept = [s.event for s in events_of(conn, case_id=cid) if s.event.actor == "system:sweep"]
    assert swept and all("replayed" not in e.payload for e in swept)
