"""The case store on the real database: intake and routing, dedupe, officer actions with version
guards, the append-only hash-chained history, the sweep, the supervision ledger, the outbox
delivered to a real HTTP receiver, re-routing on a new cell version, and the CLI.

Every test builds its own chain of union units under fresh random codes (``make_world``) and
sweeps only within it, so tests that commit do not see each other's cases.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg2
import psycopg2.errors
import pytest
from stdnum.cn import uscc as _uscc

from connectors.kinds import Outcome
from geodata.codes import Level, ancestor
from grid.cases.actions import (
    accept,
    close,
    escalate,
    note,
    reassign,
    reopen,
    resolve,
    return_to_parent,
    start,
    urge,
)
from grid.cases.intake import CaseReport, IntakeError, dedupe_lock_keys, intake_reports, open_case
from grid.cases.outbox import ALLOWED_KEYS, Backoff, NoticeError, deliver, notice
from grid.cases.owners import chain_owner_ok, ensure_units
from grid.cases.policy import ProvincePolicy, build_calendar, parse_policy
from grid.cases.queries import events_of, fold, get_case, ledger, list_cases
from grid.cases.reroute import plan_reroute, reroute_for_cell_version
from grid.cases.states import (
    Action,
    EscalationError,
    State,
    TransitionError,
    apply,
    owner_level,
    verify_chain,
)
from grid.cases.store import CaseRules, ScopeError, StaleCase
from grid.cases.sweep import sweep
from grid.store.db import transaction

pytestmark = pytest.mark.db

SH = ZoneInfo("Asia/Shanghai")
# Monday before the 2026 National Day break: the community limit (5 working days) runs across it.
T0 = datetime(2026, 9, 28, 10, 0, tzinfo=SH)
RULES = CaseRules(ProvincePolicy(), build_calendar(ProvincePolicy()))
OPEN_STATES = {State.NEW, State.ACCEPTED, State.IN_PROGRESS, State.REOPENED, State.RETURNED}


# ----------------------------------------------------------------------------- factories


@dataclass
class World:
    """A chain of union units under fresh codes: province 42, a random city, county, town, community."""

    city: str
    county: str
    town: str
    community: str
    cells: list[str]  # cells with an active grid officer
    bare_cell: str  # a cell without an officer
    missing: set[Level] = field(default_factory=set)

    @property
    def province(self) -> str:
        return "420000000000"

    def code(self, level: Level) -> str:
        return ancestor(self.community, level)


def _unused(cur: psycopg2.extensions.cursor, prefix: str) -> bool:
    cur.execute("SELECT NOT EXISTS (SELECT 1 FROM unit WHERE code LIKE %s)", (prefix + "%",))
    row = cur.fetchone()
    return bool(row and row[0])


def make_world(
    conn: psycopg2.extensions.connection, *, officers: int = 3, missing: frozenset[Level] = frozenset()
) -> World:
    """Insert (and commit) union units for a fresh chain and grid officers for ``officers`` cells."""
    with transaction(conn) as cur:
        while True:
            cc = f"{secrets.randbelow(89) + 10:02d}"
            dd = f"{secrets.randbelow(98) + 1:02d}"
            ttt = f"{secrets.randbelow(998) + 1:03d}"
            city = f"42{cc}00000000"
            county = f"42{cc}{dd}000000"
            town = f"42{cc}{dd}{ttt}000"
            if (
                _unused(cur, town[:9])
                and (Level.COUNTY not in missing or _unused(cur, county[:6]))
                and (Level.CITY not in missing or _unused(cur, city[:4]))
            ):
                break
        community = town[:9] + "001"
        world = World(
            city,
            county,
            town,
            community,
            [f"{community}{i:03d}" for i in range(1, officers + 1)],
            f"{community}{officers + 1:03d}",
            set(missing),
        )
        for level in (Level.PROVINCE, Level.CITY, Level.COUNTY, Level.TOWN, Level.COMMUNITY):
            if level in missing:
                continue
            cur.execute(
                "INSERT INTO unit (code, level, name) VALUES (%s, %s, %s) ON CONFLICT (code) DO NOTHING",
                (world.code(level), int(level), f"test {level.name.lower()} union"),
            )
        for i, cell in enumerate(world.cells):
            cur.execute(
                "INSERT INTO officer (source_record_id, name) VALUES (%s, %s) RETURNING id",
                (f"wg{i}-{cell}", f"网格员{i}"),
            )
            cur.execute(
                "INSERT INTO officer_cell (officer_id, cell_code) "
                "SELECT id, %s FROM officer WHERE source_record_id = %s",
                (cell, f"wg{i}-{cell}"),
            )
    return world


def uscc(seed: str) -> str:
    body = ("91420500" + seed.upper().rjust(9, "0"))[:17]
    return body + _uscc.calc_check_digit(body)


def report(world: World, **kw: Any) -> CaseReport:
    args: dict[str, Any] = {"kind": "wage_arrears", "channel": "officer", "cell_code": world.cells[0]}
    args.update(kw)
    return CaseReport(**args)


def worker(seed: str | None = None) -> bytes:
    return (seed or secrets.token_hex(8)).encode().ljust(32, b"\0")[:32]


def scalar(conn: psycopg2.extensions.connection, sql: str, *args: Any) -> Any:
    with transaction(conn) as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return None if row is None else row[0]


def rows(conn: psycopg2.extensions.connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with transaction(conn) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


# ----------------------------------------------------------------------------- invariants


def case_violations(conn: psycopg2.extensions.connection, case_id: int, *, max_level: Level) -> list[str]:
    """Every broken invariant of one case, as sentences (empty = all hold). Shared by the stateful
    and race tests: replay = row, chain verifies, each event follows the transition table, the
    stored owner columns are the replayed ones, escalation moves exactly one level, the owner is
    the unit of the case's level on its chain, and resolved/closed cases have no pending steps."""
    out: list[str] = []
    with transaction(conn) as cur:
        cur.execute(
            "SELECT state, level, owner_code, version, head_hash, chain_code FROM case_file WHERE id = %s",
            (case_id,),
        )
        row = cur.fetchone()
        stored = events_of(cur, case_id=case_id)
        cur.execute(
            "SELECT kind, owner_code FROM escalation_step WHERE case_id = %s AND done_at IS NULL", (case_id,)
        )
        pending = cur.fetchall()
    if row is None:
        return [f"case {case_id}: no row"]
    state, level, owner, version, head, chain = State(row[0]), Level(row[1]), row[2], row[3], row[4], row[5]
    events = [s.event for s in stored]
    if not verify_chain(events, head=head):
        out.append(f"case {case_id}: hash chain does not verify against head")
    try:
        r = fold(events)
        if (r.state, r.level, r.owner_code, r.version, r.head_hash, r.chain_code) != (
            state,
            level,
            owner,
            version,
            head,
            chain,
        ):
            out.append(f"case {case_id}: replay {r} differs from row {row}")
    except TransitionError as exc:
        out.append(f"case {case_id}: replay refused: {exc}")
    current = None
    chain_at = ""
    for s in stored:
        ev = s.event
        before = current
        try:
            current = apply(current, ev)
        except TransitionError as exc:
            out.append(f"case {case_id} seq {ev.seq}: {exc}")
            break
        chain_at = str(ev.payload.get("chain_code") or chain_at)
        if (s.owner_after, s.level_after) != (current.owner_code, current.level):
            out.append(f"case {case_id} seq {ev.seq}: stored owner columns differ from replay")
        if not chain_owner_ok(chain_at, current.owner_code):
            out.append(f"case {case_id} seq {ev.seq}: owner {current.owner_code} not on chain {chain_at}")
        if ev.action is Action.ESCALATE and before is not None:
            if before.state in (State.RESOLVED, State.CLOSED):
                out.append(f"case {case_id} seq {ev.seq}: a {before.state} case escalated")
            skipped = any(a.get("code") == "unit_missing" for a in ev.payload.get("alerts", []))
            if not skipped and current.level != before.level - 1:
                out.append(
                    f"case {case_id} seq {ev.seq}: escalated {before.level.name} -> {current.level.name}"
                )
    if not chain_owner_ok(chain, owner) or owner_level(owner) != level:
        out.append(f"case {case_id}: owner {owner} is not the {level.name} unit on chain {chain}")
    if level < max_level:
        out.append(f"case {case_id}: level {level.name} above the policy's max level")
    if state in (State.RESOLVED, State.CLOSED) and pending:
        out.append(f"case {case_id}: {state} case has pending steps {pending}")
    if state in OPEN_STATES and any(p[1] != owner for p in pending):
        out.append(f"case {case_id}: pending steps target another owner than {owner}")
    return out


