"""Response and resolution deadlines, with time left and the 暂定 mark, on the inbox, the case page
and in the API. The case is opened by the test (2026-12-30, its 5 working days run into 2027, a year
without the official list), in the shared tree's community 1, and read by that community's union."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import pytest

from connectors.kinds import CaseKind
from grid.cases.intake import CaseReport, open_case
from grid.cases.store import CaseRules
from tests.web.conftest import Tree, client, login

pytestmark = pytest.mark.db

SH = ZoneInfo("Asia/Shanghai")


def _provisional_case(database_url: str, tree: Tree, rules: CaseRules) -> int:
    conn = psycopg2.connect(database_url)
    try:
        return open_case(
            conn,
            report=CaseReport(
                kind=CaseKind.LABOUR_CONTRACT,
                channel="officer",
                cell_code=tree.cells[1],
                worker_hmac=secrets.token_bytes(32),
            ),
            rules=rules,
            actor="test",
            at=datetime(2026, 12, 30, 10, 0, tzinfo=SH),
        ).case_id
    finally:
        conn.close()


def test_deadlines_time_left_and_provisional_mark_everywhere(
    tree: Tree, web_app: Any, database_url: str, rules: CaseRules
) -> None:
    """Rule: every list, case page and API answer shows the response deadline (while the case waits
    to be accepted), the resolution deadline, the time left to each, and 暂定 when provisional."""
    case_id = _provisional_case(database_url, tree, rules)
    c = client(web_app)
    csrf = login(c, next(u for u in tree.users if u.startswith("com1")))
    assert csrf

    api = c.get("/api/v1/cases", params={"view": "subtree", "status": "open", "limit": 1000}).json()
    row = next(r for r in api["cases"] if r["id"] == case_id)
    assert row["deadlines_provisional"] is True
    assert datetime.fromisoformat(row["resolve_by"]).astimezone(SH) == datetime(
        2027, 1, 7, 23, 59, 59, tzinfo=SH
    )
    assert datetime.fromisoformat(row["respond_by"]).astimezone(SH) == datetime(
        2026, 12, 31, 23, 59, 59, tzinfo=SH
    )
    resolve_by = datetime.fromisoformat(row["resolve_by"])
    expected_left = (resolve_by - datetime.now(SH)).total_seconds()
    assert abs(row["resolve_seconds_left"] - expected_left) < 120
    assert row["respond_seconds_left"] is not None  # state new: waiting to be accepted

    one = c.get(f"/api/v1/cases/{case_id}").json()
    assert one["deadlines_provisional"] is True
    assert abs(one["resolve_seconds_left"] - expected_left) < 120
    assert one["respond_seconds_left"] is not None

    inbox = c.get("/subtree?status=open&kind=labour_contract").text
    cell = re.search(rf'<tr data-case="{case_id}".*?</tr>', inbox, re.S)
    assert cell is not None
    assert "暂定" in cell.group(0) and "2027-01-07 23:59" in cell.group(0)
    assert "剩余" in cell.group(0) or "超期" in cell.group(0)
    assert "响应时限" in cell.group(0)

    page = c.get(f"/cases/{case_id}").text
    assert 'data-testid="provisional"' in page and "时限暂定" in page
    assert 'data-testid="respond-by"' in page and "2026-12-31 23:59" in page
    assert re.search(r'data-testid="resolve-by">办结时限: .*?2027-01-07 23:59', page, re.S)
    en = c.get(f"/cases/{case_id}?lang=en").text
    assert "provisional deadline" in en and ("left" in en or "overdue" in en)
