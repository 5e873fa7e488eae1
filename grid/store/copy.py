"""COPY helpers: stream rows into a table in PostgreSQL's text format."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import psycopg2.extensions

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _field(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float | int):
        return repr(value)
    return str(value).translate(_ESCAPES)


def copy_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows in COPY text format (built where the CPU is free, sent later)."""
    return "".join("\t".join(map(_field, row)) + "\n" for row in rows)


def copy_from_text(cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], text: str) -> None:
    if text:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", io.StringIO(text))


def copy_rows(
    cur: psycopg2.extensions.cursor,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """COPY ``rows`` into ``table(columns)``; returns the number of rows sent."""
    rows = list(rows)
    copy_from_text(cur, table, columns, copy_text(rows))
    return len(rows)