# ----------------------------------------------------------------------------- intake and routing


@pytest.mark.parametrize(
    ("kw", "missing", "level", "owner_at", "rule", "alerts"),
    [
        pytest.param(
            {},
            frozenset(),
            Level.COMMUNITY,
            "cell",
            "dispute_default",
            [],
            id="one worker's wage arrears go to the grid officer of the cell",
        ),
        pytest.param(
            {"workers_affected": 12},
            frozenset(),
            Level.COUNTY,
            "county",
            "dispute_collective",
            [],
            id="ten or more workers with a common claim start at the county union",
        ),
        pytest.param(
            {"amount": Decimal("300000")},
            frozenset(),
            Level.TOWN,
            "town",
            "dispute_amount_large",
            [],
            id="a claim of 200000 yuan or more starts at the town",
        ),
        pytest.param(
            {"kind": "hardship", "hardship_grade": "deep"},
            frozenset(),
            Level.COUNTY,
            "county",
            "hardship_deep",
            [],
            id="deep hardship starts at the county assistance centre",
        ),
        pytest.param(
            {"severity": "early_sign"},
            frozenset(),
            Level.TOWN,
            "town",
            "early_sign",
            [],
            id="an early sign of unrest goes one level up to the town",
        ),
        pytest.param(
            {"cell_code": "bare"},
            frozenset(),
            Level.COMMUNITY,
            "community",
            "dispute_default",
            ["unit_missing"],
            id="a cell without a grid officer passes to the community union with an alert",
        ),
        pytest.param(
            {"workers_affected": 12},
            frozenset({Level.COUNTY}),
            Level.CITY,
            "city",
            "dispute_collective",
            ["unit_missing"],
            id="a missing county union passes the case up to the city with an alert",
        ),
        pytest.param(
            {"cell_code": None, "division_code": "town"},
            frozenset(),
            Level.TOWN,
            "town",
            "dispute_default",
            ["address_only"],
            id="a case placed by address only starts at the lowest division it reached",
        ),
    ],
)
def test_open_routes_to_the_unit_of_the_start_level_and_stores_why(
    conn: psycopg2.extensions.connection,
    kw: dict[str, Any],
    missing: frozenset[Level],
    level: Level,
    owner_at: str,
    rule: str,
    alerts: list[str],
) -> None:
    """Routing rule: owner = the unit at the policy's start level on the cell's chain (the grid
    officer at community level), passing upward over missing units with an alert; the decision's
    rule, level, cell and text are stored with the case."""
    world = make_world(conn, missing=missing)
    kw = dict(kw)
    if kw.get("cell_code") == "bare":
        kw["cell_code"] = world.bare_cell
    if kw.get("division_code") == "town":
        kw["division_code"] = world.town
    res = open_case(conn, report=report(world, **kw), rules=RULES, actor="officer:t", at=T0)
    c = get_case(conn, case_id=res.case_id)
    expected_owner = {
        "cell": world.cells[0],
        "community": world.community,
        "town": world.town,
        "county": world.county,
        "city": world.city,
    }[owner_at]
    assert (c.level, c.owner_code, c.state, c.version) == (level, expected_owner, State.NEW, 1)
    assert c.routing["rule"] == rule
    assert c.routing["owner_code"] == expected_owner
    assert c.routing["cell_code"] == kw.get("cell_code", world.cells[0])
    assert [a["code"] for a in c.routing["alerts"] if a["code"] != "cell_not_loaded"] == alerts
    assert c.routing["text_zh"] and c.routing["text_en"]
    assert case_violations(conn, c.id, max_level=Level.PROVINCE) == []
    assert (
        scalar(conn, "SELECT count(*) FROM escalation_step WHERE case_id = %s AND done_at IS NULL", c.id) == 2
    )


