"""``gridflow simulate``: a province's days replayed in minutes, every invariant checked each day.

The clock (see :mod:`grid.clock`): the simulation replays the N days ENDING TODAY — day ``d``'s date
is ``today - N + d`` (Asia/Shanghai) — so every simulated time is at or before the real one and
nothing is ever written dated in the future; a time that would lie after now (the sweeps of today
later than the current hour) is clamped to now. The time travels as parameters: ``as_of`` of the
nightly-sync deployment run, ``now`` of the sweep, ``snapshot_date`` of the coverage snapshot.

Each simulated day:

1. the sandbox cities move to that day (``POST /_sim/day``, docs/SANDBOX-TIMELINE.md); a city in
   its outage window is switched down (``POST /_sim/outage``) and back up afterwards;
2. the nightly sync of every city runs THROUGH THE PREFECT DEPLOYMENT ``nightly-sync/nightly``
   (server and worker as ``scripts/run`` starts them) with ``as_of`` = 02:00 of the day;
3. simulated officers act through the web API over HTTP as real accounts — the unit accounts of
   the owning unions and, for cases a roster grid officer owns, that officer's own account made as
   ``gridflow users add --officer`` makes it (most on time, some late, some returning cases to the
   parent, some never answering); their events carry the real time of the request — the web app
   never takes a clock from a client;
4. the escalation sweep runs at several hours of the day in this process with the simulated clock
   (:func:`grid.cases.sweep.sweep`, the function the deployment wraps);
5. the day's coverage snapshot (:func:`grid.monitoring.coverage.compute_snapshot`);
6. the invariants (:mod:`grid.monitoring.invariants`), printed as a table; a breach fails the run.

The escalation sweep's own schedule is paused for the simulation (a real-time sweep would fire the
simulated future's steps at once) and resumed afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx
import typer

from connectors.config import SourceConfig
from grid.clock import local_day
from grid.monitoring.invariants import Check, Expected, Truth
from grid.workdays import SHANGHAI

SYNC_HOUR = dtime(2, 0)
SWEEP_HOURS = (dtime(9, 0), dtime(13, 0), dtime(17, 30))
VOLUMES = {"small": 0.02, "demo": 1.0}

#: Officer behaviour per unit, by a seeded hash of its code: share of units and what they do.
PROFILES = (("prompt", 0.6), ("late", 0.2), ("returner", 0.1), ("silent", 0.1))


@dataclass
class DayStats:
    day: int
    date: date
    records: int = 0
    opened: int = 0
    closed: int = 0
    escalated: int = 0
    notices: int = 0
    failed_sources: list[str] = field(default_factory=list)
    #: sources the stale-source rule flags at the day's last sweep hour: name -> "warn 26 h"
    stale: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    boundary: str | None = None
    #: cities whose night failed: their records invariant waits for their next good night
    deferred: list[str] = field(default_factory=list)
    #: wall seconds of each phase of the day (sync, officers, sweep, coverage, checks)
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        bad = sum(1 for c in self.checks if not c.ok)
        down = f"; sync failed: {', '.join(self.failed_sources)}" if self.failed_sources else ""
        if self.deferred:
            down += f" (records check deferred: {', '.join(self.deferred)})"
        if self.stale:
            down += "; stale source: " + ", ".join(f"{k} ({v})" for k, v in sorted(self.stale.items()))
        return (
            f"day {self.day:>2} {self.date.isoformat()}: records {self.records:,}, cases opened {self.opened}, "
            f"closed {self.closed}, escalated {self.escalated}, notices {self.notices}; "
            f"invariants {'ok' if bad == 0 else f'{bad} BROKEN'}{down} "
            f"({sum(self.seconds.values()):.0f} s: {', '.join(f'{k} {v:.0f}' for k, v in self.seconds.items())})"
        )


class _Laps:
    """Adds the wall time since the previous lap to a phase's total."""

    def __init__(self, totals: dict[str, float]) -> None:
        self.totals = totals
        self.mark = time.monotonic()

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        self.totals[phase] = self.totals.get(phase, 0.0) + now - self.mark
        self.mark = now


