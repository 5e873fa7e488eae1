"""Benchmark: the escalation sweep over 200,000 open cases with 10,000 steps due, against a naive loop.

Run from the repository root: ``.venv/bin/python -m bench.bench_sweep [--cases N] [--due N]``

Workload, seeded by COPY into a throwaway database on the project cluster (dropped at the end):
one city of 10 counties x 10 towns x 10 communities x 20 cells, a union unit at every level and a
grid officer in every cell; ``--cases`` open community-level wage-arrears cases (hash-chained
``open`` events, deadlines on the official calendar, two queued steps each). Of them ``--due``
have one step due at the sweep's time: half a reminder (催办), half a criticism with escalation
(通报 + one level up, new deadlines, new steps) whose reminder already fired.

Measured in this process, same run:

* baseline: a naive per-case loop — one transaction per due step, the case locked and every row
  written with its own INSERT/UPDATE (the same decisions, via ``plan_case``) — over
  ``--baseline`` due steps of a second city, extrapolated to ``--due`` steps;
* ours: ``grid.cases.sweep.sweep`` (batches under ``FOR UPDATE SKIP LOCKED``, COPY and set-based
  updates), then a second sweep at the same time (idempotence: it must find nothing).

Issue target: the sweep of 10,000 due steps among 200,000 open cases in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extensions

from bench._util import scratch_database, timed, verdict
from connectors.kinds import CaseKind
from geodata.codes import Level
from grid.cases.deadlines import deadlines_for
from grid.cases.outbox import OUTBOX_COLUMNS
from grid.cases.owners import owner_candidates, units_exist
from grid.cases.policy import ProvincePolicy, build_calendar
from grid.cases.queries import events_of, fold
from grid.cases.states import Action, record
from grid.cases.store import (
    CASE_HEAD_COLUMNS,
    EVENT_COLUMNS,
    STEP_COLUMNS,
    CaseHead,
    CaseRules,
    event_row,
    step_rows,
)
from grid.cases.sweep import DueStep, SweepReport, _Plan, plan_case, sweep
from grid.store.copy import copy_rows

TARGET_S = 10.0
SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=SH)
CITY, BASELINE_CITY = "4205", "4206"


def cells_of(city: str, n_cells: int) -> list[str]:
    """Cell codes of a city: 10 counties x 10 towns x 10 communities x (n_cells / 1000) cells."""
    per = max(1, n_cells // 1000)
    return [
        f"42{city[2:4]}{dd:02d}{ttt:03d}{vvv:03d}{c:03d}"
        for dd in range(1, 11)
        for ttt in range(1, 11)
        for vvv in range(1, 11)
        for c in range(1, per + 1)
    ]


def _open_date(rules: CaseRules, want: str) -> datetime:
    """An opening time whose steps put ``want`` ('remind' or 'criticise') due at NOW, the next not."""
    for back in range(1, 60):
        opened = (NOW - timedelta(days=back)).replace(hour=10, minute=0)
        rows = step_rows(
            1,
            level=Level.COMMUNITY,
            owner_code="0" * 15,
            resolve_by=deadlines_for(
                CaseKind.WAGE_ARREARS, Level.COMMUNITY, opened, rules.policy, rules.calendar
            ).resolve_by,
            version=1,
            rules=rules,
        )
        remind, criticise = rows[0][2], rows[1][2]
        if want == "remind" and remind <= NOW < criticise:
            return opened
        if want == "criticise" and criticise <= NOW:
            return opened
    raise AssertionError(f"no opening date puts a {want} due at {NOW}")


def seed(conn: psycopg2.extensions.connection, *, city: str, cases: int, due: int, rules: CaseRules) -> int:
    """COPY units, officers, cases, open events and steps for one city; returns the due steps."""
    cells = cells_of(city, cases // 10 if cases >= 10_000 else 1000)
    units: set[tuple[str, int]] = {("420000000000", 1), (f"42{city[2:4]}00000000", 2)}
    for cell in cells:
        units.add((cell[:6] + "000000", 3))
        units.add((cell[:9] + "000", 4))
        units.add((cell[:12], 5))
    fresh = (NOW - timedelta(days=2)).replace(hour=10, minute=0)
    groups = [
        ("remind", _open_date(rules, "remind"), due // 2),
        ("criticise", _open_date(rules, "criticise"), due - due // 2),
    ]
    deadlines_cache: dict[datetime, Any] = {}

    def dl(opened: datetime) -> Any:
        if opened not in deadlines_cache:
            deadlines_cache[opened] = deadlines_for(
                CaseKind.WAGE_ARREARS, Level.COMMUNITY, opened, rules.policy, rules.calendar
            )
        return deadlines_cache[opened]

    with conn.cursor() as cur:
        cur.execute("SELECT code FROM unit")
        present = {r[0] for r in cur.fetchall()}
        copy_rows(
            cur,
            "unit",
            ("code", "level", "name"),
            [(c, lv, "bench union") for c, lv in sorted(units) if c not in present],
        )
        cur.execute(
            "WITH o AS (INSERT INTO officer (source_record_id, name) "
            "SELECT 'wg' || c, '网格员' FROM unnest(%s::text[]) c "
            "RETURNING id, source_record_id AS code) INSERT INTO officer_cell (officer_id, cell_code) "
            "SELECT id, substr(code, 3) FROM o",
            (sorted(cells),),
        )
        cur.execute("SELECT coalesce(max(id), 0) FROM case_file")
        row = cur.fetchone()
        first_id = int(row[0]) + 1 if row else 1
        case_rows: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        pending: list[tuple[Any, ...]] = []
        fired: list[tuple[Any, ...]] = []
        plan = [g for g in groups for _ in range(g[2])]
        plan += [("fresh", fresh, 0)] * (cases - len(plan))
        random.Random(7).shuffle(plan)
        routing = json.dumps({"rule": "dispute_default", "level": "community", "bench": True})
        for i, (group, opened, _) in enumerate(plan):
            cid = first_id + i
            cell = cells[i % len(cells)]
            d = dl(opened)
            ev, st = record(
                None,
                action=Action.OPEN,
                actor="bench",
                at=opened,
                case_id=str(cid),
                payload={"owner_code": cell, "level": 5, "rule": "dispute_default", "chain_code": cell},
            )
            events.append(event_row(ev, owner_before=None, after=st))
            steps = step_rows(
                cid, level=Level.COMMUNITY, owner_code=cell, resolve_by=d.resolve_by, version=1, rules=rules
            )
            if group == "criticise":  # the reminder already fired: its event and a done step
                ev2, st = record(
                    st,
                    action=Action.URGE,
                    actor="system:sweep",
                    at=steps[0][2],
                    payload={"kind": "remind", "reminded_unit": cell, "step_id": 0, "due_at": steps[0][2]},
                )
                events.append(event_row(ev2, owner_before=cell, after=st))
                fired.append((*steps[0], steps[0][2], "fired"))
                pending.append(steps[1])
            else:
                pending.extend(steps)
            case_rows.append(
                (
                    cid, "wage_arrears", "dispute", "normal", 1, "sync", cell, cell[:12], cell, 5, cell, st.state.value,
                    st.version, False, routing, opened, d.respond_by, d.resolve_by, d.mediation_window_ends,
                    d.provisional, st.last_hash,
                )
            )  # fmt: skip
        copy_rows(
            cur,
            "case_file",
            (
                "id", "kind", "family", "severity", "workers_affected", "channel", "cell_code", "division_code",
                "chain_code", "level", "owner_code", "state", "version", "dual_report", "routing", "opened_at",
                "respond_by", "resolve_by", "mediation_window_ends", "deadlines_provisional", "head_hash",
            ),
            case_rows,
        )  # fmt: skip
        copy_rows(cur, "case_event", EVENT_COLUMNS, events)
        copy_rows(cur, "escalation_step", STEP_COLUMNS, pending)
        copy_rows(cur, "escalation_step", (*STEP_COLUMNS, "done_at", "outcome"), fired)
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('case_file', 'id'), (SELECT max(id) FROM case_file))"
        )
    conn.commit()
    return due


def naive_sweep(
    conn: psycopg2.extensions.connection, *, now: datetime, rules: CaseRules, scope_prefix: str
) -> int:
    """The baseline: one transaction per due step, every row written with its own statement."""
    n = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT s.id, s.case_id, s.kind, s.due_at, s.owner_code FROM escalation_step s "
                "JOIN case_file c ON c.id = s.case_id WHERE s.done_at IS NULL AND s.due_at <= %s "
                "AND c.chain_code LIKE %s ORDER BY s.due_at, s.id LIMIT 1",
                (now, scope_prefix + "%"),
            )
            step = cur.fetchone()
            if step is None:
                conn.commit()
                return n
            cur.execute(f"SELECT {CASE_HEAD_COLUMNS} FROM case_file WHERE id = %s FOR UPDATE", (step[1],))
            row = cur.fetchone()
            assert row is not None
            head = CaseHead.from_row(row)
            up = Level(int(head.level) - 1)
            units = units_exist(cur, owner_candidates(head.chain_code, up, max_level=rules.max_level))
            plan = _Plan()
            plan_case(
                head,
                [DueStep(int(step[0]), int(step[1]), str(step[2]), step[3], str(step[4]))],
                now=now,
                rules=rules,
                units=units,
                report=SweepReport(now=now),
                plan=plan,
            )
            for ev in plan.events:
                cur.execute(
                    f"INSERT INTO case_event ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * 13)})",
                    ev,
                )
            for u in plan.case_updates:
                cur.execute(
                    "UPDATE case_file SET state = %s, level = %s, owner_code = %s, version = %s, head_hash = %s, "
                    "respond_by = %s, resolve_by = %s, deadlines_provisional = COALESCE(%s, deadlines_provisional) "
                    "WHERE id = %s AND version = %s",
                    (*u[2:], u[0], u[1]),
                )
            for sid, outcome in plan.step_done:
                cur.execute(
                    "UPDATE escalation_step SET done_at = %s, outcome = %s WHERE id = %s", (now, outcome, sid)
                )
            for cid in plan.escalated_cases:
                cur.execute(
                    "UPDATE escalation_step SET done_at = %s, outcome = 'superseded' "
                    "WHERE case_id = %s AND done_at IS NULL",
                    (now, cid),
                )
            for s in plan.new_steps:
                cur.execute(
                    f"INSERT INTO escalation_step ({', '.join(STEP_COLUMNS)}) VALUES ({', '.join(['%s'] * 8)})",
                    s,
                )
            for nt in plan.notices:
                cur.execute(
                    f"INSERT INTO notification_outbox ({', '.join(OUTBOX_COLUMNS)}) "
                    f"VALUES ({', '.join(['%s'] * len(OUTBOX_COLUMNS))})",
                    nt.row(),
                )
        conn.commit()
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=300, help="due steps swept by the naive loop")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    policy = ProvincePolicy()
    rules = CaseRules(policy, build_calendar(policy))
    with scratch_database() as url:
        conn = psycopg2.connect(url)
        try:
            t0 = time.perf_counter()
            seed(conn, city=CITY, cases=args.cases, due=args.due, rules=rules)
            seed(conn, city=BASELINE_CITY, cases=args.baseline * 4, due=args.baseline, rules=rules)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM ANALYZE")
                cur.execute("SELECT count(*) FROM case_file WHERE state NOT IN ('resolved', 'closed')")
                open_cases = cur.fetchone()[0]  # type: ignore[index]
                cur.execute(
                    "SELECT count(*) FROM escalation_step WHERE done_at IS NULL AND due_at <= %s", (NOW,)
                )
                due_now = cur.fetchone()[0]  # type: ignore[index]
            conn.autocommit = False
            seed_s = time.perf_counter() - t0
            print(
                f"bench_sweep: {open_cases:,} open cases, {due_now:,} steps due at {NOW.isoformat()} "
                f"(seeded by COPY in {seed_s:.1f} s)"
            )

            n_naive, naive_t = timed(
                lambda: naive_sweep(conn, now=NOW, rules=rules, scope_prefix="42" + BASELINE_CITY[2:4])
            )
            per_step = naive_t.wall_s / max(n_naive, 1)
            print(
                f"{'baseline (naive)':<20}{n_naive:>7,} steps {naive_t.wall_s:8.2f} s  "
                f"-> {args.due:,} steps extrapolated: {per_step * args.due:8.2f} s"
            )
            rep, t = timed(
                lambda: sweep(conn, now=NOW, rules=rules, batch=args.batch, scope="42" + CITY[2:4] + "0" * 8)
            )
            print(
                f"{'sweep (ours)':<20}{rep.steps:>7,} steps {t.wall_s:8.2f} s  ({t.cpu_s:.2f} CPU-s in Python; "
                f"{rep.batches} batches; {rep.reminded:,} reminded, {rep.escalated:,} escalated, "
                f"{rep.notices:,} notices, {rep.events:,} events)"
            )
            again, t2 = timed(lambda: sweep(conn, now=NOW, rules=rules, batch=args.batch))
            print(
                f"{'second sweep':<20}{again.steps:>7,} steps {t2.wall_s:8.2f} s  (idempotent: nothing left to do)"
            )
            speedup = per_step * args.due / t.wall_s if t.wall_s else float("inf")
            print(f"speed-up over the naive loop: {speedup:.1f}x")

            # spot-check: replaying the events of swept cases gives their rows
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT id, state, level, owner_code, version, head_hash FROM case_file "
                    "WHERE version > 1 ORDER BY random() LIMIT 200"
                )
                sample = cur.fetchall()
            bad = 0
            for cid, state, level, owner, version, head in sample:
                r = fold([s.event for s in events_of(conn, case_id=cid)])
                bad += (r.state.value, int(r.level), r.owner_code, r.version, r.head_hash) != (
                    state,
                    level,
                    owner,
                    version,
                    head,
                )
            print(f"replay spot-check: {len(sample) - bad}/{len(sample)} swept cases replay to their rows")
            ok = t.wall_s < TARGET_S and rep.steps == args.due and again.steps == 0 and bad == 0
            print(
                f"target: {args.due:,} due among {args.cases:,} open swept in < {TARGET_S:.0f} s -> {verdict(ok)}"
            )
        finally:
            conn.close()


if __name__ == "__main__":
    main()
