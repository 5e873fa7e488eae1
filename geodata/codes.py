"""Division and grid-cell codes: the five-level chain read from code prefixes.

Statistical division codes are 12 digits ``PP CC DD TTT VVV`` (province, city, county,
town, community). Grid-cell codes are the 12-digit community code plus a 3-digit sequence.
Everything here is pure string work so that any layer can read a chain without a database.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Final

DIVISION_CODE_RE = re.compile(r"^[0-9]{12}$")
CELL_CODE_RE = re.compile(r"^[0-9]{15}$")


class Level(IntEnum):
    """The five administrative levels, ordered from the top; grid cells sit below community."""

    PROVINCE = 1
    CITY = 2
    COUNTY = 3
    TOWN = 4
    COMMUNITY = 5
    CELL = 6

    @property
    def label_zh(self) -> str:
        return _LABEL_ZH[self]


_LABEL_ZH = {
    Level.PROVINCE: "省",
    Level.CITY: "市",
    Level.COUNTY: "县/区",
    Level.TOWN: "乡镇/街道",
    Level.COMMUNITY: "社区/村",
    Level.CELL: "网格",
}

# Number of significant leading digits of a 12-digit code at each level.
PREFIX_LEN: Final = {
    Level.PROVINCE: 2,
    Level.CITY: 4,
    Level.COUNTY: 6,
    Level.TOWN: 9,
    Level.COMMUNITY: 12,
}

# Short display names of the levels (tables, exports); ``Level.label_zh`` is the long form.
LEVEL_ZH: Final = {1: "省", 2: "市", 3: "县区", 4: "乡镇街道", 5: "社区", 6: "网格"}
LEVEL_EN: Final = {1: "province", 2: "city", 3: "county", 4: "town", 5: "community", 6: "cell"}


class CodeError(ValueError):
    """A division or cell code that is not well formed."""


def is_division_code(code: str) -> bool:
    return bool(DIVISION_CODE_RE.match(code))


def is_cell_code(code: str) -> bool:
    return bool(CELL_CODE_RE.match(code))


def division_level(code: str) -> Level:
    """Level of a 12-digit division code, read from which trailing groups are zero."""
    if not is_division_code(code):
        raise CodeError(f"division code must be 12 digits, got {code!r}")
    if code[2:] == "0" * 10:
        return Level.PROVINCE
    if code[4:] == "0" * 8:
        return Level.CITY
    if code[6:] == "0" * 6:
        return Level.COUNTY
    if code[9:] == "000":
        return Level.TOWN
    return Level.COMMUNITY


def level_of(code: str) -> Level:
    """Level of a 12-digit division code, or ``Level.CELL`` for a 15-digit cell code."""
    if is_cell_code(code):
        return Level.CELL
    if not is_division_code(code):
        raise CodeError(f"expected a 12-digit division or 15-digit cell code, got {code!r}")
    return division_level(code)


def own_prefix(code: str) -> str:
    """The significant leading digits of a code (``4205`` for a city, ``420502010`` for a town,
    a cell code whole): every code below it starts with them, and no code outside it does.

    This is the only place that turns a code into a prefix. Stripping trailing zeros instead is
    wrong: 荆州 ``421000000000`` would give ``421`` (matching 黄冈 ``4211…``) and the town
    ``420502010000`` would give ``42050201`` (matching its neighbours ``…011…019``).
    """
    if is_cell_code(code):
        return code
    return code[: PREFIX_LEN[division_level(code)]]


def subtree_like(code: str) -> str:
    """The SQL ``LIKE`` pattern of every code in ``code``'s subtree (itself included)."""
    return own_prefix(code) + "%"


def within(code: str, scope: str) -> bool:
    """``code`` (a division or cell) is ``scope`` itself or below it."""
    return code.startswith(own_prefix(scope))


def ancestor(code: str, level: Level) -> str:
    """The 12-digit code of the unit at ``level`` above (or equal to) ``code``.

    ``code`` may be a 12-digit division code or a 15-digit cell code.
    """
    if level == Level.CELL:
        if not is_cell_code(code):
            raise CodeError(f"only a cell code has a cell ancestor, got {code!r}")
        return code
    base = code[:12] if is_cell_code(code) else code
    if not is_division_code(base):
        raise CodeError(f"expected a 12-digit division or 15-digit cell code, got {code!r}")
    own = level_of(code)
    if level > own:
        raise CodeError(f"{code!r} is at level {own.name}, it has no {level.name} ancestor")
    n = PREFIX_LEN[level]
    return base[:n] + "0" * (12 - n)


def chain(code: str) -> dict[Level, str]:
    """All units from the province down to ``code`` itself, keyed by level."""
    own = level_of(code)
    return {lvl: ancestor(code, lvl) for lvl in Level if lvl <= own}


def chain_codes(code: str) -> list[str]:
    """The codes of :func:`chain`, province first."""
    return list(chain(code).values())


def parent(code: str) -> str | None:
    """The code one level up, or None for a province."""
    own = level_of(code)
    if own == Level.PROVINCE:
        return None
    return ancestor(code, Level(own - 1))


def gb2260(code: str) -> str:
    """The 6-digit GB/T 2260 administrative code of a division (first six digits)."""
    return code[:6]


def from_gb2260(code6: str) -> str:
    """Pad a 6-digit GB/T 2260 code (province/city/county) to a 12-digit division code."""
    if not re.fullmatch(r"[0-9]{6}", code6):
        raise CodeError(f"GB/T 2260 code must be 6 digits, got {code6!r}")
    return code6 + "000000"


def from_town_code(code9: str) -> str:
    """Pad a 9-digit MCA town code to a 12-digit division code."""
    if not re.fullmatch(r"[0-9]{9}", code9):
        raise CodeError(f"town code must be 9 digits, got {code9!r}")
    return code9 + "000"
