"""The in-app 通知 list: the outbox's notices addressed to a user's unit or cells, and read marks.

Whose notices (:func:`recipients`): a unit role's are those addressed to its own unit code (its
派单, 催办, 通报, and dual reports to it: the union above, or the same-level government copy); a
grid officer's are those addressed to its cells (the owner of a case in a cell with an officer is
the cell). An administrator is no unit and has none. Every query also runs under row-level
security (the notice's case must be visible, ``notice_read`` rows are the session user's own), so
the database gives the same answer with the application filter removed.

Only allow-listed payload keys are shown (``grid.cases.outbox.ALLOWED_KEYS``): no personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg2.extensions

from grid.accounts import sessions
from grid.accounts.access import Principal, Role, apply_scope
from grid.store.db import transaction

Conn = psycopg2.extensions.connection
PAGE: Final = 30
#: The nav shows "99+" beyond this: the count stops there rather than counting a province's backlog.
UNREAD_CAP: Final = 99
SHOWN_KEYS: Final = (
    "kind_zh",
    "severity_zh",
    "level_zh",
    "state",
    "owner_code",
    "criticised_unit",
    "resolve_by",
    "due_at",
    "workers_affected",
    "dual_report",
)


class NoticeNotFound(LookupError):
    """No such notice for this user (outside its units, or its case not visible)."""


@dataclass(frozen=True, slots=True)
class NoticeRow:
    id: int
    case_id: int
    topic: str
    topic_zh: str
    target: str
    recipient_code: str
    created_at: datetime
    read: bool
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NoticePage:
    rows: list[NoticeRow]
    unread: int
    has_more: bool


def recipients(p: Principal) -> list[str]:
    """The recipient codes whose notices are the principal's."""
    if p.role is Role.ADMIN:
        return []
    if p.role is Role.GRID_OFFICER:
        return sorted(p.cells)
    return [p.scope_code]


def _begin(cur: psycopg2.extensions.cursor, conn: Conn, session: sessions.Session) -> None:
    sessions.state_session(cur, session)
    apply_scope(conn, session.principal)


_UNREAD_SQL = """
    SELECT count(*) FROM (
        SELECT 1 FROM notification_outbox o
        WHERE o.recipient_code = ANY(%(codes)s)
          AND NOT EXISTS (SELECT 1 FROM notice_read r WHERE r.notice_id = o.id AND r.user_id = %(uid)s)
        LIMIT %(cap)s
    ) x
"""


def unread_count(conn: Conn, session: sessions.Session) -> int:
    """Unread notices of the session's user, up to :data:`UNREAD_CAP` + 1."""
    codes = recipients(session.principal)
    if not codes:
        return 0
    with transaction(conn) as cur:
        _begin(cur, conn, session)
        cur.execute(_UNREAD_SQL, {"codes": codes, "uid": session.principal.user_id, "cap": UNREAD_CAP + 1})
        row = cur.fetchone()
    return int(row[0]) if row else 0


def list_notices(
    conn: Conn,
    session: sessions.Session,
    *,
    unread_only: bool = False,
    limit: int = PAGE,
    offset: int = 0,
    unscoped: bool = False,
) -> NoticePage:
    """The user's notices, newest first, a page at a time; ``unscoped`` drops the application
    filter (the recipient codes) so tests can prove row-level security alone hides the rest."""
    p = session.principal
    codes = recipients(p)
    if not codes and not unscoped:
        return NoticePage([], 0, False)
    where = "TRUE" if unscoped else "o.recipient_code = ANY(%(codes)s)"
    with transaction(conn) as cur:
        _begin(cur, conn, session)
        cur.execute(
            f"""
            SELECT o.id, o.case_id, o.topic, o.target, o.recipient_code, o.created_at, o.payload,
                   EXISTS (SELECT 1 FROM notice_read r WHERE r.notice_id = o.id AND r.user_id = %(uid)s)
            FROM notification_outbox o
            WHERE {where}
              AND (NOT %(unread)s OR NOT EXISTS (
                  SELECT 1 FROM notice_read r WHERE r.notice_id = o.id AND r.user_id = %(uid)s))
            ORDER BY o.id DESC
            LIMIT %(limit)s OFFSET %(offset)s
            """,
            {"codes": codes, "uid": p.user_id, "unread": unread_only, "limit": limit + 1, "offset": offset},
        )
        raw = cur.fetchall()
        unread = 0
        if codes:
            cur.execute(_UNREAD_SQL, {"codes": codes, "uid": p.user_id, "cap": UNREAD_CAP + 1})
            row = cur.fetchone()
            unread = int(row[0]) if row else 0
    rows = [
        NoticeRow(
            id=int(r[0]),
            case_id=int(r[1]),
            topic=str(r[2]),
            topic_zh=str(r[6].get("topic_zh", r[2])),
            target=str(r[3]),
            recipient_code=str(r[4]),
            created_at=r[5],
            read=bool(r[7]),
            details={k: r[6][k] for k in SHOWN_KEYS if r[6].get(k) not in (None, "")},
        )
        for r in raw[:limit]
    ]
    return NoticePage(rows, unread, len(raw) > limit)


