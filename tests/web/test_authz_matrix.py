"""The authorisation matrix: every role × every endpoint × every sample case, in and out of scope.

The expected answer comes from an oracle written here from the rules in prose (an officer sees the
cases of its cells; a unit sees its code prefix's subtree; an owner acts on what it owns; a unit
strictly above the owner on the chain may urge and reassign; province, city and admin never
reveal; an officer owns the cases of its cells that the roster gave to it — or to no officer — and
not those of another officer of a shared cell), not from the app's own predicates. Run once
through the app (zero false allows and zero false denies) and once against the database alone,
the application filter removed, so that row-level security alone must give the same answer.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from grid.accounts.access import Role, apply_scope
from grid.web import casework
from tests.web.conftest import Tree, client, login, version_of

pytestmark = pytest.mark.db

PREFIX = {"province": 2, "city": 4, "county": 6, "town": 9, "community": 12, "admin": 2}
RANK = {2: 1, 4: 2, 6: 3, 9: 4, 12: 5}


def _level(code: str) -> int:
    if len(code) == 15:
        return 6
    for n in (2, 4, 6, 9):
        if code[n:] == "0" * (12 - n):
            return RANK[n]
    return 5


class Oracle:
    def __init__(self, tree: Tree, login_: str) -> None:
        self.role, self.scope, self.cells = tree.users[login_]
        self.role = Role(self.role)
        self.officer = tree.officer_of.get(login_)  # the roster officer an officer account is tied to

    def officer_ok(self, owner_officer: int | None) -> bool:
        """The officer half of ownership: the roster gave the case to this officer, or to none."""
        return owner_officer is None or owner_officer == self.officer

    def sees(self, chain: str) -> bool:
        if self.role is Role.GRID_OFFICER:
            return chain in self.cells
        return chain.startswith(self.scope[: PREFIX[self.role.value]])

    def owns(self, chain: str, owner: str, owner_officer: int | None = None) -> bool:
        if not self.sees(chain):
            return False
        if self.role is Role.GRID_OFFICER:
            return owner in self.cells and self.officer_ok(owner_officer)
        return self.role is not Role.ADMIN and owner == self.scope

    def supervises(self, chain: str, owner: str) -> bool:
        if self.role in (Role.GRID_OFFICER, Role.ADMIN) or not self.sees(chain):
            return False
        return _level(self.scope) < _level(owner) and owner.startswith(self.scope[: PREFIX[self.role.value]])

    def reveals(self, chain: str) -> bool:
        return self.sees(chain) and self.role in (Role.GRID_OFFICER, Role.COMMUNITY, Role.TOWN, Role.COUNTY)

    def mine(self, chain: str, owner: str, owner_officer: int | None = None) -> bool:
        if self.role is Role.GRID_OFFICER:
            return self.sees(chain) and self.officer_ok(owner_officer)
        return self.sees(chain) and owner == self.scope


def _current_owner(conn: Any, case_id: int) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT owner_code FROM case_file WHERE id = %s", (case_id,))
        row = cur.fetchone()
        assert row is not None
        return str(row[0])


def _current_officer(conn: Any, case_id: int) -> int | None:
    with conn.cursor() as cur:
        cur.execute("SELECT owner_officer FROM case_file WHERE id = %s", (case_id,))
        row = cur.fetchone()
        assert row is not None
        return None if row[0] is None else int(row[0])


def test_the_sample_has_both_owner_kinds_and_a_shared_cell(tree: Tree, owner_conn: Any) -> None:
    """The matrix below proves something about officer ownership only if the sample has cases owned
    by an officer, by a unit, and a cell whose second officer sees a case it does not own."""
    officers = {_current_officer(owner_conn, i) for i in tree.cases.values()}
    assert None in officers and len(officers - {None}) >= 3
    second = next(u for u in tree.users if u.startswith("offb"))
    shared = [i for i in tree.cases.values() if tree.chain[i] in tree.users[second][2]]
    assert any(_current_officer(owner_conn, i) not in (None, tree.officer_of[second]) for i in shared)


def test_matrix_through_the_app(tree: Tree, web_app: Any, owner_conn: Any) -> None:
    sample = set(tree.cases.values())
    mistakes: list[str] = []
    checked = 0
    tally: dict[str, list[int]] = {}

    def expect(ok: bool, allowed: bool, what: str) -> None:
        nonlocal checked
        checked += 1
        endpoint = re.sub(r" (case )?c?\d+.*$", "", what.split(" ", 1)[1])
        tally.setdefault(endpoint, [0, 0])[0 if allowed else 1] += 1
        if ok != allowed:
            mistakes.append(f"{'false allow' if ok else 'false deny'}: {what}")

    for user in tree.users:
        o = Oracle(tree, user)
        c = client(web_app)
        csrf = login(c, user)
        h = {"X-CSRF-Token": csrf}
        page = c.get("/inbox?status=all")
        form_csrf = csrf
        # lists: inbox (mine), subtree (API), subtree (HTML)
        listed = {int(x) for x in re.findall(r'data-case="(\d+)"', page.text)} & sample
        want_mine = {
            i
            for i in sample
            if o.mine(tree.chain[i], _current_owner(owner_conn, i), _current_officer(owner_conn, i))
        }
        for i in sample:
            expect(i in listed, i in want_mine, f"{user} inbox lists case {i}")
        # other tests' cases share the province: narrow the listings to the sample's city (the
        # owner filter is ANDed with the scope filter, it can only remove rows)
        city = tree.city[:4]
        api_list = c.get("/api/v1/cases", params={"view": "subtree", "status": "all", "owner": city}).json()[
            "cases"
        ]
        api_ids = {r["id"] for r in api_list} & sample
        for i in sample:
            expect(i in api_ids, o.sees(tree.chain[i]), f"{user} API subtree lists case {i}")
        if o.role not in (Role.GRID_OFFICER,):
            html_sub = {
                int(x)
                for x in re.findall(r'data-case="(\d+)"', c.get(f"/subtree?status=all&owner={city}").text)
            }
            for i in sample:
                expect(i in html_sub, o.sees(tree.chain[i]), f"{user} subtree page lists case {i}")
        for name, i in sorted(tree.cases.items()):
            chain = tree.chain[i]
            owner = _current_owner(owner_conn, i)
            officer = _current_officer(owner_conn, i)
            sees = o.sees(chain)
            r = c.get(f"/cases/{i}")
            expect(r.status_code == 200, sees, f"{user} GET /cases/{name}")
            r = c.get(f"/api/v1/cases/{i}")
            expect(r.status_code == 200, sees, f"{user} GET /api/v1/cases/{name}")
            if r.status_code == 200:
                expect(
                    bool(r.json()["owner_actions"]),
                    o.owns(chain, owner, officer),
                    f"{user} offered owner actions {name}",
                )
                expect(
                    bool(r.json()["supervisor_actions"]),
                    o.supervises(chain, owner),
                    f"{user} offered supervisor actions {name}",
                )
            v = version_of(owner_conn, i)
            r = c.post(
                f"/api/v1/cases/{i}/actions/note", json={"version": v, "text": "矩阵测试备注"}, headers=h
            )
            expect(
                r.status_code == 200,
                o.owns(chain, owner, officer),
                f"{user} API note {name} ({r.status_code})",
            )
            if r.status_code not in (200, 403, 404):
                mistakes.append(f"unexpected {r.status_code} for {user} API note {name}: {r.text}")
            v = version_of(owner_conn, i)
            r = c.post(
                f"/cases/{i}/actions/note", data={"csrf": form_csrf, "version": str(v), "text": "表单备注"}
            )
            expect(
                r.status_code == 303,
                o.owns(chain, owner, officer),
                f"{user} form note {name} ({r.status_code})",
            )
            v = version_of(owner_conn, i)
            r = c.post(
                f"/api/v1/cases/{i}/actions/urge", json={"version": v, "text": "请加快办理"}, headers=h
            )
            expect(
                r.status_code == 200, o.supervises(chain, owner), f"{user} API urge {name} ({r.status_code})"
            )
            v = version_of(owner_conn, i)
            r = c.post(
                f"/cases/{i}/actions/urge", data={"csrf": form_csrf, "version": str(v), "text": "督办"}
            )
            expect(
                r.status_code == 303, o.supervises(chain, owner), f"{user} form urge {name} ({r.status_code})"
            )
            # reassign to the current owner: an authorised caller gets past every scope check to the
            # "already owned" refusal (409) and nothing changes; others get 403/404
            v = version_of(owner_conn, i)
            r = c.post(
                f"/api/v1/cases/{i}/actions/reassign",
                json={"version": v, "to_owner": owner, "reason": "矩阵测试"},
                headers=h,
            )
            expect(
                r.status_code == 409,
                o.supervises(chain, owner),
                f"{user} API reassign {name} ({r.status_code})",
            )
            r = c.post(
                f"/api/v1/cases/{i}/reveal",
                json={"field": "worker_phone", "reason": "矩阵测试查看"},
                headers=h,
            )
            expect(r.status_code == 200, o.reveals(chain), f"{user} API reveal {name} ({r.status_code})")
            if r.status_code == 200:
                assert r.json()["value"] == tree.plain[i]["phone"]
            r = c.post(
                f"/cases/{i}/reveal", data={"csrf": form_csrf, "field": "worker_id", "reason": "矩阵测试查看"}
            )
            expect(
                r.status_code == 200 and tree.plain[i]["id_number"] in r.text,
                o.reveals(chain),
                f"{user} form reveal {name} ({r.status_code})",
            )
            if r.status_code == 200 and not o.reveals(chain):
                assert tree.plain[i]["id_number"] not in r.text
        ledger = c.get("/api/v1/ledger")
        if ledger.status_code == 200:
            codes = {row["unit_code"] for row in ledger.json()}
            for code in codes:
                expect(o.sees(code), True, f"{user} ledger shows {code}")
    assert not mistakes, "\n".join(mistakes[:40])
    assert checked > 1000
    # every endpoint was exercised both ways: some calls must be allowed and some refused
    one_sided = {k: v for k, v in tally.items() if (0 in v) and k != "ledger shows"}
    assert not one_sided, one_sided


def _ids(cur: Any, sql: str, args: tuple[Any, ...]) -> set[int]:
    cur.execute(sql, args)
    return {int(r[0]) for r in cur.fetchall()}


def test_matrix_against_the_database_alone(tree: Tree, database_url: str, owner_conn: Any) -> None:
    """No application filter: the app role, the principal's scope settings and the policies only."""
    sample = sorted(tree.cases.values())
    mistakes: list[str] = []
    conn = psycopg2.connect(database_url, options="-c role=gridflow_app")
    try:
        # nothing stated: nothing visible
        with conn.cursor() as cur:
            assert _ids(cur, "SELECT id FROM case_file WHERE id = ANY(%s)", (sample,)) == set()
            assert (
                _ids(cur, "SELECT case_id FROM case_event_scoped WHERE case_id = ANY(%s)", (sample,)) == set()
            )
            cur.execute("SELECT count(*) FROM worker")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT count(*) FROM reveal_audit")
            assert cur.fetchone() == (0,)
        conn.rollback()
        for user in tree.users:
            o = Oracle(tree, user)
            p = tree.principal(user)
            want = {i for i in sample if o.sees(tree.chain[i])}
            # the database's half of officer ownership: of what it sees, an officer may not update
            # a case the roster gave to another officer (policy case_file_officer_owns)
            want_update = {
                i
                for i in want
                if o.role is not Role.GRID_OFFICER or o.officer_ok(_current_officer(owner_conn, i))
            }
            apply_scope(conn, p)
            with conn.cursor() as cur:
                got = _ids(cur, "SELECT id FROM case_file WHERE id = ANY(%s)", (sample,))
                got_events = _ids(
                    cur, "SELECT case_id FROM case_event_scoped WHERE case_id = ANY(%s)", (sample,)
                )
                cur.execute(
                    "SELECT id_hmac FROM worker WHERE id_hmac = ANY(%s)", ([tree.hmac[i] for i in sample],)
                )
                got_workers = {bytes(r[0]) for r in cur.fetchall()}
                got_audit = _ids(cur, "SELECT case_id FROM reveal_audit WHERE case_id = ANY(%s)", (sample,))
                cur.execute("UPDATE case_file SET updated_at = updated_at WHERE id = ANY(%s)", (sample,))
                updated = cur.rowcount
            conn.rollback()
            for what, seen in (
                ("case_file", got),
                ("case_event_scoped", got_events),
                ("reveal_audit", got_audit),
            ):
                for i in sample:
                    if (i in seen) != (i in want) and not (what == "reveal_audit" and i in want):
                        mistakes.append(f"{user} {what} case {i}: got {i in seen}, want {i in want}")
            if got_workers != {tree.hmac[i] for i in want}:
                mistakes.append(f"{user} worker rows differ")
            if updated != len(want_update):
                mistakes.append(f"{user} could update {updated} cases, want {len(want_update)}")
            # the web module's own query with its filter removed gives the same set
            apply_scope(conn, p)
            box = casework.inbox(conn, p, view="subtree", status="all", unscoped=True, limit=100000)
            listed = {r.id for r in box.rows} & set(sample)
            if listed != want:
                mistakes.append(f"{user} unscoped inbox {sorted(listed)} != {sorted(want)}")
            # writes outside the scope are refused by the database
            for i in sample:
                if i in want:
                    continue
                apply_scope(conn, p)
                with conn.cursor() as cur:
                    try:
                        cur.execute(
                            "INSERT INTO reveal_audit (user_id, login, case_id, field, reason) "
                            "VALUES (%s, %s, %s, 'worker_id', 'rls test')",
                            (p.user_id, p.login, i),
                        )
                        mistakes.append(f"{user} could audit-insert for case {i}")
                    except psycopg2.errors.InsufficientPrivilege:
                        pass
                conn.rollback()
                apply_scope(conn, p)
                with conn.cursor() as cur:
                    try:
                        cur.execute(
                            "INSERT INTO case_event (case_id, seq, action, to_state, actor, at, payload, prev_hash, "
                            "hash, owner_after, level_after) VALUES (%s, 9999, 'note', 'new', 'x', now(), '{}', "
                            "repeat('0', 64), repeat('0', 64), '420000000000', 1)",
                            (i,),
                        )
                        mistakes.append(f"{user} could insert an event into case {i}")
                    except psycopg2.errors.InsufficientPrivilege:
                        pass
                conn.rollback()
        # settings do not survive the transaction (a pooled connection falls back to nothing)
        apply_scope(conn, tree.principal(next(u for u in tree.users if u.startswith("prov"))))
        conn.commit()
        with conn.cursor() as cur:
            assert _ids(cur, "SELECT id FROM case_file WHERE id = ANY(%s)", (sample,)) == set()
        conn.rollback()
    finally:
        conn.close()
    assert not mistakes, "\n".join(mistakes[:40])
