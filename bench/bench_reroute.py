"""Benchmark: a province-scale grid change — 500 changed cells among 50,000, 200,000 open cases.

Run from the repository root: ``.venv/bin/python -m bench.bench_reroute [--cases N] [--baseline N]``
(``--cells 2000 --cases 300 --splits 1 --merges 1 --shifts 0``: the demo's size, a 3-cell change).

Workload, in a throwaway database on the project cluster (dropped at the end): one city of
``--cells`` = 50,000 square cells (10 counties x 10 towns x 10 communities x 50 cells, a 250 x
200 raster), committed as version 1 through ``grid.cells.imports.commit_import``; a union unit at every level and
a grid officer in every cell; ``--cases`` open wage-arrears cases spread evenly over the cells, each
with a hash-chained ``open`` event and two queued steps, nine in ten with a point inside their
cell (the rest filed without one). The change, a whole-city file of the new grid: 150 cells split
in two (the left half keeps the code), 100 pairs of neighbours merged (the left code survives),
75 pairs whose shared edge shifts by 30 % of a cell — 500 changed cells, 49,500 untouched.

Measured in this process, same run:

* baseline: the re-route planner this replaced (``plan_reroute`` before issue 20: one LATERAL
  sub-select per open case, kept verbatim below), run over a random slice of ``--baseline``
  cases of the rehearsed new version, extrapolated to every open case;
* ours: the set-based planner on the same rehearsal (the re-route's own share), then the whole
  dry run ``plan_import`` (diff, rehearsed write, plan; rolled back) and ``commit_import``
  (new version, bulk relabel, the moved cases' events in batches), checked afterwards: every open
  case rides the new version, every moved case has one re-route event, replays of a sample match.

Targets (issue 20): dry run <= 10 s, commit <= 60 s, planning >= 50x the old query.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extensions
from shapely.geometry import box

from bench._util import scratch_database, timed, verdict
from connectors.kinds import CaseKind
from geodata.codes import Level
from geodata.imports import CellFeature
from grid.cases import reroute_plan
from grid.cases.deadlines import deadlines_for
from grid.cases.policy import ProvincePolicy, build_calendar
from grid.cases.queries import events_of, fold
from grid.cases.states import Action, record
from grid.cases.store import EVENT_COLUMNS, STEP_COLUMNS, CaseRules, event_row, step_rows
from grid.cells import imports as store
from grid.store.copy import copy_rows

DRY_RUN_TARGET_S = 10.0
COMMIT_TARGET_S = 60.0
SPEEDUP_TARGET = 50.0
SH = ZoneInfo("Asia/Shanghai")
OPENED = datetime(2026, 11, 20, 10, 0, tzinfo=SH)
CITY = "420500000000"
COLS = 250  # cells per raster row
W = 0.002  # cell side, degrees
X0, Y0 = 111.0, 30.5
V1_FROM, V2_FROM = date(2026, 1, 1), date(2026, 12, 5)

# The planner this replaced, verbatim but for the slice filter (c.id = ANY(%(slice)s)).
OLD_PLAN = """
    SELECT c.id, c.chain_code, m.code, m.how
    FROM case_file c
    LEFT JOIN LATERAL (
        SELECT code, how FROM (
            SELECT g.code::text AS code, 'point' AS how, 1 AS pref FROM grid_cell g
                WHERE c.geom IS NOT NULL AND g.version_id = %(new)s AND ST_Covers(g.geom, c.geom)
            UNION ALL
            SELECT g.code::text, 'same_code', 2 FROM grid_cell g
                WHERE g.version_id = %(new)s AND g.code = c.chain_code
            UNION ALL
            SELECT g.code::text, 'overlap', 3 FROM grid_cell g
                JOIN grid_cell o ON o.version_id = %(old)s AND o.code = c.chain_code
                WHERE g.version_id = %(new)s AND ST_Covers(g.geom, ST_PointOnSurface(o.geom))
        ) x ORDER BY pref, code LIMIT 1
    ) m ON true
    WHERE c.chain_version_id = %(old)s AND c.state NOT IN ('resolved', 'closed') AND c.id = ANY(%(slice)s)
    ORDER BY c.id
