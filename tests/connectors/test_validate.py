"""Validation rules for source rows: each table row is one rule, named so the ids read as a spec.

Expected check digits are computed with python-stdnum (an implementation independent of the one in
connectors.validate), so a table row states the rule, not a copy of the code.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric, uscc

from connectors.reasons import Reason
from connectors.records import Reject
from connectors.validate import CHINA_TZ, validate_enterprises, validate_workers

TODAY = date(2026, 3, 1)

WORKER_MAP = {
    "source_record_id": "ywid",
    "source_updated_at": "gxsj",
    "id_number": "sfzh",
    "name": "xm",
    "gender": "xb",
    "birth_date": "csrq",
    "phone": "lxdh",
    "enterprise_uscc": "dwtyxydm",
    "address": "jzdz",
    "lon": "jd",
    "lat": "wd",
    "crs": "zbx",
}
ENTERPRISE_MAP = {
    "source_record_id": "ywid",
    "source_updated_at": "gxsj",
    "uscc": "tyxydm",
    "name": "qymc",
    "union_established": "sfjh",
    "employee_count": "zgrs",
    "address": "jydz",
    "lon": "jd",
    "lat": "wd",
    "crs": "zbx",
    "legal_rep_phone": "fddbrdh",
}


def rid(body17: str) -> str:
    """A resident ID with the check digit stdnum computes."""
    return body17 + ric.calc_check_digit(body17 + "0")


def credit(body17: str) -> str:
    """A credit code with the check character stdnum computes."""
    return body17 + uscc.calc_check_digit(body17)


def wrong_last(code: str) -> str:
    return code[:-1] + ("1" if code[-1] != "1" else "2")


ID_1985 = rid("42050219850312001")  # 西陵区, born 1985-03-12, male
ID_X = next(i for d in range(100) if (i := rid(f"420502199001010{d:02d}")).endswith("X"))
USCC_OK = "91110000600037341L"  # the example in stdnum's documentation
USCC_YC = credit("91420500MA49ABCD1")
FULLWIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")


def worker(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ywid": "w1",
        "gxsj": "2026-02-28 10:00:00",
        "sfzh": ID_1985,
        "xm": "张伟",
        "xb": "1",
        "csrq": "1985-03-12",
        "lxdh": "13812345678",
        "dwtyxydm": USCC_YC,
        "jzdz": "湖北省宜昌市西陵区云集路12号",
        "jd": "111.290000",
        "wd": "30.700000",
        "zbx": "",
    }
    row.update(over)
    return row


def enterprise(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ywid": "e1",
        "gxsj": "2026-02-28 10:00:00",
        "tyxydm": USCC_YC,
        "qymc": "宜昌三峡化工有限公司",
        "sfjh": "1",
        "zgrs": "120",
        "jydz": "湖北省宜昌市夷陵区发展大道8号",
        "jd": "111.32",
        "wd": "30.77",
        "zbx": "",
        "fddbrdh": "0717-6543210",
    }
    row.update(over)
    return row


def run_workers(*rows: dict[str, Any], default_crs: str | None = "gcj02") -> tuple[list[Any], list[Reject]]:
    return validate_workers(list(rows), mapping=WORKER_MAP, default_crs=default_crs, today=TODAY)


def one_worker(row: dict[str, Any], default_crs: str | None = "gcj02") -> Any:
    records, rejects = run_workers(row, default_crs=default_crs)
    assert len(records) + len(rejects) == 1
    return records[0] if records else rejects[0]


def field_problem(result: Any) -> tuple[Reason, str]:
    """The one field problem of a loaded record (connectors.problems): the record is kept."""
    assert not isinstance(result, Reject), "a field problem keeps the record: it is no reject"
    assert len(result.problems) == 1, result.problems
    return result.problems[0].reason, result.problems[0].field


def assert_no_value_in_problem(record: Any, *values: Any) -> None:
    for v in values:
        if v is None:
            continue
        s = str(v).strip()
        if len(s) >= 4:
            for p in record.problems:
                assert s not in p.detail, "a field problem's detail must never carry the offending value"
                assert s not in repr(p), "a field problem's repr must never carry the raw value"
            assert s not in repr(record)


def assert_no_value_in_detail(reject: Reject, *values: Any) -> None:
    for v in values:
        s = str(v).strip()
        if len(s) >= 4:
            assert s not in reject.detail, "a reject detail must never carry the offending value"
            assert s not in repr(reject), "a reject repr must never carry the raw row"


# --- resident ID numbers --------------------------------------------------------------------

ID_CASES = [
    pytest.param(ID_1985, ID_1985, id="valid 18-digit ID is accepted unchanged"),
    pytest.param(ID_X, ID_X, id="valid ID with check character X is accepted"),
    pytest.param(ID_X[:17] + "x", ID_X, id="lowercase x check character is upper-cased"),
    pytest.param(ID_1985.translate(FULLWIDTH), ID_1985, id="full-width digits are normalised to half-width"),
    pytest.param(f"  {ID_1985[:6]} {ID_1985[6:14]} {ID_1985[14:]}\u3000", ID_1985, id="spaces are removed"),
    pytest.param(int(ID_1985), ID_1985, id="an ID exported as an integer is accepted"),
    pytest.param(
        "420502850312001", rid("42050219850312001"), id="legacy 15-digit ID is upgraded to 18 digits"
    ),
    pytest.param(
        rid("42050619800101123"),
        rid("42050619800101123"),
        id="area code created after the birth year (夷陵区 2001, born 1980) is accepted",
    ),
    pytest.param(
        rid("42052119800101123"),
        rid("42052119800101123"),
        id="area code of an abolished county (宜昌县 420521) is accepted",
    ),
    pytest.param(wrong_last(ID_1985), Reason.BAD_ID_CHECKSUM, id="wrong check digit is bad_id_checksum"),
    pytest.param(ID_1985[:17], Reason.BAD_ID_FORMAT, id="17 characters is bad_id_format"),
    pytest.param(
        ID_1985[:10] + "A" + ID_1985[11:], Reason.BAD_ID_FORMAT, id="a letter inside is bad_id_format"
    ),
    pytest.param(rid("00050219850312001"), Reason.BAD_ID_FORMAT, id="no province prefix 00 is bad_id_format"),
    pytest.param(
        float(ID_1985[:17]), Reason.BAD_ID_FORMAT, id="an ID read as a float lost digits: bad_id_format"
    ),
    pytest.param(
        rid("42050219850230001"), Reason.BAD_ID_BIRTHDATE, id="February 30 birth date is bad_id_birthdate"
    ),
    pytest.param(
        rid("42050220900101001"), Reason.BAD_ID_BIRTHDATE, id="future birth date is bad_id_birthdate"
    ),
    pytest.param(
        rid("42050218900101001"), Reason.BAD_ID_BIRTHDATE, id="birth before 1900 is bad_id_birthdate"
    ),
    pytest.param(
        "420502851312001", Reason.BAD_ID_BIRTHDATE, id="legacy ID with month 13 is bad_id_birthdate"
    ),
    pytest.param("", Reason.MISSING_FIELD, id="blank ID is missing_field"),
    pytest.param(None, Reason.MISSING_FIELD, id="absent ID is missing_field"),
]


@pytest.mark.parametrize(("raw", "expected"), ID_CASES)
def test_resident_id_rules(raw: Any, expected: str | Reason) -> None:
    """Rule: IDs are NFKC-normalised, checked for format, MOD 11-2 check digit and a plausible birth
    date (1900..today); legacy IDs are upgraded; the area code's history is not held against them."""
    result = one_worker(worker(sfzh=raw, csrq=""))
    if isinstance(expected, Reason):
        assert isinstance(result, Reject)
        assert result.reason is expected
        assert result.field in {"id_number"}
        assert_no_value_in_detail(result, raw)
    else:
        assert not isinstance(result, Reject), result.detail
        assert result.id_number == expected
        assert result.birth_date == date(int(expected[6:10]), int(expected[10:12]), int(expected[12:14]))


