"""Pre-write checks: breaking vs non-breaking schema drift, and a suspicious day's volume."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.checks import SchemaDrift, check_schema, volume_check
from connectors.config import SourceRejected
from connectors.sandbox.data import YICHANG_MAPPING

WORKERS = YICHANG_MAPPING["workers"]
ENTERPRISES = YICHANG_MAPPING["enterprises"]
CASES = YICHANG_MAPPING["cases"]
SECRET_ID = "420502198807150013"


def row(mapping: dict[str, str], **over: Any) -> dict[str, Any]:
    """A row with every mapped field (values irrelevant to the schema check), edited by ``over``:
    ``field=None`` drops the city field, ``field="new"`` renames it."""
    out: dict[str, Any] = {city: "x" for city in mapping.values()}
    out[mapping.get("id_number", "ywid")] = SECRET_ID
    for canon, change in over.items():
        city = mapping.get(canon, canon)
        value = out.pop(city, "x")
        if change is not None:
            out[change] = value
    return out


@pytest.mark.parametrize(
    ("entity", "mapping", "rows", "expected_notes"),
    [
        pytest.param("workers", WORKERS, [row(WORKERS)] * 3, [], id="every mapped field present: no notes"),
        pytest.param("workers", WORKERS, [], [], id="an empty page has no schema"),
        pytest.param(
            "workers",
            WORKERS,
            [row(WORKERS, extra_field="bz")],
            ["workers page has field(s) the mapping does not know, ignored: 'bz'"],
            id="a new unknown field is a note (non-breaking)",
        ),
        pytest.param(
            "workers",
            WORKERS,
            [row(WORKERS, phone=None)] * 2,
            ["workers page lacks the optional field(s) 'lxdh' (phone) in every row"],
            id="an optional field missing from every row is a note",
        ),
        pytest.param(
            "workers",
            WORKERS,
            [row(WORKERS), row(WORKERS, id_number=None)],
            [],
            id="a required field missing from SOME rows is not drift (those rows are quarantined)",
        ),
        pytest.param(
            "enterprises",
            ENTERPRISES,
            [row(ENTERPRISES, legal_rep_phone=None, extra="zz")],
            [
                "enterprises page has field(s) the mapping does not know, ignored: 'zz'",
                "enterprises page lacks the optional field(s) 'fddbrdh' (legal_rep_phone) in every row",
            ],
            id="enterprises: both kinds of note at once",
        ),
        pytest.param("cases", CASES, [row(CASES)], [], id="case reports: every mapped field present"),
    ],
)
def test_non_breaking_drift_gives_notes(
    entity: str, mapping: dict[str, str], rows: list[dict[str, Any]], expected_notes: list[str]
) -> None:
    """Rule: only a required field absent from EVERY row breaks; new fields and absent optional
    fields are reported as notes, never values."""
    notes = check_schema(entity, rows, mapping)
    assert notes == expected_notes
    assert all(SECRET_ID not in n for n in notes)


@pytest.mark.parametrize(
    ("entity", "mapping", "rows", "message", "missing", "candidates"),
    [
        pytest.param(
            "workers",
            WORKERS,
            [row(WORKERS, id_number="sfzhm")] * 4,
            "workers page lacks the required field 'sfzh' (id_number) in every one of its 4 rows "
            "(renamed or dropped by the source); new field(s) 'sfzhm' may be the new name",
            ("sfzh",),
            ("sfzhm",),
            id="a renamed required field names the old and the likely new name",
        ),
        pytest.param(
            "workers",
            WORKERS,
            [row(WORKERS, source_updated_at=None)],
            "workers page lacks the required field 'gxsj' (source_updated_at) in its only row "
            "(renamed or dropped by the source)",
            ("gxsj",),
            (),
            id="a dropped required field",
        ),
        pytest.param(
            "enterprises",
            ENTERPRISES,
            [row(ENTERPRISES, uscc="xydm", union_established="jh")] * 2,
            "enterprises page lacks the required fields 'tyxydm' (uscc), 'sfjh' (union_established) in every "
            "one of its 2 rows (renamed or dropped by the source); new field(s) 'jh' and 'xydm' may be the "
            "new name",
            ("tyxydm", "sfjh"),
            ("jh", "xydm"),
            id="two renamed required fields at once",
        ),
        pytest.param(
            "cases",
            CASES,
            [row(CASES, kind="lx")],
            "cases page lacks the required field 'ajlx' (kind) in its only row (renamed or dropped by the "
            "source); new field(s) 'lx' may be the new name",
            ("ajlx",),
            ("lx",),
            id="case reports: a renamed kind",
        ),
    ],
)
def test_breaking_drift_raises_one_sentence(
    entity: str,
    mapping: dict[str, str],
    rows: list[dict[str, Any]],
    message: str,
    missing: tuple[str, ...],
    candidates: tuple[str, ...],
) -> None:
    """Rule: a required field absent from every row of a page is breaking drift: SchemaDrift (a
    SourceRejected: retrying will not help) with one sentence naming fields, never values."""
    with pytest.raises(SchemaDrift) as info:
        check_schema(entity, rows, mapping)
    assert str(info.value) == message
    assert (info.value.missing, info.value.candidates) == (missing, candidates)
    assert isinstance(info.value, SourceRejected)
    assert "\n" not in message and SECRET_ID not in message


def test_unknown_entity_is_a_programming_error() -> None:
    """Rule: only canonical entities can be checked."""
    with pytest.raises(ValueError, match="unknown entity"):
        check_schema("people", [{"a": 1}], {})


@pytest.mark.parametrize(
    ("total", "history", "kwargs", "expected"),
    [
        pytest.param(400, [400, 410, 395], {}, None, id="a usual day passes"),
        pytest.param(210, [400, 410, 395], {}, None, id="just over half passes"),
        pytest.param(
            0,
            [400, 410, 395],
            {},
            "0 records is under 50% of the usual 400 (median of the last 3 runs), so the day looks "
            "incomplete and was not loaded",
            id="an empty day fails",
        ),
        pytest.param(
            120,
            [400, 5000, 380, 390],
            {},
            "120 records is under 50% of the usual 395 (median of the last 4 runs), so the day looks "
            "incomplete and was not loaded",
            id="the usual is the median: one huge night does not move it",
        ),
        pytest.param(0, [400, 410], {}, None, id="too little history: nothing to compare"),
        pytest.param(0, [0, 0, 0], {}, None, id="a source that is usually empty"),
        pytest.param(None, [400, 410, 395], {}, None, id="an unknown total cannot be judged"),
        pytest.param(
            300,
            [400, 400, 400],
            {"min_ratio": 0.8},
            "300 records is under 80% of the usual 400 (median of the last 3 runs), so the day looks "
            "incomplete and was not loaded",
            id="the ratio is configurable",
        ),
        pytest.param(0, [400] * 4, {"min_history": 5}, None, id="min_history is configurable"),
        pytest.param(0, [5, 4, 6], {}, None, id="a small source's empty night is ordinary variation"),
        pytest.param(7, [20, 20, 20], {}, None, id="a shortfall within 3 sqrt(usual) passes"),
        pytest.param(
            6,
            [20, 20, 20],
            {},
            "6 records is under 50% of the usual 20 (median of the last 3 runs), so the day looks "
            "incomplete and was not loaded",
            id="a shortfall beyond 3 sqrt(usual) fails",
        ),
        pytest.param(
            0,
            [5, 5, 5],
            {"noise": 0},
            "0 records is under 50% of the usual 5 (median of the last 3 runs), "
            "so the day looks incomplete and was not loaded",
            id="noise is configurable",
        ),
    ],
)
def test_volume_check(
    total: int | None, history: list[int], kwargs: dict[str, Any], expected: str | None
) -> None:
    """Rule: a day under half (min_ratio) of the median of recent runs is suspicious unless the
    shortfall is within a count's ordinary variation (noise * sqrt(usual)); with too little
    history or an unknown total there is nothing to compare."""
    assert volume_check(total, history, **kwargs) == expected


def test_volume_check_refuses_a_meaningless_ratio() -> None:
    """Rule: min_ratio must be in (0, 1]."""
    with pytest.raises(ValueError, match="min_ratio"):
        volume_check(1, [1, 1, 1], min_ratio=0)
    with pytest.raises(ValueError, match="noise"):
        volume_check(1, [1, 1, 1], noise=-1)
