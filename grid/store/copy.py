"""COPY helpers: stream rows into a table in PostgreSQL's text format, and read such text back.

The text format: one line per row, fields separated by a tab, ``\\N`` for NULL, and a backslash,
tab, newline and carriage return inside a field written as ``\\\\``, ``\\t``, ``\\n``, ``\\r``
(:data:`ESCAPES`). :func:`copy_text` writes it, :func:`parse_copy_text` reads it back.
:func:`ascii_field` writes a field in ASCII only, other characters as the ``\\xHH`` escapes of
their UTF-8 bytes (the hot path of the sync: a page of ASCII text is joined and encoded as a copy).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import psycopg2.extensions

#: ``str.translate`` table escaping a text field for COPY (backslash, tab, newline, CR).
ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: The inverse of :data:`ESCAPES`, by the character after the backslash (any other character,
#: the backslash included, stands for itself).
_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r"}
NULL = "\\N"


def escape(text: str) -> str:
    """``text`` as a COPY text field (:data:`ESCAPES`); most fields need no escaping, and
    checking that is several times cheaper than ``str.translate`` (tab, newline and carriage
    return are the non-printable characters COPY escapes; a backslash is printable)."""
    return text if text.isprintable() and "\\" not in text else text.translate(ESCAPES)


def ascii_field(text: str) -> str:
    """``text`` as a COPY text field of ASCII characters only: escaped as :func:`escape` does, and
    every other character written as the ``\\xHH`` escapes of its UTF-8 bytes (``张*`` ->
    ``\\xe5\\xbc\\xa0*``). PostgreSQL reads such bytes as the database's encoding and checks them,
    so this holds for a UTF-8 database only (:func:`grid.store.migrate.upgrade` refuses any other).

    Why: one character outside ASCII makes Python store a whole page's text two or four bytes a
    character, and joining the page's lines, adding the run's columns and encoding it for the
    wire then cost the sync ~3 us a worker row instead of ~0.5."""
    if text.isascii():
        return escape(text)
    return escape(text).encode("utf-8").decode("ascii", "backslashreplace")


def _field(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float | int):
        return repr(value)
    return escape(str(value))


def copy_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows in COPY text format (built where the CPU is free, sent later)."""
    return "".join("\t".join(map(_field, row)) + "\n" for row in rows)


def unescape_field(field: str) -> str | None:
    """One field of COPY text as its value: ``\\N`` -> None, escapes undone (also the ``\\xHH``
    byte escapes :func:`ascii_field` writes, which spell UTF-8)."""
    if field == NULL:
        return None
    if "\\" not in field:
        return field
    out = bytearray()
    i, n = 0, len(field)
    while i < n:
        c = field[i]
        if c == "\\" and i + 1 < n:
            nxt = field[i + 1]
            hexdigits = field[i + 2 : i + 4]
            if nxt == "x" and len(hexdigits) == 2 and all(h in "0123456789abcdefABCDEF" for h in hexdigits):
                out.append(int(hexdigits, 16))
                i += 4
                continue
            out += _UNESCAPES.get(nxt, nxt).encode("utf-8", "surrogatepass")
            i += 2
        else:
            out += c.encode("utf-8", "surrogatepass")
            i += 1
    return out.decode("utf-8", "surrogatepass")


def parse_copy_text(text: str) -> list[list[str | None]]:
    """Rows of COPY text (as :func:`copy_text` writes it) as lists of fields, each unescaped,
    NULL as None. Values come back as text: read a bytea field with :func:`bytea_field`."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline ending the last row
    return [[unescape_field(f) for f in line.split("\t")] for line in lines]


def bytea_field(value: str | None) -> bytes:
    """The bytes of an unescaped bytea field (``\\x`` + hex, as :func:`copy_text` writes bytes);
    ``ValueError`` for NULL or anything else."""
    if value is None or not value.startswith("\\x"):
        raise ValueError("not a bytea value in hex format")
    return bytes.fromhex(value[2:])


def copy_from_text(cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], text: str) -> None:
    """COPY ``text`` into ``table(columns)``: encoded once (in the connection's client encoding)
    and sent in 1 MiB pieces; psycopg2 would otherwise encode and send a text stream 8 KiB at a
    time, which costs the caller 40 % more CPU."""
    if text:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        codec = psycopg2.extensions.encodings.get(cur.connection.encoding, "utf-8")
        cur.copy_expert(sql, io.BytesIO(text.encode(codec)), size=1 << 20)


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
