"""Least privilege below the app: the web's database login cannot leave row-level security, the
flows' login has only what the flows need, every relation is classified and every scoped one reads
nothing unscoped, and the private cluster trusts no local user."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from grid.accounts.access import Principal, apply_scope
from grid.settings import FLOWS_ROLE, OWNER_ROLE, WEB_ROLE, ConfigError, Settings, get_settings
from grid.store.access import RELATIONS, WebAccess
from tests.web.conftest import Tree, client, login


@pytest.fixture
def web_login(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection exactly as the web app opens one: login gridflow_web, working as gridflow_app."""
    c = psycopg2.connect(get_settings().db_dsn(WEB_ROLE), options="-c role=gridflow_app")
    try:
        yield c
    finally:
        c.close()


def _escape_targets(database_url: str) -> list[str]:
    """Every role that bypasses row-level security: superusers, BYPASSRLS roles, table owners."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT rolname FROM pg_roles WHERE rolsuper OR rolbypassrls
                UNION SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class
                    WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v')
                ORDER BY 1
                """
            )
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("SET ROLE {}", id="set-role"),
        pytest.param("SET SESSION AUTHORIZATION {}", id="set-session-authorization"),
        pytest.param("SELECT set_config('role', %s, false)", id="set-config-role"),
    ],
)
def test_web_login_cannot_switch_to_any_role_that_bypasses_rls(
    statement: str, database_url: str, web_login: psycopg2.extensions.connection
) -> None:
    targets = _escape_targets(database_url)
    assert OWNER_ROLE in targets and FLOWS_ROLE in targets
    web_login.autocommit = True
    for target in targets:
        with web_login.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            if "%s" in statement:
                cur.execute(statement, (target,))
            else:
                cur.execute(statement.format(psycopg2.extensions.quote_ident(target, cur)))
        with web_login.cursor() as cur:
            cur.execute("SELECT current_user, session_user")
            assert cur.fetchone() == ("gridflow_app", WEB_ROLE)


def test_web_login_is_no_superuser_owns_nothing_and_reaches_only_gridflow_app(
    web_login: psycopg2.extensions.connection,
) -> None:
    with web_login.cursor() as cur:
        cur.execute(
            "SELECT rolsuper, rolbypassrls, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
            (WEB_ROLE,),
        )
        assert cur.fetchone() == (False, False, False, False, False)
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user")
        assert cur.fetchone() == (False,)
        # every role it could SET ROLE to, transitively
        cur.execute(
            """
            WITH RECURSIVE reach(oid) AS (
                SELECT roleid FROM pg_auth_members WHERE member = (SELECT oid FROM pg_roles WHERE rolname = %s)
                UNION SELECT m.roleid FROM pg_auth_members m JOIN reach r ON m.member = r.oid)
            SELECT r.rolname, r.rolsuper, r.rolbypassrls FROM reach JOIN pg_roles r ON r.oid = reach.oid
            """,
            (WEB_ROLE,),
        )
        assert cur.fetchall() == [("gridflow_app", False, False)]
        cur.execute(
            "SELECT count(*) FROM pg_class WHERE pg_get_userbyid(relowner) IN (%s, 'gridflow_app')",
            (WEB_ROLE,),
        )
        assert cur.fetchone() == (0,)
        # back to the login itself: no privileges at all
        cur.execute("SET ROLE NONE")
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (WEB_ROLE,)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT count(*) FROM case_file")
    web_login.rollback()
    with web_login.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute("CREATE TABLE escape (x int)")


def test_flows_login_has_dml_only_and_no_accounts(database_url: str) -> None:
    conn = psycopg2.connect(get_settings().db_dsn(FLOWS_ROLE))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False, False)
            cur.execute("SELECT count(*) FROM pg_class WHERE pg_get_userbyid(relowner) = current_user")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT count(*) FROM pg_auth_members WHERE member = current_user::regrole")
            assert cur.fetchone() == (0,)
            for table, privilege, want in (
                ("worker", "INSERT", True),
                ("case_file", "UPDATE", True),
                ("login_attempt", "DELETE", True),
                ("app_user", "SELECT", False),
                ("user_cell", "SELECT", False),
                ("web_session", "INSERT", False),
                ("alembic_version", "SELECT", False),
            ):
                cur.execute("SELECT has_table_privilege(current_user, %s, %s)", (table, privilege))
                assert cur.fetchone() == (want,), (table, privilege)
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("CREATE TABLE escape (x int)")
    finally:
        conn.close()


