"""Validate and normalise one page of a source's rows into canonical records or rejects.

Pure functions, no I/O, cheap pure Python per row (no pydantic per row): about 200,000
realistic worker rows per CPU-second (sandbox data, pages of 500; ~5 us a row), of which ~97 %
take the fast path for clean rows (:func:`_worker_fast_path`; the reference row validators
alone do ~90,000). The fast path never changes a result: anything it is not sure of, it leaves
to the reference.

Rules, and the decisions behind them
------------------------------------
A failed rule names one canonical field. For workers and enterprises, :mod:`connectors.problems`
decides per field whether that is a **record problem** (the record is a :class:`Reject`, quarantined
whole: record id, update time, resident ID, name, credit code, union flag) or a **field problem**
(the record is loaded with that field empty and carries a :class:`connectors.problems.FieldProblem`
with the same reason code in ``record.problems``: phone, birth date, employer credit code, employee
count, and the location — a point that is missing, unreadable, in an unknown CRS or outside China
is dropped and the record placed by its address, or stored unmapped with that reason code). Case
reports have record problems only. The reason codes below are the same either way.

Normalisation (before any check) of ID, credit-code, phone and number fields: Unicode NFKC
(full-width ``４２０５`` -> ``4205``, ideographic space -> space), surrounding whitespace
stripped, inner spaces/hyphens removed from ID and credit codes, lowercase ``x`` -> ``X``.

Resident ID (GB 11643-1999), checked in this order:

* ``bad_id_format`` - not 17 digits + ``[0-9X]`` (or 15 digits for a legacy ID), or the first two
  digits are no province code (11-65, 71 Taiwan, 81/82/83 residence permits).
* ``bad_id_checksum`` - the MOD 11-2 check digit does not match (the arithmetic of
  ``stdnum.cn.ric.calc_check_digit``, inlined because it runs once per row).
* ``bad_id_birthdate`` - digits 7-14 are no calendar date, or the date is before 1900-01-01 or after
  ``today``. ``stdnum.cn.ric.validate`` is deliberately NOT used: it rejects an ID whose area code
  did not exist yet in the birth year, but an ID carries the code of the place where it was issued,
  often years after birth (夷陵区 420506 exists since 2001; everyone born there before 2001 who got
  an ID afterwards fails stdnum's check). It also accepts future birth dates, which we reject.
* Legacy 15-digit IDs (``AAAAAA YYMMDD SSS``) are upgraded to 18: century ``19`` inserted and the
  check digit computed. They have no check digit of their own to verify.

The record's ``birth_date`` is the ID's birth date (authoritative). A mapped birth-date field that
cannot be read is ``bad_date``; one that can be read but differs is accepted: registered and
"real" (often lunar-calendar) birthdays legitimately differ. ``gender`` is the source's value when
it is a recognised code (男/女, 1/2 per GB/T 2261.1, M/F), else read from the ID (odd 17th digit =
male); an unrecognised gender value is not a reason to drop a worker.

Unified social credit code (GB 32100-2015): 18 characters of the alphabet
``0-9 A-H J-N P-R T U W-Y`` with digits 3-8 (the region code) numeric -> else ``bad_uscc_format``;
check character as ``stdnum.cn.uscc.calc_check_digit`` computes it -> else ``bad_uscc_checksum``. Unlike
``stdnum.cn.uscc.validate`` we allow a letter as the registering-authority and entity-type
characters (e.g. ``N`` agricultural organisations, ``Y`` others), which GB 32100 permits.

Phones: ``+86``/``0086`` (or a bare ``86`` before a mobile number) stripped; separators
(spaces, ``-``, parentheses, dots) removed; then a mainland mobile ``1[3-9]`` + 9 digits or a fixed
line ``0`` + area code (``10``, ``2x`` or three digits) + a 7-8 digit local number starting 2-9.
The international form without trunk ``0`` (``+86 717 ...``) gets the ``0`` back. Stored as digits
only. Extensions and numbers without an area code are ``bad_phone``. A blank phone is None.

Dates: ISO (``2024-05-01``), ``2024/05/01``, ``2024.05.01``, ``2024年5月1日``, ``20240501``; a time
part after the date is ignored for date fields. Timestamps (``source_updated_at``, required): ISO
8601 with ``T`` or space, the same separators as dates, compact ``20240501120000``, or epoch
seconds/milliseconds as a number; a naive time is Asia/Shanghai. An update time more than a day
after ``today`` is ``bad_date``: one clock-skewed row would otherwise push the sync watermark into
the future and hide every later change.

Coordinates: ``lon``/``lat`` are read as floats (None, blank, "null" and NaN are "no value"). The
pair ``(0, 0)`` is an unset default in many grid systems and is treated as no point.

* no point: accepted with ``lon = lat = None`` when the record has an address (it is placed by
  address later), else ``missing_coordinates``;
* only one of the pair, unreadable, infinite or out of range -> ``bad_coordinates``;
* CRS: the record's own ``crs`` field when the mapping names one and the row fills it, else the
  source's declared ``default_crs``; none, or a name :func:`geodata.crs.parse_crs` does not know ->
  ``unknown_crs`` (never guessed). It is only required when there is a point;
* outside China's bounding box (:data:`geodata.crs.CHINA_BBOX`, the box the GCJ-02 algorithm
  uses) -> ``out_of_china`` (not guessed either, even with an address).

Duplicates of one ``source_record_id`` in a page: identical rows collapse into one record. Of
differing versions the one with the newest update time is validated and loaded and the older ones
are ``duplicate_in_page`` (superseded). Differing versions tied for newest cannot be ordered, so
unless they normalise to the same record all of them are ``duplicate_in_page``; the next sync or
a reprocess picks up the truth.

Case reports (:func:`validate_cases`):

* ``kind`` (required) is a :class:`connectors.kinds.CaseKind` value, its Chinese label
  (``拖欠工资``) or a common alias (``欠薪``) -> else ``unknown_case_kind``; ``severity`` (blank =
  normal) and ``hardship_grade`` the same against :class:`Severity` / :class:`HardshipGrade`. A
  hardship grade on a dispute is ``bad_value``.
* ``reported_at`` (required) is a timestamp like ``source_updated_at``; after the update time, or
  more than a day in the future -> ``bad_date``.
* ``worker_id_number`` and ``enterprise_uscc`` are optional and checked like a worker's ID and an
  employer's credit code (same reason codes). A hardship report must name a worker and a dispute
  a worker or an enterprise -> else ``missing_party``.
* ``workers_affected`` is a whole number of at least 1 (blank = 1) -> else ``bad_value``;
  ``amount`` is yuan with at most two decimals, finite and not negative -> else ``bad_amount``.
* ``description`` is free text kept as is (trimmed), never checked beyond that, never logged.
* points follow the coordinate rules above (an address-only report is placed by address).

Reject ``detail`` strings name the rule and the source field, never the value; the raw row is kept
in ``Reject.raw`` for encrypted quarantine only.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from itertools import repeat
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from connectors.amounts import AmountError, parse_yuan
from connectors.kinds import CaseKind, HardshipGrade, Severity
from connectors.problems import FieldProblem, ProblemKind, kind_of
from connectors.reasons import Reason
from connectors.records import (
    CANONICAL_FIELDS,
    DAMAGE_DETAIL_KEY,
    DAMAGE_KEY,
    CaseReportRecord,
    EnterpriseRecord,
    OfficerRecord,
    Reject,
    WorkerRecord,
)
from geodata.crs import CHINA_BBOX, UnknownCRSError, parse_crs

__all__ = [
    "CHINA_TZ",
    "VALIDATORS",
    "FieldError",
    "normalise_id_number",
    "normalise_phone",
    "normalise_uscc",
    "parse_amount",
    "parse_case_kind",
    "parse_cells",
    "parse_date",
    "parse_timestamp",
    "resolve_crs",
    "validate_cases",
    "validate_enterprises",
    "validate_officers",
    "validate_workers",
]

CHINA_TZ: tzinfo = ZoneInfo("Asia/Shanghai")

R = TypeVar("R", WorkerRecord, EnterpriseRecord, CaseReportRecord, OfficerRecord)


class FieldError(ValueError):
    """One rule failed for one field of one row; the page validators turn it into a Reject.

    ``detail`` is safe to log (it never contains the value).
    """

    __slots__ = ("detail", "field", "reason")

    def __init__(self, reason: Reason, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Field-level normalisers (public: the file connector and tests use them directly)
# --------------------------------------------------------------------------------------------


def _code_text(value: Any) -> str | None:
    """A code-like value as stripped half-width text ('' for None/blank; None for a value that
    cannot be a code: a float (an 18-digit ID read as a number has lost digits), a bool, a date)."""
    if value is None:
        return ""
    if isinstance(value, str):
        s = value
    elif isinstance(value, int) and not isinstance(value, bool):
        s = str(value)
    else:
        return None
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    return s.strip()


# GB/T 2260 province codes, 71 Taiwan, 81/82/83 residence permits of HK/Macau/Taiwan residents.
_PROVINCES = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37"}
    | {"41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65"}
    | {"71", "81", "82", "83"}
)
_ID18_RE = re.compile(r"\d{17}[\dX]", re.ASCII)
_ID15_RE = re.compile(r"\d{15}", re.ASCII)
_MIN_BIRTH = date(1900, 1, 1)


def _id_check_char(body17: str) -> str:
    # Same arithmetic as stdnum.cn.ric.calc_check_digit (weights 2^(17-i) mod 11 via base 13),
    # inlined because it runs once per row.
    c = (1 - 2 * int(body17, 13)) % 11
    return "X" if c == 10 else str(c)


def normalise_id_number(value: Any, *, today: date, field: str = "id_number") -> tuple[str, date]:
    """Normalised 18-character resident ID and its birth date; raises on a bad ID.

    See the module docstring for the rules. Raises :class:`FieldError`.
    """
    s = _code_text(value)
    if s is None:
        raise FieldError(Reason.BAD_ID_FORMAT, field, f"resident ID must be text, not {type(value).__name__}")
    if not s:
        raise FieldError(Reason.MISSING_FIELD, field, "resident ID number is blank")
    if " " in s or "-" in s:
        s = s.replace(" ", "").replace("-", "")
    n = len(s)
    if n == 18:
        if s[17] == "x":
            s = s[:17] + "X"
        if not _ID18_RE.fullmatch(s):
            raise FieldError(Reason.BAD_ID_FORMAT, field, "resident ID must be 17 digits and a digit or X")
        if s[:2] not in _PROVINCES:
            raise FieldError(Reason.BAD_ID_FORMAT, field, "resident ID starts with no province code")
        if _id_check_char(s[:17]) != s[17]:
            raise FieldError(Reason.BAD_ID_CHECKSUM, field, "resident ID check digit does not match")
        y, m, d = int(s[6:10]), int(s[10:12]), int(s[12:14])
    elif n == 15:
        if not _ID15_RE.fullmatch(s):
            raise FieldError(Reason.BAD_ID_FORMAT, field, "legacy 15-digit resident ID must be all digits")
        if s[:2] not in _PROVINCES:
            raise FieldError(Reason.BAD_ID_FORMAT, field, "resident ID starts with no province code")
        body = s[:6] + "19" + s[6:]
        s = body + _id_check_char(body)
        y, m, d = int(s[6:10]), int(s[10:12]), int(s[12:14])
    else:
        raise FieldError(Reason.BAD_ID_FORMAT, field, f"resident ID must have 18 or 15 characters, not {n}")
    try:
        birth = date(y, m, d)
    except ValueError:
        raise FieldError(
            Reason.BAD_ID_BIRTHDATE, field, "birth date in the resident ID is no calendar date"
        ) from None
    if birth < _MIN_BIRTH:
        raise FieldError(Reason.BAD_ID_BIRTHDATE, field, "birth date in the resident ID is before 1900")
    if birth > today:
        raise FieldError(Reason.BAD_ID_BIRTHDATE, field, "birth date in the resident ID is in the future")
    return s, birth


_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_RE = re.compile(r"[0-9A-HJ-NPQRTUW-Y]{2}\d{6}[0-9A-HJ-NPQRTUW-Y]{10}", re.ASCII)


def _uscc_check_char(body17: str) -> str:
    # Same as stdnum.cn.uscc.calc_check_digit, without its per-call compact().
    total = sum(map(operator.mul, map(_USCC_VALUE.__getitem__, body17), _USCC_WEIGHTS))
    return _USCC_ALPHABET[(31 - total) % 31]


def normalise_uscc(value: Any, *, field: str = "uscc") -> str | None:
    """Normalised 18-character unified social credit code, None if blank; raises on a bad code."""
    s = _code_text(value)
    if s is None:
        raise FieldError(
            Reason.BAD_USCC_FORMAT, field, f"credit code must be text, not {type(value).__name__}"
        )
    if not s:
        return None
    if " " in s or "-" in s:
        s = s.replace(" ", "").replace("-", "")
    s = s.upper()
    if len(s) != 18:
        raise FieldError(Reason.BAD_USCC_FORMAT, field, f"credit code must have 18 characters, not {len(s)}")
    if not _USCC_RE.fullmatch(s):
        raise FieldError(Reason.BAD_USCC_FORMAT, field, "credit code has characters outside GB 32100")
    if _uscc_check_char(s[:17]) != s[17]:
        raise FieldError(Reason.BAD_USCC_CHECKSUM, field, "credit code check character does not match")
    return s


_MOBILE_RE = re.compile(r"1[3-9]\d{9}", re.ASCII)
_FIXED_RE = re.compile(r"0(?:10|2\d|[3-9]\d\d)[2-9]\d{6,7}", re.ASCII)
_PHONE_SEP_RE = re.compile(r"[\s\-().]")


def normalise_phone(value: Any, *, field: str = "phone") -> str | None:
    """Digits-only mainland phone number, None if blank; raises on anything else."""
    s = _code_text(value)
    if s is None:
        raise FieldError(Reason.BAD_PHONE, field, f"phone must be text, not {type(value).__name__}")
    if not s:
        return None
    if len(s) == 11 and _MOBILE_RE.fullmatch(s):  # the common case, fast
        return s
    s = _PHONE_SEP_RE.sub("", s)
    international = False
    if s.startswith("+"):
        if not s.startswith("+86"):
            raise FieldError(Reason.BAD_PHONE, field, "phone has a non-mainland country code")
        s, international = s[3:], True
    elif s.startswith("0086"):
        s, international = s[4:], True
    elif len(s) == 13 and s.startswith("861"):
        s, international = s[2:], True
    if international and s and s[0] not in "01":
        s = "0" + s  # trunk prefix is dropped in the international form
    if _MOBILE_RE.fullmatch(s) or _FIXED_RE.fullmatch(s):
        return s
    raise FieldError(
        Reason.BAD_PHONE, field, "phone is neither a mainland mobile nor a fixed line with area code"
    )


_DATE_RE = re.compile(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?=$|[\sT])", re.ASCII)
_DATE8_RE = re.compile(r"(\d{4})(\d{2})(\d{2})", re.ASCII)


def parse_date(value: Any, *, field: str = "date") -> date | None:
    """A calendar date from the usual Chinese export formats; None if blank; raises if unreadable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise FieldError(Reason.BAD_DATE, field, f"date must be text, not {type(value).__name__}")
    s = value if value.isascii() else unicodedata.normalize("NFKC", value)
    s = s.strip()
    if not s:
        return None
    if len(s) == 10 and s[4] == "-":
        try:
            return date.fromisoformat(s)
        except ValueError:
            raise FieldError(Reason.BAD_DATE, field, "date is no calendar date") from None
    m = _DATE_RE.match(s) or _DATE8_RE.fullmatch(s)
    if m is None:
        raise FieldError(Reason.BAD_DATE, field, "date is in no recognised format")
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        raise FieldError(Reason.BAD_DATE, field, "date is no calendar date") from None


