"""Officer rows through the sync's one-transaction page, and the cases of officers who leave.

The roster rides the same path as workers and enterprises (``grid.sync.store.write_page``): COPY
into a staging table, a version-guarded upsert keyed on (source, officer id) — an older version
never overwrites a newer one, a replay changes nothing —, quarantine for rejects, soft delete after
two full snapshots without the officer. What is the roster's own, here:

* the phone is stored as a keyed HMAC (purpose ``phone``, so it matches a worker's phone HMAC),
  masked, and AES-GCM encrypted (purpose :data:`OFFICER_PII`); the staff name plainly — it is shown
  to the officer's supervisors on case pages and the re-dispatch pick-list;
* ``officer_cell`` is replaced, for each officer the page stored, by the cells of that version;
* :func:`release_departed`: an officer who left — inactive in the roster, soft-deleted after two
  full snapshots without them, or no longer serving the cell of a case — no longer owns open
  cases: each moves to the community union above its cell (the nearest existing unit) with a
  ``reassign`` event that says why, in the roster page's transaction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg2.extensions

from geodata.codes import Level, ancestor
from grid.cases.owners import units_exist
from grid.cases.states import Action
from grid.cases.store import CaseHead, CaseRules, append_event, lock_case
from grid.people import CIPHERTEXT_VERSION, Vault, mask_phone
from grid.store.copy import NULL, copy_from_text

Cursor = psycopg2.extensions.cursor

OFFICER_PII: Final = "officer-pii"
OFFICER_COLUMNS: Final = (
    "source_record_id",
    "source_updated_at",
    "name",
    "phone_hmac",
    "phone_masked",
    "phone_enc",
    "active",
    "cells",
    "row_hash",
)
#: What the ``reassign`` event of a released case says (no name, no phone: the officer's roster id).
LEFT_REASON_ZH: Final = "网格员已离岗（花名册停用或连续两次全量同步未出现），案件转社区工会重新派单"
LEFT_CELL_REASON_ZH: Final = "网格员已不再负责该网格（花名册变更），案件转社区工会重新派单"


_ESC = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def officer_copy(records: Sequence[Any], vault: Vault) -> str:
    """COPY text of officer rows (``OFFICER_COLUMNS`` order): the phone protected, the content
    fingerprinted (a re-sent version with the same content changes nothing)."""
    if not records:
        return ""
    lines: list[str] = []
    aad = OFFICER_PII.encode()
    for r in records:
        phone = r.phone
        content = "\x1f".join((r.name, phone or "", ",".join(r.cells), "1" if r.active else "0"))
        enc = NULL
        if phone:
            nonce = os.urandom(12)
            enc = (
                "\\\\x" + (CIPHERTEXT_VERSION + nonce + vault.aead.encrypt(nonce, phone.encode(), aad)).hex()
            )
        lines.append(
            "\t".join(
                (
                    r.source_record_id.translate(_ESC),
                    r.source_updated_at.isoformat(),
                    r.name.translate(_ESC),
                    "\\\\x" + vault.mac(phone, purpose="phone").hex() if phone else NULL,
                    mask_phone(phone) if phone else NULL,
                    enc,
                    "t" if r.active else "f",
                    ",".join(r.cells),
                    "\\\\x" + vault.fingerprint(content.encode()).hex(),
                )
            )
        )
    lines.append("")
    return "\n".join(lines)


UPSERT_SQL: Final = """
    INSERT INTO officer AS t (source, source_record_id, source_updated_at, name, phone_hmac, phone_masked,
                              phone_enc, active, row_hash, first_run_id, last_run_id)
    SELECT %(source)s, s.source_record_id, s.source_updated_at, s.name, s.phone_hmac, s.phone_masked,
           s.phone_enc, s.active, s.row_hash, %(run)s, %(run)s
    FROM stage_officer s
    ON CONFLICT (source, source_record_id) DO UPDATE SET
        source_updated_at = EXCLUDED.source_updated_at, name = EXCLUDED.name,
        phone_hmac = EXCLUDED.phone_hmac, phone_masked = EXCLUDED.phone_masked,
        phone_enc = EXCLUDED.phone_enc, active = EXCLUDED.active, row_hash = EXCLUDED.row_hash,
        last_run_id = EXCLUDED.last_run_id, updated_at = now(), deleted_at = NULL, missed_full_runs = 0
    WHERE (t.source_updated_at < EXCLUDED.source_updated_at AND t.row_hash <> EXCLUDED.row_hash)
       OR (t.deleted_at IS NOT NULL AND t.source_updated_at <= EXCLUDED.source_updated_at)
    RETURNING t.id, (xmax = 0) AS inserted
