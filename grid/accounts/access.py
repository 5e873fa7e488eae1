"""Who may see and do what: the principal, the visibility rule and the permission rules.

The same visibility rule is the PostgreSQL function ``gridflow_chain_visible`` (migration 0003);
:func:`apply_scope` states the principal's scope for one transaction so the policies can apply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import psycopg2.extensions

from geodata.codes import Level, division_level, is_cell_code, is_division_code, level_of, own_prefix

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
# Province and city views show aggregates, not people: no reveal there.
REVEAL_ROLES: Final = frozenset({Role.GRID_OFFICER, Role.COMMUNITY, Role.TOWN, Role.COUNTY})
SUPERVISOR_ROLES: Final = frozenset({Role.COMMUNITY, Role.TOWN, Role.COUNTY, Role.CITY, Role.PROVINCE})


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

    @property
    def prefix(self) -> str:
        """The chain-code prefix of the scope ('' for officers, who are scoped by cells)."""
        if self.role is Role.GRID_OFFICER:
            return ""
        return own_prefix(self.scope_code)

    def sees(self, chain_code: str) -> bool:
        if self.role is Role.GRID_OFFICER:
            return chain_code in self.cells
        return chain_code.startswith(self.prefix)

    def owns(self, owner_code: str) -> bool:
        """Acts as the owner: an officer for its cells, a unit role for its own unit."""
        if self.role is Role.GRID_OFFICER:
            return owner_code in self.cells
        return self.role is not Role.ADMIN and owner_code == self.scope_code

    def supervises(self, chain_code: str, owner_code: str) -> bool:
        """督办 and reassign: a unit on the chain strictly above the owner."""
        if self.role not in SUPERVISOR_ROLES or owner_code == self.scope_code:
            return False
        if not chain_code.startswith(self.prefix) or not owner_code.startswith(self.prefix):
            return False
        return division_level(self.scope_code) < level_of(owner_code)

    @property
    def may_reveal(self) -> bool:
        return self.role in REVEAL_ROLES

    @property
    def is_supervisor(self) -> bool:
        return self.role in SUPERVISOR_ROLES or self.role is Role.ADMIN


def apply_scope(conn: Conn, principal: Principal | None) -> None:
    """State the scope for the transaction now starting on ``conn`` (transaction-local settings)."""
    scope = "" if principal is None else principal.prefix
    cells = "" if principal is None else ",".join(principal.cells)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT set_config('gridflow.scope', %s, true), set_config('gridflow.cells', %s, true)",
            (scope, cells),
        )