"""


def code_of(i: int) -> str:
    county, town, comm, seq = i // 5000 + 1, (i // 500) % 10 + 1, (i // 50) % 10 + 1, i % 50 + 1
    return f"4205{county:02d}{town:03d}{comm:03d}{seq:03d}"


def box_of(i: int) -> tuple[float, float, float, float]:
    col, row = i % COLS, i // COLS
    return (X0 + col * W, Y0 + row * W, X0 + (col + 1) * W, Y0 + (row + 1) * W)


def feature(code: str, bounds: tuple[float, float, float, float], n: int) -> CellFeature:
    return CellFeature(code, code[:12], f"网格{code[-3:]}", box(*bounds), n, generated=True)


def old_grid(n_cells: int) -> list[CellFeature]:
    return [feature(code_of(i), box_of(i), i) for i in range(n_cells)]


def changed_grid(
    n_cells: int, *, splits: int, merges: int, shifts: int, seed: int = 20
) -> tuple[list[CellFeature], dict[str, int]]:
    """The new grid: ``splits`` cells split, ``merges`` pairs merged, ``shifts`` edges shifted."""
    rnd = random.Random(seed)
    used: set[int] = set()
    bounds = {i: box_of(i) for i in range(n_cells)}
    extra: dict[str, tuple[float, float, float, float]] = {}
    removed: set[int] = set()

    def pick(pair: bool) -> int:
        while True:
            i = rnd.randrange(n_cells)
            if pair and (i % COLS == COLS - 1 or i + 1 in used):
                continue
            if i not in used:
                used.update((i, i + 1) if pair else (i,))
                return i

    for _ in range(splits):  # split: the left half keeps the code, the right half is a new cell
        i = pick(False)
        x0, y0, x1, y1 = bounds[i]
        mid = (x0 + x1) / 2
        bounds[i] = (x0, y0, mid, y1)
        extra[code_of(i)[:12] + f"{500 + i % 50:03d}"] = (mid, y0, x1, y1)
    for _ in range(merges):  # merge i and its right neighbour into i
        i = pick(True)
        bounds[i] = (bounds[i][0], bounds[i][1], bounds[i + 1][2], bounds[i][3])
        removed.add(i + 1)
    for _ in range(shifts):  # shift the shared edge of i and i + 1 to the right
        i = pick(True)
        edge = bounds[i][2] + 0.3 * W
        bounds[i] = (bounds[i][0], bounds[i][1], edge, bounds[i][3])
        bounds[i + 1] = (edge, bounds[i + 1][1], bounds[i + 1][2], bounds[i + 1][3])
    cells = [feature(code_of(i), b, i) for i, b in bounds.items() if i not in removed]
    cells += [feature(code, b, n_cells + n) for n, (code, b) in enumerate(sorted(extra.items()))]
    return cells, {
        "split": splits,
        "merged pairs": merges,
        "shifted pairs": shifts,
        "old cells changed": len(used),
    }


def seed_cases(
    conn: psycopg2.extensions.connection, *, cases: int, n_cells: int, version: int, rules: CaseRules
) -> None:
    """COPY units, officers, open cases (points inside their cells), open events and steps."""
    rnd = random.Random(7)
    codes = [code_of(i) for i in range(n_cells)]
    units = {("420000000000", 1), (CITY, 2)}
    for c in codes:
        units.update({(c[:6] + "000000", 3), (c[:9] + "000", 4), (c[:12], 5)})
    officers = codes + [c[:12] + f"{500 + i % 50:03d}" for i, c in enumerate(codes)]
    dl = deadlines_for(CaseKind.WAGE_ARREARS, Level.COMMUNITY, OPENED, rules.policy, rules.calendar)
    steps_tmpl = step_rows(
        0, level=Level.COMMUNITY, owner_code="0" * 15, resolve_by=dl.resolve_by, version=1, rules=rules
    )
    routing = json.dumps({"rule": "dispute_default", "level": "community", "bench": True})
    case_rows: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    steps: list[tuple[Any, ...]] = []
    for k in range(cases):
        cid = k + 1
        i = k % n_cells
        cell = codes[i]
        x0, y0, x1, y1 = box_of(i)
        point = None
        if rnd.random() < 0.9:
            point = f"SRID=4326;POINT({rnd.uniform(x0 + 1e-6, x1 - 1e-6)!r} {rnd.uniform(y0 + 1e-6, y1 - 1e-6)!r})"
        ev, st = record(
            None,
            action=Action.OPEN,
            actor="bench",
            at=OPENED,
            case_id=str(cid),
            payload={"owner_code": cell, "level": 5, "rule": "dispute_default", "chain_code": cell},
        )
        events.append(event_row(ev, owner_before=None, after=st))
        steps.extend((cid, s[1], s[2], s[3], cell, *s[5:]) for s in steps_tmpl)
        case_rows.append(
            (
                cid, "wage_arrears", "dispute", "normal", 1, "sync", cell, version, cell[:12], cell, version,
                point, 5, cell, st.state.value, st.version, False, routing, OPENED, dl.respond_by, dl.resolve_by,
                dl.mediation_window_ends, dl.provisional, st.last_hash,
            )
        )  # fmt: skip
    with conn.cursor() as cur:
        copy_rows(cur, "unit", ("code", "level", "name"), [(c, lv, "bench union") for c, lv in sorted(units)])
        cur.execute(
            "WITH o AS (INSERT INTO officer (source_record_id, name) "
            "SELECT 'wg' || c, '网格员' FROM unnest(%s::text[]) c "
            "RETURNING id, source_record_id AS code) INSERT INTO officer_cell (officer_id, cell_code) "
            "SELECT id, substr(code, 3) FROM o",
            (sorted(officers),),
        )
        copy_rows(
            cur,
            "case_file",
            (
                "id", "kind", "family", "severity", "workers_affected", "channel", "cell_code", "cell_version_id",
                "division_code", "chain_code", "chain_version_id", "geom", "level", "owner_code", "state",
                "version", "dual_report", "routing", "opened_at", "respond_by", "resolve_by",
                "mediation_window_ends", "deadlines_provisional", "head_hash",
            ),
            case_rows,
        )  # fmt: skip
        copy_rows(cur, "case_event", EVENT_COLUMNS, events)
        copy_rows(cur, "escalation_step", STEP_COLUMNS, steps)
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('case_file', 'id'), (SELECT max(id) FROM case_file))"
        )
    conn.commit()


def rehearsed_plans(
    conn: psycopg2.extensions.connection, new_cells: list[CellFeature], *, old: int, baseline: int
) -> tuple[float, float, int, int, int]:
    """On a rolled-back rehearsal of the new version: (old query s per case, our plan s, planned,
    slice size, slice cases on which both planners agree)."""
    try:
        with conn.cursor() as cur:
            store._write_version(
                cur,
                new_cells,
                scope=CITY,
                valid_from=V2_FROM,
                label="bench rehearsal",
                note="",
                version_id=store.REHEARSAL_VERSION_ID,
            )
            cur.execute("ANALYZE grid_cell")
            new = store.REHEARSAL_VERSION_ID
            cur.execute("SELECT id FROM case_file ORDER BY id")
            ids = [int(r[0]) for r in cur.fetchall()]
            slice_ids = sorted(random.Random(3).sample(ids, min(baseline, len(ids))))
            t0 = time.perf_counter()
            cur.execute(OLD_PLAN, {"old": old, "new": new, "slice": slice_ids})
            old_rows = cur.fetchall()
            old_per_case = (time.perf_counter() - t0) / max(len(slice_ids), 1)
            t0 = time.perf_counter()
            ours = reroute_plan.plan(cur, old_version=old, new_version=new)
            ours_s = time.perf_counter() - t0
            full = reroute_plan.plan(cur, old_version=old, new_version=new, list_untouched=True)
            mine = {m.case_id: (m.to_chain, m.how) for m in (*full.planned, *full.untouched_cases)}
            agree = sum(
                mine.get(int(cid))
                == ((str(code), str(how)) if code is not None else (str(chain)[:12], "community"))
                for cid, chain, code, how in old_rows
            )
            return old_per_case, ours_s, len(ours.moves), len(slice_ids), agree
    finally:
        conn.rollback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--cells", type=int, default=50_000, help="a multiple of 250 (rows of the raster)")
    parser.add_argument("--splits", type=int, default=150)
    parser.add_argument("--merges", type=int, default=100)
    parser.add_argument("--shifts", type=int, default=75)
    parser.add_argument("--baseline", type=int, default=300, help="cases planned by the old query")
    args = parser.parse_args()

    policy = ProvincePolicy()
    rules = CaseRules(policy, build_calendar(policy))
    with scratch_database() as url:
        conn = psycopg2.connect(url)
        try:
            t0 = time.perf_counter()
            first = store.commit_import(
                conn, old_grid(args.cells), scope=CITY, valid_from=V1_FROM, label="bench v1"
            )
            assert first.version_id is not None
            old = first.version_id
            seed_cases(conn, cases=args.cases, n_cells=args.cells, version=old, rules=rules)
            new_cells, shape = changed_grid(
                args.cells, splits=args.splits, merges=args.merges, shifts=args.shifts
            )
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM ANALYZE")
            conn.autocommit = False
            print(
                f"bench_reroute: {args.cases:,} open cases over {args.cells:,} cells; change: "
                + ", ".join(f"{v} {k}" for k, v in shape.items())
                + f" ({len(new_cells):,} cells in the new file; seeded in {time.perf_counter() - t0:.1f} s)"
            )

            old_per_case, ours_plan_s, planned, n_slice, agree = rehearsed_plans(
                conn, new_cells, old=old, baseline=args.baseline
            )
            old_all = old_per_case * args.cases
            speedup = old_all / ours_plan_s if ours_plan_s else float("inf")
            print(
                f"{'baseline (LATERAL)':<22}{n_slice:>8,} cases {old_per_case * n_slice:8.2f} s"
                f"  -> all {args.cases:,} extrapolated: {old_all:8.1f} s"
            )
            print(
                f"{'plan (set-based)':<22}{args.cases:>8,} cases {ours_plan_s:8.2f} s"
                f"  ({planned:,} to move; {speedup:,.0f}x the old query; same answer on {agree:,}/{n_slice:,}"
                " of the slice)"
            )

            dry, t_dry = timed(lambda: store.plan_import(conn, new_cells, scope=CITY, valid_from=V2_FROM))
            print(
                f"{'dry run (plan_import)':<22}{t_dry.wall_s:8.2f} s wall {t_dry.cpu_s:6.2f} CPU-s in Python  "
                f"diff {dict((k.value, v) for k, v in dry.diff.counts().items())}; "
                f"{len(dry.moves):,} cases would move, {dry.staying:,} stay"
            )
            done, t_commit = timed(
                lambda: store.commit_import(
                    conn, new_cells, scope=CITY, valid_from=V2_FROM, label="bench change", rules=rules
                )
            )
            print(
                f"{'commit':<22}{t_commit.wall_s:8.2f} s wall {t_commit.cpu_s:6.2f} CPU-s in Python  "
                f"{done.rerouted:,} moved ({done.reassigned:,} reassigned), {done.relabelled:,} relabelled"
            )

            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FILTER (WHERE chain_version_id = %s), count(*) FROM case_file"
                    " WHERE state NOT IN ('resolved', 'closed') AND chain_version_id IS NOT NULL",
                    (done.version_id,),
                )
                on_new, riding = cur.fetchone()  # type: ignore[misc]
                cur.execute(
                    "SELECT count(*), count(DISTINCT case_id) FROM case_event WHERE payload ? 'reroute'"
                )
                reroute_events, reroute_cases = cur.fetchone()  # type: ignore[misc]
                cur.execute(
                    "SELECT pg_total_relation_size('case_file') + pg_total_relation_size('case_event')"
                    " + pg_total_relation_size('escalation_step'), pg_total_relation_size('grid_cell'),"
                    " (SELECT count(*) FROM grid_cell)"
                )
                case_bytes, cell_bytes, cell_rows = cur.fetchone()  # type: ignore[misc]
                cur.execute("SELECT id FROM case_file WHERE version > 1 ORDER BY random() LIMIT 200")
                sample = [int(r[0]) for r in cur.fetchall()]
                cur.execute(
                    "SELECT id, state, level, owner_code, version, head_hash FROM case_file WHERE id = ANY(%s)",
                    (sample,),
                )
                rows = cur.fetchall()
            conn.rollback()
            bad = 0
            for cid, state, level, owner, version, head in rows:
                r = fold([s.event for s in events_of(conn, case_id=cid)])
                bad += (r.state.value, int(r.level), r.owner_code, r.version, r.head_hash) != (
                    state,
                    level,
                    owner,
                    version,
                    head,
                )
            consistent = (
                on_new == riding
                and reroute_events == reroute_cases == done.rerouted == len(dry.moves)
                and bad == 0
                and agree == n_slice
            )
            print(
                f"checks: {on_new:,}/{riding:,} open cases on the new version; {reroute_events:,} re-route events"
                f" on {reroute_cases:,} cases; replay {len(rows) - bad}/{len(rows)} moved cases -> "
                + ("consistent" if consistent else "INCONSISTENT")
            )
            targets = [
                (
                    f"dry run <= {DRY_RUN_TARGET_S:.0f} s",
                    f"{t_dry.wall_s:.2f} s",
                    t_dry.wall_s <= DRY_RUN_TARGET_S,
                ),
                (
                    f"commit <= {COMMIT_TARGET_S:.0f} s",
                    f"{t_commit.wall_s:.2f} s",
                    t_commit.wall_s <= COMMIT_TARGET_S,
                ),
                (
                    f"plan >= {SPEEDUP_TARGET:.0f}x the old query",
                    f"{speedup:,.0f}x",
                    speedup >= SPEEDUP_TARGET,
                ),
            ]
            print(
                f"disk: {case_bytes / args.cases:,.0f} bytes per open case (row, events, steps, indexes);"
                f" {cell_bytes / cell_rows:,.0f} bytes per cell row (two versions kept)"
            )
            for label, got, met in targets:
                print(f"target: {label} ({got}) -> {verdict(met)}")
            ok = (
                t_dry.wall_s <= DRY_RUN_TARGET_S
                and t_commit.wall_s <= COMMIT_TARGET_S
                and speedup >= SPEEDUP_TARGET
                and consistent
            )
            print(f"all targets -> {verdict(ok)}")
        finally:
            conn.close()


if __name__ == "__main__":
    main()
