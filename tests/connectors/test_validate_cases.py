"""Case reports (disputes and hardship reports raised in the city's system): one rule per table row.

Resident IDs and credit codes get their check characters from python-stdnum (independent of the
implementation under test).
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from shapely.geometry import box
from stdnum.cn import ric, uscc

from connectors.kinds import CaseKind, HardshipGrade, Severity
from connectors.reasons import Reason
from connectors.records import CaseReportRecord
from connectors.sandbox.data import CASE_BAD_KINDS, YICHANG_MAPPING, SandboxDataset
from connectors.validate import CHINA_TZ, FieldError, parse_amount, validate_cases
from grid.cases.intake import IntakeError
from grid.cases.intake import parse_amount as intake_amount

TODAY = date(2026, 3, 1)
MAP = YICHANG_MAPPING["cases"]
WORKER_ID = "420502198807150013"[:17] + ric.calc_check_digit("420502198807150013"[:17] + "0")
USCC = "91420502MA4F5Q8U0" + uscc.calc_check_digit("91420502MA4F5Q8U0")


def report(**over: Any) -> dict[str, Any]:
    """A valid wage-arrears report in Yichang's field names, with canonical-name overrides."""
    base = {
        "source_record_id": "AJ-2026-0001",
        "source_updated_at": "2026-02-20 09:30:00",
        "kind": "拖欠工资",
        "reported_at": "2026-02-18 16:05:00",
        "severity": "一般",
        "hardship_grade": "",
        "worker_id_number": WORKER_ID,
        "enterprise_uscc": USCC,
        "workers_affected": "12",
        "amount": "86,500.00元",
        "description": "反映某公司拖欠12名职工3个月工资，联系电话13812345678。",
        "address": "湖北省宜昌市西陵区沿江大道100号",
        "lon": "111.2900",
        "lat": "30.6950",
        "crs": "",
    }
    base.update(over)
    return {MAP[k]: v for k, v in base.items()}


def one(**over: Any) -> tuple[list[CaseReportRecord], list[Any]]:
    return validate_cases([report(**over)], mapping=MAP, default_crs="gcj02", today=TODAY)


def test_a_valid_report_becomes_a_canonical_record() -> None:
    """Rule: a wage-arrears report in the city's words becomes a typed record: kind from the
    Chinese label, the amount as yuan, the ID normalised; description and amount stay out of repr."""
    records, rejects = one()
    assert rejects == []
    (r,) = records
    assert (r.kind, r.severity, r.hardship_grade) == (CaseKind.WAGE_ARREARS, Severity.NORMAL, None)
    assert r.reported_at == datetime(2026, 2, 18, 16, 5, tzinfo=CHINA_TZ)
    assert (r.worker_id_number, r.enterprise_uscc, r.workers_affected) == (WORKER_ID, USCC, 12)
    assert r.amount == Decimal("86500.00") and (r.lon, r.lat, r.crs) == (111.29, 30.695, "gcj02")
    text = repr(r)
    assert WORKER_ID not in text and "13812345678" not in text and "86500" not in text and "沿江" not in text