def test_stdnum_would_reject_an_id_issued_after_its_area_code_was_created() -> None:
    """Rule (why we do not call stdnum.cn.ric.validate): it rejects real IDs of people born before
    their county code existed, and accepts birth dates in the future."""
    assert not ric.is_valid(rid("42050619800101123"))
    assert ric.is_valid(rid("42050220900101001"))


@pytest.mark.parametrize(
    ("xb", "sfzh", "expected"),
    [
        pytest.param("1", ID_1985, "M", id="GB/T 2261.1 code 1 is male"),
        pytest.param("女", ID_1985, "F", id="the source's own gender value wins when recognised"),
        pytest.param("", ID_1985, "M", id="blank gender is read from the ID (odd order code = male)"),
        pytest.param("?", rid("42050219850312002"), "F", id="unknown gender value falls back to the ID"),
    ],
)
def test_gender(xb: str, sfzh: str, expected: str) -> None:
    """Rule: gender is the source's value if recognised, else the ID's 17th digit parity."""
    assert one_worker(worker(xb=xb, sfzh=sfzh)).gender == expected


def test_birth_date_comes_from_the_id() -> None:
    """Rule: the ID's birth date is authoritative; a readable but different birth-date field (often
    a lunar-calendar birthday) does not reject the worker."""
    rec = one_worker(worker(csrq="1985-01-30"))
    assert rec.birth_date == date(1985, 3, 12)