def test_routing_explanation_names_the_committed_cell_version(conn: psycopg2.extensions.connection) -> None:
    """Explainability: a case filed in a committed cell stores that cell's version with the decision."""
    world = make_world(conn)
    version = load_cells(conn, world, {world.cells[0]: (0, 0, 1, 1)})
    c = get_case(conn, case_id=open_case(conn, report=report(world), rules=RULES, actor="t", at=T0).case_id)
    assert (c.cell_code, c.cell_version_id, c.routing["cell_version_id"]) == (
        world.cells[0],
        version,
        version,
    )
    assert "cell_not_loaded" not in [a["code"] for a in c.routing["alerts"]]


def test_dual_report_notifies_the_same_level_government_and_the_union_above(
    conn: psycopg2.extensions.connection,
) -> None:
    """Early signs and collective incidents are reported at once to the same-level government
    contact and to the union one level up, through the outbox, without personal data."""
    world = make_world(conn)
    res = open_case(
        conn,
        report=report(world, severity="collective_incident", workers_affected=40, worker_hmac=worker()),
        rules=RULES,
        actor="t",
        at=T0,
    )
    got = rows(
        conn,
        "SELECT topic, target, recipient_code, payload FROM notification_outbox WHERE case_id = %s ORDER BY id",
        res.case_id,
    )
    assert [(t, g, r) for t, g, r, _ in got] == [
        ("assigned", "union", world.county),
        ("dual_report", "government", world.county),
        ("dual_report", "union", world.city),
    ]
    for *_, payload in got:
        assert set(payload) <= ALLOWED_KEYS


W1, W2 = "worker-one", "worker-two"
E1 = "ent1"


@pytest.mark.parametrize(
    ("first", "second", "resolve_first", "attached"),
    [
        pytest.param(
            {"worker": W1}, {"worker": W1}, False, True, id="same worker and kind attaches to the open case"
        ),
        pytest.param(
            {"worker": W1},
            {"worker": W1, "kind": "dismissal"},
            False,
            False,
            id="same worker, another kind opens a new case",
        ),
        pytest.param(
            {"worker": W1, "firm": E1},
            {"worker": W2, "firm": E1},
            False,
            True,
            id="same enterprise and dispute kind attaches",
        ),
        pytest.param(
            {"worker": W1, "firm": E1, "kind": "hardship"},
            {"worker": W2, "firm": E1, "kind": "hardship"},
            False,
            False,
            id="hardship matches the worker only, not the enterprise",
        ),
        pytest.param(
            {"worker": W1},
            {"worker": W1},
            True,
            False,
            id="a resolved case is not open: a new report opens a new case",
        ),
    ],
)
def test_dedupe_onto_an_open_case_of_the_same_party_and_kind(
    conn: psycopg2.extensions.connection,
    first: dict[str, str],
    second: dict[str, str],
    resolve_first: bool,
    attached: bool,
) -> None:
    """Dedupe rule: a report about the same worker (HMAC) — or for disputes the same enterprise
    (USCC) — and kind as an open case is attached to it as an event, not opened twice."""
    world = make_world(conn)
    salt = secrets.token_hex(4)

    def rep(spec: dict[str, str]) -> CaseReport:
        return report(
            world,
            kind=spec.get("kind", "wage_arrears"),
            worker_hmac=worker(spec["worker"] + salt),
            enterprise_uscc=uscc(spec["firm"] + salt[:4]) if "firm" in spec else None,
        )

    a = open_case(conn, report=rep(first), rules=RULES, actor="t", at=T0)
    if resolve_first:
        v = accept(conn, case_id=a.case_id, expected_version=1, actor="t", rules=RULES, at=T0).version
        resolve(
            conn,
            case_id=a.case_id,
            expected_version=v,
            actor="t",
            outcome=Outcome.AGREEMENT,
            rules=RULES,
            at=T0,
        )
    b = open_case(conn, report=rep(second), rules=RULES, actor="t", at=T0 + timedelta(hours=1))
    assert b.attached is attached
    assert (b.case_id == a.case_id) is attached
    if attached:
        last = events_of(conn, case_id=a.case_id)[-1].event
        assert last.action is Action.NOTE and "attached_report" in last.payload
        text = json.dumps(last.payload)
        assert salt not in text and worker(W1 + salt).hex() not in text  # the party is not in the history


@pytest.mark.parametrize("first_city", ["a", "b"])
def test_a_worker_reported_by_two_cities_with_two_employers_lands_in_one_case(
    conn: psycopg2.extensions.connection, first_city: str
) -> None:
    """Dedupe rule across cities: a worker with a job in two cities (one HMAC, employers EA and EB)
    reported by both, same kind, attaches to ONE case in either order - even when city A's report
    first joins an open case about its employer EA opened for another worker (the second report
    then finds the worker there, before EB's own open case)."""
    world = make_world(conn)
    salt = secrets.token_hex(4)
    person, other = worker("two-city" + salt), worker("colleague" + salt)
    ea, eb = uscc("ea" + salt[:4]), uscc("eb" + salt[:4])
    employer_case = open_case(
        conn, report=report(world, worker_hmac=other, enterprise_uscc=ea), rules=RULES, actor="t", at=T0
    )
    other_b = open_case(
        conn,
        report=report(world, worker_hmac=worker("b" + salt), enterprise_uscc=eb),
        rules=RULES,
        actor="t",
        at=T0,
    )
    reports = {
        "a": report(world, channel="sync", source_ref=f"a:{salt}", worker_hmac=person, enterprise_uscc=ea),
        "b": report(world, channel="sync", source_ref=f"b:{salt}", worker_hmac=person, enterprise_uscc=eb),
    }
    second_city = "b" if first_city == "a" else "a"
    first = open_case(conn, report=reports[first_city], rules=RULES, actor="sync", at=T0 + timedelta(hours=1))
    second = open_case(
        conn, report=reports[second_city], rules=RULES, actor="sync", at=T0 + timedelta(hours=2)
    )
    assert first.attached and second.attached
    assert first.case_id == second.case_id
    assert first.case_id in (employer_case.case_id, other_b.case_id)


