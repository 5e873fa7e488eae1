"""The reveal log: every reveal of a masked field (``reveal_audit``: who, which field, which case,
why, when), for the province's privacy officer.

Who reads it: the ``admin`` role only (:data:`REVEAL_LOG_ROLES`), within its scope (row-level
security shows the rows of visible cases: an administrator scoped to the province sees the
province's). The ``province`` role does not: it is a supervising role that works on aggregates
(it may not reveal either), and a reveal's reason is free text an officer typed, which may name
the person concerned; the privacy officer gets an ``admin`` account scoped to the province. The
command line (``gridflow reveals list``) reads as the database owner, for an operator on the
server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg2.extensions

from grid.accounts.access import Principal, Role, apply_scope
from grid.store.db import transaction

Conn = psycopg2.extensions.connection
REVEAL_LOG_ROLES: Final = frozenset({Role.ADMIN})
PAGE: Final = 50
MAX_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class RevealRow:
    id: int
    at: datetime
    login: str
    user_id: int
    case_id: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class RevealPage:
    rows: list[RevealRow]
    has_more: bool


def may_read_log(p: Principal) -> bool:
    return p.role in REVEAL_LOG_ROLES


def list_reveals(
    conn: Conn,
    *,
    principal: Principal | None,
    since: datetime | None = None,
    login: str | None = None,
    case_id: int | None = None,
    limit: int = PAGE,
    offset: int = 0,
) -> RevealPage:
    """Reveals, newest first, filtered; ``principal`` None reads everything (the owner's CLI),
    otherwise the principal's scope is stated for row-level security and checked here too."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit is 1..{MAX_PAGE} and offset at least 0")
    if principal is not None and not may_read_log(principal):
        raise PermissionError(f"role {principal.role.value} may not read the reveal log")
    where = ["TRUE"]
    args: dict[str, object] = {"limit": limit + 1, "offset": offset}
    if since is not None:
        where.append("a.at >= %(since)s")
        args["since"] = since
    if login:
        where.append("a.login = %(login)s")
        args["login"] = login
    if case_id is not None:
        where.append("a.case_id = %(case)s")
        args["case"] = case_id
    if principal is not None:
        where.append("left(c.chain_code, length(%(prefix)s)) = %(prefix)s")
        args["prefix"] = principal.prefix
    with transaction(conn) as cur:
        if principal is not None:
            apply_scope(conn, principal)
        cur.execute(
            f"""
            SELECT a.id, a.at, a.login, a.user_id, a.case_id, a.field, a.reason
            FROM reveal_audit a JOIN case_file c ON c.id = a.case_id
            WHERE {" AND ".join(where)}
            ORDER BY a.at DESC, a.id DESC
            LIMIT %(limit)s OFFSET %(offset)s
            """,
            args,
        )
        raw = cur.fetchall()
    rows = [RevealRow(int(r[0]), r[1], str(r[2]), int(r[3]), int(r[4]), str(r[5]), str(r[6])) for r in raw]
    return RevealPage(rows[:limit], len(rows) > limit)