def test_padded_two_character_name_loses_its_padding() -> None:
    """Rule: '张　三' (padded for alignment) becomes '张三'; Latin names keep their spaces."""
    assert one_worker(worker(xm="张\u3000三")).name == "张三"
    assert one_worker(worker(xm=" John Smith ")).name == "John Smith"
    assert one_worker(worker(xm="  ")).reason is Reason.MISSING_FIELD


# --- credit codes ---------------------------------------------------------------------------

USCC_CASES = [
    pytest.param(USCC_OK, USCC_OK, id="valid credit code is accepted"),
    pytest.param(USCC_OK.lower(), USCC_OK, id="lowercase credit code is upper-cased"),
    pytest.param(USCC_OK.translate(FULLWIDTH), USCC_OK, id="full-width digits are normalised"),
    pytest.param(
        credit("N2420500MA49ABCD1"),
        credit("N2420500MA49ABCD1"),
        id="letter registration authority (N, agricultural) is accepted",
    ),
    pytest.param(
        wrong_last(USCC_OK), Reason.BAD_USCC_CHECKSUM, id="wrong check character is bad_uscc_checksum"
    ),
    pytest.param(USCC_OK[:17], Reason.BAD_USCC_FORMAT, id="17 characters is bad_uscc_format"),
    pytest.param(
        "91110000600O37341L", Reason.BAD_USCC_FORMAT, id="letter O (not in GB 32100) is bad_uscc_format"
    ),
    pytest.param(
        "9111A000600037341L", Reason.BAD_USCC_FORMAT, id="letter in the region code is bad_uscc_format"
    ),
]


@pytest.mark.parametrize(("raw", "expected"), USCC_CASES)
def test_enterprise_credit_code_rules(raw: str, expected: str | Reason) -> None:
    """Rule: credit codes are NFKC-normalised, upper-cased and checked against GB 32100."""
    records, rejects = validate_enterprises(
        [enterprise(tyxydm=raw)], mapping=ENTERPRISE_MAP, default_crs="gcj02", today=TODAY
    )
    if isinstance(expected, Reason):
        assert [r.reason for r in rejects] == [expected]
        assert rejects[0].field == "uscc"
        assert_no_value_in_detail(rejects[0], raw)
    else:
        assert [r.uscc for r in records] == [expected]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("", None, id="worker without employer code is accepted"),
        pytest.param(
            wrong_last(USCC_YC),
            Reason.BAD_USCC_CHECKSUM,
            id="bad employer code is a field problem: the worker is kept without it",
        ),
    ],
)
def test_worker_employer_credit_code(raw: str, expected: Reason | None) -> None:
    """Rule: a worker's employer code is optional but, when given, must be a valid credit code;
    a bad one is stored empty with a field problem (it does not identify the worker)."""
    result = one_worker(worker(dwtyxydm=raw))
    assert result.enterprise_uscc is None
    if expected is None:
        assert result.problems == ()
    else:
        assert field_problem(result) == (expected, "enterprise_uscc")


# --- phones ---------------------------------------------------------------------------------