def test_a_replayed_report_is_taken_once(conn: psycopg2.extensions.connection) -> None:
    """Idempotent intake: the same source reference twice opens one case and appends nothing."""
    world = make_world(conn)
    ref = f"yichang:case-{secrets.token_hex(4)}"
    a = open_case(
        conn, report=report(world, channel="sync", source_ref=ref), rules=RULES, actor="sync", at=T0
    )
    b = open_case(
        conn, report=report(world, channel="sync", source_ref=ref), rules=RULES, actor="sync", at=T0
    )
    assert (b.case_id, b.already_taken, b.version) == (a.case_id, True, 1)


def test_a_sync_page_is_taken_in_within_the_pages_transaction(conn: psycopg2.extensions.connection) -> None:
    """Sync intake: a page's reports go in inside the page's transaction — two reports about one
    worker in the same page make one case with the second attached; a rollback leaves nothing."""
    world = make_world(conn)
    party = worker()
    page = [
        report(world, channel="sync", source_ref=f"s:{secrets.token_hex(4)}", worker_hmac=party),
        report(world, channel="sync", source_ref=f"s:{secrets.token_hex(4)}", worker_hmac=party),
        report(world, channel="sync", source_ref=f"s:{secrets.token_hex(4)}", kind="hardship"),
    ]
    with transaction(conn) as cur:
        results = intake_reports(cur, page, rules=RULES, actor="sync:test", at=T0)
    assert [r.attached for r in results] == [False, True, False]
    assert results[0].case_id == results[1].case_id != results[2].case_id
    before = scalar(conn, "SELECT count(*) FROM case_file")
    with pytest.raises(RuntimeError, match="page failed"), transaction(conn) as cur:
        intake_reports(cur, [report(world, channel="sync", kind="dismissal")], rules=RULES, actor="s", at=T0)
        raise RuntimeError("page failed")
    assert scalar(conn, "SELECT count(*) FROM case_file") == before


def test_units_can_be_seeded_from_the_divisions_of_a_scope(conn: psycopg2.extensions.connection) -> None:
    """Bringing a city online: every current division in the scope gets an active union unit."""
    world = make_world(conn, missing=frozenset({Level.COUNTY}))
    while scalar(conn, "SELECT count(*) FROM division WHERE code LIKE %s", world.county[:6] + "%"):
        world = make_world(conn, missing=frozenset({Level.COUNTY}))  # a county no loaded world has
    with transaction(conn) as cur:
        cur.execute(
            "INSERT INTO division (code, level, name, parent_code, source) VALUES (%s, 3, '测试区', %s, 'test')",
            (world.county, world.city),
        )
    assert ensure_units(conn, scope=world.county) == 1
    assert ensure_units(conn, scope=world.county) == 0
    assert scalar(conn, "SELECT name FROM unit WHERE code = %s", world.county) == "测试区工会"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        pytest.param({"cell_code": None}, "cell code or at least a division", id="a report needs a place"),
        pytest.param(
            {"enterprise_uscc": "91420500MA4KXXXX1X"},
            "not a valid unified social credit code",
            id="credit codes are checked",
        ),
        pytest.param(
            {"worker_hmac": b"420106198001011234"}, "32-byte keyed HMAC", id="a raw ID number is refused"
        ),
        pytest.param({"amount": 1.5}, "not a float", id="amounts are decimals"),
        pytest.param(
            {"kind": "wage_arrears", "hardship_grade": "deep"},
            "no hardship grade",
            id="a dispute has no hardship grade",
        ),
    ],
)
def test_intake_refuses_bad_reports_without_echoing_personal_data(kw: dict[str, Any], message: str) -> None:
    """Intake validation: a bad report is refused with the field named, never the person's data."""
    args: dict[str, Any] = {"kind": "wage_arrears", "channel": "api", "cell_code": "420502001001001", **kw}
    with pytest.raises(IntakeError, match=message) as err:
        CaseReport(**args)
    assert "420106198001011234" not in str(err.value)


def test_dedupe_lock_keys_are_sorted_and_cover_worker_enterprise_and_reference() -> None:
    """Concurrent intakes serialise on the same advisory keys, taken in one order (no deadlock)."""
    r = CaseReport(
        kind="wage_arrears",
        channel="sync",
        cell_code="420502001001001",
        worker_hmac=worker("a"),
        enterprise_uscc=uscc("x"),
        source_ref="s:1",
    )
    keys = dedupe_lock_keys(r)
    assert keys == sorted(keys) and len(keys) == 3


# ----------------------------------------------------------------------------- officer actions


def _open(conn: psycopg2.extensions.connection, world: World, **kw: Any) -> int:
    return open_case(conn, report=report(world, **kw), rules=RULES, actor="t", at=T0).case_id


def _do(conn: psycopg2.extensions.connection, world: World, case_id: int, step: str, at: datetime) -> Any:
    v = get_case(conn, case_id=case_id).version
    common: dict[str, Any] = {
        "case_id": case_id,
        "expected_version": v,
        "actor": "officer:t",
        "rules": RULES,
        "at": at,
    }
    match step:
        case "accept":
            return accept(conn, **common)
        case "start":
            return start(conn, **common)
        case "note":
            return note(conn, text="走访企业", **common)
        case "resolve":
            return resolve(conn, outcome=Outcome.AGREEMENT, amount_recovered=Decimal("12000"), **common)
        case "close":
            return close(conn, **common)
        case "escalate":
            return escalate(conn, reason="企业拒不配合", **common)
        case "return":
            return return_to_parent(conn, reason="不属本网格", **common)
        case "reopen":
            return reopen(conn, reason="协议未履行", **common)
        case "reassign_cell2":
            return reassign(conn, scope=world.community, to_owner=world.cells[1], reason="改派", **common)
        case "urge_town":
            return urge(conn, scope=world.town, text="请加快办理", **common)
    raise AssertionError(step)


