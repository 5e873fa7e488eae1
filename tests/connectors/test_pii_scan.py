"""The end-of-session PII scan (tests/pii_scan.py) cannot pass vacuously: it finds planted plaintext
IDs and phone numbers in a table and in a log record, reports them masked, and fails a session."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg2
import pytest
from stdnum.cn import ric

from tests.pii_scan import PiiLogHandler, find_pii, mask, scan_database, scan_prefect, scan_text

ROOT = Path(__file__).parents[2]
BODY = "42050219880715001"
PLANTED_ID = BODY + ric.calc_check_digit(BODY + "0")
PLANTED_PHONE = "13907171234"
LEGACY_ID = "420502880715001"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"sfzh={PLANTED_ID}", [("resident ID", PLANTED_ID)], id="an 18-digit ID"),
        pytest.param(
            f'{{"sfzh": "{PLANTED_ID.lower()}"}}', [("resident ID", PLANTED_ID.lower())], id="in JSON"
        ),
        pytest.param(
            f"职工身份证{PLANTED_ID}，电话{PLANTED_PHONE}。",
            [("resident ID", PLANTED_ID), ("mobile number", PLANTED_PHONE)],
            id="in Chinese text",
        ),
        pytest.param(f"id {LEGACY_ID} old", [("legacy resident ID", LEGACY_ID)], id="a legacy 15-digit ID"),
        pytest.param(f"tel: +86 {PLANTED_PHONE}", [("mobile number", PLANTED_PHONE)], id="a mobile number"),
        pytest.param(
            PLANTED_ID[:17] + ("0" if PLANTED_ID[17] != "0" else "1"), [], id="bad check digit: not an ID"
        ),
        pytest.param("914205025459069029", [], id="a credit code is not an ID"),
        pytest.param(mask(PLANTED_ID) + " " + mask(PLANTED_PHONE), [], id="masked values are fine"),
        pytest.param("ab13907171234cd0f9", [], id="digits inside a hex record id"),
        pytest.param("lon 111.13907171234", [], id="digits of a decimal fraction"),
        pytest.param("epoch ms 1763640000000, count 13907171234567", [], id="longer digit runs"),
        pytest.param("12345678901", [], id="not a mobile prefix"),
    ],
)
def test_detector(text: str, expected: list[tuple[str, str]]) -> None:
    """Rule: the scanner finds plaintext resident IDs (check digit, date, province) and mobile
    numbers standing alone, and nothing else."""
    assert find_pii(text) == expected


def test_a_grid_cell_code_is_not_a_legacy_id() -> None:
    """Rule: a 15-digit value that is one of the session's cell codes is not reported."""
    cell = "420502001001001"
    assert find_pii(cell) == [("legacy resident ID", cell)]
    assert find_pii(cell, known_codes=frozenset({cell})) == []


def test_the_database_scan_finds_a_planted_id_in_a_table(conn: psycopg2.extensions.connection) -> None:
    """Rule: a plaintext ID in a text column and a phone in a bytea column are found, named by
    table, column and row id, and reported masked (the transaction is rolled back)."""
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE pii_planted (id int PRIMARY KEY, note text, blob bytea, doc jsonb)")
        cur.execute(
            "INSERT INTO pii_planted VALUES (7, %s, %s, %s), (8, 'nothing here', NULL, '{}')",
            (f"职工 {PLANTED_ID}", f"tel {PLANTED_PHONE}".encode(), '{"ok": 1}'),
        )
    findings, stats = scan_database(conn, codes=frozenset())
    ours = [f for f in findings if "pii_planted" in f.where]
    assert [(f.kind, f.value) for f in ours] == [
        ("resident ID", PLANTED_ID),
        ("mobile number", PLANTED_PHONE),
    ]
    assert ours[0].where.endswith("pii_planted column note row id=7")
    assert ours[1].where.endswith("pii_planted column blob row id=8") is False
    assert "column blob row id=7" in ours[1].where
    assert ours[0].line().endswith(f"plaintext resident ID {mask(PLANTED_ID)}")
    assert PLANTED_ID not in ours[0].line() and PLANTED_ID not in repr(ours[0])
    assert stats["tables"] > 5 and stats["columns"] > 20


def test_values_of_code_columns_are_codes_not_legacy_ids(conn: psycopg2.extensions.connection) -> None:
    """Rule: a 15-digit value the database holds in a code column (a cell or unit code) is not
    reported, even where it is copied into free text or JSON; a 15-digit value only in text is."""
    from tests.pii_scan import known_codes

    cell = "425010001001001"
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE pii_cells (id int PRIMARY KEY, owner_code text, payload jsonb)")
        cur.execute(
            "INSERT INTO pii_cells VALUES (1, %s, %s)",
            (cell, f'{{"owner": "{cell}", "old_id": "{LEGACY_ID}"}}'),
        )
    codes = known_codes(conn)
    assert cell in codes and LEGACY_ID not in codes
    findings, _ = scan_database(conn, codes=codes)
    assert [(f.kind, f.value) for f in findings if "pii_cells" in f.where] == [
        ("legacy resident ID", LEGACY_ID)
    ]