def day_dates(days: int, *, today: date) -> list[date]:
    """The simulated days' dates: the ``days`` days ending today (day 1 .. day N = today)."""
    return [today - timedelta(days=days - d) for d in range(1, days + 1)]


def sandbox_start(days: int, *, today: date) -> date:
    """The sandbox's ``start_date`` (its day 0) for a run of ``days`` days ending ``today``: the day
    before the first simulated day, whose changes the first night loads."""
    return today - timedelta(days=days)


def at_local(day: date, t: dtime, *, now: datetime) -> datetime:
    """``day`` at local time ``t``, clamped to ``now`` (never a time in the future)."""
    return min(datetime.combine(day, t, tzinfo=SHANGHAI), now)


def profile_of(unit: str, seed: int) -> str:
    """The officer behaviour of a unit: a pure function of its code and the seed."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{unit}".encode()).digest()[:4], "big") / 2**32
    acc = 0.0
    for name, share in PROFILES:
        acc += share
        if h < acc:
            return name
    return PROFILES[-1][0]


# -- the sandbox --------------------------------------------------------------------------------


def _parse_local(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(str(text).replace("/", "-"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=SHANGHAI)


def sim_url(config: SourceConfig) -> str | None:
    """The control URL of an HTTP sandbox city (its ``base_url``), else None."""
    base = getattr(config, "base_url", None)
    return str(base).rstrip("/") if base else None


def sim_post(client: httpx.Client, url: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST to a sandbox control endpoint; None when the sandbox has no timeline (404)."""
    r = client.post(f"{url}{path}", json=body)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


def truth_from_sim(
    client: httpx.Client, url: str, entities: Sequence[str]
) -> dict[str, dict[str, Expected]] | None:
    """The sandbox's own ground truth (``GET /_sim/truth``), or None when it has none."""
    out: dict[str, dict[str, Expected]] = {}
    for entity in entities:
        r = client.get(f"{url}/_sim/truth", params={"entity": entity})
        if r.status_code == 404:
            return None
        r.raise_for_status()
        out[entity] = {
            str(i["id"]): Expected(
                _parse_local(i.get("updated_at")),
                i.get("outcome"),
                bool(i.get("present", True)),
                _parse_local(i.get("accept_from")),
            )
            for i in r.json()["items"]
            if i.get("id") not in (None, "")
        }
    return out


def truth_from_source(config: SourceConfig) -> dict[str, dict[str, Expected]]:
    """Every record the source serves now, read through the connector from the beginning: the
    latest version of each id (what must be stored, unless it is quarantined)."""
    from connectors.sources import open_source

    out: dict[str, dict[str, Expected]] = {}
    with open_source(config) as src:
        for entity in config.entities:
            mapping = config.mapping[entity]
            id_field, at_field = mapping["source_record_id"], mapping.get("source_updated_at")
            seen: dict[str, Expected] = {}
            for page in src.pages(entity, since=None):
                for row in page.records:
                    rid = str(row.get(id_field) or "").strip()
                    if not rid:
                        continue
                    version = _parse_local(row.get(at_field)) if at_field else None
                    old = seen.get(rid)
                    if old is None or (version and old.version and version > old.version):
                        seen[rid] = Expected(version)
            out[entity] = seen
    return out


# -- officers ------------------------------------------------------------------------------------


def _role_for(unit: str) -> str:
    from geodata.codes import level_of

    return {1: "province", 2: "city", 3: "county", 4: "town", 5: "community"}[int(level_of(unit))]


#: The key of a case owner the simulation acts as: a unit's 12-digit code, or ``officer:ID`` for a
#: roster grid officer (``officer.id``) owning cases of its cells.
OFFICER_KEY = "officer:"


