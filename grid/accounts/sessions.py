"""Accounts and sessions: argon2id hashes, server-side sessions with idle and absolute expiry,
per-session CSRF tokens, login throttling, and one answer for every failed login (no user
enumeration: an unknown login costs the same argon2 verification as a wrong password)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2.extensions
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from grid.accounts.access import Principal, Role
from grid.accounts.config import WebSettings
from grid.store.db import transaction

Conn = psycopg2.extensions.connection

HASHER = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 10


class LoginFailed(Exception):
    """Wrong login or password, inactive account, or throttled: callers show one message."""

    def __init__(self, throttled: bool = False) -> None:
        super().__init__("login failed")
        self.throttled = throttled


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return HASHER.hash(password)


def _login_key(login: str) -> bytes:
    return hashlib.sha256(b"gridflow-login\x1f" + login.strip().lower().encode()).digest()


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _state(cur: psycopg2.extensions.cursor, **settings: str) -> None:
    """State, for this transaction only, which login / session / client it works on: the row-level
    security of accounts, sessions and login attempts (migration 0007) shows nothing else."""
    names = sorted(settings)
    cur.execute(
        "SELECT " + ", ".join(f"set_config('gridflow.{n}', %s, true)" for n in names),
        [settings[n] for n in names],
    )


# An account's cells: for one tied to the roster (``app_user.officer_id``) the cells its officer
# serves now, none once the officer is inactive (read at sign-in and on every request, never
# copied, so they follow the roster); otherwise the cells given with ``users add --cell``.
# Signing in and resuming ask ``gridflow_account_cells`` (migration 0012: the same rule for the
# account the transaction names, planned once); listings read it through the tables.
SIGNED_IN_CELLS = "gridflow_account_cells(u.id)"
CELLS_OF_USER = """
    CASE WHEN u.officer_id IS NULL
         THEN ARRAY(SELECT c.cell_code FROM user_cell c WHERE c.user_id = u.id ORDER BY c.cell_code)
         ELSE ARRAY(SELECT oc.cell_code FROM officer_cell oc JOIN officer o ON o.id = oc.officer_id
                    WHERE oc.officer_id = u.officer_id AND o.active ORDER BY oc.cell_code)
    END"""


def _principal(cur: psycopg2.extensions.cursor, user_id: int, login: str, role: str, scope: str) -> Principal:
    cur.execute(f"SELECT {SIGNED_IN_CELLS}, u.officer_id FROM app_user u WHERE u.id = %s", (user_id,))
    row = cur.fetchone()
    assert row is not None
    cells = tuple(str(c) for c in row[0])
    return Principal(user_id, login, Role(role), scope, cells, None if row[1] is None else int(row[1]))


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str
    principal: Principal


def login(conn: Conn, *, login: str, password: str, client: str, web: WebSettings) -> Session:
    """Check the password and open a session; every failure raises the same :class:`LoginFailed`."""
    if "\x00" in login or "\x00" in password:  # no account has one, and PostgreSQL text cannot hold it
        raise LoginFailed()
    key = _login_key(login)
    now = datetime.now(UTC)
    since = now - timedelta(minutes=web.login_window_minutes)
    with transaction(conn) as cur:
        _state(cur, login=login.strip().lower(), login_key=key.hex(), client=client)
        cur.execute(
            """
            SELECT (SELECT count(*) FROM login_attempt WHERE login_key = %s AND at > %s AND NOT success),
                   (SELECT count(*) FROM login_attempt WHERE client = %s AND at > %s AND NOT success)
            """,
            (key, since, client, since),
        )
        row = cur.fetchone()
        assert row is not None
        throttled = int(row[0]) >= web.login_max_failures or int(row[1]) >= web.client_max_failures
        cur.execute(
            "SELECT id, login, password_hash, role, scope_code, active FROM app_user WHERE login = %s",
            (login.strip().lower(),),
        )
        user = cur.fetchone()
        stored = str(user[2]) if user else _DUMMY_HASH
        ok: bool
        try:
            ok = HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
        genuine = ok and user is not None and bool(user[5])
        ok = genuine and not throttled
        # A correct password refused only because of the throttle is no failure: counting it would
        # let a throttled address lock the real user out.
        if ok or not genuine:
            cur.execute(
                "INSERT INTO login_attempt (login_key, client, success) VALUES (%s, %s, %s)",
                (key, client, ok),
            )
        if not ok or user is None:
            conn.commit()  # the failed attempt must count even though we raise
            raise LoginFailed(throttled=throttled)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        _state(cur, session=_token_hash(token).hex())
        cur.execute(
            "INSERT INTO web_session (token_hash, user_id, csrf_token, expires_at) VALUES (%s, %s, %s, %s)",
            (_token_hash(token), int(user[0]), csrf, now + timedelta(hours=web.session_absolute_hours)),
        )
        principal = _principal(cur, int(user[0]), str(user[1]), str(user[3]), str(user[4]))
    return Session(token, csrf, principal)


def resume(conn: Conn, *, token: str, web: WebSettings) -> Session | None:
    """The live session for a cookie token, or None. One round trip; the idle clock is moved at
    most once a minute, without waiting for the WAL flush (losing one touch in a crash is harmless)."""
    if not token or len(token) > 100:
        return None
    th = _token_hash(token)
    with transaction(conn) as cur:
        _state(cur, session=th.hex())
        cur.execute(
            f"""
            SELECT u.id, u.login, u.role, u.scope_code, s.csrf_token, s.last_seen_at < now() - interval '60 seconds',
                   {SIGNED_IN_CELLS}, u.officer_id
            FROM web_session s JOIN app_user u ON u.id = s.user_id
            WHERE s.token_hash = %s AND u.active AND s.revoked_at IS NULL
              AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(mins => %s)
            """,
            (th, web.session_idle_minutes),
        )
        row = cur.fetchone()
        if row is None:
            return None
        if row[5]:
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute("UPDATE web_session SET last_seen_at = now() WHERE token_hash = %s", (th,))
    principal = Principal(
        int(row[0]),
        str(row[1]),
        Role(row[2]),
        str(row[3]),
        tuple(str(c) for c in row[6]),
        None if row[7] is None else int(row[7]),
    )
    return Session(token, str(row[4]), principal)


def logout(conn: Conn, *, token: str) -> None:
    th = _token_hash(token)
    with transaction(conn) as cur:
        _state(cur, session=th.hex())
        cur.execute("UPDATE web_session SET revoked_at = now() WHERE token_hash = %s", (th,))


def purge_login_history(conn: Conn, *, web: WebSettings) -> dict[str, int]:
    """Delete sessions that ended (expired, idle past the limit or revoked) and login attempts made
    more than ``web.login_history_days`` ago. Uses the database clock, never a replayed time."""
    keep = web.login_history_days
    if keep < 1:
        raise ValueError("GRIDFLOW_WEB_LOGIN_HISTORY_DAYS must be at least 1")
    with transaction(conn) as cur:
        cur.execute(
            """
            DELETE FROM web_session
            WHERE least(expires_at, last_seen_at + make_interval(mins => %(idle)s),
                        coalesce(revoked_at, 'infinity'::timestamptz))
                  < now() - make_interval(days => %(keep)s)
            """,
            {"idle": web.session_idle_minutes, "keep": keep},
        )
        sessions = cur.rowcount
        cur.execute("DELETE FROM login_attempt WHERE at < now() - make_interval(days => %s)", (keep,))
        attempts = cur.rowcount
    return {"sessions": sessions, "login_attempts": attempts}


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode())


def state_session(cur: psycopg2.extensions.cursor, session: Session) -> None:
    """State the signed-in session for this transaction: row-level security on a user's own rows
    (``notice_read``, migration 0013) shows the rows of this session's user only."""
    _state(cur, session=_token_hash(session.token).hex())
