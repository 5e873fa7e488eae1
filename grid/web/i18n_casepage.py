"""The case page's strings: what was done after each action, why an action is not offered, the
case's facts, and the re-dispatch pick-list. Merged into :data:`grid.web.i18n.STRINGS`.

``done_<action>`` sentences name what was done and what comes next; ``{resolve}`` is the
resolution deadline as a local date, ``{owner}`` the owner's name and code, ``{outcome}`` the
outcome's label. ``why_<code>`` explains a refusal code of :data:`grid.accounts.access.REFUSALS`.
"""

from __future__ import annotations

from datetime import datetime

from grid.accounts.access import REFUSALS

STRINGS: dict[str, tuple[str, str]] = {
    "done_accept": ("已受理，请于{resolve}前办结。", "Accepted; resolve it by {resolve}."),
    "done_start": ("已开始办理，请于{resolve}前办结。", "Work started; resolve it by {resolve}."),
    "done_note": ("备注已记入办理记录。", "The note is in the timeline."),
    "done_resolve": (
        "已办结（{outcome}），核实后可归档。",
        "Resolved ({outcome}); archive it once confirmed.",
    ),
    "done_close": ("已归档。", "Archived."),
    "done_escalate": ("已上报至{owner}，等待其受理。", "Escalated to {owner}, who must accept it."),
    "done_return_to_parent": ("已退回{owner}重新派单。", "Returned to {owner} for re-dispatch."),
    "done_reopen": ("已重启，请于{resolve}前办结。", "Reopened; resolve it by {resolve}."),
    "done_reassign": ("已改派至{owner}，等待其受理。", "Re-dispatched to {owner}, who must accept it."),
    "done_urge": ("已督办，承办单位{owner}将收到催办通知。", "Urged; {owner} is notified."),
    "why_not_title": ("不可执行的操作及原因", "Actions you cannot take, and why"),
    "why_admin_never_acts": ("管理员只管理账号，不办理案件。", "Administrators manage accounts, not cases."),
    "why_not_owner": (
        "本案由{owner}承办，只有承办单位可以办理。",
        "{owner} owns this case; only the owner may do this.",
    ),
    "why_officer_not_owner": (
        "本案不由您的网格承办（承办单位：{owner}）。",
        "Your cells do not own this case (owner: {owner}).",
    ),
    "why_officer_never_supervises": (
        "督办和改派由承办单位的上级单位执行。",
        "Urging and reassigning are for the units above the owner.",
    ),
    "why_owner_not_supervisor": (
        "承办单位不能督办或改派自己承办的案件（退回待重新派单的除外）。",
        "An owner does not urge or reassign its own case (unless it was returned for re-dispatch).",
    ),
    "why_not_above_owner": (
        "只有承办单位{owner}的上级单位可以督办或改派。",
        "Only a unit above the owner {owner} may urge or reassign.",
    ),
    "why_state": ("案件当前状态为「{state}」，不能执行此操作。", "Not possible while the case is '{state}'."),
    "facts": ("案件信息", "Case facts"),
    "case_description": ("问题描述", "Description"),
    "case_amount": ("诉求金额（元）", "Amount claimed (yuan)"),
    "case_address": ("地址", "Address"),
    "sealed": ("已加密保存，查看需填写理由", "stored encrypted; give a reason to reveal"),
    "no_details": ("来源未提供问题描述", "the source gave no description"),
    "enterprise_name": ("用人单位", "Employer"),
    "hardship_grade": ("困难类别", "Hardship grade"),
    "mediation_window": ("调解期限", "Mediation window"),
    "mediation_hint": (
        "申请调解之日起15日内未达成协议的，当事人可申请仲裁（劳动争议调解仲裁法第14条）",
        "No agreement within 15 days of the application: a party may go to arbitration (Art. 14)",
    ),
    "recovered": ("追回金额（元）", "Amount recovered (yuan)"),
    "owner_officers": ("网格员", "Grid officers"),
    "owner_no_officer": ("该网格无在岗网格员，由社区承办", "no active grid officer: the community owns it"),
    "dispatch_to": ("改派给", "Re-dispatch to"),
    "dispatch_choose": ("请选择下级单位或网格", "Choose a unit or cell below"),
    "dispatch_open": ("在办{n}件", "{n} open"),
    "dispatch_none": ("没有可改派的下级单位。", "No unit below to re-dispatch to."),
    "actor": ("办理人", "By"),
    "event_owner": ("承办", "Owner"),
    "ledger_range": ("第 {a}–{b} 行", "rows {a}–{b}"),
}

_unexplained = [code for code in REFUSALS if f"why_{code}" not in STRINGS]
if _unexplained:
    raise RuntimeError(f"refusal codes without a sentence: {_unexplained}")


def month_day(lang: str, at: datetime) -> str:
    """``12月11日`` / ``2026-12-11``: a deadline's local date in a sentence."""
    return at.strftime("%Y-%m-%d") if lang == "en" else f"{at.month}月{at.day}日"
