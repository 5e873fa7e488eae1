"""Who may see and do what: roles, the principal, and the four access rules, each in one place.

The web pages, the API and the case service all ask these; none decides on its own.

- **sees** a case (its chain code): :func:`sees`, :meth:`Principal.sees`. Twin: the SQL function
  ``gridflow_chain_visible(chain)`` (migration 0003), which the row-level security policies on
  ``case_file`` and the tables keyed by it call, fed by :func:`apply_scope` with the same
  :attr:`Principal.prefix` / ``cells``.
- **owns** a case (acts on it as the owner): :func:`owns`. A unit role owns its unit's cases; a
  grid officer the cases of its cells that the roster gave to it (``case_file.owner_officer``, or
  any officer of the cell when none was chosen). The service checks it before it writes; row-level
  security keeps every write inside what the principal sees, and its twin for the officer part is
  the restrictive policy ``case_file_officer_owns`` (migration 0012, fed ``gridflow.officer`` by
  :func:`apply_scope`): an officer cannot update another officer's case of a shared cell.
- **supervises** a case (督办, reassign): :func:`supervises`, :func:`may_reassign` (the owner of a
  case returned to it re-dispatches it). No SQL twin, as for owns.
- **may reveal** a masked field: :func:`may_reveal`, :func:`reveal_reason`. Twin: the
  ``reveal_audit`` row (migration 0003) written with the reason in the reading transaction.

"Supervises" is a unit strictly above the owner on the case's chain: an owner never supervises
(urges or reassigns) its own case. ``tests/grid/test_access.py`` proves that :func:`sees` and
``gridflow_chain_visible`` agree on a generated tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import psycopg2.extensions

from geodata.codes import (
    Level,
    ancestor,
    division_level,
    is_cell_code,
    is_division_code,
    level_of,
    own_prefix,
    within,
)
from grid.cases.states import Action

Conn = psycopg2.extensions.connection


class Role(StrEnum):
    GRID_OFFICER = "grid_officer"
    COMMUNITY = "community"
    TOWN = "town"
    COUNTY = "county"
    CITY = "city"
    PROVINCE = "province"
    ADMIN = "admin"


ROLE_LEVEL: Final = {
    Role.COMMUNITY: Level.COMMUNITY,
    Role.TOWN: Level.TOWN,
    Role.COUNTY: Level.COUNTY,
    Role.CITY: Level.CITY,
    Role.PROVINCE: Level.PROVINCE,
}
# Province and city views show aggregates, not people: no reveal there, and no party shown.
REVEAL_ROLES: Final = frozenset({Role.GRID_OFFICER, Role.COMMUNITY, Role.TOWN, Role.COUNTY})
SUPERVISOR_ROLES: Final = frozenset({Role.COMMUNITY, Role.TOWN, Role.COUNTY, Role.CITY, Role.PROVINCE})
# What the owner of a case does, and what a unit above it does (the state machine decides when).
OWNER_ACTIONS: Final = (
    Action.ACCEPT,
    Action.START,
    Action.NOTE,
    Action.RESOLVE,
    Action.CLOSE,
    Action.ESCALATE,
    Action.RETURN_TO_PARENT,
    Action.REOPEN,
)
SUPERVISOR_ACTIONS: Final = (Action.URGE, Action.REASSIGN)
# A reveal is an audited act: its reason is kept (``reveal_audit.reason``) within these bounds.
REVEAL_REASON_MIN: Final = 4
REVEAL_REASON_MAX: Final = 500


def sees(role: Role, scope_code: str, cells: tuple[str, ...], chain_code: str) -> bool:
    """A case on ``chain_code`` is visible: an officer's own cells, else the scope's subtree."""
    if role is Role.GRID_OFFICER:
        return chain_code in cells
    return within(chain_code, scope_code)


def owns(
    role: Role,
    scope_code: str,
    cells: tuple[str, ...],
    owner_code: str,
    *,
    officer_id: int | None = None,
    owner_officer: int | None = None,
) -> bool:
    """Acts as the owner: a unit role for its own unit (admin: never); a grid officer for a case of
    its cells that the roster gave to it (``owner_officer``), or to no officer in particular."""
    if role is Role.GRID_OFFICER:
        return owner_code in cells and (owner_officer is None or owner_officer == officer_id)
    return role is not Role.ADMIN and owner_code == scope_code


def supervises(unit_code: str, *, chain_code: str, owner_code: str) -> bool:
    """督办 and reassign: ``unit_code`` is a division strictly above the owner, on the case's chain.

    The owner itself never supervises its own case (a community supervises its cells' officers).
    """
    if not is_division_code(unit_code):
        return False
    try:
        above = division_level(unit_code) < level_of(owner_code)
    except ValueError:
        return False
    return above and within(chain_code, unit_code) and within(owner_code, unit_code)


def may_reassign(unit_code: str, *, chain_code: str, owner_code: str, returned: bool) -> bool:
    """Reassign: a unit that :func:`supervises` the case; or, for a case returned to it as
    misrouted (``returned``), its new owner re-dispatching it — what a return hands it over for."""
    return supervises(unit_code, chain_code=chain_code, owner_code=owner_code) or (
        returned and unit_code == owner_code
    )


def may_reveal(role: Role) -> bool:
    """Roles that work with people see a party and may reveal a masked field (with a reason)."""
    return role in REVEAL_ROLES


def reveal_reason(reason: str) -> str:
    """The reason a reveal is audited with, trimmed; :class:`ValueError` when too short."""
    reason = reason.strip()
    if len(reason) < REVEAL_REASON_MIN:
        raise ValueError(f"a reveal needs a reason (at least {REVEAL_REASON_MIN} characters)")
    return reason[:REVEAL_REASON_MAX]


class ScopeConfigError(ValueError):
    """A role and scope that do not fit together."""


def check_role_scope(role: Role, scope_code: str, cells: list[str]) -> None:
    """The scope must be a division of the role's level; officers need cells in their community."""
    if not is_division_code(scope_code):
        raise ScopeConfigError(f"scope must be a 12-digit division code, got {scope_code!r}")
    level = division_level(scope_code)
    if role is Role.GRID_OFFICER:
        if level is not Level.COMMUNITY:
            raise ScopeConfigError("a grid officer's scope is a community (12 digits ending in its own code)")
        if not cells:
            raise ScopeConfigError("a grid officer needs at least one --cell")
        for c in cells:
            if not is_cell_code(c) or not c.startswith(scope_code):
                raise ScopeConfigError(f"cell {c!r} is not a 15-digit cell of community {scope_code}")
    elif cells:
        raise ScopeConfigError("only grid officers have cells")
    elif role is not Role.ADMIN and ROLE_LEVEL[role] is not level:
        raise ScopeConfigError(f"role {role.value} needs a {ROLE_LEVEL[role].name.lower()}-level scope")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    login: str
    role: Role
    scope_code: str
    cells: tuple[str, ...] = ()
    officer_id: int | None = None  # the roster's officer an account is tied to (its cells follow it)

    @property
    def prefix(self) -> str:
        """The chain-code prefix of the scope ('' for officers, who are scoped by cells)."""
        if self.role is Role.GRID_OFFICER:
            return ""
        return own_prefix(self.scope_code)

    @property
    def aggregate_prefix(self) -> str:
        """The divisions whose aggregates (dashboards, exports) the principal sees: its own scope,
        administrators included (an admin scoped to Beijing opens no Hubei dashboard)."""
        return self.prefix

    @property
    def source_prefix(self) -> str:
        """Sources are city-level: a county sees its city's sources, others their own prefix."""
        if self.role is Role.COUNTY:
            return own_prefix(ancestor(self.scope_code, Level.CITY))
        return self.prefix

    def sees(self, chain_code: str) -> bool:
        return sees(self.role, self.scope_code, self.cells, chain_code)

    def owns(self, owner_code: str, owner_officer: int | None = None) -> bool:
        return owns(
            self.role,
            self.scope_code,
            self.cells,
            owner_code,
            officer_id=self.officer_id,
            owner_officer=owner_officer,
        )

    def supervises(self, chain_code: str, owner_code: str) -> bool:
        """:func:`supervises` for a supervising role."""
        return self.role in SUPERVISOR_ROLES and supervises(
            self.scope_code, chain_code=chain_code, owner_code=owner_code
        )

    def may(
        self, action: Action, *, chain_code: str, owner_code: str, owner_officer: int | None = None
    ) -> bool:
        """May take ``action`` on a case as its owner or as a unit above it (the state machine
        then decides whether the case's state allows it)."""
        if action in OWNER_ACTIONS:
            return self.owns(owner_code, owner_officer)
        if action in SUPERVISOR_ACTIONS:
            return self.supervises(chain_code, owner_code)
        return False

    @property
    def may_reveal(self) -> bool:
        return may_reveal(self.role)

    @property
    def is_supervisor(self) -> bool:
        return self.role in SUPERVISOR_ROLES or self.role is Role.ADMIN


def apply_scope(conn: Conn, principal: Principal | None) -> None:
    """State the scope for the transaction now starting on ``conn`` (transaction-local settings)."""
    scope = "" if principal is None else principal.prefix
    cells = "" if principal is None else ",".join(principal.cells)
    officer = ""
    if principal is not None and principal.role is Role.GRID_OFFICER:
        # An officer account not tied to the roster acts for no officer in particular: "0" matches
        # no ``owner_officer`` (identity ids start at 1).
        officer = str(principal.officer_id or 0)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT set_config('gridflow.scope', %s, true), set_config('gridflow.cells', %s, true), "
            "set_config('gridflow.officer', %s, true)",
            (scope, cells, officer),
        )