"""


def upsert_officers(cur: Cursor, *, source: str, run_id: int, rows_text: str) -> tuple[int, int]:
    """Stage and upsert a chunk's officer rows (``stage_officer`` exists); the cells of every
    version stored replace that officer's cells. Returns (inserted, updated)."""
    cur.execute("TRUNCATE stage_officer")
    copy_from_text(cur, "stage_officer", OFFICER_COLUMNS, rows_text)
    cur.execute(UPSERT_SQL, {"source": source, "run": run_id})
    stored = cur.fetchall()  # the versions the guard let through
    ids = [int(r[0]) for r in stored]
    if ids:
        cur.execute("DELETE FROM officer_cell WHERE officer_id = ANY(%s)", (ids,))
        cur.execute(
            """
            INSERT INTO officer_cell (officer_id, cell_code)
            SELECT DISTINCT o.id, c FROM officer o
            JOIN stage_officer s ON s.source_record_id = o.source_record_id,
                 unnest(string_to_array(nullif(s.cells, ''), ',')) AS c
            WHERE o.id = ANY(%s)
            """,
            (ids,),
        )
    inserted = sum(1 for r in stored if r[1])
    return inserted, len(stored) - inserted


@dataclass(frozen=True, slots=True)
class Released:
    case_id: int
    officer: str  # the roster id
    to_owner: str
    why: str  # "left" or "left_cell"


def release_departed(cur: Cursor, *, source: str | None, rules: CaseRules, actor: str) -> list[Released]:
    """Move every open case owned by an officer of ``source`` (None: officers of no source) who left
    or no longer serves the case's cell to the union above the cell, one ``reassign`` event each.

    Runs in the caller's transaction (the roster page's), after the officer rows are written. Locks
    each case row (the write order of ``grid.cases``); a case whose cell has no existing unit up to
    the policy's top level stays with its officer (nothing to hand it to) and is not returned.
    """
    cur.execute(
        """
        SELECT c.id, o.source_record_id, c.owner_code,
               NOT o.active AS left_post
        FROM case_file c JOIN officer o ON o.id = c.owner_officer
        WHERE c.state NOT IN ('resolved', 'closed') AND o.source IS NOT DISTINCT FROM %s
          AND (NOT o.active OR NOT EXISTS (SELECT 1 FROM officer_cell oc
                                           WHERE oc.officer_id = o.id AND oc.cell_code = c.owner_code))
        ORDER BY c.id
        """,
        (source,),
    )
    todo = [(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in cur.fetchall()]
    out: list[Released] = []
    for case_id, officer, cell, left_post in todo:
        head: CaseHead = lock_case(cur, case_id, None)
        if head.owner_code != cell:  # moved meanwhile
            continue
        above = [
            ancestor(cell, Level(lv)) for lv in range(int(Level.COMMUNITY), int(rules.max_level) - 1, -1)
        ]
        exist = units_exist(cur, above)
        target = next((c for c in above if exist.get(c)), None)
        if target is None:
            continue
        why = "left" if left_post else "left_cell"
        payload: dict[str, Any] = {
            "to_owner": target,
            "reason": LEFT_REASON_ZH if left_post else LEFT_CELL_REASON_ZH,
            "by_unit": "roster",
            "officer": officer,
            "roster": why,
        }
        skipped = above[: above.index(target)]
        if skipped:
            payload["alerts"] = [{"code": "unit_missing", "unit_code": c} for c in skipped]
        append_event(
            cur, head, action=Action.REASSIGN, actor=actor, at=_now(cur), payload=payload, rules=rules
        )
        out.append(Released(case_id, officer, target, why))
    return out


def _now(cur: Cursor) -> Any:
    cur.execute("SELECT now()")
    row = cur.fetchone()
    assert row is not None
    return row[0]