class _PrivateLogger(logging.Logger):
    """Outside the logging tree and past the session's record hook: planted values stay here."""

    def handle(self, record: logging.LogRecord) -> None:
        self.callHandlers(record)


def test_the_log_scanner_finds_a_planted_id_in_a_record() -> None:
    """Rule: a log record carrying a plaintext ID or phone (in its message or its exception) is
    reported with the logger's name, masked."""
    handler = PiiLogHandler()
    logger = _PrivateLogger("pii-selftest")
    logger.addHandler(handler)
    logger.warning("row of %s rejected", PLANTED_ID)
    try:
        raise ValueError(f"bad phone {PLANTED_PHONE}")
    except ValueError:
        logger.exception("validation crashed")
    logger.info("page 3: received 500, loaded 498")
    assert handler.records == 3
    assert [(f.where, f.kind) for f in handler.findings] == [
        ("log record of logger 'pii-selftest' (WARNING)", "resident ID"),
        ("log record of logger 'pii-selftest' (ERROR)", "mobile number"),
    ]
    assert all(PLANTED_ID not in f.line() and PLANTED_PHONE not in f.line() for f in handler.findings)


def test_scan_text_names_where() -> None:
    """Rule: every finding says where it was."""
    (f,) = scan_text("Prefect artifact sync-x", f"| {PLANTED_PHONE} |")
    assert f.line() == f"Prefect artifact sync-x: plaintext mobile number {mask(PLANTED_PHONE)}"


def test_the_prefect_scan_reads_the_harness(prefect_harness: None) -> None:
    """Rule: artifacts and flow runs stored in the harness are read (and a planted phone in an
    artifact is found); the artifact is deleted again so the session scan stays clean."""
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client

    key = f"pii-selftest-{secrets.token_hex(3)}"

    @flow(name="pii-selftest")
    def plant() -> None:
        create_markdown_artifact(key=key, markdown=f"worker phone {PLANTED_PHONE}")

    plant()
    try:
        findings, stats = scan_prefect()
        assert stats["artifacts"] >= 1 and stats["flow_runs"] >= 1
        assert [f.kind for f in findings if key in f.where] == ["mobile number"]
    finally:
        with get_client(sync_client=True) as client:
            for a in client.read_artifacts():
                if a.key == key:
                    client.delete_artifact(a.id)
    assert not [f for f in scan_prefect()[0] if key in f.where]


def test_a_session_with_plaintext_fails_with_a_masked_report(database_url: str, tmp_path: Path) -> None:
    """Rule: the plugin itself, in a real pytest session, fails that session when a table or a
    log record holds a plaintext ID or phone, naming the table/column/row and the logger, and
    never printing the value."""
    schema = f"pii_selftest_{secrets.token_hex(3)}"
    (tmp_path / "test_planted.py").write_text(
        textwrap.dedent(
            f"""
            import logging, os
            import psycopg2, pytest

            @pytest.fixture(scope="session")
            def database_url():
                url = os.environ["PII_SELFTEST_URL"]
                c = psycopg2.connect(url)
                c.autocommit = True
                with c.cursor() as cur:
                    cur.execute("CREATE SCHEMA {schema}")
                    cur.execute("CREATE TABLE {schema}.planted (id int PRIMARY KEY, note text)")
                    cur.execute("INSERT INTO {schema}.planted VALUES (1, %s)", ("sfzh {PLANTED_ID}",))
                yield url
                with c.cursor() as cur:
                    cur.execute("DROP SCHEMA {schema} CASCADE")
                c.close()

            def test_plant(database_url):
                logging.getLogger("connectors.selftest").debug("called %s", "{PLANTED_PHONE}")
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PII_SELFTEST_URL": database_url}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.pii_scan",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"table {schema}.planted column note row id=1: plaintext resident ID {mask(PLANTED_ID)}" in out
    assert (
        f"log record of logger 'connectors.selftest' (DEBUG): plaintext mobile number {mask(PLANTED_PHONE)}"
        in out
    )
    report = _report_block(out)
    assert PLANTED_ID not in report and PLANTED_PHONE not in report
    assert "1 passed" in out and "1 error" in out


def _report_block(out: str) -> str:
    """The plugin's report (pytest's own sections - source listings, captured logs - are not ours)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "PII scan: plaintext personal data found" in line)
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(("  ", "E   ")):
            break
        block.append(line)
    return "\n".join(block)


def test_the_plugin_is_active_in_this_session(request: pytest.FixtureRequest) -> None:
    """Rule: the scan runs after the whole suite: tests/conftest.py must load it
    (``pytest_plugins = ["tests.pii_scan"]``)."""
    assert request.config.pluginmanager.has_plugin("tests.pii_scan"), (
        'add pytest_plugins = ["tests.pii_scan"] to tests/conftest.py'
    )