def _relations(conn: Any) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p', 'v', 'm', 'f')"
        )
        return {str(r[0]): str(r[1]) for r in cur.fetchall()}


def test_every_relation_of_the_schema_is_classified(owner_conn: Any) -> None:
    """A new table nobody classified in grid.store.access fails here."""
    found = _relations(owner_conn)
    assert sorted(set(found) - set(RELATIONS)) == []
    assert sorted(set(RELATIONS) - set(found)) == []
    with owner_conn.cursor() as cur:
        for name, (access, _why) in RELATIONS.items():
            cur.execute("SELECT has_table_privilege('gridflow_app', %s, 'SELECT')", (name,))
            readable = bool(cur.fetchone()[0])
            if access is WebAccess.NO_READ:
                assert not readable, f"{name} is classified NO_READ but the web may read it"
            if access is WebAccess.SCOPED and found[name] == "r":
                cur.execute(
                    "SELECT relrowsecurity, EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid "
                    "AND 'gridflow_app'::regrole = ANY (p.polroles)) FROM pg_class c WHERE c.oid = %s::regclass",
                    (name,),
                )
                assert cur.fetchone() == (True, True), (
                    f"{name} is SCOPED without row-level security for the web"
                )


@contextmanager
def _seeded_monitoring(owner_conn: Any, tree: Tree) -> Iterator[None]:
    """Rows in the scoped tables the tree does not fill (a source of its own with a run,
    quarantine, a field problem and a reprocessing request; a coverage snapshot and note; a
    reveal), removed afterwards so other tests' counts are untouched."""
    source = f"roles{secrets.token_hex(4)}"
    case_id = next(iter(tree.cases.values()))
    user_id = next(iter(tree.user_ids.values()))
    with owner_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO source (name, display_name, city_code, kind, crs) VALUES (%s, 'roles test', %s, 'file', "
            "'EPSG:4326')",
            (source, tree.city),
        )
        cur.execute("INSERT INTO sync_run (source, status) VALUES (%s, 'completed') RETURNING id", (source,))
        run = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO quarantine (source, entity, run_id, last_run_id, reason_code, raw_hmac, raw_enc) "
            "VALUES (%s, 'worker', %s, %s, 'test', '\\x00', '\\x00') RETURNING id",
            (source, run, run),
        )
        qid = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO reprocess_request (source, quarantine_ids, requested_by) VALUES (%s, %s, 'test')",
            (source, [qid]),
        )
        cur.execute("INSERT INTO coverage_run (snapshot_date, as_of) VALUES ('2001-01-01', now())")
        cur.execute(
            "INSERT INTO coverage_snapshot (snapshot_date, division_code, level) VALUES ('2001-01-01', %s, 2)",
            (tree.city,),
        )
        cur.execute(
            "INSERT INTO coverage_note (snapshot_date, division_code, workers_pending) VALUES ('2001-01-01', %s, 1)",
            (tree.city,),
        )
        cur.execute(
            "INSERT INTO field_problem (source, entity, source_record_id, field, reason_code, raw_enc, run_id,"
            " last_run_id) VALUES (%s, 'workers', 'r1', 'phone', 'bad_phone', '\\x00', %s, %s)",
            (source, run, run),
        )
        cur.execute(
            "INSERT INTO reveal_audit (user_id, login, case_id, field, reason) "
            "VALUES (%s, 'x', %s, 'worker_id', 'test reason') RETURNING id",
            (user_id, case_id),
        )
        audit = cur.fetchone()[0]
        cur.execute("SELECT min(id) FROM notification_outbox WHERE case_id = %s", (case_id,))
        notice_id = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO notice_read (user_id, notice_id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING notice_id",
            (user_id, notice_id),
        )
        read_mark = cur.fetchone()
    try:
        yield
    finally:
        with owner_conn.cursor() as cur:
            cur.execute("DELETE FROM reveal_audit WHERE id = %s", (audit,))
            if read_mark is not None:
                cur.execute(
                    "DELETE FROM notice_read WHERE user_id = %s AND notice_id = %s", (user_id, notice_id)
                )
            cur.execute("DELETE FROM coverage_run WHERE snapshot_date = '2001-01-01'")  # cascades
            cur.execute("DELETE FROM reprocess_request WHERE source = %s", (source,))
            cur.execute("DELETE FROM quarantine WHERE source = %s", (source,))
            cur.execute("DELETE FROM field_problem WHERE source = %s", (source,))
            cur.execute("DELETE FROM sync_run WHERE source = %s", (source,))
            cur.execute("DELETE FROM source WHERE name = %s", (source,))


