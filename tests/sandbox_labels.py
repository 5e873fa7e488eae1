"""Which of the sandbox's deliberately bad rows are quarantined whole and which are loaded with a
field problem (issue #21), derived from the one table in :mod:`connectors.problems`.

The sandbox labels each bad row with the reason code of its one defect
(``connectors/sandbox/data.py``, ``_spoil``); :data:`SPOILED` names the canonical field each
defect spoils, and :func:`connectors.problems.kind_of` decides what that field's problem does.
Every case-report defect is a record problem.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.problems import ProblemKind, kind_of
from connectors.reasons import Reason

#: entity -> sandbox defect label -> the canonical field it spoils.
SPOILED: dict[str, dict[str, str]] = {
    "workers": {
        "bad_id_checksum": "id_number",
        "bad_uscc_checksum": "enterprise_uscc",
        "missing_coordinates": "lon",
        "out_of_china": "lon",
        "unknown_crs": "crs",
        "bad_phone": "phone",
        "bad_date": "birth_date",
    },
    "enterprises": {
        "bad_uscc_checksum": "uscc",
        "missing_coordinates": "lon",
        "out_of_china": "lon",
        "unknown_crs": "crs",
        "bad_phone": "legal_rep_phone",
    },
}
_REASONS = {r.value for r in Reason}


def split_labels(entity: str, labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(record id -> label) of the bad rows quarantined whole, and of those loaded with a field
    problem of that reason code."""
    bad = {k: v for k, v in labels.items() if v in _REASONS}
    if entity == "cases":
        return bad, {}
    whole = {k: v for k, v in bad.items() if kind_of(entity, SPOILED[entity][v]) is ProblemKind.RECORD}
    return whole, {k: v for k, v in bad.items() if k not in whole}


def quarantined_labels(entity: str, labels: Mapping[str, str]) -> dict[str, str]:
    """record id -> label of the bad rows quarantined whole."""
    return split_labels(entity, labels)[0]