class Officers:
    """Simulated officers acting through the web API over HTTP, each by its profile: the unit
    accounts (one per owning union unit) and the roster's grid officers, whose accounts are made
    the way ``gridflow users add --officer ID`` makes them (:func:`grid.accounts.users.add_user`
    with ``officer=``) so their scope and cells follow the synced roster. One account and one
    session per owner for the whole run, reused every day."""

    def __init__(self, web_url: str, *, seed: int) -> None:
        self.web_url = web_url.rstrip("/")
        self.seed = seed
        self.run = secrets.token_hex(3)  # one set of accounts per simulation
        self.passwords: dict[str, str] = {}
        self.logins: dict[str, str | None] = {}  # owner key -> login (None: no account possible)
        self.sessions: dict[str, tuple[str, str]] = {}  # owner key -> (cookie header, csrf)
        #: roster officers whose account could not be made (e.g. left the roster since), by reason
        self.refused: dict[str, str] = {}
        self.client = httpx.Client(timeout=30.0)

    def close(self) -> None:
        self.client.close()

    def _account(self, key: str) -> str | None:
        """The owner's simulated account (created on first use), or None when it cannot have one."""
        if key in self.logins:
            return self.logins[key]
        from grid.accounts.access import Role
        from grid.accounts.users import AccountError, add_user
        from grid.store.db import connect, transaction

        password = secrets.token_urlsafe(18)
        login: str | None = None
        conn = connect()
        try:
            if key.startswith(OFFICER_KEY):
                with transaction(conn) as cur:
                    cur.execute(
                        "SELECT source_record_id, source FROM officer WHERE id = %s",
                        (int(key[len(OFFICER_KEY) :]),),
                    )
                    row = cur.fetchone()
                if row is not None:
                    try:
                        add_user(
                            conn,
                            login=f"sim-{self.run}-o{key[len(OFFICER_KEY) :]}",
                            password=password,
                            role=Role.GRID_OFFICER,
                            scope_code=None,
                            officer=str(row[0]),
                            officer_source=None if row[1] is None else str(row[1]),
                            actor="simulate",
                        )
                        login = f"sim-{self.run}-o{key[len(OFFICER_KEY) :]}"
                    except AccountError as exc:
                        self.refused[key] = str(exc)
            elif len(key) == 12:
                login = f"sim-{self.run}-{key}"
                add_user(conn, login=login, password=password, role=Role(_role_for(key)), scope_code=key)
        finally:
            conn.close()
        self.logins[key] = login
        if login is not None:
            self.passwords[key] = password
        return login

    def _session(self, key: str) -> tuple[str, str] | None:
        if key in self.sessions:
            return self.sessions[key]
        login = self._account(key)
        if login is None:
            return None
        r = self.client.post(
            f"{self.web_url}/api/v1/session", json={"login": login, "password": self.passwords[key]}
        )
        r.raise_for_status()
        cookie = "; ".join(f"{k}={v}" for k, v in r.cookies.items())
        self.sessions[key] = (cookie, str(r.json()["csrf_token"]))
        return self.sessions[key]

    def _act(self, key: str, case_id: int, action: str, body: dict[str, Any]) -> bool:
        s = self._session(key)
        assert s is not None
        r = self.client.post(
            f"{self.web_url}/api/v1/cases/{case_id}/actions/{action}",
            json=body,
            headers={"Cookie": s[0], "X-CSRF-Token": s[1]},
        )
        return r.status_code == 200

    def _inbox(self, key: str) -> list[dict[str, Any]]:
        s = self._session(key)
        if s is None:
            return []
        r = self.client.get(f"{self.web_url}/api/v1/cases", params={"limit": 200}, headers={"Cookie": s[0]})
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()["cases"]
        if key.startswith(OFFICER_KEY):
            # an officer's "mine" also lists its cells' cases a union owns (after escalation):
            # it works only those it owns itself
            rows = [c for c in rows if len(str(c["owner_code"])) == 15]
        return rows

    def work(self, owners: Sequence[str], *, day: date) -> int:
        """Each owner's inbox worked once for ``day`` by its profile; returns the actions taken."""
        done = 0
        for key in owners:
            profile = profile_of(key, self.seed)
            if profile == "silent":
                continue
            for case in self._inbox(key):
                opened = datetime.fromisoformat(case["opened_at"]).astimezone(SHANGHAI).date()
                age = (day - opened).days
                wait = 4 if profile == "late" else 0
                state, cid, version = case["state"], int(case["id"]), int(case["version"])
                if profile == "returner" and state == "new" and case["level"] == 5:
                    done += self._act(
                        key, cid, "return_to_parent", {"version": version, "reason": "非本辖区 misrouted"}
                    )
                elif state in ("new", "returned") and age >= wait:
                    done += self._act(key, cid, "accept", {"version": version})
                elif state in ("accepted", "in_progress") and age >= wait + 1:
                    outcome = "assistance_delivered" if case["kind"] == "hardship" else "agreement"
                    done += self._act(key, cid, "resolve", {"version": version, "outcome": outcome})
        return done


