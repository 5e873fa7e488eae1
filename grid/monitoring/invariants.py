"""Invariants of the whole system, checked at the end of every simulated day (``gridflow simulate``).

Each check is a function named after the rule it proves, returning a :class:`Check`: the rule, how
many things it looked at, and the breaches (counts and record/case ids only — never a person). A
check never repairs anything. They read the base tables with the owner's connection (RLS does not
hide rows from it) and are independent of the code paths they check: the coverage check recomputes
its numbers with its own SQL, the ledger check counts the events itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import psycopg2.extensions

from grid.cases.queries import events_by_case, events_of
from grid.cases.states import SQL_DONE, SQL_OPEN, verify_chain
from grid.store.db import transaction

Conn = psycopg2.extensions.connection

#: How many breaches a check lists by id (the count is always complete).
SHOWN: Final = 5


@dataclass(frozen=True, slots=True)
class Expected:
    """What the source says of one record: its latest version (None when its update time does not
    parse) and, when the source knows it, ``"stored"`` or ``"quarantined"`` (else None: either)."""

    version: datetime | None
    outcome: str | None = None
    #: False once the record left the export: if it left before any sync could see it (a night
    #: the source was down), nothing can hold it, and that is no loss
    present: bool = True
    #: the earliest version that validates to the same content as the latest: the sync does not
    #: rewrite a newer version whose content is unchanged, so a stored version anywhere in
    #: ``[accept_from, version]`` is the latest (None: only ``version`` itself)
    accept_from: datetime | None = None


#: The records a source ever exported: entity -> record id -> what must have become of it.
Truth = Mapping[str, Mapping[str, Expected]]


@dataclass
class Check:
    """One rule's verdict."""

    rule: str
    checked: int = 0
    breaches: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.breaches == 0

    def breach(self, what: str, n: int = 1) -> None:
        self.breaches += n
        if len(self.examples) < SHOWN:
            self.examples.append(what)