def mark_read(conn: Conn, session: sessions.Session, notice_id: int | None = None) -> int:
    """Mark one notice (or, with None, every notice of the user) as read; returns how many became
    read. :class:`NoticeNotFound` for a notice that is not the user's."""
    p = session.principal
    codes = recipients(p)
    with transaction(conn) as cur:
        _begin(cur, conn, session)
        if notice_id is not None:
            cur.execute(
                "SELECT 1 FROM notification_outbox WHERE id = %s AND recipient_code = ANY(%s)",
                (notice_id, codes),
            )
            if cur.fetchone() is None:
                raise NoticeNotFound(f"no notice {notice_id} for you")
        cur.execute(
            """
            INSERT INTO notice_read (user_id, notice_id)
            SELECT %(uid)s, o.id FROM notification_outbox o
            WHERE o.recipient_code = ANY(%(codes)s) AND (%(one)s::bigint IS NULL OR o.id = %(one)s)
            ON CONFLICT DO NOTHING
            """,
            {"uid": p.user_id, "codes": codes, "one": notice_id},
        )
        return int(cur.rowcount)


# ----------------------------------------------------------------------------- the outbox, for operators

#: Who sees the delivery state of every notice in their scope and puts a failed one back in the queue.
OUTBOX_ROLES: Final = frozenset({Role.ADMIN, Role.PROVINCE})
OUTBOX_STATUSES: Final = ("failed", "pending", "delivered", "all")
_STATUS_SQL: Final = {
    "failed": "o.failed_at IS NOT NULL",
    "pending": "o.delivered_at IS NULL AND o.failed_at IS NULL",
    "delivered": "o.delivered_at IS NOT NULL",
    "all": "TRUE",
}


class OutboxForbidden(PermissionError):
    """A role that does not operate the outbox."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    case_id: int
    topic: str
    topic_zh: str
    target: str
    recipient_code: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    delivered_via: str | None
    requeued_at: datetime | None
    requeued_by: str | None

    @property
    def status(self) -> str:
        if self.delivered_at is not None:
            return "delivered"
        if self.failed_at is not None:
            return "failed"
        return "retrying" if self.attempts else "pending"


@dataclass(frozen=True, slots=True)
class OutboxPage:
    rows: list[OutboxRow]
    counts: dict[str, int]
    has_more: bool


def _operator(p: Principal) -> None:
    if p.role not in OUTBOX_ROLES:
        raise OutboxForbidden(f"role {p.role.value} does not operate the outbox")


def outbox_page(
    conn: Conn,
    p: Principal,
    *,
    status: str = "failed",
    case_id: int | None = None,
    limit: int = PAGE,
    offset: int = 0,
    unscoped: bool = False,
) -> OutboxPage:
    """The outbox of the principal's scope (notices of visible cases), newest first, optionally of
    one case, with counts of failed and pending notices; ``unscoped`` drops the application's scope
    filter (row-level security alone must then give the same rows)."""
    _operator(p)
    if status not in _STATUS_SQL:
        raise ValueError(f"status is one of {', '.join(OUTBOX_STATUSES)}")
    scope = {"prefix": "" if unscoped else p.prefix}
    visible = (
        "EXISTS (SELECT 1 FROM case_file c WHERE c.id = o.case_id "
        "AND left(c.chain_code, length(%(prefix)s)) = %(prefix)s)"
    )
    one_case = "" if case_id is None else " AND o.case_id = %(case)s"
    with transaction(conn) as cur:
        apply_scope(conn, p)
        cur.execute(
            f"""
            SELECT o.id, o.case_id, o.topic, o.payload->>'topic_zh', o.target, o.recipient_code, o.created_at,
                   o.attempts, o.next_attempt_at, o.delivered_at, o.failed_at, o.last_error, o.delivered_via,
                   o.requeued_at, o.requeued_by
            FROM notification_outbox o
            WHERE {_STATUS_SQL[status]} AND {visible}{one_case}
            ORDER BY o.id DESC LIMIT %(limit)s OFFSET %(offset)s
            """,
            {**scope, "case": case_id, "limit": limit + 1, "offset": offset},
        )
        raw = cur.fetchall()
        cur.execute(
            f"""
            SELECT count(*) FILTER (WHERE o.failed_at IS NOT NULL),
                   count(*) FILTER (WHERE o.delivered_at IS NULL AND o.failed_at IS NULL)
            FROM notification_outbox o
            WHERE (o.failed_at IS NOT NULL OR o.delivered_at IS NULL) AND {visible}
            """,
            scope,
        )
        counted = cur.fetchone() or (0, 0)
    rows = [
        OutboxRow(
            int(r[0]),
            int(r[1]),
            str(r[2]),
            str(r[3] or r[2]),
            str(r[4]),
            str(r[5]),
            r[6],
            int(r[7]),
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            r[13],
            r[14],
        )
        for r in raw[:limit]
    ]
    return OutboxPage(rows, {"failed": int(counted[0]), "pending": int(counted[1])}, len(raw) > limit)


def requeue(conn: Conn, p: Principal, notice_id: int, *, now: datetime | None = None) -> None:
    """Put a failed notice back in the queue (attempts from zero, due now), recording who did it.
    :class:`NoticeNotFound` for a notice outside the scope or not failed."""
    _operator(p)
    with transaction(conn) as cur:
        apply_scope(conn, p)
        cur.execute(
            """
            UPDATE notification_outbox o
            SET failed_at = NULL, attempts = 0, next_attempt_at = coalesce(%(now)s, now()),
                requeued_at = coalesce(%(now)s, now()), requeued_by = %(login)s
            WHERE o.id = %(id)s AND o.failed_at IS NOT NULL
              AND EXISTS (SELECT 1 FROM case_file c WHERE c.id = o.case_id
                          AND left(c.chain_code, length(%(prefix)s)) = %(prefix)s)
            """,
            {"id": notice_id, "now": now, "login": p.login, "prefix": p.prefix},
        )
        if cur.rowcount != 1:
            raise NoticeNotFound(f"no failed notice {notice_id} in your scope")
