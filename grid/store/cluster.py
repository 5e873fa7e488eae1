"""The project-private PostgreSQL cluster (``gridflow db up`` / ``db down``).

Unless ``GRIDFLOW_DATABASE_URL`` names a server, gridflow runs its own PostgreSQL 15 cluster in
``<state>/pg``: listening on 127.0.0.1 and a socket in ``<state>/pg/run`` only, trust
authentication for the local ``gridflow`` role (the port is not reachable from other hosts).
``initdb`` refuses to run as root, so when invoked as root the cluster belongs to the
``postgres`` OS user and every server command runs through ``runuser``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from grid.settings import DEFAULT_PG_PORT, Settings

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The private cluster could not be started or stopped (one clear sentence)."""


@dataclass(frozen=True)
class Cluster:
    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.pg_dir

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def _bin(self, name: str) -> str:
        path = self.settings.pg_bin / name
        if not path.exists():
            raise ClusterError(
                f"{path} not found: install Debian's postgresql-15 and postgresql-15-postgis-3 "
                "(scripts/bootstrap.sh does it)"
            )
        return str(path)

    def _as_owner(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def _run(self, args: list[str], what: str) -> str:
        proc = subprocess.run(self._as_owner(args), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ClusterError(f"{what} failed: {' '.join(tail)}")
        return proc.stdout

    def is_running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        proc = subprocess.run(
            self._as_owner([self._bin("pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def _choose_port(self) -> int:
        """The configured port, else 54329 when free, else any free loopback port."""
        if self.settings.pg_port is not None:
            return self.settings.pg_port
        for port in (DEFAULT_PG_PORT, 0):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(sock.getsockname()[1])
        raise ClusterError("no free loopback port for PostgreSQL")

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        port = self._choose_port()
        (self.root / "port").write_text(f"{port}\n")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.run_dir, "postgres", "postgres")
        self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "gridflow",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            "initdb",
        )
        conf = self.data / "postgresql.conf"
        extra = (
            "\n# gridflow private cluster\n"
            f"port = {port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.run_dir}'\n"
            "shared_buffers = 512MB\n"
            "work_mem = 32MB\n"
            "maintenance_work_mem = 256MB\n"
            "max_wal_size = 4GB\n"
            "max_connections = 200\n"
            "timezone = 'Asia/Shanghai'\n"
        )
        self._run(["sh", "-c", f"cat >> {conf} <<'EOF'\n{extra}EOF"], "configuring the cluster")

    def start(self) -> None:
        self.init()
        if self.is_running():
            return
        self._run(
            [self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start"],
            "starting PostgreSQL",
        )

    def stop(self) -> None:
        if not self.is_running():
            return
        self._run(
            [self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], "stopping PostgreSQL"
        )

    @property
    def admin_dsn(self) -> str:
        """The cluster's bootstrap superuser on its maintenance database."""
        return f"postgresql://gridflow@127.0.0.1:{self.settings.cluster_port}/postgres"

    def ensure_prefect_database(self) -> None:
        """The Prefect server's database and login role in this cluster (see below)."""
        s = self.settings
        ensure_prefect_database(
            self.admin_dsn, name=s.prefect_database_name, password=s.prefect_db_password()
        )

    def ensure_database(self, name: str = "gridflow") -> None:
        """Create the database (and PostGIS) if missing."""
        port = self.settings.cluster_port
        admin = self.admin_dsn
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(admin, connect_timeout=5)
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"PostgreSQL did not accept connections on 127.0.0.1:{port}") from None
                time.sleep(0.5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def ensure_prefect_database(admin_dsn: str, *, name: str, password: str) -> None:
    """The Prefect server's own database on a gridflow cluster: login role ``name`` (not superuser,
    owns only this database, scram password), database ``name`` owned by it, and ``pg_trgm``
    (Prefect's PostgreSQL migrations need it; created here by the cluster's admin). Idempotent;
    the password is reset to ``password`` each time."""
    from psycopg2 import sql

    conn = psycopg2.connect(admin_dsn, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(
                    "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "PASSWORD {}"
                ).format(sql.SQL(verb), sql.Identifier(name), sql.Literal(password))
            )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name))
                )
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    finally:
        conn.close()
    from urllib.parse import urlsplit, urlunsplit

    conn = psycopg2.connect(urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name)), connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cur.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(name)))
    finally:
        conn.close()