def test_every_scoped_relation_reads_nothing_without_a_stated_scope(
    tree: Tree, web_app: Any, owner_conn: Any, web_login: psycopg2.extensions.connection
) -> None:
    c = client(web_app)
    login(c, next(iter(tree.users)))  # a session and a login attempt
    with _seeded_monitoring(owner_conn, tree):
        _reads_nothing_unscoped(tree, owner_conn, web_login)


def _reads_nothing_unscoped(tree: Tree, owner_conn: Any, web_login: psycopg2.extensions.connection) -> None:
    scoped = sorted(n for n, (a, _) in RELATIONS.items() if a is WebAccess.SCOPED)
    assert {"app_user", "web_session", "login_attempt", "notification_outbox", "coverage_snapshot"} <= set(
        scoped
    )
    underlying = {"case_event_scoped": "case_event"}  # the view filters for its owner too
    for name in scoped:
        with owner_conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{underlying.get(name, name)}"')
            assert cur.fetchone()[0] > 0, f"{name}: no rows to hide, the check below would prove nothing"
        with web_login.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{name}"')
            assert cur.fetchone() == (0,), f"{name} shows rows to a transaction that stated no scope"
        web_login.rollback()
    # and a stated scope does see its own rows (the policies are not simply closed)
    city_user = next(u for u in tree.users if u.startswith("city"))
    apply_scope(web_login, tree.principal(city_user))
    with web_login.cursor() as cur:
        for name in ("coverage_snapshot", "sync_run", "source", "escalation_step", "case_file"):
            cur.execute(f'SELECT count(*) FROM "{name}"')
            assert cur.fetchone()[0] > 0, name
    web_login.rollback()
    apply_scope(web_login, Principal(0, "nobody", tree.principal(city_user).role, "429900000000"))
    with web_login.cursor() as cur:
        cur.execute("SELECT count(*) FROM coverage_snapshot WHERE division_code = %s", (tree.city,))
        assert cur.fetchone() == (0,)
    web_login.rollback()


# -- the private cluster ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _psql_as_nobody(
    settings: Settings, target: list[str], password: str | None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            str(settings.pg_bin / "psql"),
            "-w",
            "-X",
            *target,
            "-c",
            "SELECT 1",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def scratch_cluster() -> Iterator[Any]:
    """A fresh private cluster of its own (not the session's), removed afterwards."""
    from grid.store.cluster import Cluster

    base = get_settings()
    state = base.state_dir / "test-clusters" / secrets.token_hex(4)
    state.mkdir(parents=True)
    settings = Settings(state_dir=state, database_url=None, pg_port=_free_port())
    cluster = Cluster(settings)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(state, ignore_errors=True)


def test_a_private_cluster_compares_text_bytewise_in_code_point_order(scratch_cluster: Any) -> None:
    """Rule: a cluster gridflow makes collates "C" (PostgreSQL's memcmp path, not strcoll) with
    C.UTF-8 character classes: text sorts in code point order, as under C.UTF-8 before, and
    upper/lower still know letters outside ASCII."""
    settings: Settings = scratch_cluster.settings
    conn = psycopg2.connect(
        host="127.0.0.1", port=settings.cluster_port, user=OWNER_ROLE, dbname="postgres",
        password=settings.db_password(OWNER_ROLE),
    )  # fmt: skip
    words = ["张三", "a", "B", "é", "😀", "Z", "ａ", "b", "张", "10", "9"]
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datcollate, datctype FROM pg_database WHERE datname = 'template1'")
            assert cur.fetchone() == ("C", "C.UTF-8")
            cur.execute("SELECT array_agg(w ORDER BY w), upper('é') FROM unnest(%s::text[]) AS w", (words,))
            ordered, upper = cur.fetchone()
    finally:
        conn.close()
    assert ordered == sorted(words)  # Python's str order is code point order
    assert upper == "É"