_TS_SEP_RE = re.compile(r"(\d{4})[/.年](\d{1,2})[/.月](\d{1,2})日?")
_EPOCH_MS_MIN = 100_000_000_000  # numbers above this are milliseconds (year 1973 in ms)


def _from_epoch(v: float, field: str) -> datetime:
    if v > _EPOCH_MS_MIN:
        v = v / 1000.0
    try:
        return datetime.fromtimestamp(v, tz=CHINA_TZ)
    except (OverflowError, OSError, ValueError):
        raise FieldError(Reason.BAD_DATE, field, "epoch timestamp out of range") from None


def parse_timestamp(value: Any, *, field: str = "source_updated_at") -> datetime | None:
    """A tz-aware timestamp (naive = Asia/Shanghai); None if blank; raises if unreadable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=CHINA_TZ)
    if isinstance(value, bool):
        raise FieldError(Reason.BAD_DATE, field, "timestamp must be text or a number, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise FieldError(Reason.BAD_DATE, field, "timestamp is not a finite number")
        return _from_epoch(float(value), field)
    if not isinstance(value, str):
        raise FieldError(Reason.BAD_DATE, field, f"timestamp must be text, not {type(value).__name__}")
    s = value if value.isascii() else unicodedata.normalize("NFKC", value)
    s = s.strip()
    if not s:
        return None
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        dt = None
    if dt is None:
        if s.isdigit() and len(s) in (10, 13):
            return _from_epoch(float(s), field)
        t = _TS_SEP_RE.sub(lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", s, count=1)
        if len(t) == 14 and t.isdigit():
            t = f"{t[:8]}T{t[8:]}"
        try:
            dt = datetime.fromisoformat(t)
        except ValueError:
            raise FieldError(Reason.BAD_DATE, field, "timestamp is in no recognised format") from None
    # combine() attaches the zone in a fifth of the time replace(tzinfo=) takes; the same value
    return dt if dt.tzinfo is not None else datetime.combine(dt, dt.time(), CHINA_TZ)


# --------------------------------------------------------------------------------------------
# Coordinates and CRS
# --------------------------------------------------------------------------------------------


def resolve_crs(name: Any) -> str | None:
    """Canonical CRS name (``"gcj02"`` ...) for a declared name, or None if missing/unknown.

    Delegates to :func:`geodata.crs.parse_crs`, the one place that knows CRS names and their
    aliases (``EPSG:4490``, ``GCJ-02``, ``baidu`` ...); it never guesses.
    """
    if name is None:
        return None
    try:
        return parse_crs(name if isinstance(name, str) else str(name)).value
    except UnknownCRSError:
        return None


# The same box geodata uses for GCJ-02 (and for "in China"); compared per row as plain floats
# because a numpy call per row would cost more than the rest of the row's validation.
_MIN_LON, _MIN_LAT, _MAX_LON, _MAX_LAT = CHINA_BBOX


def _in_china_bbox(lon: float, lat: float) -> bool:
    return _MIN_LON <= lon <= _MAX_LON and _MIN_LAT <= lat <= _MAX_LAT


_NULL_TEXT = frozenset({"", "nan", "null", "none", "-"})


def _coord(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        s = value if value.isascii() else unicodedata.normalize("NFKC", value)
        s = s.strip()
        if s.lower() in _NULL_TEXT:
            return None
        try:
            v = float(s)
        except ValueError:
            raise FieldError(Reason.BAD_COORDINATES, field, "coordinate is not a number") from None
        return None if v != v else v
    raise FieldError(
        Reason.BAD_COORDINATES, field, f"coordinate must be a number, not {type(value).__name__}"
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = (value if isinstance(value, str) else str(value)).strip()
    return s or None


def _name(value: Any, field: str) -> str:
    s = _text(value)
    if s is None:
        raise FieldError(Reason.MISSING_FIELD, field, "name is blank")
    if (" " in s or "\u3000" in s) and not any("a" <= c.lower() <= "z" for c in s):
        # Two-character Chinese names are often padded for alignment ("张　三"): drop the padding.
        s = "".join(s.split())
    return s


# --------------------------------------------------------------------------------------------
# Row validators
# --------------------------------------------------------------------------------------------

_GENDER = {
    "1": "M", "男": "M", "男性": "M", "m": "M", "male": "M",
    "2": "F", "女": "F", "女性": "F", "f": "F", "female": "F",
}  # fmt: skip
_TRUE = frozenset({"1", "是", "y", "yes", "true", "t", "已建", "已建会", "有"})
_FALSE = frozenset({"0", "否", "n", "no", "false", "f", "未建", "未建会", "无"})


def _check_mapping(entity: str, mapping: Mapping[str, str]) -> None:
    required, optional = CANONICAL_FIELDS[entity]
    missing = [f for f in required if not mapping.get(f)]
    if missing:
        raise ValueError(f"{entity} mapping lacks required canonical fields: {', '.join(missing)}")
    unknown = sorted(set(mapping) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{entity} mapping has unknown canonical fields: {', '.join(unknown)}")
    if bool(mapping.get("lon")) != bool(mapping.get("lat")):
        raise ValueError(f"{entity} mapping must name both lon and lat, or neither")


class _Common:
    """Field names and per-call state shared by the worker and enterprise row validators."""

    def __init__(
        self, mapping: Mapping[str, str], default_crs: str | None, today: date, entity: str = "cases"
    ) -> None:
        self.entity = entity
        self.rid = mapping["source_record_id"]
        self.ts = mapping["source_updated_at"]
        self.lon = mapping.get("lon") or None
        self.lat = mapping.get("lat") or None
        self.crs = mapping.get("crs") or None
        self.address = mapping.get("address") or None
        self.today = today
        self.default_crs = resolve_crs(default_crs)
        self.default_crs_declared = bool(default_crs and str(default_crs).strip())
        self.ts_limit = datetime.combine(today + timedelta(days=2), time(), CHINA_TZ)
        self.city_field = dict(mapping)
        self.location_fields = tuple(mapping[k] for k in ("lon", "lat", "crs", "address") if mapping.get(k))
        self._crs_cache: dict[str, str | None] = {}
        # Many workers share an employer: each distinct credit code is checked once per page.
        self._uscc_cache: dict[tuple[str, str], str | FieldError | None] = {}

    def uscc(self, value: Any, field: str) -> str | None:
        if type(value) is not str:
            return normalise_uscc(value, field=field)
        key = (value, field)
        try:
            hit = self._uscc_cache[key]
        except KeyError:
            try:
                hit = normalise_uscc(value, field=field)
            except FieldError as e:
                # Kept without its traceback: a cached traceback holds the frames of the chunk
                # being validated (and every record of it) in a cycle with this cache, freed only
                # by Python's cyclic collector (bench_sync: ~1.5 us a record of collector CPU).
                hit = FieldError(e.reason, e.field, e.detail)
            self._uscc_cache[key] = hit
        if isinstance(hit, FieldError):
            raise FieldError(hit.reason, hit.field, hit.detail)
        return hit

    def field_problem(
        self, e: FieldError, row: Mapping[str, Any], city_fields: Sequence[str]
    ) -> FieldProblem:
        """``e`` as a field problem of the record (see :mod:`connectors.problems`), or ``e``
        raised again when its field is one that keeps the record out."""
        if kind_of(self.entity, e.field) is not ProblemKind.FIELD:
            raise e
        city = self.city_field.get(e.field or "")
        detail = f"{e.detail} (field {city})" if city else e.detail
        return FieldProblem(e.field or "", e.reason, detail, {f: row.get(f) for f in city_fields})

    def located(
        self, row: Mapping[str, Any], address: str | None, problems: list[FieldProblem]
    ) -> tuple[float | None, float | None, str | None]:
        """:meth:`point`, with a location that fails its rule dropped (the record is then placed
        by its address, or stored unmapped with the problem's reason code)."""
        try:
            return self.point(row, address)
        except FieldError as e:
            problems.append(self.field_problem(e, row, self.location_fields))
            return None, None, None

    def record_id(self, row: Mapping[str, Any]) -> str:
        v = row.get(self.rid)
        s = _text(v) if not isinstance(v, bool) else None
        if s is None:
            raise FieldError(Reason.MISSING_RECORD_ID, "source_record_id", "record id is blank")
        return s

    def updated_at(self, row: Mapping[str, Any]) -> datetime:
        dt = parse_timestamp(row.get(self.ts), field="source_updated_at")
        if dt is None:
            raise FieldError(Reason.MISSING_FIELD, "source_updated_at", "update time is blank")
        if dt >= self.ts_limit:
            raise FieldError(Reason.BAD_DATE, "source_updated_at", "update time is in the future")
        return dt

    def _resolve(self, raw: Any) -> str | None:
        key = raw if isinstance(raw, str) else str(raw)
        try:
            return self._crs_cache[key]
        except KeyError:
            self._crs_cache[key] = v = resolve_crs(key)
            return v

    def point(
        self, row: Mapping[str, Any], address: str | None
    ) -> tuple[float | None, float | None, str | None]:
        """(lon, lat, crs) after the coordinate rules in the module docstring."""
        own = row.get(self.crs) if self.crs else None
        own_blank = own is None or (isinstance(own, str) and not own.strip())
        crs = self.default_crs if own_blank else self._resolve(own)
        if self.lon is None or self.lat is None:
            lon = lat = None
        else:
            lon = _coord(row.get(self.lon), "lon")
            lat = _coord(row.get(self.lat), "lat")
        if (lon is None and lat is None) or (lon == 0.0 and lat == 0.0):
            if address is None:
                raise FieldError(
                    Reason.MISSING_COORDINATES, "lon", "record has neither coordinates nor an address"
                )
            return None, None, crs
        if lon is None or lat is None:
            raise FieldError(
                Reason.BAD_COORDINATES, "lon" if lon is None else "lat", "only one of lon/lat is present"
            )
        if crs is None:
            if own_blank:
                what = (
                    "no coordinate system declared"
                    if not self.default_crs_declared
                    else "the source's declared coordinate system is not supported"
                )
            else:
                what = "the record's coordinate system is not supported"
            raise FieldError(Reason.UNKNOWN_CRS, "crs", what)
        if (
            not (math.isfinite(lon) and math.isfinite(lat))
            or not (-180.0 <= lon <= 180.0)
            or not (-90.0 <= lat <= 90.0)
        ):
            raise FieldError(Reason.BAD_COORDINATES, "lon", "coordinates are infinite or out of range")
        if not _in_china_bbox(lon, lat):
            raise FieldError(Reason.OUT_OF_CHINA, "lon", "point lies outside China")
        return lon, lat, crs


def _worker_validator(
    mapping: Mapping[str, str], default_crs: str | None, today: date
) -> tuple[_Common, Callable[[Mapping[str, Any]], WorkerRecord]]:
    _check_mapping("workers", mapping)
    c = _Common(mapping, default_crs, today, "workers")
    f_id = mapping["id_number"]
    f_name = mapping["name"]
    f_gender = mapping.get("gender") or None
    f_birth = mapping.get("birth_date") or None
    f_phone = mapping.get("phone") or None
    f_uscc = mapping.get("enterprise_uscc") or None
    f_addr = c.address
    gender_map = _GENDER

    def validate_row(row: Mapping[str, Any]) -> WorkerRecord:
        rid = c.record_id(row)
        updated = c.updated_at(row)
        id_number, birth = normalise_id_number(row.get(f_id), today=today)
        name = _name(row.get(f_name), "name")
        problems: list[FieldProblem] = []
        if f_birth is not None:
            try:
                parse_date(row.get(f_birth), field="birth_date")
            except FieldError as e:
                problems.append(c.field_problem(e, row, (f_birth,)))
        gender = None
        if f_gender is not None:
            g = row.get(f_gender)
            if g is not None:
                gender = gender_map.get(str(g).strip().lower())
        if gender is None:
            gender = "M" if int(id_number[16]) % 2 else "F"
        phone = uscc = None
        if f_phone:
            try:
                phone = normalise_phone(row.get(f_phone))
            except FieldError as e:
                problems.append(c.field_problem(e, row, (f_phone,)))
        if f_uscc:
            try:
                uscc = c.uscc(row.get(f_uscc), "enterprise_uscc")
            except FieldError as e:
                problems.append(c.field_problem(e, row, (f_uscc,)))
        address = _text(row.get(f_addr)) if f_addr else None
        lon, lat, crs = c.located(row, address, problems)
        return WorkerRecord(
            rid, updated, id_number, name, gender, birth, phone, uscc, address, lon, lat, crs, tuple(problems)
        )

    return c, validate_row


# --------------------------------------------------------------------------------------------
# Fast path for worker rows (issue #20): most rows of a nightly sync are already in clean,
# canonical form. One flat function accepts exactly those and answers None ("not sure") for
# anything else, which the reference ``validate_row`` above then decides; a record with any
# field problem is always the reference's. The fast path never changes a result
# (tests/connectors/test_validate_fastpath.py compares both ways): for every value it accepts,
# the reference reaches the same value by the same call on the same text, and where a value
# is common but not canonical (a fixed-line phone, a ``1985/03/12`` birth date) the fast path
# calls the reference's own field function.
# --------------------------------------------------------------------------------------------

#: Off: every row goes through the reference row validators only (the fast path's tests and
#: benchmark flip it to compare both ways in one process).
FAST_PATH = True

# 18 ASCII characters: a province code, 15 digits, a digit or X (or x, the reference's upper()).
_FAST_ID_RE = re.compile(rf"(?:{'|'.join(sorted(_PROVINCES))})\d{{15}}[\dXx]", re.ASCII)
# The check character by int(body, 13) % 11: _id_check_char() without its bignum arithmetic.
_ID_CHECK_BY_MOD = tuple("X" if (1 - 2 * r) % 11 == 10 else str((1 - 2 * r) % 11) for r in range(11))
_ODD = frozenset("13579")
#: Digits 7-14 of a resident ID -> its birth date, for calendar dates from 1900 up to the latest
#: ``today`` seen (so at most ~46,000 entries); "after today" is checked per row.
_BIRTHS: dict[str, date] = {}
#: Credit code text exactly as sent -> :func:`normalise_uscc` of it, for codes that pass. A pure
#: function of the text, so shared across pages: a city's workers name thousands of employers
#: in random order and a per-page cache misses most of them. Cleared past ``_CACHE_MAX``.
_USCC_OK: dict[str, str | None] = {}
#: Date texts :func:`parse_date` reads, in any of its formats (the worker's birth-date field is
#: only checked, its value is not used). Cleared past ``_CACHE_MAX``.
_DATES_OK: set[str] = set()
_CACHE_MAX = 100_000


class _WorkerSlots:
    """The slot layout of :class:`WorkerRecord` without its frozen ``__setattr__``.

    A frozen dataclass's ``__init__`` calls ``object.__setattr__`` once per field, a third of
    the fast path's cost. The fast path fills one of these and then assigns its ``__class__``
    (allowed: same slots, same base), so it returns a real, frozen, equal ``WorkerRecord``.
    """

    __slots__ = WorkerRecord.__slots__


def _check_worker_slots() -> None:
    # The trick above is only sound while the layouts match: checked once, at import.
    names = tuple(f.name for f in dataclasses.fields(WorkerRecord))
    if WorkerRecord.__slots__ != names or WorkerRecord.__mro__[1:] != (object,):
        raise RuntimeError("WorkerRecord changed: update connectors.validate._worker_fast_path")


_check_worker_slots()


def _fast_id_repair(s: str) -> str | None:
    """A resident ID that is full-width or a legacy 15-digit one as normalise_id_number() turns
    it into 18 characters before its checks (the fast path's pattern then), None for any other."""
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
        if _FAST_ID_RE.fullmatch(s):
            return s
    if len(s) == 15 and s.isascii() and s.isdigit() and s[:2] in _PROVINCES:
        body = s[:6] + "19" + s[6:]
        return body + _id_check_char(body)
    return None


def _worker_fast_path(
    c: _Common, mapping: Mapping[str, str], today: date
) -> Callable[[Mapping[str, Any]], WorkerRecord | None]:
    """The fast path of :func:`_worker_validator`'s ``validate_row``: the very record it would
    return for a clean row without field problems, else None."""
    f_rid, f_ts = c.rid, c.ts
    f_id = mapping["id_number"]
    f_name = mapping["name"]
    f_gender = mapping.get("gender") or None
    f_birth = mapping.get("birth_date") or None
    f_phone = mapping.get("phone") or None
    f_uscc = mapping.get("enterprise_uscc") or None
    f_addr = c.address
    f_lon, f_lat, f_crs = c.lon, c.lat, c.crs
    default_crs = c.default_crs
    # c.ts_limit is in CHINA_TZ like every naive time read here, and aware times with the same
    # tzinfo compare by their naive parts: the same as comparing naive with naive.
    ts_limit = c.ts_limit.replace(tzinfo=None)
    china = CHINA_TZ
    fromiso = datetime.fromisoformat
    combine = datetime.combine  # = naive.replace(tzinfo=china), at a seventh of its cost
    fixed_offset_from = "1992"  # Asia/Shanghai is UTC+8 all year from 1992 (summer time 1986-1991)
    id18 = _FAST_ID_RE.fullmatch
    id_check = _ID_CHECK_BY_MOD
    odd = _ODD
    births = _BIRTHS
    min_birth = _MIN_BIRTH
    dates_ok = _DATES_OK
    usccs = _USCC_OK
    gender_map = _GENDER
    mobile = _MOBILE_RE.fullmatch
    fixed = _FIXED_RE.fullmatch
    min_lon, min_lat, max_lon, max_lat = _MIN_LON, _MIN_LAT, _MAX_LON, _MAX_LAT
    crss: dict[str, str | None] = {}  # the record's crs text -> the CRS point() would use
    new = object.__new__
    slots = _WorkerSlots
    record = WorkerRecord

    def fast_row(row: Mapping[str, Any]) -> WorkerRecord | None:
        get = row.get
        # record id: _text()
        v = get(f_rid)
        if type(v) is not str:
            return None
        rid = v.strip()
        if not rid:
            return None
        # update time: parse_timestamp() of a naive ASCII text without surrounding whitespace
        v = get(f_ts)
        if type(v) is not str or len(v) != 19 or not v.isascii() or v[0] <= " " or v[18] <= " ":
            return None
        try:
            naive = fromiso(v)
        except ValueError:
            return None
        if naive.tzinfo is not None or naive >= ts_limit:
            return None
        ts = v
        # resident ID: normalise_id_number()
        s = get(f_id)
        if type(s) is not str:
            return None
        if not id18(s):
            s = _fast_id_repair(s)  # full-width, legacy 15-digit
            if s is None:
                return None
        body = s[:17]
        last = s[17]
        if last == "x":
            s = body + "X"
            last = "X"
        if id_check[int(body, 13) % 11] != last:
            return None
        key = s[6:14]
        birth = births.get(key)
        if birth is None:
            try:
                birth = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
            except ValueError:
                return None
            if birth < min_birth or birth > today:
                return None
            births[key] = birth
        elif birth > today:
            return None
        # name: _name() when there is no padding to drop
        v = get(f_name)
        if type(v) is not str:
            return None
        name = v.strip()
        if not name or " " in name or "\u3000" in name:
            return None
        # birth-date field: parse_date() reads it (the value is not used)
        if f_birth is not None:
            v = get(f_birth)
            if v is not None:
                if type(v) is not str:
                    return None
                if v not in dates_ok:
                    try:
                        parse_date(v, field="birth_date")
                    except FieldError:
                        return None
                    if len(dates_ok) >= _CACHE_MAX:
                        dates_ok.clear()
                    dates_ok.add(v)
        # gender: the source's recognised code, else from the ID
        gender = None
        if f_gender is not None:
            v = get(f_gender)
            if v is not None:
                if type(v) is not str:
                    return None
                gender = gender_map.get(v)
                if gender is None:
                    gender = gender_map.get(v.strip().lower())
        if gender is None:
            gender = "M" if s[16] in odd else "F"
        # phone: a bare mobile number, blank, or what normalise_phone() accepts
        phone = None
        if f_phone is not None:
            v = get(f_phone)
            if type(v) is str and len(v) == 11 and mobile(v):
                phone = v
            elif type(v) is str and v.isascii() and fixed(t := v.replace("-", "")):
                phone = t  # 0717-6234567 (digits and hyphens: the reference removes the hyphens)
            elif type(v) is str and len(v) == 15 and v.startswith("+86 ") and mobile(v[4:]):
                phone = v[4:]  # +86 13812345678
            elif v is not None and (type(v) is not str or v):  # not blank: normalise_phone() decides
                try:
                    phone = normalise_phone(v)
                except FieldError:
                    return None
        # employer: what c.uscc() accepts
        uscc = None
        if f_uscc is not None:
            v = get(f_uscc)
            if v is not None:
                if type(v) is not str:
                    return None
                try:
                    uscc = usccs[v]
                except KeyError:
                    try:
                        uscc = c.uscc(v, "enterprise_uscc")
                    except FieldError:
                        return None
                    if len(usccs) >= _CACHE_MAX:
                        usccs.clear()
                    usccs[v] = uscc
        # address: _text()
        address = None
        if f_addr is not None:
            v = get(f_addr)
            if v is not None:
                if type(v) is not str:
                    return None
                address = v.strip() or None
        # location: c.point() when it raises nothing
        crs = default_crs
        if f_crs is not None:
            v = get(f_crs)
            if type(v) is str:
                try:
                    crs = crss[v]
                except KeyError:
                    crs = crss[v] = default_crs if not v.strip() else c._resolve(v)
            elif v is not None:
                return None
        lon = lat = None
        if f_lon is not None and f_lat is not None:
            # _coord(): a float as is, an ASCII text through float() (which ignores surrounding
            # whitespace as strip() does); "null", "-" and other texts float() refuses, ints and
            # the rest are the reference's.
            v = get(f_lon)
            if type(v) is str:
                if v:
                    if not v.isascii():
                        return None
                    try:
                        lon = float(v)
                    except ValueError:
                        return None
            elif type(v) is float:
                lon = v
            elif v is not None:
                return None
            v = get(f_lat)
            if type(v) is str:
                if v:
                    if not v.isascii():
                        return None
                    try:
                        lat = float(v)
                    except ValueError:
                        return None
            elif type(v) is float:
                lat = v
            elif v is not None:
                return None
            if lon != lon:  # NaN: no value
                lon = None
            if lat != lat:
                lat = None
        if (lon is None and lat is None) or (lon == 0.0 and lat == 0.0):
            if address is None:  # missing_coordinates
                return None
            lon = lat = None
        elif (
            lon is None
            or lat is None
            or crs is None
            or not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat)  # also inf
        ):
            return None
        out: Any = new(slots)
        out.source_record_id = rid
        out.source_updated_at = combine(naive, naive.time(), china)
        # as COPY text: PostgreSQL reads "YYYY-MM-DD HH:MM:SS" (or with a T) but not every form
        # fromisoformat takes in 19 characters (ISO week dates, any separator character)
        out.source_updated_text = (
            ts + "+08"
            if ts >= fixed_offset_from
            and ts[10] in "T "
            and ts[4] == "-" == ts[7]
            and ts[13] == ":" == ts[16]
            else None
        )
        out.id_number = s
        out.name = name
        out.gender = gender
        out.birth_date = birth
        out.phone = phone
        out.enterprise_uscc = uscc
        out.address = address
        out.lon = lon
        out.lat = lat
        out.crs = crs
        out.problems = ()
        out.__class__ = record
        return out  # type: ignore[no-any-return]

    return fast_row


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = _code_text(value)
    if text is None:
        raise FieldError(Reason.BAD_VALUE, field, f"flag must be text or 0/1, not {type(value).__name__}")
    s = text.lower()
    if s == "":
        raise FieldError(Reason.MISSING_FIELD, field, "flag is blank")
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise FieldError(Reason.BAD_VALUE, field, "flag is not a recognised yes/no value")


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldError(Reason.BAD_VALUE, field, "count must be a whole number, not a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if value != value:
            return None
        if not value.is_integer():
            raise FieldError(Reason.BAD_VALUE, field, "count must be a whole number")
        n = int(value)
    else:
        text = _code_text(value)
        if text is None:
            raise FieldError(Reason.BAD_VALUE, field, f"count must be a number, not {type(value).__name__}")
        s = text.replace(",", "")
        if not s:
            return None
        try:
            f = float(s)
        except ValueError:
            raise FieldError(Reason.BAD_VALUE, field, "count is not a number") from None
        if not f.is_integer():
            raise FieldError(Reason.BAD_VALUE, field, "count must be a whole number")
        n = int(f)
    if n < 0:
        raise FieldError(Reason.BAD_VALUE, field, "count is negative")
    return n


def _enterprise_validator(
    mapping: Mapping[str, str], default_crs: str | None, today: date
) -> tuple[_Common, Callable[[Mapping[str, Any]], EnterpriseRecord]]:
    _check_mapping("enterprises", mapping)
    c = _Common(mapping, default_crs, today, "enterprises")
    f_uscc = mapping["uscc"]
    f_name = mapping["name"]
    f_union = mapping["union_established"]
    f_count = mapping.get("employee_count") or None
    f_phone = mapping.get("legal_rep_phone") or None
    f_addr = c.address

    def validate_row(row: Mapping[str, Any]) -> EnterpriseRecord:
        rid = c.record_id(row)
        updated = c.updated_at(row)
        uscc = c.uscc(row.get(f_uscc), "uscc")
        if uscc is None:
            raise FieldError(Reason.MISSING_FIELD, "uscc", "credit code is blank")
        name = _text(row.get(f_name))
        if name is None:
            raise FieldError(Reason.MISSING_FIELD, "name", "enterprise name is blank")
        union = _flag(row.get(f_union), "union_established")
        problems: list[FieldProblem] = []
        count = phone = None
        if f_count:
            try:
                count = _count(row.get(f_count), "employee_count")
            except FieldError as e:
                problems.append(c.field_problem(e, row, (f_count,)))
        if f_phone:
            try:
                phone = normalise_phone(row.get(f_phone), field="legal_rep_phone")
            except FieldError as e:
                problems.append(c.field_problem(e, row, (f_phone,)))
        address = _text(row.get(f_addr)) if f_addr else None
        lon, lat, crs = c.located(row, address, problems)
        return EnterpriseRecord(
            rid, updated, uscc, name, union, count, address, lon, lat, crs, phone, tuple(problems)
        )

    return c, validate_row


# --------------------------------------------------------------------------------------------
# Page validators
# --------------------------------------------------------------------------------------------


def _reject(row: Mapping[str, Any], rid: str | None, e: FieldError, common: _Common) -> Reject:
    city_field = common.city_field.get(e.field or "")
    detail = f"{e.detail} (field {city_field})" if city_field else e.detail
    return Reject(rid, e.reason, e.field, detail, dict(row))


def _damage_reject(row: Mapping[str, Any], common: _Common) -> Reject:
    """A file line that is damage, not a row (``connectors.file``): quarantined with its reason."""
    reason = Reason(row[DAMAGE_KEY])
    rid = _text(row.get(common.rid)) if reason is Reason.RAGGED_ROW else None
    return Reject(rid, reason, None, str(row.get(DAMAGE_DETAIL_KEY) or reason.description), dict(row))


def _run(
    rows: Sequence[Mapping[str, Any]],
    common: _Common,
    validate_row: Callable[[Mapping[str, Any]], R],
    fast_row: Callable[[Mapping[str, Any]], R | None] | None = None,
) -> tuple[list[R], list[Reject]]:
    """Validate a page with ``validate_row``; ``fast_row``, if given, is tried first for each
    row and answers the same record or None (then ``validate_row`` decides)."""
    records: list[R] = []
    rejects: list[Reject] = []
    rid_field = common.rid
    if any(map(operator.contains, rows, repeat(DAMAGE_KEY))):  # = any(DAMAGE_KEY in r ...), in C
        rejects.extend(_damage_reject(r, common) for r in rows if DAMAGE_KEY in r)
        rows = [r for r in rows if DAMAGE_KEY not in r]
        more, more_rejects = _run(rows, common, validate_row, fast_row)
        return more, rejects + more_rejects
    ids = [(v.strip() or None) if type(v) is str else _text(v) for v in [r.get(rid_field) for r in rows]]
    if None not in ids and len(set(ids)) == len(ids):
        if fast_row is None:
            for row in rows:
                try:
                    records.append(validate_row(row))
                except FieldError as e:
                    rejects.append(_reject(row, _text(row.get(rid_field)), e, common))
            return records, rejects
        for row in rows:
            rec = fast_row(row)
            if rec is None:
                try:
                    rec = validate_row(row)
                except FieldError as e:
                    rejects.append(_reject(row, _text(row.get(rid_field)), e, common))
                    continue
            records.append(rec)
        return records, rejects
    if fast_row is not None:
        validate_row = _fast_then(fast_row, validate_row)
    return _run_with_duplicates(rows, common, validate_row)


def _fast_then(
    fast_row: Callable[[Mapping[str, Any]], R | None], validate_row: Callable[[Mapping[str, Any]], R]
) -> Callable[[Mapping[str, Any]], R]:
    def row_fn(row: Mapping[str, Any]) -> R:
        rec = fast_row(row)
        return validate_row(row) if rec is None else rec

    return row_fn


def _run_with_duplicates(
    rows: Sequence[Mapping[str, Any]],
    common: _Common,
    validate_row: Callable[[Mapping[str, Any]], R],
) -> tuple[list[R], list[Reject]]:
    records: list[R] = []
    rejects: list[Reject] = []
    groups: dict[str, list[Mapping[str, Any]]] = {}
    order: list[str] = []
    for row in rows:
        try:
            rid = common.record_id(row)
        except FieldError as e:
            rejects.append(_reject(row, None, e, common))
            continue
        if rid not in groups:
            groups[rid] = []
            order.append(rid)
        groups[rid].append(row)

    for rid in order:
        versions = groups[rid]
        if len(versions) == 1:
            _one(versions[0], rid, validate_row, records, rejects, common)
            continue
        timed: list[tuple[datetime, Mapping[str, Any]]] = []
        for row in versions:
            try:
                timed.append((common.updated_at(row), row))
            except FieldError as e:  # unreadable update time: rejected for that, whatever its siblings
                rejects.append(_reject(row, rid, e, common))
        if not timed:
            continue
        newest = max(t for t, _ in timed)
        latest = [row for t, row in timed if t == newest]
        for t, row in timed:
            if t != newest:
                rejects.append(
                    Reject(
                        rid,
                        Reason.DUPLICATE_IN_PAGE,
                        "source_record_id",
                        "superseded by a newer version of the same record in this page",
                        dict(row),
                    )
                )
        distinct: list[Mapping[str, Any]] = []
        for row in latest:
            if not any(row == d for d in distinct):
                distinct.append(row)
        if len(distinct) == 1:
            _one(distinct[0], rid, validate_row, records, rejects, common)
            continue
        outcomes: list[R | None] = []
        for row in distinct:
            try:
                outcomes.append(validate_row(row))
            except FieldError:
                outcomes.append(None)
        first = outcomes[0]
        if first is not None and all(o == first for o in outcomes):
            records.append(first)  # differently written, same record (e.g. full-width digits)
            continue
        for row in latest:
            rejects.append(
                Reject(
                    rid,
                    Reason.DUPLICATE_IN_PAGE,
                    "source_record_id",
                    f"{len(distinct)} conflicting versions with the same update time in this page",
                    dict(row),
                )
            )
    return records, rejects


def _one(
    row: Mapping[str, Any],
    rid: str,
    validate_row: Callable[[Mapping[str, Any]], R],
    records: list[R],
    rejects: list[Reject],
    common: _Common,
) -> None:
    try:
        records.append(validate_row(row))
    except FieldError as e:
        rejects.append(_reject(row, rid, e, common))


def validate_workers(
    raw_rows: Sequence[Mapping[str, Any]],
    *,
    mapping: Mapping[str, str],
    default_crs: str | None,
    today: date,
) -> tuple[list[WorkerRecord], list[Reject]]:
    """Validate one page of worker rows (city field names) into records and rejects.

    ``mapping`` is canonical field -> the city's field name; ``default_crs`` the source's declared
    coordinate system; ``today`` bounds birth dates and update times. A mapping that lacks a
    required field raises ``ValueError`` (a configuration error, not a row error).
    """
    common, row_fn = _worker_validator(mapping, default_crs, today)
    fast_row = _worker_fast_path(common, mapping, today) if FAST_PATH else None
    return _run(raw_rows, common, row_fn, fast_row)


def validate_enterprises(
    raw_rows: Sequence[Mapping[str, Any]],
    *,
    mapping: Mapping[str, str],
    default_crs: str | None,
    today: date,
) -> tuple[list[EnterpriseRecord], list[Reject]]:
    """Validate one page of enterprise rows; see :func:`validate_workers`."""
    common, row_fn = _enterprise_validator(mapping, default_crs, today)
    return _run(raw_rows, common, row_fn)


# --------------------------------------------------------------------------------------------
# Case reports
# --------------------------------------------------------------------------------------------

E = TypeVar("E", CaseKind, Severity, HardshipGrade)

#: City spellings of case kinds beyond the enum values and their Chinese labels.
_KIND_ALIASES: dict[str, CaseKind] = {
    "欠薪": CaseKind.WAGE_ARREARS,
    "拖欠工资": CaseKind.WAGE_ARREARS,
    "工资拖欠": CaseKind.WAGE_ARREARS,
    "劳动合同纠纷": CaseKind.LABOUR_CONTRACT,
    "解除劳动关系": CaseKind.DISMISSAL,
    "辞退": CaseKind.DISMISSAL,
    "社保": CaseKind.SOCIAL_INSURANCE,
    "社会保险纠纷": CaseKind.SOCIAL_INSURANCE,
    "工伤认定": CaseKind.WORK_INJURY,
    "安全生产": CaseKind.OCCUPATIONAL_SAFETY,
    "困难帮扶": CaseKind.HARDSHIP,
    "困难职工": CaseKind.HARDSHIP,
}
_SEVERITY_ALIASES: dict[str, Severity] = {"普通": Severity.NORMAL, "苗头": Severity.EARLY_SIGN}
_GRADE_ALIASES: dict[str, HardshipGrade] = {
    "深度": HardshipGrade.DEEP,
    "相对": HardshipGrade.RELATIVE,
    "意外": HardshipGrade.ACCIDENT,
}


def _vocabulary(enum: type[E], aliases: Mapping[str, E]) -> dict[str, E]:
    out: dict[str, E] = {}
    for member in enum:
        out[member.value] = member
        out[str(member.label_zh)] = member
    out.update(aliases)
    return out


_KINDS = _vocabulary(CaseKind, _KIND_ALIASES)
_SEVERITIES = _vocabulary(Severity, _SEVERITY_ALIASES)
_GRADES = _vocabulary(HardshipGrade, _GRADE_ALIASES)


def _coded(value: Any, table: Mapping[str, E], field: str, what: str) -> E | None:
    """A closed-vocabulary value (enum value, Chinese label or alias); None if blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(Reason.UNKNOWN_CASE_KIND, field, f"{what} must be text, not {type(value).__name__}")
    s = value if value.isascii() else unicodedata.normalize("NFKC", value)
    s = s.strip()
    if not s:
        return None
    hit = table.get(s) or table.get(s.lower())
    if hit is None:
        raise FieldError(Reason.UNKNOWN_CASE_KIND, field, f"{what} is not in the closed list")
    return hit


def parse_case_kind(value: Any, *, field: str = "kind") -> CaseKind:
    """The :class:`CaseKind` of a report; raises on a blank or unknown kind."""
    kind = _coded(value, _KINDS, field, "case kind")
    if kind is None:
        raise FieldError(Reason.MISSING_FIELD, field, "case kind is blank")
    return kind


def parse_amount(value: Any, *, field: str = "amount") -> Decimal | None:
    """Yuan as a Decimal with at most two decimals; None if blank; raises otherwise (the rules are
    :func:`connectors.amounts.parse_yuan`, shared by every path that takes an amount)."""
    try:
        return parse_yuan(value)
    except AmountError as exc:
        raise FieldError(Reason.BAD_AMOUNT, field, exc.detail) from None


def _case_validator(
    mapping: Mapping[str, str], default_crs: str | None, today: date
) -> tuple[_Common, Callable[[Mapping[str, Any]], CaseReportRecord]]:
    _check_mapping("cases", mapping)
    c = _Common(mapping, default_crs, today)
    f_kind = mapping["kind"]
    f_reported = mapping["reported_at"]
    f_severity = mapping.get("severity") or None
    f_grade = mapping.get("hardship_grade") or None
    f_worker = mapping.get("worker_id_number") or None
    f_uscc = mapping.get("enterprise_uscc") or None
    f_affected = mapping.get("workers_affected") or None
    f_amount = mapping.get("amount") or None
    f_description = mapping.get("description") or None
    f_addr = c.address

    def validate_row(row: Mapping[str, Any]) -> CaseReportRecord:
        rid = c.record_id(row)
        updated = c.updated_at(row)
        kind = parse_case_kind(row.get(f_kind))
        severity = (
            _coded(row.get(f_severity), _SEVERITIES, "severity", "severity") if f_severity else None
        ) or Severity.NORMAL
        grade = _coded(row.get(f_grade), _GRADES, "hardship_grade", "hardship grade") if f_grade else None
        if grade is not None and kind is not CaseKind.HARDSHIP:
            raise FieldError(Reason.BAD_VALUE, "hardship_grade", "a dispute has no hardship grade")
        reported = parse_timestamp(row.get(f_reported), field="reported_at")
        if reported is None:
            raise FieldError(Reason.MISSING_FIELD, "reported_at", "report time is blank")
        if reported >= c.ts_limit:
            raise FieldError(Reason.BAD_DATE, "reported_at", "report time is in the future")
        if reported > updated:
            raise FieldError(Reason.BAD_DATE, "reported_at", "report time is after the last update time")
        worker_id: str | None = None
        if f_worker is not None:
            raw_id = row.get(f_worker)
            if not (raw_id is None or (isinstance(raw_id, str) and not raw_id.strip())):
                worker_id, _ = normalise_id_number(raw_id, today=today, field="worker_id_number")
        uscc = c.uscc(row.get(f_uscc), "enterprise_uscc") if f_uscc else None
        if kind is CaseKind.HARDSHIP and worker_id is None:
            raise FieldError(Reason.MISSING_PARTY, "worker_id_number", "a hardship report names no worker")
        if worker_id is None and uscc is None:
            raise FieldError(
                Reason.MISSING_PARTY, "worker_id_number", "a dispute names neither a worker nor an enterprise"
            )
        affected = _count(row.get(f_affected), "workers_affected") if f_affected else None
        if affected == 0:
            raise FieldError(Reason.BAD_VALUE, "workers_affected", "workers affected must be at least 1")
        amount = parse_amount(row.get(f_amount)) if f_amount else None
        description = _text(row.get(f_description)) if f_description else None
        address = _text(row.get(f_addr)) if f_addr else None
        lon, lat, crs = c.point(row, address)
        return CaseReportRecord(
            rid,
            updated,
            kind,
            severity,
            grade,
            reported,
            worker_id,
            uscc,
            affected or 1,
            amount,
            description,
            address,
            lon,
            lat,
            crs,
        )

    return c, validate_row


def validate_cases(
    raw_rows: Sequence[Mapping[str, Any]],
    *,
    mapping: Mapping[str, str],
    default_crs: str | None,
    today: date,
) -> tuple[list[CaseReportRecord], list[Reject]]:
    """Validate one page of case-report rows; see :func:`validate_workers` and the module docstring."""
    common, row_fn = _case_validator(mapping, default_crs, today)
    return _run(raw_rows, common, row_fn)


# --------------------------------------------------------------------------------------------
# The roster (grid officers)
# --------------------------------------------------------------------------------------------

_CELL_SPLIT_RE = re.compile(r"[,，;；、\s]+")
_CELL_RE = re.compile(r"\d{15}", re.ASCII)
OFFICER_NAME_MAX = 40


def parse_cells(value: Any, *, field: str = "cells") -> tuple[str, ...]:
    """A roster row's cells: a list, or text separated by commas, semicolons, 、 or spaces; each
    a 15-digit code (full-width digits allowed); repeats dropped, order kept. Blank: ()."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    elif isinstance(value, str):
        text = value if value.isascii() else unicodedata.normalize("NFKC", value)
        text = text.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1].replace('"', " ").replace("'", " ")
        items = _CELL_SPLIT_RE.split(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [str(value)]
    else:
        raise FieldError(
            Reason.UNKNOWN_CELL, field, f"cells must be text or a list, not {type(value).__name__}"
        )
    out: list[str] = []
    for item in items:
        code = item.strip()
        if not code:
            continue
        if not _CELL_RE.fullmatch(code):
            raise FieldError(Reason.UNKNOWN_CELL, field, "a cell code is not 15 digits")
        if code not in out:
            out.append(code)
    return tuple(out)


def _officer_validator(
    mapping: Mapping[str, str], default_crs: str | None, today: date
) -> tuple[_Common, Callable[[Mapping[str, Any]], OfficerRecord]]:
    _check_mapping("grid_officers", mapping)
    c = _Common(mapping, default_crs, today, "grid_officers")
    f_name = mapping["name"]
    f_cells = mapping["cells"]
    f_phone = mapping.get("phone") or None
    f_active = mapping.get("active") or None

    def validate_row(row: Mapping[str, Any]) -> OfficerRecord:
        rid = c.record_id(row)
        if len(rid) > OFFICER_NAME_MAX or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", rid, re.ASCII):
            raise FieldError(
                Reason.BAD_VALUE, "source_record_id", "officer id must be letters, digits, _ . -"
            )
        updated = c.updated_at(row)
        name = _name(row.get(f_name), "name")
        if len(name) > OFFICER_NAME_MAX:
            raise FieldError(Reason.BAD_VALUE, "name", f"name is longer than {OFFICER_NAME_MAX} characters")
        raw_active = row.get(f_active) if f_active else None
        active = True if _text(raw_active) is None else _flag(raw_active, "active")
        cells = parse_cells(row.get(f_cells))
        if active and not cells:
            raise FieldError(Reason.MISSING_FIELD, "cells", "an active officer serves no cell")
        phone = normalise_phone(row.get(f_phone), field="phone") if f_phone else None
        return OfficerRecord(rid, updated, name, phone, cells, active)

    return c, validate_row


def validate_officers(
    raw_rows: Sequence[Mapping[str, Any]],
    *,
    mapping: Mapping[str, str],
    default_crs: str | None = None,
    today: date,
) -> tuple[list[OfficerRecord], list[Reject]]:
    """Validate one page of roster rows; see :func:`validate_workers`. Whether each cell is a
    current cell of the source's city is the pipeline's check (it holds the grid)."""
    common, row_fn = _officer_validator(mapping, default_crs, today)
    return _run(raw_rows, common, row_fn)


#: The page validator of each entity.
VALIDATORS: dict[str, Callable[..., tuple[list[Any], list[Reject]]]] = {
    "enterprises": validate_enterprises,
    "workers": validate_workers,
    "grid_officers": validate_officers,
    "cases": validate_cases,
}