PHONE_CASES = [
    pytest.param("13812345678", "13812345678", id="mainland mobile"),
    pytest.param("+86 138 1234 5678", "13812345678", id="+86 prefix and spaces are stripped"),
    pytest.param("0086-13812345678", "13812345678", id="0086 prefix is stripped"),
    pytest.param("8613812345678", "13812345678", id="bare 86 before a mobile is stripped"),
    pytest.param("１３８１２３４５６７８", "13812345678", id="full-width digits"),
    pytest.param("0717-6543210", "07176543210", id="fixed line with 4-digit area code"),
    pytest.param("(0717)6543210", "07176543210", id="area code in parentheses"),
    pytest.param("010-62345678", "01062345678", id="Beijing fixed line with 3-digit area code"),
    pytest.param("010-12345678", Reason.BAD_PHONE, id="local number starting with 1 is bad_phone"),
    pytest.param("+86 717 6543210", "07176543210", id="international fixed line regains the trunk 0"),
    pytest.param("", None, id="blank phone is None"),
    pytest.param("1381234567", Reason.BAD_PHONE, id="10-digit mobile is bad_phone"),
    pytest.param("12812345678", Reason.BAD_PHONE, id="mobile prefix 12 is bad_phone"),
    pytest.param("6543210", Reason.BAD_PHONE, id="local number without area code is bad_phone"),
    pytest.param("0717-6543210-801", Reason.BAD_PHONE, id="extension is bad_phone"),
    pytest.param("+1 415 555 0100", Reason.BAD_PHONE, id="foreign number is bad_phone"),
]


@pytest.mark.parametrize(("raw", "expected"), PHONE_CASES)
def test_phone_rules(raw: str, expected: str | Reason | None) -> None:
    """Rule: mainland mobile 1[3-9]+9 digits or 0+area code+local number, stored as digits only;
    a bad phone is a field problem: the worker is kept with no phone."""
    result = one_worker(worker(lxdh=raw))
    if isinstance(expected, Reason):
        assert field_problem(result) == (expected, "phone")
        assert result.phone is None
        assert result.problems[0].raw == {"lxdh": raw}
        assert_no_value_in_problem(result, raw, raw.replace(" ", "").replace("-", ""))
    else:
        assert result.phone == expected
        assert result.problems == ()


# --- dates and update times -------------------------------------------------------------------

DATE_CASES = [
    pytest.param("1985-03-12", None, id="ISO date"),
    pytest.param("1985/03/12", None, id="slashes"),
    pytest.param("1985.3.12", None, id="dots without zero padding"),
    pytest.param("1985年3月12日", None, id="Chinese date"),
    pytest.param("19850312", None, id="compact date"),
    pytest.param("1985-03-12 00:00:00", None, id="a time part after the date is ignored"),
    pytest.param("", None, id="blank birth-date field is fine: the ID has it"),
    pytest.param("1985-13-45", Reason.BAD_DATE, id="month 13 is bad_date"),
    pytest.param("1985-02-30", Reason.BAD_DATE, id="February 30 is bad_date"),
    pytest.param("不详", Reason.BAD_DATE, id="'unknown' text is bad_date"),
]


@pytest.mark.parametrize(("raw", "expected"), DATE_CASES)
def test_birth_date_field_formats(raw: str, expected: Reason | None) -> None:
    """Rule: a mapped date field must be readable in one of the usual export formats; an unreadable
    birth date is a field problem (the ID's birth date is authoritative)."""
    result = one_worker(worker(csrq=raw))
    if expected is None:
        assert not isinstance(result, Reject), result.detail
        assert result.problems == ()
    else:
        assert field_problem(result) == (expected, "birth_date")
        assert result.birth_date == date(1985, 3, 12)