@pytest.mark.parametrize(
    ("steps", "state", "owner"),
    [
        pytest.param(
            ["accept", "start", "resolve", "close"],
            State.CLOSED,
            "cell0",
            id="accept, start, resolve, close keeps the grid officer",
        ),
        pytest.param(
            ["escalate"], State.NEW, "town", id="escalation moves exactly one level: community to town"
        ),
        pytest.param(
            ["escalate", "accept", "escalate"],
            State.NEW,
            "county",
            id="a second escalation moves to the county",
        ),
        pytest.param(
            ["return"], State.RETURNED, "community", id="a misrouted case returns to the community union"
        ),
        pytest.param(
            ["return", "reassign_cell2"],
            State.NEW,
            "cell1",
            id="the community re-dispatches a returned case to the right cell",
        ),
        pytest.param(
            ["accept", "resolve", "close", "reopen"],
            State.REOPENED,
            "cell0",
            id="a closed case reopens with the same owner",
        ),
        pytest.param(
            ["accept", "urge_town", "note"],
            State.ACCEPTED,
            "cell0",
            id="urging and notes keep state and owner",
        ),
    ],
)
def test_officer_actions_follow_the_state_machine_and_keep_the_owner_on_the_chain(
    conn: psycopg2.extensions.connection, steps: list[str], state: State, owner: str
) -> None:
    """State machine rule: each action moves the case per the one transition table, appends one
    hash-chained event, and leaves the owner the unit of the case's level on its chain."""
    world = make_world(conn)
    cid = _open(conn, world)
    for i, step in enumerate(steps):
        _do(conn, world, cid, step, T0 + timedelta(hours=i + 1))
    c = get_case(conn, case_id=cid)
    expected = {
        "cell0": world.cells[0],
        "cell1": world.cells[1],
        "community": world.community,
        "town": world.town,
        "county": world.county,
    }[owner]
    assert (c.state, c.owner_code, c.version) == (state, expected, len(steps) + 1)
    assert case_violations(conn, cid, max_level=Level.PROVINCE) == []


def test_escalation_gives_the_new_owner_fresh_deadlines_and_steps(
    conn: psycopg2.extensions.connection,
) -> None:
    """Escalation re-plans supervision: the old owner's steps are superseded, the new owner's queued."""
    world = make_world(conn)
    cid = _open(conn, world)
    before = get_case(conn, case_id=cid)
    _do(conn, world, cid, "escalate", T0 + timedelta(days=1))
    after = get_case(conn, case_id=cid)
    assert after.resolve_by > before.resolve_by
    pending = rows(conn, "SELECT owner_code FROM escalation_step WHERE case_id = %s AND done_at IS NULL", cid)
    superseded = scalar(
        conn, "SELECT count(*) FROM escalation_step WHERE case_id = %s AND outcome = 'superseded'", cid
    )
    assert pending == [(world.town,), (world.town,)] and superseded == 2


@pytest.mark.parametrize(
    ("setup", "step", "error"),
    [
        pytest.param([], "close", TransitionError, id="a new case cannot be closed"),
        pytest.param([], "start", TransitionError, id="a new case must be accepted before work starts"),
        pytest.param(
            ["accept", "resolve"], "escalate", TransitionError, id="a resolved case never escalates"
        ),
        pytest.param(
            ["accept", "resolve", "close"], "note", TransitionError, id="a closed case takes no notes"
        ),
        pytest.param([], "urge_town_as_cell", ScopeError, id="only a unit above the owner may urge"),
    ],
)
def test_refused_actions_write_nothing(
    conn: psycopg2.extensions.connection, setup: list[str], step: str, error: type[Exception]
) -> None:
    """Refusal rule: an action the table (or scope) does not allow raises a clear error and the
    case, its history, steps and outbox are unchanged."""
    world = make_world(conn)
    cid = _open(conn, world)
    for i, s in enumerate(setup):
        _do(conn, world, cid, s, T0 + timedelta(hours=i + 1))
    snapshot = _fingerprint(conn, cid)
    with pytest.raises(error):
        if step == "urge_town_as_cell":
            v = get_case(conn, case_id=cid).version
            urge(
                conn, case_id=cid, expected_version=v, actor="t", scope=world.cells[1], text="x", rules=RULES
            )
        else:
            _do(conn, world, cid, step, T0 + timedelta(days=1))
    assert _fingerprint(conn, cid) == snapshot


def _fingerprint(conn: psycopg2.extensions.connection, cid: int) -> tuple[Any, ...]:
    return (
        scalar(conn, "SELECT md5(c::text) FROM case_file c WHERE id = %s", cid),
        scalar(conn, "SELECT count(*) FROM case_event WHERE case_id = %s", cid),
        scalar(
            conn,
            "SELECT md5(string_agg(s::text, '|' ORDER BY id)) FROM escalation_step s WHERE case_id = %s",
            cid,
        ),
        scalar(conn, "SELECT count(*) FROM notification_outbox WHERE case_id = %s", cid),
    )


def test_a_stale_write_is_rejected_and_writes_nothing(conn: psycopg2.extensions.connection) -> None:
    """Version guard: a write carrying an old version raises StaleCase and changes nothing."""
    world = make_world(conn)
    cid = _open(conn, world)
    accept(conn, case_id=cid, expected_version=1, actor="a", rules=RULES, at=T0)
    snapshot = _fingerprint(conn, cid)
    with pytest.raises(StaleCase, match="version 2, not 1"):
        note(conn, case_id=cid, expected_version=1, actor="b", text="late", rules=RULES, at=T0)
    assert _fingerprint(conn, cid) == snapshot


