"""Database login roles and their passwords (the roles by job are named in ``grid.settings``).

A password is sent to the server only as a SCRAM-SHA-256 verifier computed here (libpq's
``PQencryptPasswordConn``), so the plain password never reaches the server or its logs.
:func:`ensure_login_role` is generic: any role a component needs (the web's, the flows', a Prefect
server's) is created and given its password from :meth:`grid.settings.Settings.db_password`.
"""

from __future__ import annotations

import logging

import psycopg2.extensions
from psycopg2 import sql

from grid.settings import SERVICE_ROLES, Settings

log = logging.getLogger(__name__)

Conn = psycopg2.extensions.connection

#: Attributes every service login role gets: no superuser, no role or database creation, no
#: replication, and it inherits nothing (privileges only through an explicit ``SET ROLE``).
SERVICE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT"


def may_manage_roles(conn: Conn) -> bool:
    """Whether the connected user may create roles and set their passwords."""
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        row = cur.fetchone()
    return bool(row and row[0])


def ensure_login_role(conn: Conn, role: str, password: str, *, attributes: str = SERVICE_ATTRIBUTES) -> None:
    """Create login role ``role`` if missing (with ``attributes``) and set its password. The caller
    commits; the connected user must be allowed to manage roles (:func:`may_manage_roles`)."""
    verifier = psycopg2.extensions.encrypt_password(password, role, conn, "scram-sha-256")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD %s").format(sql.SQL(verb), sql.Identifier(role)),
            (verifier,),
        )
        if verb == "CREATE":
            cur.execute(sql.SQL("ALTER ROLE {} " + attributes).format(sql.Identifier(role)))


def sync_service_passwords(conn: Conn, settings: Settings) -> list[str]:
    """Give the service roles (web, flows) their configured passwords, when the connected user may;
    returns the roles updated (none on a server where an operator manages roles: README)."""
    if not may_manage_roles(conn):
        log.info("the migrating user may not manage roles: service role passwords are left as they are")
        return []
    done: list[str] = []
    for role in SERVICE_ROLES:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            exists = cur.fetchone() is not None
        if exists:
            ensure_login_role(conn, role, settings.db_password(role))
            done.append(role)
    conn.commit()
    return done
