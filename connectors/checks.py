"""Pre-write checks on a page: schema drift and a suspicious day's volume. Pure functions.

The nightly flow runs them before it writes anything, so a page that fails them writes nothing and
fails the run with one sentence (a person must look: a city renamed a field, or its export broke):

* :func:`check_schema` - **breaking drift** is a required field of the mapping that is absent from
  every row of a non-empty page (typically renamed by the city): :class:`SchemaDrift`. A field that
  is present but blank in some rows is not drift; those rows are quarantined one by one
  (``missing_field``). **Non-breaking drift** is returned as notes for the run log: fields the
  mapping does not know (new columns, ignored) and optional mapped fields absent from every row.
* :func:`volume_check` - a day whose expected volume is under ``min_ratio`` (half) of the usual
  (the median of recent runs' volumes) is suspicious: an empty or cut export would otherwise be
  loaded as if the city had simply changed nothing. A shortfall within a day's ordinary variation
  (``noise`` standard deviations of a count, ``sqrt(usual)``) is not: a small city whose nights
  carry ~5 changed rows has nights with none.

Messages name fields and counts, never a value from a row.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.config import SourceRejected
from connectors.records import CANONICAL_FIELDS

__all__ = ["SchemaDrift", "SuspiciousVolume", "check_schema", "volume_check"]


class SchemaDrift(SourceRejected):
    """A page lacks a required field in every row (breaking drift). One sentence, no values.

    ``missing`` lists the city's field names that vanished; ``candidates`` the unknown fields that
    appeared in the same page (the likely new names).
    """

    def __init__(self, message: str, *, missing: Sequence[str], candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.candidates = tuple(candidates)


class SuspiciousVolume(RuntimeError):
    """A day's volume is far under the usual; raised by the flow with :func:`volume_check`'s sentence."""


def _present_fields(raw_rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every field name any row of the page has (one C-level union over the rows' keys)."""
    present: set[str] = set().union(*raw_rows)
    return present


def _names(fields: Sequence[str]) -> str:
    quoted = [f"'{f}'" for f in fields]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def check_schema(entity: str, raw_rows: Sequence[Mapping[str, Any]], mapping: Mapping[str, str]) -> list[str]:
    """Check one page's field names against the source's mapping for ``entity``.

    Raises :class:`SchemaDrift` when a required canonical field's city field is absent from every
    row; returns notes (sentences) on non-breaking drift. An empty page has no schema: ``[]``.
    """
    if entity not in CANONICAL_FIELDS:
        raise ValueError(f"unknown entity {entity!r}")
    if not raw_rows:
        return []
    required, optional = CANONICAL_FIELDS[entity]
    present = _present_fields(raw_rows)
    mapped = {city for city in mapping.values() if city}
    unknown = sorted(present - mapped)
    missing = [
        (canon, mapping[canon]) for canon in required if mapping.get(canon) and mapping[canon] not in present
    ]
    if missing:
        what = ", ".join(f"'{city}' ({canon})" for canon, city in missing)
        hint = f"; new field(s) {_names(unknown)} may be the new name" if unknown else ""
        raise SchemaDrift(
            f"{entity} page lacks the required field{'s' if len(missing) > 1 else ''} {what} in "
            f"{'its only row' if len(raw_rows) == 1 else f'every one of its {len(raw_rows)} rows'} "
            f"(renamed or dropped by the source){hint}",
            missing=[city for _, city in missing],
            candidates=unknown,
        )
    notes: list[str] = []
    if unknown:
        notes.append(f"{entity} page has field(s) the mapping does not know, ignored: {_names(unknown)}")
    absent = [
        (canon, mapping[canon]) for canon in optional if mapping.get(canon) and mapping[canon] not in present
    ]
    if absent:
        notes.append(
            f"{entity} page lacks the optional field(s) "
            + ", ".join(f"'{city}' ({canon})" for canon, city in absent)
            + " in every row"
        )
    return notes


def volume_check(
    expected_total: int | None,
    history: Sequence[int],
    *,
    min_ratio: float = 0.5,
    min_history: int = 3,
    noise: float = 3.0,
) -> str | None:
    """A sentence if ``expected_total`` is under ``min_ratio`` of the usual volume, else None.

    ``history`` holds the volumes of recent comparable runs (same source, entity and mode); the
    usual volume is their median, so one odd night does not move it. With fewer than
    ``min_history`` runs, an unknown total, or a usual volume of zero there is nothing to compare
    and the check passes.

    A night's count of changed records varies like a count of independent events (standard
    deviation about ``sqrt(usual)``): a shortfall of at most ``noise`` of those is ordinary, not a
    cut export, so it passes. This only matters for small volumes (usual 5: any night passes;
    usual 20: 6 or fewer fails; usual 400: the ratio alone decides).
    """
    if not 0 < min_ratio <= 1:
        raise ValueError("min_ratio must be in (0, 1]")
    if noise < 0:
        raise ValueError("noise must not be negative")
    if expected_total is None or len(history) < min_history:
        return None
    usual = statistics.median(history)
    if usual <= 0 or expected_total >= min_ratio * usual:
        return None
    if usual - expected_total <= noise * math.sqrt(usual):
        return None
    return (
        f"{expected_total} records is under {min_ratio:.0%} of the usual {usual:g} "
        f"(median of the last {len(history)} runs), so the day looks incomplete and was not loaded"
    )