def test_escalation_stops_at_the_policys_top_level(conn: psycopg2.extensions.connection) -> None:
    """A city-only deployment (max_level = city) refuses to escalate past the city."""
    policy = parse_policy({"routing": {"max_level": "county"}})
    rules = CaseRules(policy, RULES.calendar)
    world = make_world(conn)
    cid = open_case(conn, report=report(world, workers_affected=12), rules=rules, actor="t", at=T0).case_id
    with pytest.raises(EscalationError, match="highest level"):
        escalate(conn, case_id=cid, expected_version=1, actor="t", reason="x", rules=rules, at=T0)


def test_escalation_over_a_missing_unit_says_so(conn: psycopg2.extensions.connection) -> None:
    """Nothing is ever ownerless: escalating onto a missing town passes to the county with an alert."""
    world = make_world(conn, missing=frozenset({Level.TOWN}))
    cid = _open(conn, world)
    res = escalate(conn, case_id=cid, expected_version=1, actor="t", reason="x", rules=RULES, at=T0)
    assert res.owner_code == world.county
    assert res.event.payload["alerts"] == [{"code": "unit_missing", "unit_code": world.town}]


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param(
            "UPDATE case_event SET actor = 'forger' WHERE case_id = %s", id="an event cannot be updated"
        ),
        pytest.param("DELETE FROM case_event WHERE case_id = %s", id="an event cannot be deleted"),
    ],
)
def test_the_history_is_append_only(conn: psycopg2.extensions.connection, sql: str) -> None:
    """Append-only rule: the database itself refuses to change or remove an event."""
    world = make_world(conn)
    cid = _open(conn, world)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="append-only"), transaction(conn) as cur:
        cur.execute(sql, (cid,))
    assert scalar(conn, "SELECT count(*) FROM case_event WHERE case_id = %s", cid) == 1


# ----------------------------------------------------------------------------- the sweep


def _at(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 10, day, hour, 0, tzinfo=SH)


@pytest.mark.parametrize(
    ("now", "owner", "reminded", "criticised", "escalated"),
    [
        pytest.param(
            _at(10),
            "cell0",
            0,
            0,
            0,
            id="before the deadline (10 Oct, a make-up working Saturday) nothing fires",
        ),
        pytest.param(
            _at(11, 8), "cell0", 0, 0, 0, id="the reminder waits for 09:00 the day after the deadline"
        ),
        pytest.param(_at(11), "cell0", 1, 0, 0, id="the day after the deadline the owner is reminded (催办)"),
        pytest.param(_at(13), "cell0", 1, 0, 0, id="two working days after the reminder no criticism yet"),
        pytest.param(
            _at(14),
            "town",
            1,
            1,
            1,
            id="three working days after the reminder: criticism (通报) and escalation one level",
        ),
    ],
)
def test_sweep_reminds_then_criticises_and_escalates_on_the_working_day_clock(
    conn: psycopg2.extensions.connection,
    now: datetime,
    owner: str,
    reminded: int,
    criticised: int,
    escalated: int,
) -> None:
    """Supervision rule (12345 practice): opened 28 Sep, a community case must be resolved in 5
    working days across National Day (by 10 Oct); reminder the next day at 09:00; criticism and
    escalation 3 working days later, recorded against the failing unit."""
    world = make_world(conn)
    cid = _open(conn, world)
    report_ = sweep(conn, now=now, rules=RULES, scope=world.town)
    assert (report_.reminded, report_.criticised, report_.escalated) == (reminded, criticised, escalated)
    c = get_case(conn, case_id=cid)
    assert c.owner_code == {"cell0": world.cells[0], "town": world.town}[owner]
    if escalated:
        crit = next(e.event for e in events_of(conn, case_id=cid) if e.event.action is Action.ESCALATE)
        assert crit.payload["criticised_unit"] == world.cells[0]
        assert c.resolve_by > now
        led = {r.unit_code: r for r in ledger(conn, scope=world.town)}
        assert (led[world.cells[0]].criticised, led[world.cells[0]].escalated, led[world.town].received) == (
            1,
            1,
            1,
        )
    assert case_violations(conn, cid, max_level=Level.PROVINCE) == []


def test_sweeping_twice_does_nothing_more(conn: psycopg2.extensions.connection) -> None:
    """Idempotence: a second sweep at the same time finds nothing due and writes nothing."""
    world = make_world(conn)
    ids = [_open(conn, world, cell_code=world.cells[i % 3]) for i in range(5)]
    first = sweep(conn, now=_at(20), rules=RULES, scope=world.town, batch=2)
    prints = [_fingerprint(conn, i) for i in ids]
    second = sweep(conn, now=_at(20), rules=RULES, scope=world.town)
    assert (first.escalated, first.reminded, first.batches) == (5, 5, 3)
    assert (second.steps, second.events, second.notices) == (0, 0, 0)
    assert [_fingerprint(conn, i) for i in ids] == prints


@pytest.mark.parametrize("final", ["resolve", "close"])
def test_resolved_and_closed_cases_never_escalate(conn: psycopg2.extensions.connection, final: str) -> None:
    """A resolved or closed case never escalates: its steps are cancelled when it is resolved,
    and the sweep (long after every deadline) leaves it alone."""
    world = make_world(conn)
    cid = _open(conn, world)
    steps = ["accept", "resolve"] + (["close"] if final == "close" else [])
    for i, s in enumerate(steps):
        _do(conn, world, cid, s, T0 + timedelta(hours=i + 1))
    version = get_case(conn, case_id=cid).version
    rep = sweep(conn, now=_at(30), rules=RULES, scope=world.town)
    assert rep.steps == 0 and get_case(conn, case_id=cid).version == version
    assert (
        scalar(conn, "SELECT count(*) FROM escalation_step WHERE case_id = %s AND outcome = 'cancelled'", cid)
        == 2
    )


