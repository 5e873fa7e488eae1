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

import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy
import pytest

from grid.monitoring.pii_scan import (
    CODE_COLUMNS,
    Finding,
    PiiLogHandler,
    find_pii,
    known_codes,
    mask,
    scan_database,
    scan_prefect,
    scan_text,
)

__all__ = [
    "CODE_COLUMNS",
    "Finding",
    "PiiLogHandler",
    "find_pii",
    "known_codes",
    "mask",
    "scan_database",
    "scan_prefect",
    "scan_text",
]

_OUR_LOGGERS = ("connectors", "grid", "flows", "geodata", "gridflow_cli", "gridflow")


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
