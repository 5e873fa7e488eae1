"""Where a new case starts: the level from the policy's rules, the owner from the cell's chain.

1. **Rule.** The policy's rules are tried most specific first (priority, then number of conditions,
   then file order, see :meth:`RoutingPolicy.ordered_rules`); the first that matches decides the
   start level. Each family has a documented default rule at the end; if nothing matches, routing
   fails loudly with :class:`RoutingError` instead of dropping the case.
2. **Owner.** The unit at that level on the cell's chain (``geodata.codes.ancestor``); at community
   level, the grid officer of the cell itself (the 15-digit cell code).
3. **Fallbacks, always upward, never ownerless.** A unit that does not exist (``units`` says so) is
   skipped for the next one up, with an alert. A case without a cell starts at the lowest division
   its address reached, never below the rule's level. Nothing above the policy's ``max_level`` is
   used; if no unit is left, :class:`RoutingError`.

The decision keeps the rule id and a sentence in Chinese and English, so "why did this case go to
town X" has an answer. Explanations name thresholds, never a person or the amount of their claim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from connectors.kinds import CaseFamily, CaseKind, HardshipGrade, Severity
from geodata.codes import CodeError, Level, ancestor, division_level, is_cell_code, is_division_code, level_of
from grid.cases.policy import ProvincePolicy, Rule
from grid.cases.states import owner_level


class RoutingError(ValueError):
    """A case that cannot be given an owner; the caller must not store it ownerless."""


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What routing and deadlines need to know about a case, and nothing personal."""

    kind: CaseKind
    severity: Severity = Severity.NORMAL
    workers_affected: int = 1
    amount: Decimal | None = None  # yuan claimed (disputes); a threshold input, never shown
    hardship_grade: HardshipGrade | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", CaseKind(self.kind))
        object.__setattr__(self, "severity", Severity(self.severity))
        if self.hardship_grade is not None:
            object.__setattr__(self, "hardship_grade", HardshipGrade(self.hardship_grade))
        if isinstance(self.workers_affected, bool) or self.workers_affected < 1:
            raise ValueError(f"workers_affected must be at least 1, got {self.workers_affected!r}")
        if self.amount is not None:
            if isinstance(self.amount, float):
                raise TypeError("amount must be a Decimal (yuan), not a float")
            object.__setattr__(self, "amount", Decimal(self.amount))
            if self.amount < 0:
                raise ValueError("amount cannot be negative")
        if self.hardship_grade is not None and self.kind is not CaseKind.HARDSHIP:
            raise ValueError(f"a {self.kind.value} case has no hardship grade")

    @property
    def family(self) -> CaseFamily:
        return self.kind.family


AlertCode = Literal["unit_missing", "address_only", "division_mismatch"]


