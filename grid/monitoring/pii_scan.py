"""Plaintext resident IDs and mobile numbers: the scanner the test session and ``gridflow simulate``
share (moved here from ``tests/pii_scan.py``, which keeps the pytest plugin around it).

What counts as a find
    * an 18-digit resident ID (GB 11643): province code, a birth date between 1900 and today and a
      valid MOD 11-2 check digit (so credit codes, cell codes and random digits do not count);
    * a 15-digit legacy ID: province code and a valid ``YYMMDD`` - except values the database
      holds in a code column (:data:`CODE_COLUMNS`: cell, division and unit codes);
    * a mainland mobile number ``1[3-9]`` + 9 digits.
    A match must stand alone: not inside a longer run of letters, digits or a decimal fraction.

Scanners: :func:`scan_database` (every textual column of every base table), :func:`scan_prefect`
(artifacts, flow and task runs, stored logs of the current Prefect API), :func:`scan_files` (log
files), :class:`PiiLogHandler` (log records). A :class:`Finding` shows the value masked only.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

__all__ = [
    "CODE_COLUMNS",
    "Finding",
    "PiiLogHandler",
    "find_pii",
    "known_codes",
    "mask",
    "scan_database",
    "scan_files",
    "scan_prefect",
    "scan_text",
]

_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
    ]
)
_EDGE_BEFORE = r"(?<![0-9A-Za-z.])"
_EDGE_AFTER = r"(?![0-9A-Za-z])"
_ID18 = re.compile(_EDGE_BEFORE + r"(\d{17}[\dXx])" + _EDGE_AFTER)
_ID15 = re.compile(_EDGE_BEFORE + r"(\d{15})" + _EDGE_AFTER)
_MOBILE = re.compile(_EDGE_BEFORE + r"(1[3-9]\d{9})" + _EDGE_AFTER)


def _valid_date(y: int, m: int, d: int) -> bool:
    try:
        born = date(y, m, d)
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def _id18_ok(s: str) -> bool:
    if s[:2] not in _PROVINCES or not _valid_date(int(s[6:10]), int(s[10:12]), int(s[12:14])):
        return False
    c = (1 - 2 * int(s[:17], 13)) % 11
    return s[17].upper() == ("X" if c == 10 else str(c))


def _id15_ok(s: str) -> bool:
    return s[:2] in _PROVINCES and _valid_date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12]))


def find_pii(text: str, *, known_codes: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """``(kind, value)`` for each plaintext resident ID or mobile number in ``text``."""
    out: list[tuple[str, str]] = []
    for m in _ID18.finditer(text):
        if _id18_ok(m.group(1)):
            out.append(("resident ID", m.group(1)))
    for m in _ID15.finditer(text):
        if _id15_ok(m.group(1)) and m.group(1) not in known_codes:
            out.append(("legacy resident ID", m.group(1)))
    for m in _MOBILE.finditer(text):
        out.append(("mobile number", m.group(1)))
    return out


def mask(value: str) -> str:
    """First three and last four characters: enough to find it, not enough to use it."""
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    value: str = field(repr=False)

    def line(self) -> str:
        return f"{self.where}: plaintext {self.kind} {mask(self.value)}"


def scan_text(where: str, text: str, *, known_codes: frozenset[str] = frozenset()) -> list[Finding]:
    return [Finding(where, kind, value) for kind, value in find_pii(text, known_codes=known_codes)]


# -- the database ---------------------------------------------------------------------------------

_TEXTUAL = ("text", "character varying", "character", "json", "jsonb", "ARRAY", "bytea")


#: Columns that hold division, cell and unit codes (12/15 digits) anywhere in the schema.
CODE_COLUMNS = frozenset(
    {
        "code",
        "cell_code",
        "division_code",
        "community_code",
        "parent_code",
        "scope_code",
        "chain_code",
        "owner_code",
        "recipient_code",
        "unit_code",
        "city_code",
    }
)


def known_codes(conn: Any) -> frozenset[str]:
    """Every 12- or 15-digit value of a code column (:data:`CODE_COLUMNS`) of the database: a
    15-digit grid cell or unit code is not a legacy ID, wherever else it is copied (event payloads)."""
    from psycopg2 import sql

    codes: set[str] = set()
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.table_schema, c.table_name, c.column_name
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE t.table_type IN ('BASE TABLE', 'LOCAL TEMPORARY')
              AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
              AND c.column_name = ANY(%s) AND c.data_type IN ('text', 'character', 'character varying')
            """,
            (sorted(CODE_COLUMNS),),
        )
        for schema, table, column in cur.fetchall():
            cur.execute(
                sql.SQL(
                    "SELECT DISTINCT btrim({c}::text) FROM {t} WHERE btrim({c}::text) ~ '^[0-9]{{12}}([0-9]{{3}})?$'"
                ).format(c=sql.Identifier(column), t=sql.Identifier(schema, table))
            )
            codes.update(r[0] for r in cur.fetchall())
    return frozenset(codes)


