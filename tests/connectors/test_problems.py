"""The record-problem / field-problem table (connectors/problems.py), one row per reason code and
field: a record problem quarantines the record whole; a field problem loads the record with that
field empty and the same reason code on the field."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.problems import FIELD_KINDS, ProblemKind, kind_of
from connectors.reasons import Reason
from connectors.reasons import Reason as RC
from connectors.records import CANONICAL_FIELDS
from connectors.validate import validate_enterprises, validate_workers
from tests.connectors.test_validate import (
    ENTERPRISE_MAP,
    TODAY,
    WORKER_MAP,
    enterprise,
    rid,
    worker,
    wrong_last,
)

R, F = ProblemKind.RECORD, ProblemKind.FIELD
W, E, P = "workers", "enterprises", pytest.param

# (entity, city fields changed, kind, reason, canonical field, the canonical field left empty)
TABLE = [
    P(W, {"ywid": ""}, R, RC.MISSING_RECORD_ID, "source_record_id", id="worker without record id"),
    P(W, {"gxsj": ""}, R, RC.MISSING_FIELD, "source_updated_at", id="worker without version time"),
    P(W, {"gxsj": "昨天"}, R, RC.BAD_DATE, "source_updated_at", id="worker version time unreadable"),
    P(W, {"sfzh": "12345"}, R, RC.BAD_ID_FORMAT, "id_number", id="worker resident ID format"),
    P(W, {"sfzh": "WRONG"}, R, RC.BAD_ID_CHECKSUM, "id_number", id="worker resident ID check digit"),
    P(
        W,
        {"sfzh": rid("42050220990101001")},
        R,
        RC.BAD_ID_BIRTHDATE,
        "id_number",
        id="worker resident ID birth date",
    ),
    P(W, {"sfzh": ""}, R, RC.MISSING_FIELD, "id_number", id="worker without resident ID"),
    P(W, {"xm": " "}, R, RC.MISSING_FIELD, "name", id="worker without name"),
    P(W, {"lxdh": "12345"}, F, RC.BAD_PHONE, "phone", id="worker bad phone"),
    P(W, {"csrq": "不详"}, F, RC.BAD_DATE, "birth_date", id="worker unreadable birth date"),
    P(W, {"dwtyxydm": "WRONG"}, F, RC.BAD_USCC_CHECKSUM, "enterprise_uscc", id="worker employer code check"),
    P(
        W,
        {"dwtyxydm": "91420500"},
        F,
        RC.BAD_USCC_FORMAT,
        "enterprise_uscc",
        id="worker employer code format",
    ),
    P(
        W,
        {"jd": "", "wd": "", "jzdz": ""},
        F,
        RC.MISSING_COORDINATES,
        "lon",
        id="worker with neither point nor address",
    ),
    P(W, {"wd": ""}, F, RC.BAD_COORDINATES, "lat", id="worker with half a point"),
    P(W, {"jd": "139.69", "wd": "35.69"}, F, RC.OUT_OF_CHINA, "lon", id="worker point outside China"),
    P(W, {"zbx": "BJ54"}, F, RC.UNKNOWN_CRS, "crs", id="worker point in an unknown CRS"),
    P(E, {"ywid": ""}, R, RC.MISSING_RECORD_ID, "source_record_id", id="enterprise without record id"),
    P(
        E,
        {"gxsj": "2099-01-01"},
        R,
        RC.BAD_DATE,
        "source_updated_at",
        id="enterprise version time in the future",
    ),
    P(E, {"tyxydm": "WRONG"}, R, RC.BAD_USCC_CHECKSUM, "uscc", id="enterprise credit code check"),
    P(E, {"tyxydm": "9142"}, R, RC.BAD_USCC_FORMAT, "uscc", id="enterprise credit code format"),
    P(E, {"tyxydm": ""}, R, RC.MISSING_FIELD, "uscc", id="enterprise without credit code"),
    P(E, {"qymc": ""}, R, RC.MISSING_FIELD, "name", id="enterprise without name"),
    P(E, {"sfjh": "也许"}, R, RC.BAD_VALUE, "union_established", id="enterprise union flag unknown"),
    P(E, {"sfjh": ""}, R, RC.MISSING_FIELD, "union_established", id="enterprise union flag blank"),
    P(E, {"zgrs": "-3"}, F, RC.BAD_VALUE, "employee_count", id="enterprise negative employee count"),
    P(E, {"fddbrdh": "12345"}, F, RC.BAD_PHONE, "legal_rep_phone", id="enterprise bad phone"),
    P(
        E,
        {"jd": "", "wd": "", "jydz": ""},
        F,
        RC.MISSING_COORDINATES,
        "lon",
        id="enterprise with neither point nor address",
    ),
    P(E, {"jd": "inf"}, F, RC.BAD_COORDINATES, "lon", id="enterprise infinite coordinate"),
    P(E, {"jd": "2.35", "wd": "48.85"}, F, RC.OUT_OF_CHINA, "lon", id="enterprise point outside China"),
    P(E, {"zbx": "XIAN80"}, F, RC.UNKNOWN_CRS, "crs", id="enterprise point in an unknown CRS"),
]

_EMPTIED = {
    "phone": ("phone",),
    "legal_rep_phone": ("legal_rep_phone",),
    "enterprise_uscc": ("enterprise_uscc",),
    "employee_count": ("employee_count",),
    "birth_date": (),
    "lon": ("lon", "lat", "crs"),
    "lat": ("lon", "lat", "crs"),
    "crs": ("lon", "lat", "crs"),
}


def _row(entity: str, over: dict[str, Any]) -> dict[str, Any]:
    row = worker() if entity == "workers" else enterprise()
    for k, v in over.items():
        if v == "WRONG":
            v = wrong_last(row[k])
        row[k] = v
    return row


@pytest.mark.parametrize(("entity", "over", "kind", "reason", "field"), TABLE)
def test_each_reason_code_of_the_table(
    entity: str, over: dict[str, Any], kind: ProblemKind, reason: Reason, field: str
) -> None:
    """Rule (issue #21): what identifies a record or what a metric counts is a record problem (the
    record is quarantined whole); any other field is a field problem (the record is loaded with
    that field empty and the same reason code on the field)."""
    assert kind_of(entity, field) is kind
    validate = validate_workers if entity == "workers" else validate_enterprises
    mapping = WORKER_MAP if entity == "workers" else ENTERPRISE_MAP
    row = _row(entity, over)
    records, rejects = validate([row], mapping=mapping, default_crs="gcj02", today=TODAY)
    if kind is R:
        assert records == []
        assert [(j.reason, j.field) for j in rejects] == [(reason, field)]
        return
    assert rejects == [], [j.reason for j in rejects]
    (record,) = records
    assert [(p.reason, p.field) for p in record.problems] == [(reason, field)]
    for emptied in _EMPTIED[field]:
        assert getattr(record, emptied) is None, emptied
    problem = record.problems[0]
    assert set(problem.raw) <= set(row) and set(over) <= set(problem.raw)
    for key in over:
        value = problem.raw[key]
        if isinstance(value, str) and len(value) >= 4:
            assert value not in problem.detail and value not in repr(problem) and value not in repr(record)


def test_a_record_problem_wins_over_field_problems() -> None:
    """Rule: a record with a bad resident ID AND a bad phone is quarantined whole, for its ID."""
    row = _row("workers", {"sfzh": "WRONG", "lxdh": "12345"})
    records, rejects = validate_workers([row], mapping=WORKER_MAP, default_crs="gcj02", today=TODAY)
    assert records == [] and [j.reason for j in rejects] == [RC.BAD_ID_CHECKSUM]


def test_several_field_problems_keep_one_record() -> None:
    """Rule: each bad field is one problem; the record is still loaded once."""
    row = _row("workers", {"lxdh": "12345", "csrq": "不详", "zbx": "BJ54"})
    records, rejects = validate_workers([row], mapping=WORKER_MAP, default_crs="gcj02", today=TODAY)
    assert rejects == []
    assert sorted((str(p.reason), p.field) for p in records[0].problems) == [
        ("bad_date", "birth_date"),
        ("bad_phone", "phone"),
        ("unknown_crs", "crs"),
    ]


@pytest.mark.parametrize("entity", ["workers", "enterprises"])
def test_every_canonical_field_is_decided_in_the_table(entity: str) -> None:
    """Rule: the table names every canonical field of workers and enterprises; a field it does not
    know (or none) is a record problem (fail closed)."""
    required, optional = CANONICAL_FIELDS[entity]
    assert {f for e, f in FIELD_KINDS if e == entity} == set(required) | set(optional)
    assert all(FIELD_KINDS[(entity, f)] is R for f in required)
    assert kind_of(entity, "no_such_field") is R and kind_of(entity, None) is R
    assert kind_of("cases", "phone") is R
