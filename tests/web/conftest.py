"""A seeded five-level tree (province → city → 2 counties → 3 towns → 4 communities → 5 cells) with
one account per role, cases at every level, a worker behind each case, and the web app on it.

The tree lives under a fresh random city code so it never meets other tests' cases; the province
unit (420000000000) is shared, so province-wide listings are compared on the sample cases only.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from connectors.kinds import CaseKind
from grid.accounts.access import Principal, Role
from grid.accounts.config import WebSettings
from grid.accounts.users import add_user
from grid.cases.actions import escalate, return_to_parent
from grid.cases.intake import CaseReport, open_case
from grid.cases.store import CaseRules, rules_from_settings
from grid.ingest import WORKER_PII
from grid.people import mask_id, mask_name, mask_phone, vault_from_settings
from grid.store.db import transaction

PASSWORD = "correct horse battery"


@dataclass
class Tree:
    city: str
    counties: list[str]
    towns: list[str]
    communities: list[str]
    cells: list[str]
    users: dict[str, tuple[Role, str, list[str]]]  # login -> (role, scope, cells)
    cases: dict[str, int] = field(default_factory=dict)  # name -> id
    chain: dict[int, str] = field(default_factory=dict)  # id -> chain code
    owner: dict[int, str] = field(default_factory=dict)  # id -> owner code at seeding
    hmac: dict[int, bytes] = field(default_factory=dict)  # id -> worker HMAC
    plain: dict[int, dict[str, str]] = field(default_factory=dict)  # id -> worker's real fields
    user_ids: dict[str, int] = field(default_factory=dict)
    officers: dict[str, int] = field(default_factory=dict)  # roster code -> officer id
    officer_of: dict[str, int] = field(default_factory=dict)  # login -> officer id (roster accounts)

    def principal(self, login: str) -> Principal:
        role, scope, cells = self.users[login]
        return Principal(
            self.user_ids[login], login, role, scope, tuple(sorted(cells)), self.officer_of.get(login)
        )


def _free_city(cur: psycopg2.extensions.cursor) -> str:
    while True:
        cc = f"{secrets.randbelow(89) + 10:02d}"
        if cc == "05":
            continue
        cur.execute("SELECT NOT EXISTS (SELECT 1 FROM unit WHERE code LIKE %s)", (f"42{cc}%",))
        row = cur.fetchone()
        if row and row[0]:
            return f"42{cc}00000000"


def _square(lon: float, lat: float, d: float = 0.004) -> str:
    return f"MULTIPOLYGON((({lon} {lat},{lon + d} {lat},{lon + d} {lat + d},{lon} {lat + d},{lon} {lat})))"


def _seed(conn: psycopg2.extensions.connection, rules: CaseRules) -> Tree:
    vault = vault_from_settings()
    with transaction(conn) as cur:
        city = _free_city(cur)
        p4 = city[:4]
        counties = [f"{p4}01000000", f"{p4}02000000"]
        towns = [f"{p4}01001000", f"{p4}01002000", f"{p4}02001000"]
        communities = [f"{p4}01001001", f"{p4}01001002", f"{p4}01002001", f"{p4}02001001"]
        cells = [
            communities[0] + "001",
            communities[0] + "002",
            communities[1] + "001",
            communities[2] + "001",
            communities[3] + "001",
        ]
        units = [
            ("420000000000", 1),
            (city, 2),
            *((c, 3) for c in counties),
            *((t, 4) for t in towns),
            *((m, 5) for m in communities),
        ]
        for code, level in units:
            cur.execute(
                "INSERT INTO unit (code, level, name) VALUES (%s, %s, %s) ON CONFLICT (code) DO NOTHING",
                (code, level, f"测试工会{code}"),
            )
        cur.execute(
            "INSERT INTO cell_version (label, scope_code, valid_from, generated, note) "
            "VALUES ('web-test', %s, '2026-01-01', true, 'web tests') RETURNING id",
            (city,),
        )
        row = cur.fetchone()
        assert row is not None
        version_id = row[0]
        tag = secrets.token_hex(3)
        # the roster: one officer per cell, and a second officer on the first cell (the tie-break)
        roster = [(f"o{i}{tag}", cell) for i, cell in enumerate(cells)] + [(f"o0b{tag}", cells[0])]
        officers: dict[str, int] = {}
        for code, cell in roster:
            cur.execute(
                "INSERT INTO officer (source_record_id, name, phone_masked) "
                "VALUES (%s, %s, '138****0000') RETURNING id",
                (code, f"网格员{code[:3]}"),
            )
            r = cur.fetchone()
            assert r is not None
            officers[code] = int(r[0])
            cur.execute(
                "INSERT INTO officer_cell (officer_id, cell_code) VALUES (%s, %s)", (officers[code], cell)
            )
        for i, cell in enumerate(cells):
            cur.execute(
                "INSERT INTO grid_cell (code, community_code, name, geom, version_id, generated, valid_from) "
                "VALUES (%s, %s, %s, ST_GeomFromText(%s, 4326), %s, true, '2026-01-01')",
                (cell, cell[:12], f"网格{i}", _square(111.0 + i * 0.01, 30.7), version_id),
            )
        cur.execute(
            "INSERT INTO source (name, display_name, city_code, kind, crs) VALUES (%s, 'web test', %s, 'file', "
            "'EPSG:4326') ON CONFLICT DO NOTHING",
            (f"webtest{city[2:4]}", city),
        )
    users: dict[str, tuple[Role, str, list[str]]] = {
        f"off1{tag}": (Role.GRID_OFFICER, communities[0], [cells[0]]),
        f"offb{tag}": (Role.GRID_OFFICER, communities[0], [cells[0]]),  # the first cell's second officer
        f"off4{tag}": (Role.GRID_OFFICER, communities[2], [cells[3]]),
        # an officer account not tied to the roster (cells given by hand): owns no roster officer's case
        f"offl{tag}": (Role.GRID_OFFICER, communities[3], [cells[4]]),
        f"com1{tag}": (Role.COMMUNITY, communities[0], []),
        f"town1{tag}": (Role.TOWN, towns[0], []),
        f"town2{tag}": (Role.TOWN, towns[1], []),
        f"cty1{tag}": (Role.COUNTY, counties[0], []),
        f"cty2{tag}": (Role.COUNTY, counties[1], []),
        f"city{tag}": (Role.CITY, city, []),
        f"prov{tag}": (Role.PROVINCE, "420000000000", []),
        f"adm{tag}": (Role.ADMIN, "420000000000", []),
        f"other{tag}": (Role.CITY, "429000000000" if city[:4] != "4290" else "428000000000", []),
    }
    tree = Tree(city, counties, towns, communities, cells, users, officers=officers)
    # officer accounts are tied to the roster (their cells come from it)
    tied = {f"off1{tag}": f"o0{tag}", f"offb{tag}": f"o0b{tag}", f"off4{tag}": f"o3{tag}"}
    for login, (role, scope, cs) in users.items():
        if login in tied:
            tree.user_ids[login] = add_user(
                conn, login=login, password=PASSWORD, role=role, scope_code=scope, officer=tied[login]
            )
            tree.officer_of[login] = officers[tied[login]]
            continue
        tree.user_ids[login] = add_user(
            conn, login=login, password=PASSWORD, role=role, scope_code=scope, cells=cs
        )
    # cases: one per cell owned by its officer, then escalated ones owned by community, town, county
    plan = [
        ("c1", cells[0], 0),
        ("c2", cells[1], 0),
        ("c3", cells[2], 0),
        ("c4", cells[3], 0),
        ("c5", cells[4], 0),
        ("c6", cells[0], -1),  # returned to community 1
        ("c7", cells[3], 1),  # escalated to town 2
        ("c8", cells[4], 2),  # escalated to county 2
    ]
    src = f"webtest{city[2:4]}"
    for n, (name, cell, ups) in enumerate(plan):
        id_number = f"42050219800101{n:03d}X"
        plain = {"id_number": id_number, "name": f"张{n}三", "phone": f"1380000{n:04d}"}
        mac = vault.mac(id_number + tag, purpose="id")
        with transaction(conn) as cur:
            cur.execute(
                """
                INSERT INTO worker (source, source_record_id, source_updated_at, id_hmac, id_masked, name_masked,
                                    phone_masked, pii_enc, placement_method, row_hash, cell_code)
                VALUES (%s, %s, now(), %s, %s, %s, %s, %s, 'cell', %s, %s)
                """,
                (
                    src,
                    f"{tag}-{n}",
                    mac,
                    mask_id(id_number),
                    mask_name(plain["name"]),
                    mask_phone(plain["phone"]),
                    vault.encrypt(
                        json.dumps([id_number, plain["name"], plain["phone"], "某路1号"], ensure_ascii=False),
                        purpose=WORKER_PII,
                    ),
                    secrets.token_bytes(32),
                    cell,
                ),
            )
        i = cells.index(cell)
        res = open_case(
            conn,
            report=CaseReport(
                kind=CaseKind.WAGE_ARREARS,
                channel="officer",
                cell_code=cell,
                lon=111.002 + i * 0.01,
                lat=30.702,
                worker_hmac=mac,
            ),
            rules=rules,
            actor="seed",
        )
        version = res.version
        if ups < 0:
            version = return_to_parent(
                conn,
                case_id=res.case_id,
                expected_version=version,
                actor="seed",
                reason="派错网格",
                rules=rules,
            ).version
        for _ in range(max(ups, 0)):
            version = escalate(
                conn,
                case_id=res.case_id,
                expected_version=version,
                actor="seed",
                reason="需要上级协调",
                rules=rules,
            ).version
        with transaction(conn) as cur:
            cur.execute("SELECT chain_code, owner_code FROM case_file WHERE id = %s", (res.case_id,))
            row = cur.fetchone()
            assert row is not None
        tree.cases[name] = res.case_id
        tree.chain[res.case_id], tree.owner[res.case_id] = row[0], row[1]
        tree.hmac[res.case_id] = mac
        tree.plain[res.case_id] = plain
    return tree


# Headless Debian Chromium for the browser tests (``playwright install`` cannot download here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def rules() -> CaseRules:
    return rules_from_settings()


@pytest.fixture(scope="session")
def tree(database_url: str, rules: CaseRules) -> Tree:
    conn = psycopg2.connect(database_url)
    try:
        return _seed(conn, rules)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def owner_conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection as the database owner, for checking what the app wrote."""
    c = psycopg2.connect(database_url)
    c.autocommit = True
    yield c
    c.close()


@pytest.fixture(scope="session")
def app_factory(database_url: str):  # type: ignore[no-untyped-def]
    from grid.web.app import create_app

    def make(**kw: Any):  # type: ignore[no-untyped-def]
        return create_app(WebSettings(**kw))

    return make


@pytest.fixture(scope="session")
def web_app(app_factory):  # type: ignore[no-untyped-def]
    return app_factory()


def client(app) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def login(c: TestClient, user: str, password: str = PASSWORD) -> str:
    """Sign in through the JSON API; returns the CSRF token."""
    r = c.post("/api/v1/session", json={"login": user, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def sign_in(page: Page, base_url: str, user: str) -> None:
    """Sign in through the login form in a browser; lands on the inbox."""
    page.goto(f"{base_url}/login")
    expect(page.locator("h1")).to_have_text("登录")
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/inbox")


def version_of(conn: psycopg2.extensions.connection, case_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM case_file WHERE id = %s", (case_id,))
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


class LiveServer:
    """The app under real uvicorn on loopback, in a thread."""

    def __init__(self, app: Any) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
