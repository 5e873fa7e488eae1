"""The closed list of reasons a source record, or one field of it, fails validation.

Every record that is not loaded carries exactly one of these codes (skip reasons as data): it is
counted per run, stored in quarantine with the raw row (encrypted), and can be reprocessed once the
source or the rule is fixed. A record loaded with one field left empty (a field problem, decided
per field in :mod:`connectors.problems`) keeps the same code on a ``field_problem`` row. The
codes are stable strings: they are stored in the database and shown in run summaries, so never
rename one; add a new member instead.

| code | 中文 | meaning |
|---|---|---|
| ``missing_record_id`` | 缺少业务主键 | the row has no source record id, so it cannot be upserted or traced |
| ``duplicate_in_page`` | 同页重复 | another, conflicting version of the same record id is in the same page |
| ``missing_field`` | 缺少必填字段 | a required field (name, ID number, update time, ...) is absent or blank |
| ``bad_id_format`` | 身份证号格式错误 | not 18 (or legacy 15) digits, or an unknown province prefix |
| ``bad_id_checksum`` | 身份证号校验码错误 | the GB 11643 MOD 11-2 check digit does not match |
| ``bad_id_birthdate`` | 身份证号出生日期错误 | no calendar date, before 1900 or in the future |
| ``bad_uscc_format`` | 统一社会信用代码格式错误 | not 18 characters of the GB 32100 alphabet |
| ``bad_uscc_checksum`` | 统一社会信用代码校验码错误 | the GB 32100 check character does not match |
| ``bad_phone`` | 电话号码错误 | neither a mainland mobile number nor a fixed line with area code |
| ``bad_date`` | 日期格式错误 | a date or timestamp field cannot be read |
| ``bad_value`` | 字段取值错误 | a flag, count or other coded value outside its allowed set |
| ``missing_coordinates`` | 缺少坐标且无地址 | no point and no address: the record cannot be placed at all |
| ``bad_coordinates`` | 坐标错误 | a coordinate is unreadable, infinite, out of range, or only half present |
| ``out_of_china`` | 坐标不在中国境内 | outside China's bounding box (often swapped or defaulted) |
| ``unknown_crs`` | 坐标系未知 | the point has no declared coordinate system, or one we do not support |
| ``unknown_case_kind`` | 案件类别未知 | a report's kind, severity or hardship grade is not in ``connectors.kinds`` |
| ``bad_amount`` | 金额错误 | a case report's amount is unreadable, negative, not finite or has more than two decimals |
| ``missing_party`` | 缺少当事人 | a dispute names neither worker nor enterprise; a hardship report no worker |
| ``address_outside_region`` | 地址不在本数据源辖区 | the only place the address names is outside the source's city |
| ``malformed_row`` | 行格式损坏 | a file line that is no CSV row (a quote never closed, text after a closing quote) |
| ``field_too_long`` | 字段超长 | a field longer than the reader's limit (128 KiB) |
| ``ragged_row`` | 列数多于表头 | a file row with more values than the header has columns (a value would be lost) |
| ``unknown_cell`` | 网格编码无效 | a roster row's cell is no 15-digit code of a current cell of the source's city |
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record went to quarantine. Closed list; see the module table for descriptions."""

    MISSING_RECORD_ID = "missing_record_id"
    DUPLICATE_IN_PAGE = "duplicate_in_page"
    MISSING_FIELD = "missing_field"
    BAD_ID_FORMAT = "bad_id_format"
    BAD_ID_CHECKSUM = "bad_id_checksum"
    BAD_ID_BIRTHDATE = "bad_id_birthdate"
    BAD_USCC_FORMAT = "bad_uscc_format"
    BAD_USCC_CHECKSUM = "bad_uscc_checksum"
    BAD_PHONE = "bad_phone"
    BAD_DATE = "bad_date"
    BAD_VALUE = "bad_value"
    MISSING_COORDINATES = "missing_coordinates"
    BAD_COORDINATES = "bad_coordinates"
    OUT_OF_CHINA = "out_of_china"
    UNKNOWN_CRS = "unknown_crs"
    UNKNOWN_CASE_KIND = "unknown_case_kind"
    BAD_AMOUNT = "bad_amount"
    MISSING_PARTY = "missing_party"
    ADDRESS_OUTSIDE_REGION = "address_outside_region"
    MALFORMED_ROW = "malformed_row"
    FIELD_TOO_LONG = "field_too_long"
    RAGGED_ROW = "ragged_row"
    UNKNOWN_CELL = "unknown_cell"

    @property
    def label_zh(self) -> str:
        """Short Chinese label for officer-facing run summaries."""
        return _DESCRIPTIONS[self][0]

    @property
    def description(self) -> str:
        """One-line English description."""
        return _DESCRIPTIONS[self][1]


_DESCRIPTIONS: dict[Reason, tuple[str, str]] = {
    Reason.MISSING_RECORD_ID: ("缺少业务主键", "the row has no source record id"),
    Reason.DUPLICATE_IN_PAGE: ("同页重复", "a conflicting version of the same record id is in the same page"),
    Reason.MISSING_FIELD: ("缺少必填字段", "a required field is absent or blank"),
    Reason.BAD_ID_FORMAT: ("身份证号格式错误", "the resident ID number is not 18 or 15 digits"),
    Reason.BAD_ID_CHECKSUM: ("身份证号校验码错误", "the resident ID check digit does not match"),
    Reason.BAD_ID_BIRTHDATE: (
        "身份证号出生日期错误",
        "the ID's birth date is invalid, before 1900 or future",
    ),
    Reason.BAD_USCC_FORMAT: ("统一社会信用代码格式错误", "the credit code is not 18 GB 32100 characters"),
    Reason.BAD_USCC_CHECKSUM: ("统一社会信用代码校验码错误", "the credit code check character is wrong"),
    Reason.BAD_PHONE: ("电话号码错误", "not a mainland mobile or fixed-line number with area code"),
    Reason.BAD_DATE: ("日期格式错误", "a date or timestamp cannot be read"),
    Reason.BAD_VALUE: ("字段取值错误", "a flag, count or coded value is outside its allowed set"),
    Reason.MISSING_COORDINATES: ("缺少坐标且无地址", "no point and no address to place the record"),
    Reason.BAD_COORDINATES: ("坐标错误", "a coordinate is unreadable, out of range or half present"),
    Reason.OUT_OF_CHINA: ("坐标不在中国境内", "the point lies outside China"),
    Reason.UNKNOWN_CRS: ("坐标系未知", "the point's coordinate system is missing or unsupported"),
    Reason.UNKNOWN_CASE_KIND: (
        "案件类别未知",
        "the case kind, severity or hardship grade is not a known one",
    ),
    Reason.BAD_AMOUNT: ("金额错误", "the amount is unreadable, negative or has more than two decimals"),
    Reason.MISSING_PARTY: (
        "缺少当事人",
        "the report names no worker (hardship) or neither worker nor enterprise",
    ),
    Reason.ADDRESS_OUTSIDE_REGION: (
        "地址不在本数据源辖区",
        "the address names only a place outside the source's city (a street named after another city)",
    ),
    Reason.MALFORMED_ROW: ("行格式损坏", "a file line that is no CSV row (e.g. a quote never closed)"),
    Reason.FIELD_TOO_LONG: ("字段超长", "a field longer than the file reader's limit"),
    Reason.RAGGED_ROW: ("列数多于表头", "a file row with more values than the header has columns"),
    Reason.UNKNOWN_CELL: ("网格编码无效", "a roster row names no current cell of the source's city"),
}