@pytest.mark.parametrize(
    ("over", "check"),
    [
        pytest.param({"kind": "wage_arrears"}, ("kind", CaseKind.WAGE_ARREARS), id="kind: the enum value"),
        pytest.param({"kind": "欠薪"}, ("kind", CaseKind.WAGE_ARREARS), id="kind: a common alias"),
        pytest.param({"kind": " 工伤 "}, ("kind", CaseKind.WORK_INJURY), id="kind: padded label"),
        pytest.param(
            {"kind": "困难职工帮扶", "hardship_grade": "深度困难", "enterprise_uscc": ""},
            ("hardship_grade", HardshipGrade.DEEP),
            id="hardship: grade from its label, no enterprise needed",
        ),
        pytest.param({"severity": ""}, ("severity", Severity.NORMAL), id="severity: blank is normal"),
        pytest.param(
            {"severity": "突发性群体性事件"},
            ("severity", Severity.COLLECTIVE_INCIDENT),
            id="severity: collective incident label",
        ),
        pytest.param({"workers_affected": ""}, ("workers_affected", 1), id="workers affected: blank is 1"),
        pytest.param({"amount": ""}, ("amount", None), id="amount: blank is none"),
        pytest.param({"amount": "３２００"}, ("amount", Decimal("3200.00")), id="amount: full-width digits"),
        pytest.param({"amount": 1250.5}, ("amount", Decimal("1250.50")), id="amount: a JSON number"),
        pytest.param(
            {"worker_id_number": ""}, ("worker_id_number", None), id="dispute about the enterprise only"
        ),
        pytest.param(
            {"worker_id_number": WORKER_ID[:6] + WORKER_ID[8:17]},
            ("worker_id_number", WORKER_ID),
            id="legacy 15-digit worker ID is upgraded",
        ),
        pytest.param(
            {"worker_id_number": WORKER_ID.translate(str.maketrans("0123456789", "０１２３４５６７８９"))},
            ("worker_id_number", WORKER_ID),
            id="full-width worker ID",
        ),
        pytest.param({"lon": "", "lat": ""}, ("lon", None), id="address-only report is kept"),
        pytest.param(
            {"reported_at": "2026-02-20 09:30:00"},
            ("reported_at", datetime(2026, 2, 20, 9, 30, tzinfo=CHINA_TZ)),
            id="reported at the update time",
        ),
    ],
)
def test_accepted_variants(over: dict[str, Any], check: tuple[str, Any]) -> None:
    """Rule: messy-but-valid reports are accepted and normalised."""
    records, rejects = one(**over)
    assert rejects == [], [(r.reason, r.detail) for r in rejects]
    attr, expected = check
    assert getattr(records[0], attr) == expected


@pytest.mark.parametrize(
    ("over", "reason", "field"),
    [
        pytest.param({"kind": "投诉"}, Reason.UNKNOWN_CASE_KIND, "kind", id="a kind outside the closed list"),
        pytest.param({"kind": ""}, Reason.MISSING_FIELD, "kind", id="a blank kind"),
        pytest.param({"severity": "紧急"}, Reason.UNKNOWN_CASE_KIND, "severity", id="an unknown severity"),
        pytest.param(
            {"kind": "困难职工帮扶", "hardship_grade": "很困难"},
            Reason.UNKNOWN_CASE_KIND,
            "hardship_grade",
            id="an unknown hardship grade",
        ),
        pytest.param(
            {"hardship_grade": "深度困难"},
            Reason.BAD_VALUE,
            "hardship_grade",
            id="a hardship grade on a dispute",
        ),
        pytest.param({"reported_at": ""}, Reason.MISSING_FIELD, "reported_at", id="no report time"),
        pytest.param({"reported_at": "不详"}, Reason.BAD_DATE, "reported_at", id="an unreadable report time"),
        pytest.param(
            {"reported_at": "2026-02-21 09:30:00"},
            Reason.BAD_DATE,
            "reported_at",
            id="reported after its last update",
        ),
        pytest.param(
            {"reported_at": "2027-01-01 00:00:00", "source_updated_at": "2027-01-02 00:00:00"},
            Reason.BAD_DATE,
            "source_updated_at",
            id="a report from the future",
        ),
        pytest.param(
            {"worker_id_number": WORKER_ID[:17] + ("0" if WORKER_ID[17] != "0" else "1")},
            Reason.BAD_ID_CHECKSUM,
            "worker_id_number",
            id="a worker ID with a bad check digit",
        ),
        pytest.param(
            {"worker_id_number": "42050219880230001" + ric.calc_check_digit("42050219880230001" + "0")},
            Reason.BAD_ID_BIRTHDATE,
            "worker_id_number",
            id="a worker ID born on 30 February",
        ),
        pytest.param(
            {"enterprise_uscc": USCC[:17] + ("0" if USCC[17] != "0" else "1")},
            Reason.BAD_USCC_CHECKSUM,
            "enterprise_uscc",
            id="a credit code with a bad check character",
        ),
        pytest.param(
            {"worker_id_number": "", "enterprise_uscc": ""},
            Reason.MISSING_PARTY,
            "worker_id_number",
            id="a dispute about nobody",
        ),
        pytest.param(
            {"kind": "困难职工帮扶", "worker_id_number": ""},
            Reason.MISSING_PARTY,
            "worker_id_number",
            id="a hardship report names no worker",
        ),
        pytest.param({"workers_affected": "0"}, Reason.BAD_VALUE, "workers_affected", id="nobody affected"),
        pytest.param(
            {"workers_affected": "十二"}, Reason.BAD_VALUE, "workers_affected", id="a count in words"
        ),
        pytest.param({"amount": "-100"}, Reason.BAD_AMOUNT, "amount", id="a negative amount"),
        pytest.param({"amount": "十万"}, Reason.BAD_AMOUNT, "amount", id="an amount in words"),
        pytest.param({"amount": "12.345"}, Reason.BAD_AMOUNT, "amount", id="fractions of a fen"),
        pytest.param({"amount": "NaN"}, Reason.BAD_AMOUNT, "amount", id="not a number"),
        pytest.param(
            {"lon": "", "lat": "", "address": ""}, Reason.MISSING_COORDINATES, "lon", id="nowhere to place it"
        ),
        pytest.param({"lon": "2.35", "lat": "48.85"}, Reason.OUT_OF_CHINA, "lon", id="a point in Paris"),
    ],
)
def test_rejected_reports(over: dict[str, Any], reason: Reason, field: str) -> None:
    """Rule: each bad report is quarantined with one reason from the closed list and a detail
    that names the field, never the value (the description's phone number never leaks)."""
    records, rejects = one(**over)
    assert records == []
    (rej,) = rejects
    assert (rej.reason, rej.field) == (reason, field)
    for secret in (WORKER_ID, "13812345678", "86500", "沿江大道", *(str(v) for v in over.values() if v)):
        assert secret not in rej.detail


