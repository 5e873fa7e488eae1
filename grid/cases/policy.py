"""Province policy: every number and rule that decides where a case starts and when it is late.

A policy is a TOML file validated at load (``config/policy/default.toml`` holds the defaults,
documented line by line). ``ProvincePolicy()`` with no arguments equals that file, so a province
file only needs what it changes: :func:`load_policy` lays the file over the defaults, tables
merging key by key and lists (such as ``routing.rules``) replacing the default list whole.

Unknown keys are errors (a misspelt ``threshhold_workers`` must not silently keep the default), and
:func:`load_policy` reports every bad field with its dotted path and the rule id it belongs to.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from connectors.kinds import CaseFamily, CaseKind, HardshipGrade, Severity
from geodata.codes import Level, division_level, is_division_code
from grid.workdays import WorkCalendar

# Levels a case can be owned at; a community-level case is owned by the grid officer of its cell.
OWNER_LEVELS = (Level.PROVINCE, Level.CITY, Level.COUNTY, Level.TOWN, Level.COMMUNITY)


class PolicyError(ValueError):
    """A policy file that cannot be used; ``problems`` lists one line per bad field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid province policy {source}:\n{lines}")


def _parse_level(value: object) -> Level:
    """A level written by name in a policy file: province, city, county, town or community."""
    if isinstance(value, Level):
        level = value
    elif isinstance(value, str) and value.strip().upper() in Level.__members__:
        level = Level[value.strip().upper()]
    else:
        names = ", ".join(lv.name.lower() for lv in OWNER_LEVELS)
        raise ValueError(f"level must be one of {names}")
    if level not in OWNER_LEVELS:
        raise ValueError("level 'cell' is not an owner level: use 'community' (the cell's grid officer)")
    return level