def test_at_the_top_level_the_sweep_criticises_without_escalating(
    conn: psycopg2.extensions.connection,
) -> None:
    """At the policy's top level the criticism is recorded, and the case stays where it is."""
    rules = CaseRules(parse_policy({"routing": {"max_level": "county"}}), RULES.calendar)
    world = make_world(conn)
    cid = open_case(conn, report=report(world, workers_affected=15), rules=rules, actor="t", at=T0).case_id
    rep = sweep(conn, now=_at(31), rules=rules, scope=world.town)
    assert (rep.criticised, rep.escalated) == (1, 0)
    last = events_of(conn, case_id=cid)[-1].event
    assert (last.action, last.payload["criticised_unit"]) == (Action.URGE, world.county)
    assert get_case(conn, case_id=cid).owner_code == world.county


def test_sweep_replays_at_a_given_time_with_the_cases_history(conn: psycopg2.extensions.connection) -> None:
    """Replay: ``now`` is the sweep's clock; the events it writes carry that time."""
    world = make_world(conn)
    cid = _open(conn, world)
    sweep(conn, now=_at(11, 9), rules=RULES, scope=world.town)
    urge_ev = events_of(conn, case_id=cid)[-1].event
    assert (urge_ev.action, urge_ev.at, urge_ev.payload["reminded_unit"]) == (
        Action.URGE,
        _at(11, 9),
        world.cells[0],
    )


def test_ledger_counts_received_responded_resolved_on_time(conn: psycopg2.extensions.connection) -> None:
    """Supervision ledger: per unit and month, received / responded / resolved / on time."""
    world = make_world(conn)
    a = _open(conn, world)
    b = _open(conn, world, cell_code=world.cells[1])
    for s in ("accept", "resolve"):
        _do(conn, world, a, s, T0 + timedelta(hours=2))
    _do(conn, world, b, "accept", T0 + timedelta(days=2))  # after respond_by (the next working day)
    _do(conn, world, b, "resolve", _at(20))  # after resolve_by: resolved, not on time
    led = {(r.unit_code, r.period): r for r in ledger(conn, scope=world.community)}
    ra, rb = led[(world.cells[0], "2026-09")], led[(world.cells[1], "2026-09")]
    assert (ra.received, ra.responded, ra.resolved, ra.on_time) == (1, 1, 1, 1)
    assert (rb.received, rb.responded) == (1, 1)
    assert (led[(world.cells[1], "2026-10")].resolved, led[(world.cells[1], "2026-10")].on_time) == (1, 0)


def test_list_is_filtered_by_scope(conn: psycopg2.extensions.connection) -> None:
    """Authorisation in the query: a scope sees the cases on chains inside it, and no others."""
    w1, w2 = make_world(conn), make_world(conn)
    a, b = _open(conn, w1), _open(conn, w2)
    assert {c.id for c in list_cases(conn, scope=w1.town)} == {a}
    assert {c.id for c in list_cases(conn, scope=w2.cells[0])} == {b}
    with pytest.raises(LookupError):
        get_case(conn, case_id=a, scope=w2.town)


# ----------------------------------------------------------------------------- the outbox


