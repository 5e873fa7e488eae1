"""The collective re-check: attached reports add the workers they name, and a dispute that reaches
10 workers (Labour Dispute Mediation and Arbitration Law Art. 7) is routed again — its level can
rise, never fall — and dual-reported to the same-level government and the union above."""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
import pytest

from geodata.codes import Level
from grid.cases.actions import escalate
from grid.cases.collective import COLLECTIVE_ACTOR
from grid.cases.intake import open_case
from grid.cases.policy import ProvincePolicy, build_calendar
from grid.cases.queries import events_of, get_case
from grid.cases.states import Action
from grid.cases.store import CaseRules
from tests.grid.test_case_store import (
    RULES,
    T0,
    World,
    case_violations,
    make_world,
    report,
    rows,
    uscc,
    worker,
)

pytestmark = pytest.mark.db


def _dispute(world: World, firm: str, **kw: Any) -> Any:
    return report(world, enterprise_uscc=firm, **kw)


def _notices(conn: psycopg2.extensions.connection, cid: int) -> list[tuple[Any, ...]]:
    return rows(
        conn,
        "SELECT topic, target, recipient_code FROM notification_outbox WHERE case_id = %s ORDER BY id",
        cid,
    )


def test_a_4_worker_dispute_with_two_3_worker_reports_becomes_collective(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: 4 + 3 + 3 = 10 workers: collective at the 10th (Art. 7), re-routed to the county as the
    policy's dispute_collective rule says, dual-reported, and the routing explanation says why."""
    world = make_world(conn)
    firm = uscc(world.town[:9])
    first = open_case(conn, report=_dispute(world, firm, workers_affected=4), rules=RULES, actor="t", at=T0)
    assert (first.level, first.rule) == (Level.COMMUNITY, "dispute_default")
    cid = first.case_id

    second = open_case(conn, report=_dispute(world, firm, workers_affected=3), rules=RULES, actor="t", at=T0)
    assert second.attached and second.case_id == cid
    c = get_case(conn, case_id=cid)
    assert (c.workers_affected, c.level, c.dual_report) == (7, Level.COMMUNITY, False)

    third = open_case(conn, report=_dispute(world, firm, workers_affected=3), rules=RULES, actor="t", at=T0)
    assert third.attached and third.case_id == cid
    c = get_case(conn, case_id=cid)
    assert (c.workers_affected, c.level, c.owner_code, c.dual_report) == (
        10,
        Level.COUNTY,
        world.county,
        True,
    )
    assert c.routing["rule"] == "dispute_collective"
    [recheck] = c.routing["rechecks"]
    assert (recheck["workers_before"], recheck["workers_after"], recheck["threshold"]) == (7, 10, 10)
    assert (recheck["from_level"], recheck["to_level"], recheck["why"]) == (
        "community",
        "county",
        "collective_threshold",
    )
    assert "第七条" in recheck["text_zh"]

    evs = [s.event for s in events_of(conn, case_id=cid)]
    assert [e.action for e in evs] == [Action.OPEN, Action.NOTE, Action.NOTE, Action.REASSIGN]
    assert evs[1].payload["workers_counted"] == {"before": 4, "added": 3, "after": 7}
    assert evs[2].payload["workers_counted"] == {"before": 7, "added": 3, "after": 10}
    assert evs[3].actor == COLLECTIVE_ACTOR and evs[3].payload["to_owner"] == world.county
    assert _notices(conn, cid)[-3:] == [
        ("assigned", "union", world.county),
        ("dual_report", "government", world.county),
        ("dual_report", "union", world.city),
    ]
    assert case_violations(conn, cid, max_level=Level.PROVINCE) == []


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        pytest.param([("w1", 1)], 1, id="the case's own worker again adds no one"),
        pytest.param([("w2", 1)], 2, id="another named worker adds one"),
        pytest.param([("w2", 1), ("w2", 1)], 2, id="the same named worker twice counts once"),
        pytest.param([("w1", 5)], 5, id="a named known worker plus 4 others adds 4"),
        pytest.param([(None, 3), (None, 3)], 7, id="reports that name no one add their workers_affected"),
    ],
)
def test_workers_are_counted_by_distinct_worker_where_identified(
    conn: psycopg2.extensions.connection, reports: list[tuple[str | None, int]], expected: int
) -> None:
    """Rule: a report adds the workers it names, each identified worker once per case, else its count."""
    world = make_world(conn)
    firm = uscc(world.town[:9])
    tag = world.town
    cid = open_case(
        conn, report=_dispute(world, firm, worker_hmac=worker(tag + "w1")), rules=RULES, actor="t", at=T0
    ).case_id
    for who, n in reports:
        mac = None if who is None else worker(tag + who)
        res = open_case(
            conn,
            report=_dispute(world, firm, worker_hmac=mac, workers_affected=n),
            rules=RULES,
            actor="t",
            at=T0,
        )
        assert res.case_id == cid
    assert get_case(conn, case_id=cid).workers_affected == expected


def test_the_level_never_falls_when_a_case_becomes_collective(conn: psycopg2.extensions.connection) -> None:
    """Rule: a dispute already escalated above the collective rule's level stays there; the re-check
    is still recorded and the case dual-reported."""
    world = make_world(conn)
    firm = uscc(world.town[:9])
    res = open_case(conn, report=_dispute(world, firm, workers_affected=8), rules=RULES, actor="t", at=T0)
    v = res.version
    for _ in range(3):  # community -> town -> county -> city
        v = escalate(
            conn, case_id=res.case_id, expected_version=v, actor="t", reason="协调", rules=RULES, at=T0
        ).version
    open_case(conn, report=_dispute(world, firm, workers_affected=2), rules=RULES, actor="t", at=T0)
    c = get_case(conn, case_id=res.case_id)
    assert (c.workers_affected, c.level, c.owner_code, c.dual_report) == (10, Level.CITY, world.city, True)
    assert c.routing["rechecks"][0]["to_level"] == "city"
    last = events_of(conn, case_id=res.case_id)[-1].event
    assert (last.action, last.actor) == (Action.NOTE, COLLECTIVE_ACTOR)
    assert "不降低" in last.payload["text"]
    assert case_violations(conn, res.case_id, max_level=Level.PROVINCE) == []


def test_dual_report_of_collective_disputes_is_a_policy_switch(conn: psycopg2.extensions.connection) -> None:
    """Rule: with routing.dual_report_collective = false the case still re-routes but is not dual-reported."""
    policy = ProvincePolicy.model_validate({"routing": {"dual_report_collective": False}})
    rules = CaseRules(policy, build_calendar(policy))
    world = make_world(conn)
    firm = uscc(world.town[:9])
    cid = open_case(
        conn, report=_dispute(world, firm, workers_affected=9), rules=rules, actor="t", at=T0
    ).case_id
    open_case(conn, report=_dispute(world, firm, workers_affected=1), rules=rules, actor="t", at=T0)
    c = get_case(conn, case_id=cid)
    assert (c.workers_affected, c.level, c.dual_report) == (10, Level.COUNTY, False)
    assert [t for t, *_ in _notices(conn, cid)] == ["assigned", "assigned"]