LevelName = Annotated[
    Level,
    BeforeValidator(_parse_level),
    PlainSerializer(lambda lv: lv.name.lower(), return_type=str),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalendarPolicy(_Model):
    """Local time and the official holiday lists beyond what ``chinese-calendar`` ships."""

    timezone: str = "Asia/Shanghai"
    end_of_day: time = time(23, 59, 59)
    notice_time: time = time(9, 0)
    holiday_files: tuple[Path, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class CollectivePolicy(_Model):
    """Labour Dispute Mediation and Arbitration Law Art. 7: 10+ workers with a common claim."""

    threshold_workers: int = Field(default=10, ge=2)


class Rule(_Model):
    """One start-level rule: all conditions that are set must hold; unset conditions match anything."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    level: LevelName
    priority: int = 0
    family: CaseFamily | None = None
    kinds: tuple[CaseKind, ...] | None = Field(default=None, min_length=1)
    severities: tuple[Severity, ...] | None = Field(default=None, min_length=1)
    hardship_grades: tuple[HardshipGrade, ...] | None = Field(default=None, min_length=1)
    collective: bool | None = None
    min_workers: int | None = Field(default=None, ge=1)
    min_amount: Decimal | None = Field(default=None, ge=0)
    note_zh: str = ""
    note_en: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.family is not None and self.kinds is not None:
            wrong = [k.value for k in self.kinds if k.family is not self.family]
            if wrong:
                raise ValueError(f"kinds {wrong} are not in family {self.family.value!r}")
        if self.hardship_grades is not None and (
            self.family is CaseFamily.DISPUTE
            or (self.kinds is not None and CaseKind.HARDSHIP not in self.kinds)
        ):
            raise ValueError("hardship_grades can only match hardship cases")
        return self

    @property
    def specificity(self) -> int:
        """How many conditions the rule sets; more conditions = more specific."""
        conditions = (
            self.family,
            self.kinds,
            self.severities,
            self.hardship_grades,
            self.collective,
            self.min_workers,
            self.min_amount,
        )
        return sum(c is not None for c in conditions)

    @property
    def is_catch_all(self) -> bool:
        """A family default: no condition other than (at most) the family."""
        return self.specificity == (self.family is not None)


class RoutingPolicy(_Model):
    """Which level a new case starts at, and who hears about it at once."""

    max_level: LevelName = Level.PROVINCE
    dual_report_severities: tuple[Severity, ...] = (Severity.EARLY_SIGN, Severity.COLLECTIVE_INCIDENT)
    # A collective labour dispute (Art. 7: workers at collective.threshold_workers or more) is
    # dual-reported like early signs: the same-level party committee/government and the union above.
    dual_report_collective: bool = True
    rules: tuple[Rule, ...] = Field(default_factory=lambda: DEFAULT_RULES)

    @model_validator(mode="after")
    def _complete(self) -> RoutingPolicy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
            if rule.level < self.max_level:
                raise ValueError(
                    f"rule {rule.id!r} starts at {rule.level.name.lower()}, above max_level "
                    f"{self.max_level.name.lower()}"
                )
        for family in CaseFamily:
            if not any(r.is_catch_all and r.family in (None, family) for r in self.rules):
                raise ValueError(
                    f"no default rule for {family.value!r} cases: add a rule with only "
                    f"family = {family.value!r} (and a level) at the end"
                )
        return self

    def ordered_rules(self) -> list[Rule]:
        """Rules in the order they are tried: priority, then specificity, then file order."""
        indexed = sorted(enumerate(self.rules), key=lambda ir: (-ir[1].priority, -ir[1].specificity, ir[0]))
        return [r for _, r in indexed]


class Limits(_Model):
    """Time limits in working days; unset fields fall back to the next less specific entry."""

    respond_workdays: int | None = Field(default=None, ge=0)
    resolve_workdays: int | None = Field(default=None, ge=1)


class KindLimits(Limits):
    levels: dict[LevelName, Limits] = Field(default_factory=dict)


class DefaultLimits(_Model):
    respond_workdays: int = Field(default=1, ge=0)
    resolve_workdays: int = Field(default=10, ge=1)


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits that apply to one (kind, level), and which policy entries they came from."""

    respond_workdays: int
    resolve_workdays: int
    respond_source: str
    resolve_source: str


class DeadlinePolicy(_Model):
    """Limits by (kind, level); lookup order: kinds.K.levels.L, kinds.K, levels.L, default."""

    default: DefaultLimits = DefaultLimits()
    levels: dict[LevelName, Limits] = Field(default_factory=lambda: dict(DEFAULT_LEVEL_LIMITS))
    kinds: dict[CaseKind, KindLimits] = Field(default_factory=lambda: dict(DEFAULT_KIND_LIMITS))

    @model_validator(mode="after")
    def _respond_before_resolve(self) -> DeadlinePolicy:
        for kind in CaseKind:
            for level in OWNER_LEVELS:
                r = self.limits_for(kind, level)
                if r.respond_workdays > r.resolve_workdays:
                    raise ValueError(
                        f"{kind.value} at {level.name.lower()}: respond_workdays {r.respond_workdays} "
                        f"({r.respond_source}) exceeds resolve_workdays {r.resolve_workdays} "
                        f"({r.resolve_source})"
                    )
        return self

    def limits_for(self, kind: CaseKind, level: Level) -> ResolvedLimits:
        """The most specific limits for ``kind`` owned at ``level``."""
        lv = level.name.lower()
        kind_entry = self.kinds.get(kind)
        chain: list[tuple[str, Limits | DefaultLimits | None]] = [
            (
                f"deadlines.kinds.{kind.value}.levels.{lv}",
                kind_entry.levels.get(level) if kind_entry else None,
            ),
            (f"deadlines.kinds.{kind.value}", kind_entry),
            (f"deadlines.levels.{lv}", self.levels.get(level)),
            ("deadlines.default", self.default),
        ]

        def pick(field: Literal["respond_workdays", "resolve_workdays"]) -> tuple[int, str]:
            for source, entry in chain:
                value = getattr(entry, field, None) if entry is not None else None
                if value is not None:
                    return int(value), source
            raise AssertionError("deadlines.default always sets both limits")  # pragma: no cover

        respond, respond_src = pick("respond_workdays")
        resolve, resolve_src = pick("resolve_workdays")
        return ResolvedLimits(respond, resolve, respond_src, resolve_src)


class MediationPolicy(_Model):
    """Art. 14: no agreement within 15 days of the application lets a party go to arbitration."""

    window_calendar_days: int = Field(default=15, ge=1)
    roll_forward_if_last_day_holiday: bool = False


class SupervisionPolicy(_Model):
    """12345 practice: reminder (催办) after the deadline, then criticism (通报) and escalation."""

    remind_after_days: int = Field(default=1, ge=1)
    remind_day_kind: Literal["calendar", "workdays"] = "calendar"
    criticise_after_workdays: int = Field(default=3, ge=1)
    escalate_on_criticism: bool = True


class ProvincePolicy(_Model):
    """The whole province policy; defaults are config/policy/default.toml's."""

    name: str = "default"
    province_code: str | None = None
    calendar: CalendarPolicy = CalendarPolicy()
    collective: CollectivePolicy = CollectivePolicy()
    routing: RoutingPolicy = Field(default_factory=lambda: RoutingPolicy())
    deadlines: DeadlinePolicy = Field(default_factory=lambda: DeadlinePolicy())
    mediation: MediationPolicy = MediationPolicy()
    supervision: SupervisionPolicy = SupervisionPolicy()

    @field_validator("province_code")
    @classmethod
    def _province(cls, v: str | None) -> str | None:
        if v is not None and not (is_division_code(v) and division_level(v) is Level.PROVINCE):
            raise ValueError("province_code must be a 12-digit province code such as 420000000000")
        return v


# ----------------------------------------------------------------------------- defaults
# Keep in step with config/policy/default.toml (a test checks that the file equals ProvincePolicy()).

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        id="collective_incident",
        level=Level.COUNTY,
        priority=100,
        severities=(Severity.COLLECTIVE_INCIDENT,),
        note_zh="突发性群体性事件由县级工会牵头，立即上报",
        note_en="sudden collective incidents are led by the county union and reported at once",
    ),
    Rule(
        id="early_sign",
        level=Level.TOWN,
        severities=(Severity.EARLY_SIGN,),
        note_zh="苗头性问题报上一级工会",
        note_en="early signs of unrest go to the union one level up",
    ),
    Rule(
        id="dispute_collective",
        level=Level.COUNTY,
        family=CaseFamily.DISPUTE,
        collective=True,
        note_zh="集体劳动争议（《劳动争议调解仲裁法》第七条）",
        note_en="collective labour dispute (Mediation and Arbitration Law, Art. 7)",
    ),
    Rule(
        id="dispute_amount_major",
        level=Level.COUNTY,
        family=CaseFamily.DISPUTE,
        min_amount=Decimal("1000000"),
    ),
    Rule(
        id="dispute_amount_large",
        level=Level.TOWN,
        family=CaseFamily.DISPUTE,
        min_amount=Decimal("200000"),
    ),
    Rule(
        id="hardship_deep",
        level=Level.COUNTY,
        family=CaseFamily.HARDSHIP,
        hardship_grades=(HardshipGrade.DEEP,),
        note_zh="深度困难由县级工会困难职工帮扶中心建档帮扶",
        note_en="deep hardship is registered and assisted by the county union's assistance centre",
    ),
    Rule(
        id="hardship_accident",
        level=Level.TOWN,
        family=CaseFamily.HARDSHIP,
        hardship_grades=(HardshipGrade.ACCIDENT,),
    ),
    Rule(
        id="dispute_default",
        level=Level.COMMUNITY,
        family=CaseFamily.DISPUTE,
        note_zh="化解在基层：由网格员首接",
        note_en="resolve at the grassroots: the grid officer takes it first",
    ),
    Rule(
        id="hardship_default",
        level=Level.COMMUNITY,
        family=CaseFamily.HARDSHIP,
        note_zh="网格员首先发现、首先帮扶",
        note_en="the grid officer is first to know and first to help",
    ),
)