SH = timezone(timedelta(hours=8))
TS_CASES = [
    pytest.param("2026-02-28T10:00:00+08:00", datetime(2026, 2, 28, 10, tzinfo=SH), id="ISO with offset"),
    pytest.param("2026-02-28T02:00:00Z", datetime(2026, 2, 28, 2, tzinfo=UTC), id="ISO in UTC"),
    pytest.param(
        "2026-02-28 10:00:00", datetime(2026, 2, 28, 10, tzinfo=SH), id="naive time is Asia/Shanghai"
    ),
    pytest.param("2026/02/28 10:00:00", datetime(2026, 2, 28, 10, tzinfo=SH), id="slashes"),
    pytest.param("2026年2月28日 10:00:00", datetime(2026, 2, 28, 10, tzinfo=SH), id="Chinese date"),
    pytest.param("20260228100000", datetime(2026, 2, 28, 10, tzinfo=SH), id="compact timestamp"),
    pytest.param(1772244000000, datetime(2026, 2, 28, 10, tzinfo=SH), id="epoch milliseconds"),
    pytest.param("1772244000", datetime(2026, 2, 28, 10, tzinfo=SH), id="epoch seconds as text"),
    pytest.param("", Reason.MISSING_FIELD, id="blank update time is missing_field"),
    pytest.param("yesterday", Reason.BAD_DATE, id="unreadable update time is bad_date"),
    pytest.param("2026-03-05 00:00:00", Reason.BAD_DATE, id="update time days in the future is bad_date"),
]


@pytest.mark.parametrize(("raw", "expected"), TS_CASES)
def test_update_time_rules(raw: Any, expected: datetime | Reason) -> None:
    """Rule: source_updated_at is required, tz-aware (naive = Asia/Shanghai), not in the future."""
    result = one_worker(worker(gxsj=raw))
    if isinstance(expected, Reason):
        assert result.reason is expected and result.field == "source_updated_at"
    else:
        assert result.source_updated_at == expected
        assert result.source_updated_at.tzinfo is not None


def test_update_time_a_few_hours_ahead_is_tolerated() -> None:
    """Rule: clock skew of hours is tolerated; only more than a day ahead is rejected."""
    ts = datetime.combine(TODAY, datetime.min.time(), CHINA_TZ) + timedelta(hours=30)
    assert not isinstance(one_worker(worker(gxsj=ts.isoformat())), Reject)


# --- coordinates ----------------------------------------------------------------------------

COORD_CASES = [
    pytest.param({}, "gcj02", (111.29, 30.7, "gcj02"), id="point in the source's declared CRS"),
    pytest.param({"zbx": "EPSG:4490"}, "gcj02", (111.29, 30.7, "cgcs2000"), id="record's own CRS wins"),
    pytest.param({"zbx": "GCJ-02"}, None, (111.29, 30.7, "gcj02"), id="record CRS spelling is normalised"),
    pytest.param({"jd": "", "wd": ""}, "gcj02", (None, None, "gcj02"), id="address-only record is accepted"),
    pytest.param(
        {"jd": float("nan"), "wd": float("nan")}, "gcj02", (None, None, "gcj02"), id="NaN is no point"
    ),
    pytest.param({"jd": "0", "wd": "0"}, "gcj02", (None, None, "gcj02"), id="(0, 0) is an unset default"),
    pytest.param(
        {"jd": None, "wd": None, "zbx": "BJ54"},
        "gcj02",
        (None, None, None),
        id="no point: CRS does not matter",
    ),
    pytest.param(
        {"jd": "", "wd": "", "jzdz": ""}, "gcj02", Reason.MISSING_COORDINATES, id="no point, no address"
    ),
    pytest.param({"wd": ""}, "gcj02", Reason.BAD_COORDINATES, id="only longitude is bad_coordinates"),
    pytest.param({"jd": "111度"}, "gcj02", Reason.BAD_COORDINATES, id="unreadable number is bad_coordinates"),
    pytest.param({"jd": "30.7", "wd": "111.29"}, "gcj02", Reason.BAD_COORDINATES, id="latitude beyond 90"),
    pytest.param({"jd": "inf"}, "gcj02", Reason.BAD_COORDINATES, id="infinite coordinate"),
    pytest.param({"jd": "139.69", "wd": "35.69"}, "gcj02", Reason.OUT_OF_CHINA, id="Tokyo is out_of_china"),
    pytest.param({"zbx": "BJ54"}, "gcj02", Reason.UNKNOWN_CRS, id="unsupported record CRS is unknown_crs"),
    pytest.param({}, None, Reason.UNKNOWN_CRS, id="no CRS declared anywhere is unknown_crs"),
    pytest.param({}, "mercator", Reason.UNKNOWN_CRS, id="unsupported source CRS is unknown_crs"),
]


