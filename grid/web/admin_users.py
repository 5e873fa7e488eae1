"""Account administration (``/admin/users``): the administrator's page over ``grid.accounts.users``.

* ``GET /admin/users`` — admin role only: the accounts of the administrator's scope (role, scope,
  enabled, the roster officer and the cells it serves now) and the latest account changes.
* ``POST /admin/users/{login}/{action}`` — CSRF-protected; ``action`` is ``disable`` (its sessions
  revoked), ``enable``, ``reset_password`` (``password``) or ``set_role`` (``role``). Every change is
  audited by the service, in its transaction.

It works as ``gridflow_app`` with ``gridflow.admin`` stated for the administrator's scope
(:func:`grid.accounts.users.state_admin`): row-level security shows and lets it change the accounts
of that scope only. Routes and strings only: the rules are the service's.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from grid.accounts import sessions, users
from grid.accounts.access import Role, ScopeConfigError
from grid.web.deps import form_of, lang_of, state_of
from grid.web.i18n import translator
from grid.web.views import gate, render

router = APIRouter(include_in_schema=False)

ADMIN_ROLES: Final = frozenset({Role.ADMIN})
ACTIONS: Final = ("disable", "enable", "reset_password", "set_role")
#: Roles an administrator may set here (a grid officer's account is made from the roster).
SETTABLE_ROLES: Final = tuple(r for r in Role if r is not Role.GRID_OFFICER)


def _page(request: Request, session: sessions.Session, *, notice: str | None, status: int = 200) -> Response:
    st = state_of(request)
    with st.db.connection() as conn:
        accounts = users.list_accounts(conn, admin=session.principal)
        changes = users.audit_log(conn, admin=session.principal, limit=50)
    return render(
        request,
        "admin_users.html",
        {
            "session": session,
            "accounts": accounts,
            "changes": changes,
            "notice": notice,
            "roles": SETTABLE_ROLES,
        },
        status=status,
    )


@router.get("/admin/users", response_model=None)
def users_page(request: Request) -> Response:
    session = gate(request, ADMIN_ROLES)
    if not isinstance(session, sessions.Session):
        return session
    return _page(request, session, notice=None)


@router.post("/admin/users/{login}/{action}", response_model=None)
async def users_action(request: Request, login: str, action: str) -> Response:
    form = await form_of(request)
    st = state_of(request)

    def work() -> Response:
        session = gate(request, ADMIN_ROLES)
        if not isinstance(session, sessions.Session):
            return session
        if not sessions.csrf_ok(session, form.get("csrf")):
            return Response("CSRF token missing or wrong", status_code=403)
        if action not in ACTIONS:
            return Response("unknown action", status_code=404)
        t = translator(lang_of(request))
        admin, actor = session.principal, f"web:{session.principal.login}"
        try:
            with st.db.connection() as conn:
                if action in ("disable", "enable"):
                    changed = users.set_active(
                        conn, login=login, active=action == "enable", actor=actor, admin=admin
                    )
                elif action == "reset_password":
                    users.reset_password(conn, login=login, password=form.get("password", ""), actor=actor,
                                         admin=admin)  # fmt: skip
                    changed = True
                else:
                    try:
                        role = Role(form.get("role", ""))
                    except ValueError:
                        raise users.AccountError("unknown role") from None
                    changed = users.set_role(conn, login=login, role=role, actor=actor, admin=admin)
        except (users.AccountError, ScopeConfigError, ValueError) as exc:
            why = str(exc)
            return _page(request, session, notice=t("admin_refused").format(login=login, why=why), status=400)
        key = f"admin_done_{action}" if changed else "admin_unchanged"
        return _page(request, session, notice=t(key).format(login=login))

    return await run_in_threadpool(work)
