"""One amount parser on every path: resolving with an amount that is no amount (NaN, infinities,
negative, huge, fractions of a fen) is 422 with a Chinese sentence on the API and the form, never a
500, and nothing is stored."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from connectors.kinds import CaseKind
from grid.cases.actions import accept
from grid.cases.amounts import MAX_YUAN, AmountError, parse_yuan
from grid.cases.intake import CaseReport, open_case
from tests.web.conftest import Tree, client, login, version_of

BAD = [
    pytest.param("NaN", "金额必须是有限的数字", id="NaN"),
    pytest.param("Infinity", "金额必须是有限的数字", id="Infinity"),
    pytest.param("-Infinity", "金额必须是有限的数字", id="-Infinity"),
    pytest.param("-5", "金额不能为负数", id="negative"),
    pytest.param("1e20", "金额超过上限", id="1e20"),
    pytest.param("12.345", "金额最多保留两位小数", id="fractions of a fen"),
    pytest.param("十万", "金额不是有效的数字", id="words"),
]


@pytest.mark.parametrize(
    ("value", "want"),
    [
        pytest.param("86,500.00元", Decimal("86500.00"), id="separators and 元"),
        pytest.param("３２００", Decimal("3200.00"), id="full-width"),
        pytest.param(1250.5, Decimal("1250.50"), id="JSON number"),
        pytest.param("", None, id="blank"),
        pytest.param(str(MAX_YUAN), MAX_YUAN, id="the maximum"),
    ],
)
def test_parse_yuan_reads_amounts(value: Any, want: Decimal | None) -> None:
    assert parse_yuan(value) == want


@pytest.mark.parametrize(("value", "zh"), BAD)
def test_parse_yuan_refuses_what_is_no_amount(value: str, zh: str) -> None:
    with pytest.raises(AmountError) as exc:
        parse_yuan(value)
    assert zh in exc.value.zh and value not in str(exc.value)


@pytest.fixture(scope="module")
def accepted_case(tree: Tree, database_url: str) -> int:
    """A fresh accepted case in the first officer's cell (so resolving is allowed)."""
    import psycopg2

    from grid.cases.store import rules_from_settings

    rules = rules_from_settings()
    conn = psycopg2.connect(database_url)
    try:
        res = open_case(
            conn,
            report=CaseReport(
                kind=CaseKind.WAGE_ARREARS,
                channel="officer",
                cell_code=tree.cells[0],
                lon=111.002,
                lat=30.702,
            ),
            rules=rules,
            actor="seed",
        )
        accept(conn, case_id=res.case_id, expected_version=res.version, actor="seed", rules=rules)
        return res.case_id
    finally:
        conn.close()


def _owner(tree: Tree, owner_conn: Any, case_id: int) -> str:
    """The account of the roster officer the case went to (the first cell has two: the tie-break)."""
    with owner_conn.cursor() as cur:
        cur.execute("SELECT owner_officer FROM case_file WHERE id = %s", (case_id,))
        officer = cur.fetchone()[0]
    return next(u for u, o in tree.officer_of.items() if o == officer)


def _stored(owner_conn: Any, case_id: int) -> tuple[Any, ...]:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT state, amount_recovered, version FROM case_file WHERE id = %s", (case_id,))
        row = cur.fetchone()
        assert row is not None
        return tuple(row)


@pytest.mark.parametrize(("value", "zh"), BAD)
def test_resolving_with_no_amount_is_422_in_chinese_and_stores_nothing(
    value: str, zh: str, tree: Tree, web_app: Any, owner_conn: Any, accepted_case: int
) -> None:
    c = client(web_app)
    csrf = login(c, _owner(tree, owner_conn, accepted_case))
    before = _stored(owner_conn, accepted_case)
    v = version_of(owner_conn, accepted_case)
    api = c.post(
        f"/api/v1/cases/{accepted_case}/actions/resolve",
        json={"version": v, "outcome": "agreement", "amount_recovered": value},
        headers={"X-CSRF-Token": csrf},
    )
    assert api.status_code == 422, api.text
    assert zh in api.json()["detail"][0]["msg"] and api.json()["detail"][0]["loc"] == [
        "body",
        "amount_recovered",
    ]
    page = c.get(f"/cases/{accepted_case}")
    form_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert form_csrf
    form = c.post(
        f"/cases/{accepted_case}/actions/resolve",
        data={
            "csrf": form_csrf.group(1),
            "version": str(v),
            "outcome": "agreement",
            "amount_recovered": value,
        },
    )
    assert form.status_code == 422 and zh in form.text
    assert _stored(owner_conn, accepted_case) == before  # nothing stored, not even a version bump


def test_a_real_amount_is_stored(tree: Tree, web_app: Any, owner_conn: Any, accepted_case: int) -> None:
    c = client(web_app)
    csrf = login(c, _owner(tree, owner_conn, accepted_case))
    v = version_of(owner_conn, accepted_case)
    ok = c.post(
        f"/api/v1/cases/{accepted_case}/actions/resolve",
        json={"version": v, "outcome": "agreement", "amount_recovered": "12,500.50"},
        headers={"X-CSRF-Token": csrf},
    )
    assert ok.status_code == 200, ok.text
    assert _stored(owner_conn, accepted_case) == ("resolved", Decimal("12500.50"), v + 1)