def test_parse_amount_refuses_booleans() -> None:
    """Rule: a boolean is no amount."""
    from connectors.validate import FieldError

    with pytest.raises(FieldError):
        parse_amount(True)


def test_new_reason_codes_have_chinese_and_english_descriptions() -> None:
    """Rule: every reason code, including the case-report ones, is documented in both languages."""
    for reason in (Reason.UNKNOWN_CASE_KIND, Reason.BAD_AMOUNT, Reason.MISSING_PARTY):
        assert reason.label_zh and reason.description
    assert all(r.label_zh and r.description for r in Reason)


def test_sandbox_case_reports_are_rejected_exactly_for_their_labels() -> None:
    """Rule: the sandbox generates a few hundred case reports; validation rejects exactly the bad
    ones, each with its labelled reason, and accepts every other (incl. address-only and
    enterprise-only disputes)."""
    cells = [("420502001001001", box(111.28, 30.68, 111.30, 30.70))]
    ds = SandboxDataset(
        cells,
        city_code="420500000000",
        n_workers=400,
        n_enterprises=50,
        n_cases=300,
        seed=5,
        as_of=datetime(2026, 3, 1, 2, 0, tzinfo=CHINA_TZ),
    )
    labels = ds.labels("cases")
    records, rejects = validate_cases(
        [r.row for r in ds.rows("cases")], mapping=MAP, default_crs="gcj02", today=TODAY
    )
    assert {r.source_record_id: r.reason.value for r in rejects} == {
        k: v for k, v in labels.items() if v in set(Reason)
    }
    assert len(records) + len(rejects) == len(labels) == 300
    assert {k.value for k in CASE_BAD_KINDS} <= set(labels.values())
    kinds = Counter(r.kind for r in records)
    assert kinds.most_common(1)[0][0] is CaseKind.WAGE_ARREARS and CaseKind.HARDSHIP in kinds
    assert any(r.worker_id_number is None for r in records), "some disputes name only the enterprise"
    assert any(r.severity is Severity.COLLECTIVE_INCIDENT and r.workers_affected >= 10 for r in records)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("12.345", None, id="fractions of a fen are refused, not rounded"),
        pytest.param("-1", None, id="negative"),
        pytest.param("NaN", None, id="not finite"),
        pytest.param("1e20", None, id="larger than the store holds"),
        pytest.param("1000000000.01", None, id="over the sane maximum (one billion yuan)"),
        pytest.param("1000000000.00", Decimal("1000000000.00"), id="the largest amount accepted"),
        pytest.param("12500.5", Decimal("12500.50"), id="two decimals"),
        pytest.param("1,250 元", Decimal("1250.00"), id="separators and unit"),
    ],
)
def test_sync_and_cli_read_an_amount_by_one_rule(raw: str, expected: Decimal | None) -> None:
    """The sync (connectors) and ``gridflow cases open`` (grid.cases.intake) agree on every amount."""
    if expected is None:
        with pytest.raises(FieldError):
            parse_amount(raw)
        with pytest.raises(IntakeError):
            intake_amount(raw)
    else:
        assert parse_amount(raw) == intake_amount(raw) == expected
