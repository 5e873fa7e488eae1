"""Attaching a report to an open case, and the collective re-check it may trigger.

A repeat report about the same party and kind joins the open case (:func:`attach_report`). It adds
the workers it names:

* a report that identifies its worker (a keyed HMAC) counts that worker once per case — the case's
  own first worker and every worker of earlier attached reports (``case_worker``) are not counted
  again; the others it reports (``workers_affected - 1``) are added;
* a report that identifies no one adds its ``workers_affected``.

When the count reaches the collective threshold (Labour Dispute Mediation and Arbitration Law
Art. 7: 10 or more workers with a common claim; ``collective.threshold_workers``), routing runs again
with the new count. The start level can only rise: if the policy now gives a higher level, the case
is re-dispatched (a ``reassign`` by ``system:collective``, new deadlines and steps counted from now),
otherwise it stays with its owner. A collective dispute is dual-reported like early signs
(``routing.dual_report_collective``, on by default): the same-level government and the union one
level up hear of it at once through the outbox. The routing explanation keeps a ``rechecks`` entry
saying why, and the events carry the counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg2

from connectors.kinds import CaseFamily, HardshipGrade
from geodata.codes import Level, ancestor, chain_codes, is_cell_code
from grid.cases.intake import CaseReport, attach_summary
from grid.cases.outbox import enqueue, notice
from grid.cases.owners import supervisor_of, units_exist
from grid.cases.routing import CaseFacts, is_collective, route
from grid.cases.states import Action
from grid.cases.store import ActionResult, CaseHead, CaseRules, Cursor, append_event

COLLECTIVE_ACTOR: Final = "system:collective"
ATTACH_TEXT: Final = "同一当事人同类诉求再次反映，已并入本案 / a repeat report was attached to this case"


@dataclass(frozen=True, slots=True)
class WorkerCount:
    before: int
    added: int

    @property
    def after(self) -> int:
        return self.before + self.added


def count_added(cur: Cursor, head: CaseHead, report: CaseReport, *, at: datetime) -> WorkerCount:
    """How many workers ``report`` adds to the case; records the worker it identifies (if new)."""
    if report.worker_hmac is None:
        return WorkerCount(head.workers_affected, report.workers_affected)
    mac = psycopg2.Binary(report.worker_hmac)
    cur.execute(
        """
        SELECT EXISTS (SELECT 1 FROM case_file WHERE id = %(id)s AND worker_hmac = %(mac)s)
            OR EXISTS (SELECT 1 FROM case_worker WHERE case_id = %(id)s AND worker_hmac = %(mac)s)
        """,
        {"id": head.id, "mac": mac},
    )
    row = cur.fetchone()
    known = bool(row and row[0])
    if not known:
        cur.execute(
            "INSERT INTO case_worker (case_id, worker_hmac, added_at) VALUES (%s, %s, %s)", (head.id, mac, at)
        )
    return WorkerCount(head.workers_affected, report.workers_affected - (1 if known else 0))


def attach_report(
    cur: Cursor, head: CaseHead, report: CaseReport, *, rules: CaseRules, actor: str, at: datetime
) -> ActionResult:
    """Attach ``report`` to the locked open case ``head``: a note with the counts, then the re-check."""
    count = count_added(cur, head, report, at=at)
    res = append_event(
        cur,
        head,
        action=Action.NOTE,
        actor=actor,
        at=at,
        payload={
            "text": ATTACH_TEXT,
            "attached_report": attach_summary(report, reported_at=at),
            "workers_counted": {"before": count.before, "added": count.added, "after": count.after},
        },
        rules=rules,
        sets={"workers_affected": count.after} if count.added else None,
    )
    if count.added and head.kind.family is CaseFamily.DISPUTE:
        threshold = rules.policy.collective.threshold_workers
        if count.before < threshold <= count.after:
            return recheck(cur, head.id, count, rules=rules, at=at) or res
    return res


def recheck(
    cur: Cursor, case_id: int, count: WorkerCount, *, rules: CaseRules, at: datetime
) -> ActionResult | None:
    """Re-run routing for a case that has just become collective; rise (never fall) and dual-report."""
    from grid.cases.store import CASE_HEAD_COLUMNS

    policy = rules.policy
    cur.execute(
        f"SELECT {CASE_HEAD_COLUMNS}, amount, hardship_grade, routing FROM case_file WHERE id = %s",
        (case_id,),
    )
    row = cur.fetchone()
    assert row is not None  # locked by the caller
    head = CaseHead.from_row(row)
    amount, grade, routing = row[14], row[15], dict(row[16])
    facts = CaseFacts(
        head.kind,
        severity=head.severity,
        workers_affected=count.after,
        amount=amount,
        hardship_grade=None if grade is None else HardshipGrade(grade),
    )
    base = head.chain_code
    units = units_exist(cur, chain_codes(base))
    decision = route(
        facts,
        cell_code=base if is_cell_code(base) else None,
        division_code=None if is_cell_code(base) else base,
        policy=policy,
        units=units,
    )
    rises = decision.level < head.level
    dual = is_collective(facts, policy) and policy.routing.dual_report_collective and not head.dual_report
    threshold = policy.collective.threshold_workers
    why_zh = (
        f"并入报告后涉及职工{count.after}人（原{count.before}人），达到集体劳动争议门槛{threshold}人"
        "（《劳动争议调解仲裁法》第七条），重新派单：" + decision.explanation_zh
    )
    why_en = (
        f"after the attached report {count.after} workers (was {count.before}) reach the collective "
        f"dispute threshold of {threshold} (Mediation and Arbitration Law, Art. 7); routed again: "
        + decision.explanation_en
    )
    if not rises:
        why_zh += f"层级不降低，仍由{head.level.label_zh}级办理。"
        why_en += f" The level never falls: the case stays at {head.level.name.lower()} level."
    recheck_entry = {
        "at": at,
        "why": "collective_threshold",
        "workers_before": count.before,
        "workers_after": count.after,
        "threshold": threshold,
        "rule": decision.rule,
        "rule_level": decision.rule_level.name.lower(),
        "from_level": head.level.name.lower(),
        "to_level": (decision.level if rises else head.level).name.lower(),
        "dual_report": dual or head.dual_report,
        "text_zh": why_zh,
        "text_en": why_en,
    }
    stored = dict(routing)
    stored["rechecks"] = [*routing.get("rechecks", []), {**recheck_entry, "at": at.isoformat()}]
    if rises:
        stored.update(
            rule=decision.rule, rule_level=decision.rule_level.name.lower(), level=decision.level.name.lower()
        )
        stored.update(owner_code=decision.owner_code, text_zh=why_zh, text_en=why_en)
    stored["dual_report"] = bool(stored.get("dual_report")) or dual
    sets: dict[str, Any] = {"routing": json.dumps(stored, ensure_ascii=False, default=str)}
    if dual:
        sets["dual_report"] = True
    payload: dict[str, Any] = {
        "reason": why_zh,
        "reroute": {k: v for k, v in recheck_entry.items() if k != "at"},
    }
    if rises:
        payload["to_owner"] = decision.owner_code
        alerts = [{"code": a.code, "unit_code": a.unit_code} for a in decision.alerts]
        if alerts:
            payload["alerts"] = alerts
        action = Action.REASSIGN
    else:
        payload["text"] = why_zh
        action = Action.NOTE
    res = append_event(
        cur, head, action=action, actor=COLLECTIVE_ACTOR, at=at, payload=payload, rules=rules, sets=sets
    )
    if dual:
        _dual_report(cur, head, res, base=base, workers=count.after, at=at)
    return res


def _dual_report(
    cur: Cursor, head: CaseHead, res: ActionResult, *, base: str, workers: int, at: datetime
) -> None:
    """Notices to the same-level government and the union one level up (as at intake)."""
    upper = supervisor_of(res.owner_code) if res.level > Level.PROVINCE else None
    recipients = [("government", ancestor(base, res.level))] + ([("union", upper)] if upper else [])
    enqueue(
        cur,
        [
            notice(
                topic="dual_report",
                target=target,
                recipient_code=code,
                case_id=head.id,
                event_seq=res.event.seq,
                at=at,
                kind=head.kind,
                severity=head.severity,
                level=res.level,
                state=res.state.value,
                owner_code=res.owner_code,
                extra={"workers_affected": workers, "dual_report": True, "chain_code": base},
            )
            for target, code in recipients
        ],
    )
