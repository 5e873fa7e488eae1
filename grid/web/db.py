"""The web app's connection pool: every connection logs in as ``gridflow_web`` (NOINHERIT, owns
nothing, no privileges of its own) and works as the non-owner role ``gridflow_app``.

Connections are opened lazily and kept (up to ``pool_max``); a request waits for a free one rather
than failing. Each is rolled back before reuse, and the scope settings are transaction-local, so a
reused connection starts with nothing visible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from grid.accounts.config import WebSettings
from grid.settings import WEB_ROLE, get_settings

Conn = psycopg2.extensions.connection


class WebDatabase:
    def __init__(self, web: WebSettings) -> None:
        # Computed now: in production a missing GRIDFLOW_DB_PASSWORD_GRIDFLOW_WEB stops the start.
        self._dsn = web.database_url or get_settings().db_dsn(WEB_ROLE)
        self._options = f"-c role={web.db_role} -c timezone=Asia/Shanghai"
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(web.pool_max)
        self._closed = False

    def _connect(self) -> Conn:
        return psycopg2.connect(
            self._dsn, options=self._options, application_name="gridflow-web", connect_timeout=10
        )

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        if not self._slots.acquire(timeout=30):
            raise RuntimeError("no free database connection within 30 s")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._connect()
            keep = False
            try:
                yield conn
            finally:
                if not conn.closed:
                    try:
                        conn.rollback()
                        keep = True
                    except psycopg2.Error:
                        conn.close()
                with self._lock:
                    if keep and not self._closed:
                        self._idle.append(conn)
                    elif not conn.closed:
                        conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