def _rows(conn: Conn, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with transaction(conn) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def records_accounted(conn: Conn, *, source: str, truth: Truth) -> Check:
    """Every record the source serves is stored at its latest version, or quarantined with a reason
    code (an open quarantine row naming it) — none lost; and none stored twice. A record that left
    the export before any sync could read it is not required; one that was read is.

    Workers and enterprises are stored rows keyed on (source, record id); case reports are taken in
    once (``case_intake`` keyed on ``"<source>:<record id>"``)."""
    check = Check("records: every source record stored at its latest version or quarantined, none twice")
    quarantined: dict[str, set[str]] = {}
    for entity, rid in _rows(
        conn,
        "SELECT entity, source_record_id FROM quarantine WHERE source = %s AND resolved_at IS NULL"
        " AND reason_code <> '' AND source_record_id IS NOT NULL",
        (source,),
    ):
        quarantined.setdefault(str(entity), set()).add(str(rid))
    for entity, records in truth.items():
        q = quarantined.get(entity, set())
        if entity == "cases":
            taken = {
                str(r[0]).split(":", 1)[1]
                for r in _rows(
                    conn, "SELECT source_ref FROM case_intake WHERE source_ref LIKE %s", (f"{source}:%",)
                )
            }
            for rid, exp in records.items():
                check.checked += 1
                if not exp.present and rid not in taken and rid not in q:
                    continue  # left the export unseen
                if exp.outcome == "quarantined" and rid not in q:
                    check.breach(f"{source} case report {rid} should be quarantined but is not")
                elif rid not in taken and rid not in q:
                    check.breach(f"{source} case report {rid} neither taken in nor quarantined")
            continue
        table = {"workers": "worker", "enterprises": "enterprise"}.get(entity)
        if table is None:
            continue
        stored: dict[str, datetime] = {}
        for rid, version, n in _rows(
            conn,
            f"SELECT source_record_id, max(source_updated_at), count(*) FROM {table}"
            " WHERE source = %s GROUP BY 1",
            (source,),
        ):
            stored[str(rid)] = version
            if n > 1:
                check.breach(f"{source} {entity} {rid} stored {n} times")
        for rid, exp in records.items():
            check.checked += 1
            version = exp.version
            if not exp.present and rid not in q and rid not in stored:
                continue  # left the export unseen
            if exp.outcome == "quarantined" and rid not in q:
                check.breach(f"{source} {entity} {rid} should be quarantined with a reason but is not")
                continue
            if rid in q and exp.outcome != "stored":
                continue
            have = stored.get(rid)
            if have is None:
                check.breach(f"{source} {entity} {rid} lost (not stored, not quarantined)")
            elif version is not None and exp.present and not _same_content(have, exp):
                check.breach(
                    f"{source} {entity} {rid} stored at {have.isoformat()}, source has {version.isoformat()}"
                )
    return check


def _same_content(have: datetime, exp: Expected) -> bool:
    """The stored version ``have`` holds the latest content (see :attr:`Expected.accept_from`)."""
    assert exp.version is not None
    return have == exp.version or (exp.accept_from is not None and exp.accept_from <= have <= exp.version)


def one_open_case_per_party(conn: Conn) -> Check:
    """At most one open case per worker (keyed HMAC) and kind, and per enterprise and dispute kind."""
    check = Check("cases: one open case per party and kind")
    (check.checked,) = _rows(conn, f"SELECT count(*) FROM case_file WHERE {SQL_OPEN}")[0]
    for kind, n in _rows(
        conn,
        f"SELECT kind, count(*) FROM case_file WHERE {SQL_OPEN} AND worker_hmac IS NOT NULL"
        " GROUP BY kind, worker_hmac HAVING count(*) > 1",
    ):
        check.breach(f"{n} open {kind} cases of one worker")
    for kind, uscc, n in _rows(
        conn,
        f"SELECT kind, enterprise_uscc, count(*) FROM case_file WHERE {SQL_OPEN} AND family = 'dispute'"
        " AND enterprise_uscc IS NOT NULL AND worker_hmac IS NULL GROUP BY 1, 2 HAVING count(*) > 1",
    ):
        check.breach(f"{n} open {kind} cases of enterprise {uscc}")
    return check


def escalation_steps_once(conn: Conn, *, swept_until: datetime | None) -> Check:
    """Every escalation step due by the last sweep (``swept_until``) is done; each fired step has
    exactly one event (its ``step_id``), dated at or after its due time — none early, none twice."""
    check = Check("escalation: every due step done exactly once, none early")
    if swept_until is not None:
        for sid, due in _rows(
            conn,
            "SELECT id, due_at FROM escalation_step WHERE done_at IS NULL AND due_at <= %s",
            (swept_until,),
        ):
            check.breach(
                f"step {sid} due {due.isoformat()} not done by the sweep at {swept_until.isoformat()}"
            )
    rows = _rows(
        conn,
        """
        SELECT s.id, s.due_at, s.outcome, count(e.seq), min(e.at)
        FROM escalation_step s
        LEFT JOIN case_event e ON e.case_id = s.case_id AND e.payload ? 'step_id'
             AND (e.payload ->> 'step_id')::bigint = s.id
        WHERE s.done_at IS NOT NULL
        GROUP BY s.id, s.due_at, s.outcome
        """,
    )
    for sid, due, outcome, events, first_at in rows:
        check.checked += 1
        expected = 1 if outcome == "fired" else 0
        if events != expected:
            check.breach(f"step {sid} ({outcome}) has {events} events")
        elif first_at is not None and first_at < due:
            check.breach(f"step {sid} fired at {first_at.isoformat()} before its due time {due.isoformat()}")
    return check


def hash_chains_verify(conn: Conn, *, case_ids: Iterable[int] | None = None) -> Check:
    """Every case's events form an unbroken hash chain from seq 1 ending at the hash stored with
    the case row (nothing altered, inserted, removed or cut off)."""
    check = Check("cases: every hash chain verifies")
    wanted = None if case_ids is None else set(case_ids)
    with transaction(conn) as cur:  # every event in one query, not one query per case
        cur.execute("SELECT id, head_hash FROM case_file ORDER BY id")
        heads = cur.fetchall()
        every = events_by_case(cur) if wanted is None else None
        for cid, head in heads:
            if wanted is not None and cid not in wanted:
                continue
            check.checked += 1
            stored = every.get(int(cid), []) if every is not None else events_of(cur, case_id=cid)
            if not verify_chain([s.event for s in stored], head=head):
                check.breach(f"case {cid}")
    return check


#: The ledger's columns and the events each counts, as the rule says (not as the view spells it).
_LEDGER_FACTS: Final = {
    "received": "SELECT owner_after, at FROM case_event"
    " WHERE action IN ('open', 'escalate', 'return_to_parent', 'reassign')",
    "responded": "SELECT owner_before, at FROM case_event WHERE action = 'accept'",
    "resolved": "SELECT owner_before, at FROM case_event WHERE action = 'resolve'",
    "escalated": "SELECT owner_before, at FROM case_event WHERE action = 'escalate'",
    "reminded": "SELECT payload ->> 'reminded_unit', at FROM case_event WHERE payload ? 'reminded_unit'",
    "criticised": "SELECT payload ->> 'criticised_unit', at FROM case_event WHERE payload ? 'criticised_unit'",
}


def ledger_matches_events(conn: Conn) -> Check:
    """The supervision ledger (催办/通报/提级 by unit and month) counts exactly the events: each
    column's total per unit and month equals the events counted here, and every fired 催办/通报
    step shows up once in the ledger's reminded/criticised totals."""
    check = Check("ledger: counts equal the events")
    ledger: dict[tuple[str, str], dict[str, int]] = {}
    cols = list(_LEDGER_FACTS)
    for row in _rows(conn, f"SELECT unit_code, period, {', '.join(cols)} FROM supervision_ledger_all"):
        ledger[(str(row[0]), str(row[1]))] = dict(zip(cols, (int(x) for x in row[2:]), strict=True))
    for col, facts in _LEDGER_FACTS.items():
        counted = _rows(
            conn,
            f"SELECT f.u, to_char(f.at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM'), count(*)"
            f" FROM ({facts}) AS f(u, at) GROUP BY 1, 2",
        )
        for unit, period, n in counted:
            check.checked += 1
            have = ledger.get((str(unit), str(period)), {}).get(col, 0)
            if have != n:
                check.breach(f"{col} of {unit} {period}: ledger {have}, events {n}")
        total = sum(v.get(col, 0) for v in ledger.values())
        if total != sum(int(r[2]) for r in counted):
            check.breach(f"{col}: ledger total {total} differs from the events")
    fired = dict(
        _rows(
            conn,
            "SELECT CASE WHEN kind = 'remind' THEN 'reminded' ELSE 'criticised' END, count(*)"
            " FROM escalation_step WHERE outcome = 'fired' GROUP BY 1",
        )
    )
    for col in ("reminded", "criticised"):
        by_sweep = _rows(
            conn,
            f"SELECT count(*) FROM case_event WHERE actor = 'system:sweep' AND payload ? '{col}_unit'",
        )[0][0]
        if by_sweep != fired.get(col, 0):
            check.breach(f"{col}: {fired.get(col, 0)} fired steps but {by_sweep} sweep events")
    return check


_REGISTRY_SQL: Final = """
SELECT coalesce(t.division_code::text, s.city_code::text) AS code,
       count(*) AS n, count(*) FILTER (WHERE {flag}) AS flagged
FROM {table} t LEFT JOIN source s ON s.name = t.source
WHERE t.deleted_at IS NULL
GROUP BY 1
"""

_CASES_SQL: Final = f"""
SELECT division_code::text, family,
       opened_at >= date_trunc('year', %(as_of)s AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai'
           AS in_year,
       coalesce({SQL_DONE} AND resolved_at <= %(as_of)s, false) AS done,
       resolve_by < %(as_of)s AS past_due
FROM case_file WHERE opened_at <= %(as_of)s
"""

#: Prefix lengths of the division levels (province, city, county, town, community).
_PREFIX: Final = {1: 2, 2: 4, 3: 6, 4: 9, 5: 12}


def coverage_matches_base_tables(conn: Conn, *, snapshot_date: Any) -> Check:
    """The day's coverage snapshot of every province and city equals the numbers recomputed here
    from the base tables (enterprises, union, workers, mapped, disputes, hardship, cases, resolved,
    overdue), each attributed by division-code prefix — an independent second implementation."""
    check = Check("coverage: snapshot equals a recomputation from the base tables")
    run = _rows(conn, "SELECT as_of FROM coverage_run WHERE snapshot_date = %s", (snapshot_date,))
    if not run:
        check.breach(f"no coverage snapshot of {snapshot_date}")
        return check
    as_of = run[0][0]
    leaf: dict[str, dict[str, int]] = {}

    def add(code: str | None, key: str, n: int) -> None:
        if code:
            leaf.setdefault(code.strip(), {}).setdefault(key, 0)
            leaf[code.strip()][key] += n

    for table, total, flagged, flag in (
        ("enterprise", "enterprises", "enterprises_union", "union_established"),
        ("worker", "workers", "workers_mapped", "cell_code IS NOT NULL"),
    ):
        for code, n, f in _rows(conn, _REGISTRY_SQL.format(table=table, flag=flag)):
            add(code, total, int(n))
            add(code, flagged, int(f))
    for code, family, in_year, done, past_due in _rows(conn, _CASES_SQL, {"as_of": as_of}):
        if in_year:
            add(code, "cases", 1)
            add(code, "resolved", int(done))
            add(code, "disputes" if family == "dispute" else "hardship", 1)
            if family == "dispute":
                add(code, "disputes_resolved", int(done))
        if not done and past_due:
            add(code, "overdue", 1)
    keys = ("enterprises", "enterprises_union", "workers", "workers_mapped", "disputes", "disputes_resolved",
            "hardship", "cases", "resolved", "overdue")  # fmt: skip
    snap = _rows(
        conn,
        f"SELECT division_code, level, {', '.join(keys)} FROM coverage_snapshot"
        " WHERE snapshot_date = %s AND level <= 2",
        (snapshot_date,),
    )
    for code, level, *values in snap:
        prefix = str(code)[: _PREFIX[int(level)]]
        check.checked += 1
        for key, value in zip(keys, values, strict=True):
            mine = sum(v.get(key, 0) for c, v in leaf.items() if c.startswith(prefix))
            if mine != int(value):
                check.breach(f"{key} of {code}: snapshot {value}, base tables {mine}")
    return check


def no_plaintext_pii(conn: Conn, *, log_files: Sequence[Path] = (), prefect: bool = False) -> Check:
    """No plaintext resident ID or mobile number in any textual column of the database, in the
    given log files, or (``prefect``) in the current Prefect API's artifacts, runs and logs."""
    from grid.monitoring.pii_scan import known_codes, scan_database, scan_files, scan_prefect

    check = Check("PII: no plaintext ID or phone in the database, logs or Prefect")
    codes = known_codes(conn)
    findings, stats = scan_database(conn, codes=codes)
    conn.rollback()
    check.checked = stats["columns"] + len(log_files)
    findings += scan_files(log_files, known_codes=codes)
    if prefect:
        more, pstats = scan_prefect()
        findings += more
        check.checked += sum(pstats.values())
    for f in findings:
        check.breach(f.line())
    return check