def test_private_cluster_trusts_no_local_user_and_converts_a_trusting_one(scratch_cluster: Any) -> None:
    cluster = scratch_cluster
    settings: Settings = cluster.settings
    port = str(settings.cluster_port)
    hba = subprocess.run(["cat", str(cluster.hba)], capture_output=True, text=True, check=True).stdout
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert rules and all(r[-1] == "scram-sha-256" for r in rules), hba
    owner_password = settings.db_password(OWNER_ROLE)
    assert (Path(settings.state_dir) / "keys" / f"db-{OWNER_ROLE}.password").stat().st_mode & 0o777 == 0o600
    tcp = ["-h", "127.0.0.1", "-p", port, "-U", OWNER_ROLE, "postgres"]
    sock = ["-h", str(cluster.run_dir), "-p", port, "-U", OWNER_ROLE, "postgres"]
    for target in (tcp, sock):
        refused = _psql_as_nobody(settings, target, None)
        assert refused.returncode != 0 and "no password supplied" in refused.stderr, refused.stderr
        wrong = _psql_as_nobody(settings, target, "not-the-password")
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr
        right = _psql_as_nobody(settings, target, owner_password)
        assert right.returncode == 0, right.stderr

    # a cluster made before passwords (trust everywhere) is converted when it starts
    cluster._run(
        ["sh", "-c", f"printf 'local all all trust\\nhost all all 127.0.0.1/32 trust\\n' > {cluster.hba}"],
        "t",
    )
    cluster._run([cluster._bin("pg_ctl"), "-D", str(cluster.data), "reload"], "reload")
    cluster._run(["sleep", "1"], "wait")
    assert _psql_as_nobody(settings, tcp, None).returncode == 0  # trusting: the hole the issue found
    cluster.start()
    assert _psql_as_nobody(settings, tcp, None).returncode != 0
    assert _psql_as_nobody(settings, tcp, owner_password).returncode == 0


def test_role_passwords_come_from_the_environment_in_production_and_a_0600_file_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRIDFLOW_DB_PASSWORD_GRIDFLOW_WEB", raising=False)
    dev = Settings(env="development", state_dir=tmp_path, database_url=None, pg_port=5999)
    first = dev.db_password(WEB_ROLE)
    assert len(first) >= 32 and dev.db_password(WEB_ROLE) == first
    assert (tmp_path / "keys" / "db-gridflow_web.password").stat().st_mode & 0o777 == 0o600
    assert dev.db_dsn(WEB_ROLE) == f"postgresql://gridflow_web:{first}@127.0.0.1:5999/gridflow"
    assert dev.db_dsn("prefect", "prefect").endswith("@127.0.0.1:5999/prefect")

    keys = {
        "GRIDFLOW_HMAC_KEY": "a" * 44,
        "GRIDFLOW_ENCRYPTION_KEY": "b" * 44,
        "GRIDFLOW_PREFECT_AUTH_STRING": "gridflow:" + "c" * 24,
    }
    for k, v in keys.items():
        monkeypatch.setenv(k, v)
    prod = Settings(
        env="production",
        state_dir=tmp_path / "p",
        database_url="postgresql://boss:s3cret@db.example:6432/grid",
    )
    with pytest.raises(ConfigError, match="GRIDFLOW_DB_PASSWORD_GRIDFLOW_WEB is required in production"):
        prod.db_password(WEB_ROLE)
    assert not (tmp_path / "p" / "keys").exists()
    monkeypatch.setenv("GRIDFLOW_DB_PASSWORD_GRIDFLOW_WEB", "w/e@b:pass")
    assert prod.db_dsn(WEB_ROLE) == "postgresql://gridflow_web:w%2Fe%40b%3Apass@db.example:6432/grid"
    assert prod.db_dsn(OWNER_ROLE) == "postgresql://boss:s3cret@db.example:6432/grid"
    monkeypatch.setenv("GRIDFLOW_DB_PASSWORD_GRIDFLOW_WEB", "changeme")
    with pytest.raises(ConfigError, match="real secret"):
        prod.db_password(WEB_ROLE)
