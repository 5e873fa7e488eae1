"""Interface strings: Simplified Chinese first, English on request (``?lang=en``, kept in a cookie)."""

from __future__ import annotations

from collections.abc import Callable

from connectors.kinds import CaseKind, Outcome, Severity
from geodata.codes import LEVEL_EN, LEVEL_ZH
from grid.cases.states import Action, State

STRINGS: dict[str, tuple[str, str]] = {
    "app": ("工会网格工作台", "Union grid workspace"),
    "login": ("登录", "Sign in"),
    "logout": ("退出", "Sign out"),
    "login_name": ("登录名", "Login"),
    "password": ("密码", "Password"),
    "login_failed": (
        "登录名或密码错误，或尝试次数过多，请稍后再试。",
        "Wrong login or password, or too many attempts; try again later.",
    ),
    "inbox": ("我的案件", "My cases"),
    "subtree": ("辖区案件", "Cases in my area"),
    "ledger": ("督办台账", "Supervision ledger"),
    "sync": ("数据同步", "Data sync"),
    "kind": ("类型", "Kind"),
    "status": ("状态", "Status"),
    "all": ("全部", "All"),
    "open": ("未办结", "Open"),
    "filter": ("筛选", "Filter"),
    "deadline": ("办结时限", "Resolve by"),
    "overdue": ("已超期", "Overdue"),
    "owner": ("承办单位", "Owner"),
    "case": ("案件", "Case"),
    "opened": ("立案时间", "Opened"),
    "level": ("层级", "Level"),
    "counts": ("统计", "Counts"),
    "total": ("合计", "Total"),
    "none": ("没有符合条件的案件。", "No cases match."),
    "page_prev": ("上一页", "Previous page"),
    "page_next": ("下一页", "Next page"),
    "page_range": ("第 {a}–{b} 件，共 {n} 件", "{a}–{b} of {n}"),
    "timeline": ("办理记录", "Timeline"),
    "routing": ("派单依据", "Why it was routed here"),
    "chain": ("上级单位链", "Chain of units"),
    "map": ("位置", "Location"),
    "parties": ("当事人", "Parties"),
    "worker_id": ("身份证号", "ID number"),
    "worker_phone": ("手机号", "Phone"),
    "worker_name": ("姓名", "Name"),
    "enterprise": ("用人单位信用代码", "Employer credit code"),
    "reveal": ("查看完整信息", "Reveal"),
    "reveal_reason": ("查看理由（将被记录）", "Reason (recorded)"),
    "revealed": ("已查看（已记录审计）", "Revealed (audited)"),
    "actions": ("办理", "Actions"),
    "supervise": ("督办与改派", "Supervise and reassign"),
    "text": ("内容", "Text"),
    "reason": ("理由", "Reason"),
    "outcome": ("办理结果", "Outcome"),
    "amount_recovered": ("追回金额（元）", "Amount recovered (yuan)"),
    "to_owner": ("改派给（单位或网格代码）", "Reassign to (unit or cell code)"),
    "conflict": (
        "该案件已被他人更新（当前版本 {actual}），您的操作未保存。请查看最新情况后重试。",
        "This case was changed meanwhile (now version {actual}); your action was not saved. Review it and try again.",
    ),
    "not_allowed": ("此操作当前不可执行：", "This action is not possible now: "),
    "allowed_now": ("当前可执行的操作：", "allowed now: "),
    "bad_request": ("输入有误：", "Invalid input: "),
    "forbidden": ("您无权执行此操作。", "You may not do this."),
    "not_found": ("案件不存在或不在您的辖区内。", "No such case in your area."),
    "done": ("已保存。", "Saved."),
    "period": ("月份", "Month"),
    "unit": ("单位", "Unit"),
    "received": ("受理", "Received"),
    "responded": ("响应", "Responded"),
    "resolved": ("办结", "Resolved"),
    "on_time": ("按时", "On time"),
    "escalated": ("上报", "Escalated"),
    "reminded": ("催办", "Reminded"),
    "criticised": ("通报", "Criticised"),
    "provisional": ("（时限暂定）", "(provisional deadline)"),
    "version": ("版本", "Version"),
    "severity": ("紧急程度", "Severity"),
    "workers": ("涉及职工", "Workers"),
    "submit": ("提交", "Submit"),
}


def _merge_feature_strings() -> None:
    """Feature modules keep their own string tables (``i18n_dashboard``, ``i18n_health``)."""
    from grid.web import i18n_admin_users, i18n_dashboard, i18n_deadlines, i18n_health

    for table in (
        i18n_dashboard.STRINGS,
        i18n_health.STRINGS,
        i18n_deadlines.STRINGS,
        i18n_admin_users.STRINGS,
    ):
        clash = STRINGS.keys() & table.keys()
        if clash:
            raise RuntimeError(f"duplicate interface string keys: {sorted(clash)}")
        STRINGS.update(table)


_merge_feature_strings()


def translator(lang: str) -> Callable[[str], str]:
    i = 1 if lang == "en" else 0

    def t(key: str) -> str:
        pair = STRINGS.get(key)
        return key if pair is None else pair[i]

    return t


def label(lang: str, value: object) -> str:
    """A display label for an enum value (kind, state, action, severity, outcome, level)."""
    en = lang == "en"
    if isinstance(value, int) and not isinstance(value, bool):
        return (LEVEL_EN if en else LEVEL_ZH).get(value, str(value))
    text = str(value)
    for enum in (CaseKind, State, Action, Severity, Outcome):
        try:
            member = enum(text)
        except ValueError:
            continue
        return text.replace("_", " ") if en else str(member.label_zh)
    return text
