"""Notes beside the registry rates: records awaiting verification, per division and snapshot date.

The four fulls count every *known* record (definitions in :mod:`grid.monitoring.coverage`): a
worker or enterprise whose identifying fields are valid is stored even when a phone, birth date,
employer code, count or location is wrong (a field problem, ``field_problem``), so it is in the
denominator. What cannot be counted is a record quarantined whole (a record problem: no valid
resident ID, name, credit code, union flag ...). It is shown beside the rate instead, as
"另有 N 条待核实", so a city cannot improve its rate by sending worse data.

Counted for each snapshot date, in the snapshot's transaction (``coverage_note``, migration 0009,
one row per division with any note; no row = all zero):

* ``workers_pending`` / ``enterprises_pending``: records quarantined whole and not stored — open
  quarantine rows of that entity whose record id has no live stored record, counted once per
  (source, record id) (a row without a record id counts once itself). Such a record has no known
  place: it counts at its source's city (``source.city_code``) and the province above only.
* ``workers_field_problems`` / ``enterprises_field_problems``: live stored records with at least
  one open field problem; they are in the rate's denominator and attributed like the record
  (its ``division_code``, else its source's city).

Like the registry counts, the notes are the tables' state when the snapshot is computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Final

import psycopg2.extensions

Conn = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

NOTE_FIELDS: Final = (
    "workers_pending",
    "enterprises_pending",
    "workers_field_problems",
    "enterprises_field_problems",
)

# Which leading digits of a 12-digit code are its own (2 province ... 12 community).
_OWN_LEN = """CASE WHEN substr({c}, 3) = '0000000000' THEN 2
                   WHEN substr({c}, 5) = '00000000' THEN 4
                   WHEN substr({c}, 7) = '000000' THEN 6
                   WHEN substr({c}, 10) = '000' THEN 9
                   ELSE 12 END"""


def _pending(entity: str, table: str, col: str) -> str:
    return f"""
    SELECT s.city_code::text AS code, count(DISTINCT (q.source, coalesce(q.source_record_id, '#' || q.id))) AS {col}
    FROM quarantine q JOIN source s ON s.name = q.source
    WHERE q.resolved_at IS NULL AND q.entity = '{entity}'
      AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.source = q.source
                      AND t.source_record_id = q.source_record_id AND t.deleted_at IS NULL)
    GROUP BY 1"""


def _field(entity: str, table: str, col: str) -> str:
    return f"""
    SELECT coalesce(t.division_code::text, s.city_code::text) AS code, count(DISTINCT t.id) AS {col}
    FROM field_problem f
    JOIN {table} t ON t.source = f.source AND t.source_record_id = f.source_record_id AND t.deleted_at IS NULL
    JOIN source s ON s.name = f.source
    WHERE f.settled_at IS NULL AND f.entity = '{entity}'
    GROUP BY 1"""


_PARTS: Final = (
    ("workers_pending", _pending("workers", "worker", "n")),
    ("enterprises_pending", _pending("enterprises", "enterprise", "n")),
    ("workers_field_problems", _field("workers", "worker", "n")),
    ("enterprises_field_problems", _field("enterprises", "enterprise", "n")),
)
_LEAF = "\n    UNION ALL ".join(
    f"SELECT code, {', '.join(('n' if f == name else '0') + ' AS ' + f for f in NOTE_FIELDS)} FROM ({sql}) {name}"
    for name, sql in _PARTS
)

NOTE_SQL: Final = f"""
WITH leaf AS (
    SELECT code, {", ".join(f"sum({f}) AS {f}" for f in NOTE_FIELDS)}
    FROM ({_LEAF}) u
    WHERE code IS NOT NULL
    GROUP BY code
),
anc AS (
    SELECT DISTINCT l.code AS leaf, rpad(left(l.code, v.n), 12, '0') AS code
    FROM leaf l CROSS JOIN (VALUES (2), (4), (6), (9), (12)) AS v(n)
    WHERE v.n <= {_OWN_LEN.format(c="l.code")}
)
INSERT INTO coverage_note (snapshot_date, division_code, {", ".join(NOTE_FIELDS)})
SELECT %(day)s, a.code, {", ".join(f"sum(l.{f})::integer" for f in NOTE_FIELDS)}
FROM leaf l JOIN anc a ON a.leaf = l.code
JOIN division d ON d.code = a.code AND d.valid_to IS NULL
GROUP BY a.code
"""


@dataclass(frozen=True, slots=True)
class Notes:
    """The notes of one division on one snapshot date (see the module docstring)."""

    workers_pending: int = 0
    enterprises_pending: int = 0
    workers_field_problems: int = 0
    enterprises_field_problems: int = 0

    def for_rate(self, metric: str) -> tuple[int, int]:
        """(records quarantined whole, records counted with a field problem) beside a rate; zeros
        for a rate that is not a registry rate."""
        if metric == "workers":
            return self.workers_pending, self.workers_field_problems
        if metric == "union":
            return self.enterprises_pending, self.enterprises_field_problems
        return 0, 0


def compute_notes(cur: Cursor, *, snapshot_date: date) -> int:
    """Replace the notes of ``snapshot_date`` (inside the snapshot's transaction); rows written."""
    cur.execute("DELETE FROM coverage_note WHERE snapshot_date = %s", (snapshot_date,))
    cur.execute(NOTE_SQL, {"day": snapshot_date})
    return int(cur.rowcount)


def notes(conn: Conn, *, codes: Iterable[str], snapshot_date: date, prefix: str = "") -> dict[str, Notes]:
    """The notes of the given divisions (inside ``prefix``) on one date; every code gets one."""
    wanted = sorted(set(codes))
    out = {c: Notes() for c in wanted}
    if not wanted:
        return out
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT division_code, {', '.join(NOTE_FIELDS)} FROM coverage_note"
            " WHERE snapshot_date = %s AND division_code = ANY(%s::char(12)[]) AND division_code LIKE %s",
            (snapshot_date, wanted, prefix + "%"),
        )
        for row in cur.fetchall():
            out[str(row[0])] = Notes(*(int(v) for v in row[1:]))
    return out