class _Receiver:
    """A real HTTP webhook on loopback that fails the first ``fail`` posts with 503."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(503)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver(fail=0)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def _pending(conn: psycopg2.extensions.connection, cid: int) -> list[tuple[Any, ...]]:
    return rows(
        conn,
        "SELECT target, attempts, delivered_at IS NOT NULL, failed_at IS NOT NULL, last_error "
        "FROM notification_outbox WHERE case_id = %s ORDER BY id",
        cid,
    )


def _only_case(conn: psycopg2.extensions.connection, keep: int) -> None:
    """Park every other pending notice (other tests' rows) so delivery here sees only ``keep``'s."""
    with transaction(conn) as cur:
        cur.execute(
            "UPDATE notification_outbox SET next_attempt_at = 'infinity' WHERE case_id <> %s AND delivered_at IS NULL",
            (keep,),
        )


def test_outbox_delivers_to_the_webhook_with_retries_and_backoff(
    conn: psycopg2.extensions.connection, receiver: _Receiver
) -> None:
    """Delivery rule: a failed post is retried after a backoff, then delivered once, carrying an
    idempotency key and a payload of allow-listed keys only; an unconfigured target waits."""
    world = make_world(conn)
    cid = _open(conn, world, severity="early_sign", worker_hmac=worker(), amount=Decimal("98765.43"))
    _only_case(conn, cid)
    receiver.fail = 1
    targets = {"union": receiver.url}  # no government webhook configured
    backoff = Backoff(base_s=60)
    with httpx.Client(timeout=5) as client:
        first = deliver(conn, targets=targets, client=client, now=T0, backoff=backoff)
        assert (first.attempted, first.delivered, first.retrying) == (2, 1, 1)
        early = deliver(conn, targets=targets, client=client, now=T0 + timedelta(seconds=30), backoff=backoff)
        assert early.attempted == 0  # still backing off
        later = deliver(conn, targets=targets, client=client, now=T0 + timedelta(seconds=61), backoff=backoff)
        assert (later.attempted, later.delivered) == (1, 1)
    state = _pending(conn, cid)
    assert sorted(s[:4] for s in state) == [
        ("government", 0, False, False),
        ("union", 1, True, False),
        ("union", 2, True, False),
    ]
    assert [s[4] for s in state if s[1] == 2] == ["HTTP 503"]
    for headers, body in receiver.received:
        assert headers["Idempotency-Key"].startswith("gridflow-notice-")
        assert set(body) - {"notice_id"} <= ALLOWED_KEYS
        assert "98765" not in json.dumps(body)


def test_outbox_gives_up_after_max_attempts(
    conn: psycopg2.extensions.connection, receiver: _Receiver
) -> None:
    """A notice that keeps failing is marked failed after max_attempts and stays for an operator."""
    world = make_world(conn)
    cid = _open(conn, world)
    _only_case(conn, cid)
    receiver.fail = 10
    with httpx.Client(timeout=5) as client:
        for i in range(3):
            deliver(
                conn,
                targets={"union": receiver.url},
                client=client,
                now=T0 + timedelta(days=i),
                max_attempts=3,
            )
    assert _pending(conn, cid) == [("union", 3, False, True, "HTTP 503")]


def test_a_notice_refuses_keys_outside_the_allow_list() -> None:
    """No personal data leaves: a notice with a key such as a name or note is refused."""
    with pytest.raises(NoticeError, match="allow-listed"):
        notice(
            topic="remind",
            target="union",
            recipient_code="420502001001",
            case_id=1,
            event_seq=1,
            at=T0,
            kind="wage_arrears",
            severity="normal",
            level=5,
            state="new",
            owner_code="420502001001001",
            extra={"worker_name": "张三"},
        )


# ----------------------------------------------------------------------------- re-route on a new cell version


def _square(x0: float, y0: float, x1: float, y1: float) -> str:
    return f"MULTIPOLYGON((({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0})))"


def load_cells(
    conn: psycopg2.extensions.connection,
    world: World,
    cells: dict[str, tuple[float, float, float, float]],
    *,
    valid_from: str = "2026-01-01",
) -> int:
    """Commit a cell version of the world's community: ``cells`` (code -> lon/lat box) replace the
    current ones from ``valid_from``."""
    with transaction(conn) as cur:
        cur.execute(
            "INSERT INTO cell_version (label, scope_code, valid_from) VALUES ('test', %s, %s) RETURNING id",
            (world.community, valid_from),
        )
        row = cur.fetchone()
        assert row is not None
        version = int(row[0])
        cur.execute(
            "UPDATE grid_cell SET valid_to = %s WHERE community_code = %s AND valid_to IS NULL",
            (valid_from, world.community),
        )
        for code, box in cells.items():
            cur.execute(
                "INSERT INTO grid_cell (code, community_code, name, geom, version_id, valid_from) "
                "VALUES (%s, %s, 'cell', ST_GeomFromText(%s, 4326), %s, %s)",
                (code, code[:12], _square(*box), version, valid_from),
            )
    return version


def test_reroute_moves_open_cases_only_with_a_recorded_reason(conn: psycopg2.extensions.connection) -> None:
    """Boundary change rule: open cases never move silently. A committed import re-routes them
    explicitly: a case whose point now lies in another cell is reassigned to that cell's officer
    with the reason in its history; a case whose cell keeps its code stays put; resolved cases
    are not touched; the plan (dry run) writes nothing."""
    world = make_world(conn, officers=4)
    a, b, c, d = world.cells
    old = load_cells(conn, world, {a: (0, 0, 2, 1), b: (2, 0, 3, 1)})
    moving = _open(conn, world, cell_code=a, lon=1.5, lat=0.5)
    no_point = _open(conn, world, cell_code=a)
    staying = _open(conn, world, cell_code=b, lon=2.5, lat=0.5)
    done = _open(conn, world, cell_code=a, lon=1.5, lat=0.5)
    for s in ("accept", "resolve"):
        _do(conn, world, done, s, T0)
    split = {c: (0, 0, 1, 1), d: (1, 0, 2, 1), b: (2, 0, 3, 1)}  # a is split into c and d; b is kept
    new = load_cells(conn, world, split, valid_from="2026-09-29")

    with transaction(conn) as cur:
        plan = {m.case_id: (m.to_chain, m.how) for m in plan_reroute(cur, old_version=old, new_version=new)}
    assert plan == {moving: (d, "point"), no_point: (c, "overlap"), staying: (b, "point")}
    assert get_case(conn, case_id=moving).version == 1  # the dry run wrote nothing

    rep = reroute_for_cell_version(
        conn, old_version=old, new_version=new, reason="2026年网格调整", rules=RULES, at=T0
    )
    assert (rep.moved, rep.reassigned, rep.relabelled) == (2, 2, 1)
    moved = get_case(conn, case_id=moving)
    assert (moved.chain_code, moved.owner_code, moved.state, moved.cell_code) == (d, d, State.NEW, a)
    last = events_of(conn, case_id=moving)[-1].event
    assert (last.action, last.payload["reason"], last.payload["reroute"]["how"]) == (
        Action.REASSIGN,
        "2026年网格调整",
        "point",
    )
    assert get_case(conn, case_id=staying).version == 1
    assert get_case(conn, case_id=done).chain_code == a
    for cid in (moving, no_point, staying, done):
        assert case_violations(conn, cid, max_level=Level.PROVINCE) == []
    again = reroute_for_cell_version(
        conn, old_version=old, new_version=new, reason="again", rules=RULES, at=T0
    )
    assert (again.moved, again.relabelled) == (0, 0)


# ----------------------------------------------------------------------------- the CLI


def test_cli_open_show_list_and_sweep(conn: psycopg2.extensions.connection) -> None:
    """Operators' commands: open routes and prints the owner; show prints the explanation and the
    timeline with the worker masked; list filters by scope; sweep --now replays a time."""
    import typer
    from typer.testing import CliRunner

    from gridflow_cli.cases import app, sweep_command

    world = make_world(conn)
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "open",
            "--kind",
            "wage_arrears",
            "--cell",
            world.cells[0],
            "--workers",
            "3",
            "--at",
            "2026-09-28T10:00",
        ],
    )
    assert out.exit_code == 0, out.output
    assert f"owner {world.cells[0]}" in out.output
    cid = int(out.output.split()[1])
    show = runner.invoke(app, ["show", str(cid)])
    assert show.exit_code == 0, show.output
    assert "dispute_default" in show.output and "立案派单" in show.output
    listed = runner.invoke(app, ["list", "--scope", world.town])
    assert str(cid) in listed.output
    sweeper = typer.Typer()
    sweeper.command()(sweep_command)
    swept = runner.invoke(sweeper, ["--now", "2026-10-14T09:30:00+08:00", "--scope", world.town])
    assert swept.exit_code == 0, swept.output
    assert "1 escalated" in swept.output
    bad = runner.invoke(app, ["open", "--kind", "wage_arrears", "--cell", "123"])
    assert bad.exit_code == 1 and "15 digits" in bad.output