@pytest.mark.parametrize(("over", "default_crs", "expected"), COORD_CASES)
def test_coordinate_rules(
    over: dict[str, Any], default_crs: str | None, expected: tuple[Any, Any, Any] | Reason
) -> None:
    """Rule: a point needs a declared, supported CRS and must lie in China; records without a point
    are kept when they have an address (placed by address later). A point that breaks a rule is a
    field problem: the worker is kept with no point (placed by address, or stored unmapped)."""
    result = one_worker(worker(**over), default_crs=default_crs)
    if isinstance(expected, Reason):
        reason, _ = field_problem(result)
        assert reason is expected
        assert (result.lon, result.lat, result.crs) == (None, None, None)
        assert set(result.problems[0].raw) == {"jd", "wd", "zbx", "jzdz"}
        assert_no_value_in_problem(result, over.get("jd"), over.get("wd"))
    else:
        assert not isinstance(result, Reject), result.detail
        assert (result.lon, result.lat, result.crs) == expected
        assert result.problems == ()


# --- enterprises ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        pytest.param({"sfjh": "是"}, (True, 120), id="是 means a union is established"),
        pytest.param({"sfjh": "0"}, (False, 120), id="0 means no union"),
        pytest.param({"sfjh": True, "zgrs": 35}, (True, 35), id="JSON booleans and numbers"),
        pytest.param({"zgrs": ""}, (True, None), id="blank employee count is None"),
        pytest.param({"zgrs": "1,200"}, (True, 1200), id="thousands separator in a count"),
        pytest.param({"sfjh": ""}, Reason.MISSING_FIELD, id="blank union flag is missing_field"),
        pytest.param({"sfjh": "maybe"}, Reason.BAD_VALUE, id="unknown union flag is bad_value"),
        pytest.param(
            {"zgrs": "-3"},
            (True, None, Reason.BAD_VALUE),
            id="negative employee count is bad_value, a field problem",
        ),
        pytest.param(
            {"zgrs": "12.5"},
            (True, None, Reason.BAD_VALUE),
            id="fractional employee count is bad_value, a field problem",
        ),
        pytest.param(
            {"fddbrdh": "12345"},
            (True, 120, Reason.BAD_PHONE),
            id="bad legal representative phone is a field problem",
        ),
        pytest.param({"qymc": " "}, Reason.MISSING_FIELD, id="blank enterprise name is missing_field"),
    ],
)
def test_enterprise_rules(
    over: dict[str, Any], expected: tuple[bool, int | None] | tuple[bool, int | None, Reason] | Reason
) -> None:
    """Rule: union flag is required yes/no (a record problem); employee count optional whole number
    >= 0 and the legal representative's phone are field problems (the enterprise is kept)."""
    records, rejects = validate_enterprises(
        [enterprise(**over)], mapping=ENTERPRISE_MAP, default_crs="gcj02", today=TODAY
    )
    if isinstance(expected, Reason):
        assert [r.reason for r in rejects] == [expected]
        assert records == []
    else:
        assert rejects == []
        assert [(r.union_established, r.employee_count) for r in records] == [expected[:2]]
        assert [str(p.reason) for p in records[0].problems] == [str(x) for x in expected[2:]]


# --- duplicates and record ids --------------------------------------------------------------


def test_identical_duplicates_collapse_into_one_record() -> None:
    """Rule: the same row twice in a page is one record and no reject."""
    records, rejects = run_workers(worker(), worker())
    assert len(records) == 1 and rejects == []


def test_newest_version_wins_and_older_ones_are_duplicate_in_page() -> None:
    """Rule: of differing versions of a record id, the newest is loaded, older ones are rejected."""
    old = worker(gxsj="2026-02-01 08:00:00", lxdh="13900000000")
    new = worker(gxsj="2026-02-28 10:00:00")
    records, rejects = run_workers(new, old)
    assert [r.phone for r in records] == ["13812345678"]
    assert [(r.reason, r.raw["gxsj"]) for r in rejects] == [(Reason.DUPLICATE_IN_PAGE, "2026-02-01 08:00:00")]