def scan_database(conn: Any, *, codes: frozenset[str] | None = None) -> tuple[list[Finding], dict[str, int]]:
    """Scan every textual column of every base table; returns findings and counts scanned."""
    from psycopg2 import sql

    codes = known_codes(conn) if codes is None else codes
    findings: list[Finding] = []
    stats = {"tables": 0, "columns": 0, "candidate_values": 0}
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.table_schema, c.table_name, c.column_name, c.data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE t.table_type IN ('BASE TABLE', 'LOCAL TEMPORARY')
              AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
              AND c.table_schema NOT LIKE 'pg_toast%%'
              AND c.data_type = ANY(%s)
            ORDER BY 1, 2, c.ordinal_position
            """,
            (list(_TEXTUAL),),
        )
        columns = cur.fetchall()
        tables: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for schema, table, column, dtype in columns:
            tables.setdefault((schema, table), []).append((column, dtype))
        for (schema, table), cols in tables.items():
            stats["tables"] += 1
            cur.execute(
                """
                SELECT a.attname FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                WHERE i.indrelid = %s::regclass AND i.indisprimary
                """,
                (f'"{schema}"."{table}"',),
            )
            pk = [r[0] for r in cur.fetchall()]
            row_id = (
                sql.SQL("concat_ws(',', {})").format(sql.SQL(", ").join(sql.Identifier(c) for c in pk))
                if pk
                else sql.SQL("ctid::text")
            )
            for column, dtype in cols:
                stats["columns"] += 1
                expr = (
                    sql.SQL("encode({}, 'escape')").format(sql.Identifier(column))
                    if dtype == "bytea"
                    else sql.SQL("{}::text").format(sql.Identifier(column))
                )
                cur.execute(
                    sql.SQL("SELECT {rid}, {expr} FROM {tbl} WHERE {expr} ~ '[0-9]{{11}}'").format(
                        rid=row_id, expr=expr, tbl=sql.Identifier(schema, table)
                    )
                )
                for rid, text in cur.fetchall():
                    stats["candidate_values"] += 1
                    where = f"table {schema}.{table} column {column} row {'/'.join(pk) or 'ctid'}={rid}"
                    findings += scan_text(where, text, known_codes=codes)
    return findings, stats


# -- logs -----------------------------------------------------------------------------------------


class PiiLogHandler(logging.Handler):
    """Scans every record it sees (message and exception text). The session feeds it every record
    through the test session's record hook; the self-tests attach it to a logger like any handler."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.records = 0
        self.findings: list[Finding] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.scan(record)

    def scan(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        if record.stack_info:
            text += "\n" + record.stack_info
        self.records += 1
        self.findings += scan_text(f"log record of logger {record.name!r} ({record.levelname})", text)


# -- Prefect --------------------------------------------------------------------------------------


def _pages(read: Any, size: int = 200) -> Iterator[Any]:
    offset = 0
    while True:
        batch = read(limit=size, offset=offset)
        yield from batch
        if len(batch) < size:
            return
        offset += size


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def scan_prefect() -> tuple[list[Finding], dict[str, int]]:
    """Scan the artifacts, flow runs, task runs and logs stored in the current Prefect API."""
    from prefect.client.orchestration import get_client

    findings: list[Finding] = []
    stats = {"artifacts": 0, "flow_runs": 0, "task_runs": 0, "logs": 0}
    with get_client(sync_client=True) as client:
        for a in _pages(lambda **kw: client.read_artifacts(**kw)):
            stats["artifacts"] += 1
            findings += scan_text(f"Prefect artifact {a.key or a.id}", _dump([a.data, a.description]))
        for fr in _pages(lambda **kw: client.read_flow_runs(**kw)):
            stats["flow_runs"] += 1
            message = fr.state.message if fr.state else None
            findings += scan_text(
                f"Prefect flow run {fr.name} ({fr.id})", _dump([fr.name, fr.parameters, message])
            )
        for tr in _pages(lambda **kw: client.read_task_runs(**kw)):
            stats["task_runs"] += 1
            message = tr.state.message if tr.state else None
            findings += scan_text(f"Prefect task run {tr.name} ({tr.id})", _dump([tr.name, message]))
        for log in _pages(lambda **kw: client.read_logs(**kw)):
            stats["logs"] += 1
            findings += scan_text(
                f"Prefect stored log of {log.name} (flow run {log.flow_run_id})", log.message
            )
    return findings, stats


def scan_files(paths: Iterable[Path], *, known_codes: frozenset[str] = frozenset()) -> list[Finding]:
    """Scan text files (service logs) line by line; a missing file is skipped."""
    findings: list[Finding] = []
    for path in paths:
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                findings += scan_text(f"file {path.name} line {n}", line, known_codes=known_codes)
    return findings