@dataclass(frozen=True, slots=True)
class RoutingAlert:
    """Something a supervisor should fix: a missing unit, or a case placed by address only."""

    code: AlertCode
    level: Level
    unit_code: str | None
    message_zh: str
    message_en: str


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where a case starts and why. ``rule`` is the id of the policy rule that decided the level."""

    level: Level
    owner_code: str
    rule: str
    explanation_zh: str
    explanation_en: str
    dual_report: bool
    fallback_used: bool
    rule_level: Level
    alerts: tuple[RoutingAlert, ...] = field(default=())

    @property
    def explanation(self) -> str:
        return f"{self.explanation_zh}\n{self.explanation_en}"

    @property
    def owned_by_grid_officer(self) -> bool:
        return is_cell_code(self.owner_code)


Units = Mapping[str, bool] | Callable[[str], bool]


def rule_matches(rule: Rule, facts: CaseFacts, *, collective_threshold: int) -> bool:
    """True if every condition the rule sets holds for ``facts``."""
    return (
        (rule.family is None or facts.family is rule.family)
        and (rule.kinds is None or facts.kind in rule.kinds)
        and (rule.severities is None or facts.severity in rule.severities)
        and (rule.hardship_grades is None or facts.hardship_grade in rule.hardship_grades)
        and (rule.collective is None or (facts.workers_affected >= collective_threshold) is rule.collective)
        and (rule.min_workers is None or facts.workers_affected >= rule.min_workers)
        and (rule.min_amount is None or (facts.amount is not None and facts.amount >= rule.min_amount))
    )


def is_collective(facts: CaseFacts, policy: ProvincePolicy) -> bool:
    """A collective labour dispute: a dispute with ``collective.threshold_workers`` or more (Art. 7)."""
    return (
        facts.family is CaseFamily.DISPUTE and facts.workers_affected >= policy.collective.threshold_workers
    )


def match_rule(facts: CaseFacts, policy: ProvincePolicy) -> Rule:
    """The most specific rule that matches; :class:`RoutingError` if none does."""
    threshold = policy.collective.threshold_workers
    for rule in policy.routing.ordered_rules():
        if rule_matches(rule, facts, collective_threshold=threshold):
            return rule
    raise RoutingError(
        f"no routing rule matches a {facts.kind.value} case (severity {facts.severity.value}, "
        f"{facts.workers_affected} workers); the policy needs a default rule for {facts.family.value} cases"
    )


def _exists(units: Units, code: str) -> bool:
    if isinstance(units, Mapping):
        return bool(units.get(code, False))  # a unit the map does not list does not exist
    return bool(units(code))


def _lv(level: Level) -> str:
    return level.name.lower()


def _conditions(rule: Rule, facts: CaseFacts, threshold: int) -> tuple[str, str]:
    zh: list[str] = []
    en: list[str] = []
    if rule.family is not None:
        zh.append(rule.family.label_zh)
        en.append(f"{rule.family.value} case")
    if rule.kinds is not None:
        zh.append("类型为" + "、".join(k.label_zh for k in rule.kinds))
        en.append("kind " + "/".join(k.value for k in rule.kinds))
    if rule.severities is not None:
        zh.append("、".join(s.label_zh for s in rule.severities))
        en.append("severity " + "/".join(s.value for s in rule.severities))
    if rule.hardship_grades is not None:
        zh.append("、".join(g.label_zh for g in rule.hardship_grades))
        en.append("hardship grade " + "/".join(g.value for g in rule.hardship_grades))
    if rule.collective is True:
        zh.append(f"涉及{facts.workers_affected}名职工，达到集体争议标准（{threshold}人及以上）")
        en.append(f"{facts.workers_affected} workers, at or above the collective threshold of {threshold}")
    elif rule.collective is False:
        zh.append(f"涉及职工少于{threshold}人")
        en.append(f"fewer than {threshold} workers")
    if rule.min_workers is not None:
        zh.append(f"涉及职工不少于{rule.min_workers}人")
        en.append(f"at least {rule.min_workers} workers")
    if rule.min_amount is not None:
        zh.append(f"涉及金额达到{rule.min_amount}元标准")
        en.append(f"amount at or above the {rule.min_amount} yuan threshold")
    if rule.is_catch_all:
        zh.append("默认规则")
        en.append("default rule")
    if rule.note_zh:
        zh.append(rule.note_zh)
    if rule.note_en:
        en.append(rule.note_en)
    return "；".join(zh), "; ".join(en)


def _owner_text(level: Level, code: str) -> tuple[str, str]:
    if is_cell_code(code):
        return f"网格{code}的网格员", f"the grid officer of cell {code}"
    return f"{level.label_zh}级工会（{code}）", f"the {_lv(level)} union ({code})"


def route(
    case: CaseFacts,
    *,
    cell_code: str | None,
    division_code: str | None,
    policy: ProvincePolicy,
    units: Units,
) -> RoutingDecision:
    """Decide the start level and owner of a new case (see the module doc for the rules).

    ``units`` says whether the unit with a code exists (a mapping of code -> bool, where a code it
    does not list counts as missing, or a function); at community level the code asked about is the
    cell code (has the cell a grid officer?) and then the community code.
    """
    rule = match_rule(case, policy)
    threshold = policy.collective.threshold_workers
    max_level = policy.routing.max_level
    alerts: list[RoutingAlert] = []

    if cell_code is not None:
        if not is_cell_code(cell_code):
            raise RoutingError(f"cell code must be 15 digits, got {cell_code!r}")
        base = cell_code
        if division_code is not None and not _on_chain(cell_code, division_code):
            alerts.append(
                RoutingAlert(
                    "division_mismatch",
                    Level.COMMUNITY,
                    division_code,
                    f"地址所在区划{division_code}与网格{cell_code}不一致，按网格派单",
                    f"address division {division_code} is not on the chain of cell {cell_code}; "
                    "routed by the cell",
                )
            )
    elif division_code is not None:
        if not is_division_code(division_code):
            raise RoutingError(f"division code must be 12 digits, got {division_code!r}")
        base = division_code
    else:
        raise RoutingError("a case with neither a cell nor a division code cannot be routed")

    # The rule's unit: the cell's grid officer at community level, else the division at the level.
    base_rank = level_of(base)
    wanted_rank = Level.CELL if rule.level is Level.COMMUNITY else rule.level
    if base_rank < max_level:
        raise RoutingError(
            f"the case's address reached only {_lv(base_rank)} level, above this policy's max_level "
            f"{_lv(max_level)}"
        )
    start_rank = min(wanted_rank, base_rank)  # the higher of the two; Level counts down from the top
    address_only = base_rank < wanted_rank
    if address_only:
        reached: Level = base_rank
        alerts.append(
            RoutingAlert(
                "address_only",
                reached,
                base,
                f"案件未落到网格，地址只到{reached.label_zh}级（{base}），由该级受理",
                f"the case has no grid cell; its address reached only {_lv(reached)} level ({base}), "
                "which takes it",
            )
        )

    candidates = [ancestor(base, r) for r in Level if max_level <= r <= start_rank]
    candidates.reverse()  # lowest (most local) first, then upward
    owner: str | None = None
    for code in candidates:
        if _exists(units, code):
            owner = code
            break
        lvl = owner_level(code)
        what_zh = f"网格{code}无网格员" if is_cell_code(code) else f"{lvl.label_zh}级工会{code}不存在"
        what_en = (
            f"cell {code} has no grid officer"
            if is_cell_code(code)
            else f"{_lv(lvl)} union {code} does not exist"
        )
        alerts.append(
            RoutingAlert("unit_missing", lvl, code, f"{what_zh}，改由上一级受理", f"{what_en}; passed upward")
        )
    if owner is None:
        raise RoutingError(
            f"no unit exists on the chain of {base} from {_lv(rule.level)} up to {_lv(max_level)} level; "
            "the case cannot be given an owner"
        )

    level = owner_level(owner)
    dual_severity = case.severity in policy.routing.dual_report_severities
    dual_collective = is_collective(case, policy) and policy.routing.dual_report_collective
    dual = dual_severity or dual_collective
    fallback = address_only or any(a.code == "unit_missing" for a in alerts)

    cond_zh, cond_en = _conditions(rule, case, threshold)
    own_zh, own_en = _owner_text(level, owner)
    zh = f"依规则「{rule.id}」（{cond_zh}），应由{rule.level.label_zh}级受理；派给{own_zh}。"
    en = f"Rule '{rule.id}' ({cond_en}) starts the case at {_lv(rule.level)} level; owner: {own_en}."
    if fallback:
        zh += "因" + "；".join(a.message_zh for a in alerts if a.code != "division_mismatch") + "。"
        en += " Fallback: " + "; ".join(a.message_en for a in alerts if a.code != "division_mismatch") + "."
    if dual_severity:
        zh += f"属{case.severity.label_zh}，须同时报告同级党委政府并报上一级工会。"
        en += (
            f" Severity {case.severity.value}: report at once to the same-level party committee/government "
            "and to the union one level up."
        )
    elif dual_collective:
        zh += "属集体劳动争议（《劳动争议调解仲裁法》第七条），须同时报告同级党委政府并报上一级工会。"
        en += (
            " Collective labour dispute (Mediation and Arbitration Law, Art. 7): report at once to the "
            "same-level party committee/government and to the union one level up."
        )
    return RoutingDecision(
        level=level,
        owner_code=owner,
        rule=rule.id,
        explanation_zh=zh,
        explanation_en=en,
        dual_report=dual,
        fallback_used=fallback,
        rule_level=rule.level,
        alerts=tuple(alerts),
    )


def _on_chain(cell_code: str, division_code: str) -> bool:
    if not is_division_code(division_code):
        return False
    try:
        return ancestor(cell_code, division_level(division_code)) == division_code
    except CodeError:
        return False