# -- one day ---------------------------------------------------------------------------------------


def _count(sql: str, *args: Any) -> int:
    from grid.store.db import connect, transaction

    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0
    finally:
        conn.close()


def _owners() -> list[str]:
    """The owners of open cases, as :class:`Officers` keys: union units by code, roster officers
    as ``officer:ID``."""
    from grid.cases.states import SQL_OPEN
    from grid.store.db import connect, transaction

    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(
                f"""
                SELECT DISTINCT CASE WHEN owner_officer IS NULL THEN owner_code
                                     ELSE %s || owner_officer::text END
                FROM case_file WHERE {SQL_OPEN} AND (owner_officer IS NOT NULL OR length(owner_code) = 12)
                ORDER BY 1
                """,
                (OFFICER_KEY,),
            )
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def sync_via_deployment(sources: list[str], as_of: datetime, *, timeout: int = 1800) -> tuple[bool, str]:
    """One nightly-sync run of ``sources`` through the Prefect API's deployment, awaited."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    fr = run_deployment(
        "nightly-sync/nightly",
        parameters={"sources": sources, "full": False, "as_of": as_of.isoformat()},
        timeout=timeout,
        poll_interval=1,
    )
    assert isinstance(fr, FlowRun)
    ok = fr.state is not None and fr.state.is_completed()
    return ok, (fr.state.message if fr.state and fr.state.message else "")


_PAIR_SQL = """
SELECT a.community_code, a.code, b.code
FROM grid_cell a JOIN grid_cell b
  ON b.community_code = a.community_code AND b.code > a.code AND ST_Intersects(a.geom, b.geom)
WHERE a.valid_to IS NULL AND b.valid_to IS NULL AND a.code LIKE %s
  AND (SELECT count(*) FROM grid_cell c WHERE c.community_code = a.community_code AND c.valid_to IS NULL) >= 4
