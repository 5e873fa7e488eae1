"""pytest plugin: after the whole session, no plaintext resident ID or mobile number anywhere.

Enable with ``pytest_plugins = ["tests.pii_scan"]`` in ``tests/conftest.py`` (or ``-p tests.pii_scan``).

What is scanned
    1. **The session's database** - every text, varchar, char, json, jsonb, array and bytea column
       (bytea through ``encode(col, 'escape')``, so plaintext bytes show as text) of every base
       table in every schema except the catalogs, just before ``database_url`` drops the database.
       Nothing forces a database: the scan hooks the ``database_url`` fixture if the session used it.
    2. **Every log record of the session** - ``logging.Logger.handle`` is wrapped for the session,
       so every record any logger emits is scanned once, whatever handlers Prefect installs or
       replaces at each flow run; gridflow's own loggers are lowered to DEBUG for the session so
       nothing escapes by level. The formatted message and any exception text are scanned.
    3. **Prefect** - if the session's test harness ran: every artifact (data and description),
       flow run (name, parameters, state message), task run (name, state message) and stored log,
       read from the harness's API just before it shuts down.

What counts as a find
    * an 18-digit resident ID (GB 11643): province code, a birth date between 1900 and today and a
      valid MOD 11-2 check digit (so credit codes, cell codes and random digits do not count);
    * a 15-digit legacy ID: province code and a valid ``YYMMDD`` - except values the database
      holds in a code column (:data:`CODE_COLUMNS`: cell, division and unit codes; a 15-digit cell
      code can look like a legacy ID, and case events copy them into payloads);
    * a mainland mobile number ``1[3-9]`` + 9 digits.
    A match must stand alone: not inside a longer run of letters, digits or a decimal fraction
    (hex record ids and coordinates would otherwise match by chance).

A find fails the session (an error at the last teardown) with a report naming the table, column
and row id, or the logger, or the Prefect object - and the value only in masked form. The scan
also fails if it could not run. Self-tests that plant values use their own scanner objects, so
they do not trip the session's.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pluggy
import pytest

__all__ = ["Finding", "PiiLogHandler", "find_pii", "mask", "scan_database", "scan_prefect", "scan_text"]

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
_OUR_LOGGERS = ("connectors", "grid", "flows", "geodata", "gridflow_cli", "gridflow")


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
    through :func:`_install_record_hook`; the self-tests attach it to a logger like any handler."""

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


def _install_record_hook(handler: PiiLogHandler) -> Callable[[], None]:
    """Feed every record any logger handles to ``handler``; returns the undo.

    ``Logger.handle`` runs once per record, at the logger that created it, before any handler or
    propagation - so the scan sees everything whatever handlers Prefect's ``setup_logging``
    (re)installs at each flow run, and sees each record once.
    """
    original = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        try:
            handler.scan(record)
        except Exception as exc:  # never break logging; the failure is reported at the end
            _STATE.errors.append(f"log scan failed on a record of {record.name!r}: {type(exc).__name__}")
        original(self, record)

    logging.Logger.handle = handle  # type: ignore[method-assign]

    def undo() -> None:
        logging.Logger.handle = original  # type: ignore[method-assign]

    return undo


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


# -- the plugin -----------------------------------------------------------------------------------


@dataclass
class _State:
    handler: PiiLogHandler = field(default_factory=PiiLogHandler)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    codes: frozenset[str] = frozenset()
    levels: dict[str, int] = field(default_factory=dict)


_STATE = _State()


def _scan_db(url: str) -> None:
    import psycopg2

    try:
        conn = psycopg2.connect(url)
        try:
            _STATE.codes = known_codes(conn)
            found, stats = scan_database(conn, codes=_STATE.codes)
        finally:
            conn.close()
    except Exception as exc:  # a scan that cannot run must not pass
        _STATE.errors.append(f"database scan failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return
    if stats["tables"] == 0:
        _STATE.errors.append("database scan found no tables: it scanned nothing")
    _STATE.findings += found
    _STATE.notes.append(
        f"database: {stats['tables']} tables, {stats['columns']} textual columns, "
        f"{stats['candidate_values']} values with 11+ digit runs checked"
    )


def _scan_harness() -> None:
    try:
        found, stats = scan_prefect()
    except Exception as exc:
        _STATE.errors.append(f"Prefect scan failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return
    _STATE.findings += found
    _STATE.notes.append(
        f"Prefect: {stats['artifacts']} artifacts, {stats['flow_runs']} flow runs, "
        f"{stats['task_runs']} task runs, {stats['logs']} stored logs"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, pluggy.Result[Any], None]:
    """Scan the database / the harness just before those session fixtures are torn down.

    A finalizer added after the fixture's own setup runs before its teardown (finalizers run last
    in, first out), i.e. after every test and fixture that used it is done."""
    outcome = yield
    if fixturedef.argname == "database_url" and fixturedef.scope == "session":
        try:
            url = outcome.get_result()
        except BaseException:
            return
        fixturedef.addfinalizer(lambda: _scan_db(url))
    elif fixturedef.argname == "prefect_harness" and fixturedef.scope == "session":
        try:
            outcome.get_result()
        except BaseException:
            return
        fixturedef.addfinalizer(_scan_harness)


def _report(findings: Iterable[Finding], errors: list[str]) -> str:
    lines = ["PII scan: plaintext personal data found after the test session (values masked):"]
    seen: set[str] = set()
    for f in findings:
        line = f.line()
        if line not in seen:
            seen.add(line)
            lines.append(f"  {line}")
    lines += [f"  {e}" for e in errors]
    return "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def _pii_scan_session() -> Iterator[None]:
    """Install the log scanner for the whole session; report everything at its end."""
    for name in _OUR_LOGGERS:
        logger = logging.getLogger(name)
        _STATE.levels[name] = logger.level
        if logger.level == logging.NOTSET or logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
    undo = _install_record_hook(_STATE.handler)
    try:
        yield
    finally:
        undo()
    for name, level in _STATE.levels.items():
        logging.getLogger(name).setLevel(level)
    log_findings = [
        f for f in _STATE.handler.findings if not (f.kind == "legacy resident ID" and f.value in _STATE.codes)
    ]
    findings = [*_STATE.findings, *log_findings]
    _STATE.notes.append(f"logs: {_STATE.handler.records} records")
    if findings or _STATE.errors:
        pytest.fail(_report(findings, _STATE.errors), pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What the scan covered, after the summary (teardown output is captured, this is not)."""
    if _STATE.notes:
        terminalreporter.write_line("PII scan: " + "; ".join(_STATE.notes))
