"""The vocabulary of cases: families, kinds, hardship grades, severities and outcomes.

Values are stable lower-case identifiers (stored in the database and in policy files); each member
has a Chinese label for the officer and staff UI (``label_zh``).
"""

from __future__ import annotations

from enum import StrEnum


class CaseFamily(StrEnum):
    """The two families of cases that flow through the grid."""

    DISPUTE = "dispute"
    HARDSHIP = "hardship"

    @property
    def label_zh(self) -> str:
        return _FAMILY_ZH[self]


_FAMILY_ZH = {
    CaseFamily.DISPUTE: "劳动争议",
    CaseFamily.HARDSHIP: "困难职工帮扶",
}


class CaseKind(StrEnum):
    """What a case is about; every kind belongs to exactly one family."""

    WAGE_ARREARS = "wage_arrears"
    LABOUR_CONTRACT = "labour_contract"
    DISMISSAL = "dismissal"
    SOCIAL_INSURANCE = "social_insurance"
    WORK_INJURY = "work_injury"
    OCCUPATIONAL_SAFETY = "occupational_safety"
    HARDSHIP = "hardship"

    @property
    def family(self) -> CaseFamily:
        return CaseFamily.HARDSHIP if self is CaseKind.HARDSHIP else CaseFamily.DISPUTE

    @property
    def label_zh(self) -> str:
        return _KIND_ZH[self]


_KIND_ZH = {
    CaseKind.WAGE_ARREARS: "拖欠工资",
    CaseKind.LABOUR_CONTRACT: "劳动合同",
    CaseKind.DISMISSAL: "解除或终止劳动关系",
    CaseKind.SOCIAL_INSURANCE: "社会保险",
    CaseKind.WORK_INJURY: "工伤",
    CaseKind.OCCUPATIONAL_SAFETY: "职业安全卫生",
    CaseKind.HARDSHIP: "困难职工帮扶",
}


class HardshipGrade(StrEnum):
    """The three grades of the hardship register (一户一档)."""

    DEEP = "deep"
    RELATIVE = "relative"
    ACCIDENT = "accident"

    @property
    def label_zh(self) -> str:
        return _GRADE_ZH[self]


_GRADE_ZH = {
    HardshipGrade.DEEP: "深度困难",
    HardshipGrade.RELATIVE: "相对困难",
    HardshipGrade.ACCIDENT: "意外致困",
}


class Severity(StrEnum):
    """How urgent a case is; the last two are reported at once to the upper union and government."""

    NORMAL = "normal"
    EARLY_SIGN = "early_sign"
    COLLECTIVE_INCIDENT = "collective_incident"

    @property
    def label_zh(self) -> str:
        return _SEVERITY_ZH[self]


_SEVERITY_ZH = {
    Severity.NORMAL: "一般",
    Severity.EARLY_SIGN: "苗头性问题",
    Severity.COLLECTIVE_INCIDENT: "突发性群体性事件",
}


class Outcome(StrEnum):
    """How a case was resolved (the ``outcome`` of the resolve action)."""

    AGREEMENT = "agreement"
    REMEDIED = "remedied"
    REFERRED_ARBITRATION = "referred_arbitration"
    REFERRED_OTHER = "referred_other"
    ASSISTANCE_DELIVERED = "assistance_delivered"
    NOT_SUBSTANTIATED = "not_substantiated"
    WITHDRAWN = "withdrawn"

    @property
    def label_zh(self) -> str:
        return _OUTCOME_ZH[self]


_OUTCOME_ZH = {
    Outcome.AGREEMENT: "达成调解协议",
    Outcome.REMEDIED: "问题已解决",
    Outcome.REFERRED_ARBITRATION: "引导申请劳动仲裁",
    Outcome.REFERRED_OTHER: "移交有关部门",
    Outcome.ASSISTANCE_DELIVERED: "帮扶到位",
    Outcome.NOT_SUBSTANTIATED: "经核实不属实",
    Outcome.WITHDRAWN: "当事人撤回",
}