def test_conflicting_versions_with_the_same_time_are_all_rejected() -> None:
    """Rule: differing versions tied for newest cannot be ordered: all are duplicate_in_page."""
    records, rejects = run_workers(worker(lxdh="13900000000"), worker(), worker(ywid="w2"))
    assert [r.source_record_id for r in records] == ["w2"]
    assert sorted(r.reason for r in rejects) == [Reason.DUPLICATE_IN_PAGE] * 2


def test_versions_that_normalise_to_the_same_record_collapse() -> None:
    """Rule: full-width and half-width spellings of the same record are one record, not a conflict."""
    records, rejects = run_workers(worker(), worker(sfzh=ID_1985.translate(FULLWIDTH)))
    assert len(records) == 1 and rejects == []


def test_newest_version_invalid_means_nothing_is_loaded() -> None:
    """Rule: an older valid version is not loaded in place of a newer invalid one."""
    records, rejects = run_workers(worker(gxsj="2026-02-01 08:00:00"), worker(sfzh=wrong_last(ID_1985)))
    assert records == []
    assert sorted(r.reason for r in rejects) == sorted([Reason.DUPLICATE_IN_PAGE, Reason.BAD_ID_CHECKSUM])


@pytest.mark.parametrize("value", [pytest.param("", id="blank"), pytest.param(None, id="absent")])
def test_missing_record_id(value: str | None) -> None:
    """Rule: a row without a record id cannot be upserted: missing_record_id."""
    records, rejects = run_workers(worker(ywid=value), worker(ywid=value, xm="李四"))
    assert records == []
    assert [r.reason for r in rejects] == [Reason.MISSING_RECORD_ID] * 2
    assert all(r.source_record_id is None for r in rejects)


# --- configuration errors, privacy, speed -----------------------------------------------------


def test_mapping_without_a_required_field_is_a_configuration_error() -> None:
    """Rule: a mapping that lacks a required canonical field fails loudly, not per row."""
    mapping = {k: v for k, v in WORKER_MAP.items() if k != "id_number"}
    with pytest.raises(ValueError, match="id_number"):
        validate_workers([worker()], mapping=mapping, default_crs="gcj02", today=TODAY)


def test_rejects_keep_the_raw_row_but_never_show_it() -> None:
    """Rule: Reject.raw is the untouched row (for encrypted quarantine); its repr and detail are
    free of personal data."""
    row = worker(sfzh=wrong_last(ID_1985), lxdh="13812345678")
    reject = one_worker(row)
    assert reject.raw == row and reject.raw is not row
    for value in (row["sfzh"], row["lxdh"], row["xm"], row["jzdz"]):
        assert value not in repr(reject) and value not in reject.detail
    record = one_worker(worker())
    for value in (ID_1985, "13812345678", "张伟", "云集路"):
        assert value not in repr(record)


def test_every_reason_has_a_chinese_label_and_description() -> None:
    """Rule: the reason list is closed and documented in Chinese and English."""
    for reason in Reason:
        assert reason.label_zh and reason.description
        assert reason.value == reason.name.lower()


def test_a_page_of_twenty_thousand_good_rows_all_become_records() -> None:
    """Rule: a large page of good rows loses none. (Its speed is measured in
    ``bench/bench_validate.py`` as rows per CPU-second against a baseline, not timed here.)"""
    rows = [worker(ywid=str(i)) for i in range(20_000)]
    records, _ = run_workers(*rows)
    assert len(records) == 20_000


JUNK = st.one_of(
    st.none(),
    st.text(max_size=24),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(sfzh=JUNK, lxdh=JUNK, dwtyxydm=JUNK, jd=JUNK, wd=JUNK, gxsj=JUNK, csrq=JUNK, zbx=JUNK, ywid=JUNK)
def test_any_junk_becomes_a_record_or_a_reject_never_an_exception(**values: Any) -> None:
    """Rule: whatever a source sends, validation returns records and rejects (no crash), and a
    reject's detail never repeats a submitted value that carries four or more digits."""
    row = worker(**values)
    records, rejects = run_workers(row)
    assert len(records) + len(rejects) == 1
    for reject in rejects:
        assert isinstance(reject.reason, Reason)
        for key in ("sfzh", "lxdh", "dwtyxydm", "jd", "wd", "gxsj", "csrq"):
            value = values[key]
            if isinstance(value, str) and sum(c.isdigit() for c in value) >= 4:
                assert value.strip() not in reject.detail