DEFAULT_LEVEL_LIMITS: dict[Level, Limits] = {
    Level.COMMUNITY: Limits(resolve_workdays=5),
    Level.TOWN: Limits(resolve_workdays=7),
    Level.COUNTY: Limits(resolve_workdays=10),
    Level.CITY: Limits(resolve_workdays=15),
    Level.PROVINCE: Limits(resolve_workdays=15),
}

DEFAULT_KIND_LIMITS: dict[CaseKind, KindLimits] = {
    CaseKind.HARDSHIP: KindLimits(respond_workdays=3, resolve_workdays=15),
}


# ----------------------------------------------------------------------------- loading


def _loc(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``routing.rules[2](dispute_collective).level`` from a pydantic error location."""
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f"(id={node['id']})"
        elif part == "[key]":  # pydantic's marker for a bad mapping key
            out += " (the key)"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(file)"


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors():
        where = _loc(tuple(err["loc"]), data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key (misspelt?)")
        elif err["type"] == "missing":
            problems.append(f"{where}: required")
        else:
            shown = repr(err["input"])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            problems.append(f"{where}: {msg} (got {shown})")
    return problems


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: tables merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_policy(data: Mapping[str, Any], *, source: str = "<policy>") -> ProvincePolicy:
    """Validate a parsed policy file laid over the defaults; raises :class:`PolicyError`.

    Tables merge key by key, so ``[deadlines.levels.town]`` changes the town limits and keeps the
    other levels; a list (``routing.rules``, ``dual_report_severities``) replaces the default list.
    """
    merged = _merge(ProvincePolicy().model_dump(mode="json"), data)
    try:
        return ProvincePolicy.model_validate(merged)
    except ValidationError as exc:
        raise PolicyError(source, _describe(exc, merged)) from None


def load_policy(path: str | Path) -> ProvincePolicy:
    """Load and validate a province policy file; holiday files are relative to the policy file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(str(p), [f"cannot read the file ({exc.strerror})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(str(p), [f"not valid TOML: {exc}"]) from exc
    cal = data.get("calendar")
    if isinstance(cal, dict) and isinstance(cal.get("holiday_files"), list):
        cal["holiday_files"] = [
            str(p.parent / f) if isinstance(f, str) and not Path(f).is_absolute() else f
            for f in cal["holiday_files"]
        ]
    return parse_policy(data, source=str(p))


def build_calendar(policy: ProvincePolicy) -> WorkCalendar:
    """The working-day calendar the policy names: the library's years plus its holiday files."""
    return WorkCalendar.from_files(policy.calendar.holiday_files)