ORDER BY a.code, b.code
LIMIT 1
"""


def boundary_change_file(city_code: str, folder: Path) -> tuple[str, Path, str]:
    """A grid file for one community of the city in which two touching cells are merged (the
    second's code disappears) and a third is split in two along its centroid's meridian (the
    second half gets a new code) — what a city sends after redrawing a few cells. Returns the
    community code (the import's scope), the GeoJSON file and a one-line summary."""
    import json

    from geodata.codes import own_prefix
    from grid.store.db import connect, transaction

    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(_PAIR_SQL, (own_prefix(city_code) + "%",))
            row = cur.fetchone()
            if row is None:
                raise RuntimeError(f"no community of {city_code} with four cells, two of them touching")
            community, keep, gone = (str(x) for x in row)
            cur.execute(
                """
                WITH cells AS (SELECT code, name, geom FROM grid_cell
                               WHERE community_code = %(c)s AND valid_to IS NULL),
                split AS (SELECT code FROM cells WHERE code NOT IN (%(k)s, %(g)s) ORDER BY code LIMIT 1),
                cut AS (
                    SELECT s.code, (ST_Dump(ST_Split(c.geom, ST_SetSRID(ST_MakeLine(
                               ST_MakePoint(ST_X(ST_Centroid(c.geom)), ST_YMin(c.geom) - 1),
                               ST_MakePoint(ST_X(ST_Centroid(c.geom)), ST_YMax(c.geom) + 1)), 4326)))).geom AS part
                    FROM split s JOIN cells c USING (code)
                )
                SELECT code, name, ST_AsGeoJSON(ST_Multi(geom)) FROM cells
                 WHERE code NOT IN (%(k)s, %(g)s) AND code NOT IN (SELECT code FROM split)
                UNION ALL
                SELECT %(k)s, (SELECT name FROM cells WHERE code = %(k)s),
                       ST_AsGeoJSON(ST_Multi(ST_Union((SELECT geom FROM cells WHERE code = %(k)s),
                                                      (SELECT geom FROM cells WHERE code = %(g)s))))
                UNION ALL
                SELECT CASE WHEN row_number() OVER (ORDER BY ST_XMin(part)) = 1 THEN code
                            ELSE %(c)s || lpad(((SELECT max(right(code, 3)::int) FROM cells) + 1)::text, 3, '0') END,
                       'split ' || code, ST_AsGeoJSON(ST_Multi(part))
                FROM cut
                """,
                {"c": community, "k": keep, "g": gone},
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    features = [
        {"type": "Feature", "properties": {"code": code, "name": name}, "geometry": json.loads(geom)}
        for code, name, geom in rows
    ]
    path = folder / f"cells-{community}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    split = sorted(str(r[0]) for r in rows if str(r[1]).startswith("split "))
    return community, path, f"merged {gone} into {keep}; split {split[0]} into {', '.join(split)}"


def boundary_change(city_code: str, folder: Path, *, valid_from: date) -> str:
    """Redraw a few cells of the city through ``gridflow cells import FILE --commit`` (the real
    command: diff, checks, new version, open cases re-routed with their events)."""
    import subprocess
    import sys

    community, path, summary = boundary_change_file(city_code, folder)
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("gridflow")),
            "cells",
            "import",
            str(path),
            "--scope",
            community,
            "--valid-from",
            valid_from.isoformat(),
            "--commit",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cells import failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return f"{summary} ({proc.stdout.strip().splitlines()[-1]})"


def sweep_at(now: datetime) -> dict[str, int]:
    """The escalation sweep at simulated time ``now`` (the function the deployment wraps)."""
    from grid.cases.store import rules_from_settings
    from grid.cases.sweep import sweep
    from grid.settings import FLOWS_ROLE
    from grid.store.db import connect

    conn = connect(role=FLOWS_ROLE)
    try:
        r = sweep(conn, now=now, rules=rules_from_settings())
        return {"escalated": r.escalated, "notices": r.notices, "steps": r.steps}
    finally:
        conn.close()


def failed_sources(as_of: datetime) -> set[str]:
    """The sources whose sync run of the night ``as_of`` did not complete."""
    from grid.store.db import connect, transaction

    conn = connect()
    try:
        with transaction(conn) as cur:
            cur.execute(
                "SELECT source FROM sync_run WHERE started_at = %s AND status <> 'completed'", (as_of,)
            )
            return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


def stale_sources(names: Sequence[str], *, now: datetime) -> dict[str, str]:
    """The sources the stale-source rule (``config/alerts.toml`` freshness, what ``/health`` and
    the alert automation use) flags at simulated time ``now``: name -> status and age."""
    from grid.monitoring.alert_rules import load_alerts
    from grid.store.db import connect, transaction
    from grid.sync.health import sources_health

    conn = connect()
    try:
        with transaction(conn) as cur:
            rows = sources_health(
                cur,
                prefix="",
                now=now,
                limits=load_alerts().freshness,
                runs_per_source=1,
                with_quarantine=False,
            )
    finally:
        conn.close()
    return {
        h.name: f"{h.status} {h.age_hours:.0f} h" if h.age_hours is not None else h.status
        for h in rows
        if h.name in names and h.status != "ok"
    }


def coverage_of(day: date, *, now: datetime) -> None:
    from grid.monitoring.coverage import as_of_for, compute_snapshot
    from grid.settings import FLOWS_ROLE
    from grid.store.db import connect

    snapshot_date, as_of = as_of_for(day, now=now, tz=SHANGHAI)
    conn = connect(role=FLOWS_ROLE)
    try:
        compute_snapshot(conn, snapshot_date=snapshot_date, as_of=as_of)
    finally:
        conn.close()


def check_all(
    truths: dict[str, Truth], *, swept_until: datetime | None, snapshot_date: date, log_files: Sequence[Path]
) -> list[Check]:
    """Every invariant of :mod:`grid.monitoring.invariants`, in order."""
    from grid.monitoring import invariants as inv
    from grid.store.db import connect

    conn = connect()
    try:
        checks = [inv.records_accounted(conn, source=s, truth=t) for s, t in sorted(truths.items())]
        records = Check(checks[0].rule if checks else "records")
        for c in checks:
            records.checked += c.checked
            for e in c.examples:
                records.breach(e)
            records.breaches = sum(c.breaches for c in checks)
        return [
            records,
            inv.one_open_case_per_party(conn),
            inv.escalation_steps_once(conn, swept_until=swept_until),
            inv.hash_chains_verify(conn),
            inv.ledger_matches_events(conn),
            inv.coverage_matches_base_tables(conn, snapshot_date=snapshot_date),
            inv.no_plaintext_pii(conn, log_files=log_files),
        ]
    finally:
        conn.close()


def table(checks: Sequence[Check]) -> Iterator[str]:
    """The invariants as a text table: rule, checked, breaches, first examples."""
    yield f"  {'invariant':<72} {'checked':>8} {'broken':>7}"
    for c in checks:
        yield f"  {c.rule:<72} {c.checked:>8,} {c.breaches:>7,}{'' if c.ok else '  <-- ' + '; '.join(c.examples)}"


@dataclass
class Plan:
    days: int
    sources: list[SourceConfig]
    seed: int = 7
    officers_url: str | None = None
    outage_source: str | None = None
    outage_days: tuple[int, ...] = ()
    log_files: tuple[Path, ...] = ()
    #: (day, source): redraw a few cells of that source's city before that day's night
    boundary: tuple[int, str] | None = None
    work_dir: Path | None = None
    sync: Callable[[list[str], datetime], tuple[bool, str]] = sync_via_deployment
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def simulate(plan: Plan, echo: Callable[[str], None]) -> list[DayStats]:
    """Run the simulated days; returns each day's stats (a day's checks say whether it held)."""
    names = [c.name for c in plan.sources]
    today = local_day(plan.now(), SHANGHAI)
    dates = day_dates(plan.days, today=today)
    start = sandbox_start(plan.days, today=today)
    officers = Officers(plan.officers_url, seed=plan.seed) if plan.officers_url else None
    client = httpx.Client(timeout=60.0)
    out: list[DayStats] = []
    echo(f"simulating {plan.days} days {dates[0]} .. {dates[-1]} of {', '.join(names)} (seed {plan.seed})")
    try:
        for n, day in enumerate(dates, 1):
            stats = DayStats(n, day)
            # the night of ``day`` loads the city's day before: sandbox day n - 1 (day 0 = the
            # initial load, everything before the first simulated day)
            sandbox_day = {"day": n - 1, "date": (start + timedelta(days=n - 1)).isoformat()}
            for c in plan.sources:
                url = sim_url(c)
                if url is None:
                    continue
                sim_post(client, url, "/_sim/day", sandbox_day)
                if c.name == plan.outage_source:
                    sim_post(client, url, "/_sim/outage", {"down": n in plan.outage_days})
            opened0 = _count("SELECT count(*) FROM case_file")
            closed0 = _count("SELECT count(*) FROM case_event WHERE action = 'resolve'")
            loaded0 = _count("SELECT coalesce(sum(loaded), 0) FROM sync_run")
            lap = _Laps(stats.seconds)
            if plan.boundary is not None and plan.boundary[0] == n:
                city = next(c.city_code for c in plan.sources if c.name == plan.boundary[1])
                try:
                    stats.boundary = boundary_change(city, plan.work_dir or Path("."), valid_from=day)
                except RuntimeError as exc:
                    stats.boundary = f"skipped: {exc}"
                echo(f"day {n:>2} {day.isoformat()}: grid change in {plan.boundary[1]}: {stats.boundary}")
                lap("cells")
            ok, message = plan.sync(names, at_local(day, SYNC_HOUR, now=plan.now()))
            if not ok:
                stats.failed_sources = [message[:120] or "nightly sync failed"]
            stats.records = _count("SELECT coalesce(sum(loaded), 0) FROM sync_run") - loaded0
            stats.opened = _count("SELECT count(*) FROM case_file") - opened0
            lap("sync")
            swept_until = None
            for hour in SWEEP_HOURS:
                if officers is not None and hour == SWEEP_HOURS[0]:
                    officers.work(_owners(), day=day)
                    lap("officers")
                swept_until = at_local(day, hour, now=plan.now())
                r = sweep_at(swept_until)
                stats.escalated += r["escalated"]
                stats.notices += r["notices"]
                lap("sweep")
            if swept_until is not None:
                stats.stale = stale_sources(names, now=swept_until)
            stats.closed = _count("SELECT count(*) FROM case_event WHERE action = 'resolve'") - closed0
            coverage_of(day, now=plan.now())
            lap("coverage")
            # a city whose night failed (its system down, or a night the sync refused) has its
            # records pending, not lost: they are checked after its next good night
            failed = failed_sources(at_local(day, SYNC_HOUR, now=plan.now()))
            stats.deferred = sorted(failed)
            truths: dict[str, Truth] = {}
            for c in plan.sources:
                if c.name in failed:
                    continue
                url = sim_url(c)
                truth = truth_from_sim(client, url, list(c.entities)) if url else None
                truths[c.name] = truth if truth is not None else truth_from_source(c)
            stats.checks = check_all(
                truths, swept_until=swept_until, snapshot_date=day, log_files=plan.log_files
            )
            lap("checks")
            echo(stats.line())
            if not all(c.ok for c in stats.checks):
                for line in table(stats.checks):
                    echo(line)
            out.append(stats)
    finally:
        client.close()
        if officers is not None:
            officers.close()
    if out:
        echo("invariants at the end of the last day:")
        for line in table(out[-1].checks):
            echo(line)
    return out


# -- the command -----------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``gridflow simulate`` to the CLI."""

    @app.command("simulate")
    def simulate_command(
        days: int = typer.Option(30, "--days", min=1, max=366, help="simulated days, ending today"),
        cities: str = typer.Option(
            "", "--cities", help="source names, comma-separated (default: all enabled)"
        ),
        seed: int = typer.Option(
            7, "--seed", help="seed of the officers' behaviour (the sandbox has its own)"
        ),
        volume: str = typer.Option(
            "small", "--volume", help="small | demo (GRIDFLOW_SANDBOX_VOLUME of the sandbox)"
        ),
        officers: bool = typer.Option(True, help="simulated officers act through the web API"),
        outage: str = typer.Option("", "--outage", help="source down for two nights mid-run (default: none)"),
        boundary: str = typer.Option(
            "",
            "--boundary",
            help="source whose city redraws a few cells a third into the run (default: none)",
        ),
    ) -> None:
        """Replay N province days through the real Prefect deployment, checking every invariant daily."""
        import os

        from connectors.config import load_all_sources
        from grid.settings import get_settings
        from gridflow_cli.common import fail
        from gridflow_cli.main import _ensure_deployed, db_up, services_up
        from gridflow_cli.services import logfile, prefect_env

        if volume not in VOLUMES:
            fail(f"--volume must be one of {', '.join(VOLUMES)}")
        settings = get_settings()
        configs = load_all_sources(settings.sources_dir)
        wanted = [x.strip() for x in cities.split(",") if x.strip()]
        unknown = sorted(set(wanted) - {c.name for c in configs})
        if unknown:
            fail(f"unknown source(s): {', '.join(unknown)}")
        chosen = [c for c in configs if (c.name in wanted if wanted else c.enabled)]
        for option, value in (("--outage", outage), ("--boundary", boundary)):
            if value and value not in {c.name for c in chosen}:
                fail(f"{option} names {value!r}, which is not simulated")
        db_up()
        from flows.pipeline import current_cell_version

        missing = [c.city_code for c in chosen if not current_cell_version(c.city_code)]
        if missing:
            fail(
                f"no grid cells loaded for {', '.join(missing)}: run `gridflow world load --city CODE` first"
            )
        services_up(["prefect", "web"])
        _ensure_deployed()
        services_up(["worker"])
        os.environ.update(prefect_env(settings))
        mid = max(1, (days - 1) // 2)  # two nights down mid-run, the next night catches up
        work = settings.state_dir / "simulate"
        work.mkdir(parents=True, exist_ok=True)
        with (
            province_sandbox(settings, chosen, days=days, seed=seed, volume=VOLUMES[volume]) as sandbox_log,
            paused("escalation-sweep/every-15-minutes"),
        ):
            result = simulate(
                Plan(
                    days=days,
                    sources=chosen,
                    seed=seed,
                    officers_url=f"http://127.0.0.1:{settings.web_port}" if officers else None,
                    outage_source=outage or None,
                    outage_days=(mid, mid + 1) if outage else (),
                    boundary=(max(1, days // 3), boundary) if boundary else None,
                    work_dir=work,
                    log_files=(sandbox_log, *(logfile(settings, n) for n in ("prefect", "worker", "web"))),
                ),
                typer.echo,
            )
        broken = [s for s in result if not all(c.ok for c in s.checks)]
        if broken:
            fail(f"invariants broken on {len(broken)} of {len(result)} days (first: day {broken[0].day})")
        typer.echo(f"{len(result)} days simulated; every invariant held every day")


@contextmanager
def province_sandbox(
    settings: Any, sources: Sequence[SourceConfig], *, days: int, seed: int, volume: float
) -> Iterator[Path]:
    """The sandbox province for the run, started by this command in the background with its day 0
    the day before the first simulated day (``python -m connectors.sandbox province``), stopped
    afterwards (this process only). A plain ``gridflow sandbox`` on the same ports is stopped first."""
    import subprocess
    import sys

    from gridflow_cli.services import logfile, stop

    stop(settings, "sandbox")
    start = sandbox_start(days, today=local_day(datetime.now(UTC), SHANGHAI))
    log = logfile(settings, "simulate-sandbox")
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "connectors.sandbox", "province", "--sources-dir", str(settings.sources_dir),
            "--seed", str(seed), "--volume", str(volume), "--start-date", start.isoformat(),
            "--cells", str(settings.sample_cells), "--cities", ",".join(c.name for c in sources)]  # fmt: skip
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        urls = [u for c in sources if (u := sim_url(c))]
        deadline = time.monotonic() + 600
        with httpx.Client(timeout=5.0) as client:
            for url in urls:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the sandbox province exited at start; see {log}")
                    try:
                        if client.get(f"{url}/_sim/state").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the sandbox province did not answer at {url}; see {log}")
                    time.sleep(1.0)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class paused:
    """Pause a deployment's schedule for a block (a real-time sweep would fire the simulated
    future's steps at once); resumed afterwards, whatever happened."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id: Any = None

    def __enter__(self) -> paused:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            try:
                dep = client.read_deployment_by_name(self.name)
            except Exception:
                return self
            if not dep.paused:
                self.id = dep.id
                client.pause_deployment(dep.id)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.id is None:
            return
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.resume_deployment(self.id)
