"""A sandbox province: several cities, each on its own timeline of simulated days.

The interface is written down in ``docs/SANDBOX-TIMELINE.md``. In short: every city is described
ONLY by its source file (``config/sources/<city>.toml``: code, CRS, field names, transport);
:func:`province_plans` reads those files, :class:`CityTimeline` generates the city's records from
a seed - day 0 is the initial load, each later day workers join, change and leave, enterprises
register and set up unions, case reports arrive and the city fixes some bad rows, with a few
percent of bad rows of every kind the generator knows - and keeps the ground truth of every record
ever exported (its latest update time and the outcome validation must give it).

Some people hold a job in two cities of the province: the same resident ID, a different record id
in each city; on some days both cities report a case about such a person, of the same kind.
Which people and which days is a function of the seed and the pair of cities only, so each city's
timeline computes the same plan without talking to the others.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from connectors.config import SourceConfig, load_all_sources
from connectors.problems import ProblemKind, kind_of
from connectors.reasons import Reason
from connectors.sandbox.data import SandboxDataset, SandboxRow, id_check_char
from connectors.sandbox.fixes import FIXABLE, fixed_row
from connectors.validate import CHINA_TZ, validate_enterprises, validate_workers

__all__ = [
    "CITY_SIZES",
    "EXTRA_BAD_KINDS",
    "CityPlan",
    "CityTimeline",
    "TruthItem",
    "city_plan",
    "province_plans",
]

#: Day-0 sizes at volume 1.0: (workers, enterprises, case reports) per city code.
CITY_SIZES: dict[str, tuple[int, int, int]] = {
    "420500000000": (20_000, 2_000, 300),  # 宜昌
    "421000000000": (12_000, 1_200, 200),  # 荆州
    "420600000000": (10_000, 1_000, 150),  # 襄阳
}
_DEFAULT_SIZE = (8_000, 800, 120)

# Daily rates, as shares of the city's current rows (a province's grid systems see roughly this:
# a few tenths of a percent of workers join, move or change jobs, fewer leave).
_JOIN = 0.002
_CHANGE = 0.004
_LEAVE = 0.001
_NEW_ENTERPRISE = 0.002
_UNION_SETUP = 0.01  # of enterprises without a union
_CASES = 0.03  # of the day-0 case reports
_FIX = 0.05  # of the bad worker/enterprise rows still served
_SHARED_PER_PAIR = 40  # people with jobs in both cities of a pair, at volume 1.0
_CROSS_CASES_PER_DAY = 2  # cross-city case pairs a day per pair of cities, at volume 1.0

_REASONS = frozenset(r.value for r in Reason)
_CROSS_KINDS = ("拖欠工资", "劳动合同", "社会保险", "工伤")


def _stochastic_round(x: float, rng: random.Random) -> int:
    return int(x + rng.random())


def _subseed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class CityPlan:
    """What the sandbox needs to play one city: all of it read from the city's source file."""

    source: str
    city_code: str
    crs: str
    kind: Literal["http", "file"]
    mapping: Mapping[str, Mapping[str, str]]
    entities: tuple[str, ...]
    port: int | None = None
    folder: Path | None = None
    cells_target: int = 2_000
    sizes: tuple[int, int, int] = _DEFAULT_SIZE


def city_plan(config: SourceConfig, *, cells_target: int = 2_000) -> CityPlan:
    """The plan of one source file's city (its sizes from :data:`CITY_SIZES`)."""
    port = None
    if config.kind == "http" and config.base_url:
        parts = urlsplit(config.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    return CityPlan(
        source=config.name,
        city_code=config.city_code,
        crs=config.crs,
        kind=config.kind,
        mapping={e: dict(m) for e, m in config.mapping.items()},
        entities=tuple(config.entities),
        port=port,
        folder=config.folder,
        cells_target=cells_target,
        sizes=CITY_SIZES.get(config.city_code, _DEFAULT_SIZE),
    )


def _sandboxed(config: SourceConfig) -> bool:
    if config.kind == "file":
        return True
    host = urlsplit(config.base_url or "").hostname
    return host in ("127.0.0.1", "localhost", "::1")


def province_plans(
    sources_dir: str | Path, names: Iterable[str] | None = None, *, cells_target: int = 2_000
) -> list[CityPlan]:
    """Plans of the sandboxed cities of ``sources_dir`` (HTTP sources on loopback, file drops),
    or of the named ones; an unknown name raises ``ValueError``."""
    configs = {c.name: c for c in load_all_sources(sources_dir)}
    if names is None:
        chosen = [c for c in configs.values() if c.enabled and _sandboxed(c)]
    else:
        wanted = list(names)
        unknown = [n for n in wanted if n not in configs]
        if unknown:
            raise ValueError(f"no source file for {', '.join(unknown)} in {sources_dir}")
        chosen = [configs[n] for n in wanted]
    return [city_plan(c, cells_target=cells_target) for c in sorted(chosen, key=lambda c: c.city_code)]


@dataclass(slots=True)
class TruthItem:
    """The ground truth of one record id: its latest exported version and what must become of it."""

    updated_at: datetime
    label: str
    present: bool = True
    #: the update time of the earliest version in an unbroken run of versions whose validated
    #: content equals the latest one's (gridflow's version guard does not rewrite a newer version
    #: with unchanged content, so any version in [accept_from, updated_at] is "the latest")
    accept_from: datetime | None = None

    def expected(self) -> str:
        return self.label if self.label in _REASONS else "ok"  # "inactive" officers load too

    def outcome(self, entity: str, field_of: Mapping[str, str]) -> str:
        expected = self.expected()
        if expected == "ok":
            return "stored"
        return "quarantined" if kind_of(entity, field_of.get(expected)) is ProblemKind.RECORD else "stored"


# The canonical field each generated defect sits in, per entity (what connectors/problems.py
# decides on): a worker's bad credit code is its employer's, an enterprise's is its own.
_DEFECT_FIELD: dict[str, dict[str, str]] = {
    "workers": {
        Reason.BAD_ID_FORMAT.value: "id_number",
        Reason.BAD_ID_BIRTHDATE.value: "id_number",
        Reason.MISSING_FIELD.value: "name",
        Reason.BAD_COORDINATES.value: "lon",
        Reason.BAD_ID_CHECKSUM.value: "id_number",
        Reason.BAD_USCC_CHECKSUM.value: "enterprise_uscc",
        Reason.MISSING_COORDINATES.value: "lon",
        Reason.OUT_OF_CHINA.value: "lon",
        Reason.UNKNOWN_CRS.value: "crs",
        Reason.BAD_PHONE.value: "phone",
        Reason.BAD_DATE.value: "birth_date",
    },
    "enterprises": {
        Reason.BAD_USCC_FORMAT.value: "uscc",
        Reason.BAD_VALUE.value: "union_established",
        Reason.MISSING_FIELD.value: "name",
        Reason.BAD_USCC_CHECKSUM.value: "uscc",
        Reason.MISSING_COORDINATES.value: "lon",
        Reason.OUT_OF_CHINA.value: "lon",
        Reason.UNKNOWN_CRS.value: "crs",
        Reason.BAD_PHONE.value: "legal_rep_phone",
    },
    "cases": {},  # every case field is a record problem
    "grid_officers": {},  # every roster defect the generator makes is a record problem
}


#: Defects the timeline adds beside those of :mod:`connectors.sandbox.data` (which the single-city
#: sandbox keeps as they are), so the province carries every reason code a row can have:
#: entity -> (reason, canonical field spoiled, how).
EXTRA_BAD_KINDS: dict[str, tuple[Reason, ...]] = {
    "workers": (Reason.BAD_ID_FORMAT, Reason.BAD_ID_BIRTHDATE, Reason.MISSING_FIELD, Reason.BAD_COORDINATES),
    "enterprises": (Reason.BAD_USCC_FORMAT, Reason.BAD_VALUE, Reason.MISSING_FIELD),
    "cases": (Reason.MISSING_FIELD, Reason.BAD_VALUE),
}
_EXTRA_PER_DAY = 0.15  # chance a day's new rows carry one defect of each extra kind


@dataclass(frozen=True, slots=True)
class SharedPerson:
    """Someone with a job in two cities (generated identity; never real)."""

    id_number: str
    name: str
    gender: str
    birth_date: str
    cities: tuple[str, str]  # city codes, sorted


@dataclass
class _Snapshot:
    """A dataset-shaped view of a timeline's current export (what the HTTP app serves)."""

    city_code: str
    crs: str
    mapping: dict[str, dict[str, str]]
    by_entity: dict[str, list[SandboxRow]] = field(default_factory=dict)

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(self.by_entity)

    def rows(self, entity: str) -> list[SandboxRow]:
        return self.by_entity[entity]


class CityTimeline:
    """One city's records, day by day, from a seed (see the module docstring).

    ``province`` lists the city codes of the whole province (for the cross-city people);
    ``world`` is the city's :class:`geodata.world.SampleWorld` (built when not given).
    """

    def __init__(
        self,
        plan: CityPlan,
        *,
        seed: int,
        volume: float,
        start_date: date,
        province: Sequence[str] = (),
        world: Any = None,
        bad_fraction: float = 0.03,
    ) -> None:
        if volume <= 0:
            raise ValueError("volume must be positive")
        if world is None:
            from geodata.world import build_sample_world

            world = build_sample_world(plan.city_code, cells_target=plan.cells_target)
        self.plan = plan
        self.seed = seed
        self.volume = volume
        self.start_date = start_date
        self.bad_fraction = bad_fraction
        self.day = 0
        self._cells = [(c.code, c.geometry) for c in world.cells]
        self._names = {d.code: d.name for d in world.divisions}
        self._mapping = {e: dict(m) for e, m in plan.mapping.items()}
        self._province = sorted({*province, plan.city_code})
        n_workers, n_enterprises, n_cases = plan.sizes
        self._n_cases0 = max(30, round(n_cases * volume))
        base = SandboxDataset(
            self._cells,
            city_code=plan.city_code,
            n_workers=max(10, round(n_workers * volume)),
            n_enterprises=max(3, round(n_enterprises * volume)),
            n_cases=self._n_cases0,
            seed=_subseed(seed, plan.city_code, "day0"),
            bad_fraction=bad_fraction,
            crs=plan.crs,
            as_of=datetime.combine(start_date, time(), CHINA_TZ),
            names=self._names,
            mapping=self._mapping,
            every_bad_kind=True,
            roster="grid_officers" in plan.entities,  # h16's roster generator, over this city's cells
        )
        #: entity -> record id -> the row served now (insertion = first export order)
        self._current: dict[str, dict[str, SandboxRow]] = {
            e: {} for e in ("enterprises", "workers", "grid_officers", "cases")
        }
        self._truth: dict[str, dict[str, TruthItem]] = {e: {} for e in self._current}
        self._today: dict[str, list[SandboxRow]] = {e: [] for e in self._current}
        extra = random.Random(f"gridflow-timeline:{seed}:{plan.city_code}:extra0")
        for entity in base.entities:
            self._put(entity, self._spoil_extra(entity, base.rows(entity), extra, each=1.0))
        self._shared = self._shared_people()
        window0 = (base.as_of - timedelta(days=365), base.as_of)
        self._add_shared_workers(window0)
        self._put("cases", self._cross_city_cases(0, window0))
        self._snapshot: _Snapshot | None = None

    # -- public ---------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return self.plan.source

    def date_of(self, day: int) -> date:
        return self.start_date + timedelta(days=day)

    @property
    def date(self) -> date:
        return self.date_of(self.day)

    def advance(self, day: int) -> None:
        """Generate every day after the current one up to ``day`` (forward only)."""
        if day < self.day:
            raise ValueError(f"the timeline is at day {self.day}; it only moves forward")
        while self.day < day:
            self.day += 1
            self._today = {e: [] for e in self._current}
            self._generate_day(self.day)
            self._snapshot = None

    def rows(self, entity: str) -> list[SandboxRow]:
        """The rows served now, ordered by (update time, record id)."""
        return sorted(self._current[entity].values(), key=lambda r: (r.updated_at, r.record_id))

    def rows_of_today(self, entity: str) -> list[SandboxRow]:
        """The rows new or changed on the current day (day 0: every row), in export order."""
        if self.day == 0:
            return self.rows(entity)
        return sorted(self._today[entity], key=lambda r: (r.updated_at, r.record_id))

    def snapshot(self) -> _Snapshot:
        """A dataset-shaped view of the current export (for :func:`connectors.sandbox.app.create_app`)."""
        if self._snapshot is None:
            self._snapshot = _Snapshot(
                city_code=self.plan.city_code,
                crs=self.plan.crs,
                mapping=self._mapping,
                by_entity={e: self.rows(e) for e in self.plan.entities},
            )
        return self._snapshot

    def truth(self, entity: str) -> list[dict[str, Any]]:
        """Every record id ever exported: latest update time, expected reason, outcome, presence."""
        if entity not in self._truth:
            raise KeyError(f"unknown entity {entity!r}")
        fields = _DEFECT_FIELD[entity]
        return [
            {
                "id": rid,
                "updated_at": t.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                "expected": t.expected(),
                "outcome": t.outcome(entity, fields),
                "present": t.present,
                "accept_from": (t.accept_from or t.updated_at).strftime("%Y-%m-%d %H:%M:%S"),
            }
            for rid, t in sorted(self._truth[entity].items())
        ]

    def counts(self) -> dict[str, int]:
        return {e: len(self._current[e]) for e in self.plan.entities}

    @property
    def shared_people(self) -> list[SharedPerson]:
        """The cross-city people of this city (both cities compute the same list)."""
        return list(self._shared)

    # -- state ----------------------------------------------------------------------------------

    def _put(self, entity: str, rows: Iterable[SandboxRow]) -> None:
        for r in rows:
            old = self._current[entity].get(r.record_id)
            accept_from = r.updated_at
            if old is not None and self._same_content(entity, old.row, r.row):
                previous = self._truth[entity][r.record_id]
                accept_from = previous.accept_from or previous.updated_at
            self._current[entity][r.record_id] = r
            self._truth[entity][r.record_id] = TruthItem(r.updated_at, r.label, accept_from=accept_from)
            self._today[entity].append(r)

    def _same_content(self, entity: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """Whether two versions validate to the same record (update time aside): what a load
        stores of them is the same."""
        if entity not in ("workers", "enterprises"):
            return False
        validate: Callable[..., tuple[Sequence[Any], Sequence[Any]]] = (
            validate_workers if entity == "workers" else validate_enterprises
        )
        today = self.date_of(self.day)
        a, rej_a = validate([old], mapping=self._mapping[entity], default_crs=self.plan.crs, today=today)
        b, rej_b = validate([new], mapping=self._mapping[entity], default_crs=self.plan.crs, today=today)
        if rej_a or rej_b or not a or not b:
            return False
        # a field problem empties the field: the stored content is the record without its problems
        before = replace(a[0], source_updated_at=b[0].source_updated_at, problems=())
        return bool(before == replace(b[0], problems=()))

    def _leave(self, entity: str, record_id: str) -> None:
        del self._current[entity][record_id]
        self._truth[entity][record_id].present = False

    def _f(self, entity: str, canonical: str) -> str:
        return self._mapping[entity][canonical]

    def _fresh(
        self, tag: str, window: tuple[datetime, datetime], *, workers: int, enterprises: int, cases: int
    ) -> SandboxDataset:
        """New rows drawn in ``window`` (their own seed), to become joins, donors and reports."""
        return SandboxDataset(
            self._cells,
            city_code=self.plan.city_code,
            n_workers=max(8, workers),
            n_enterprises=max(4, enterprises),
            n_cases=cases,
            seed=_subseed(self.seed, self.plan.city_code, tag),
            bad_fraction=self.bad_fraction,
            crs=self.plan.crs,
            as_of=window[1],
            names=self._names,
            mapping=self._mapping,
            window=window,
            stochastic_bad=True,
        )

    def _spoil_extra(
        self, entity: str, rows: Sequence[SandboxRow], rng: random.Random, *, each: float = _EXTRA_PER_DAY
    ) -> list[SandboxRow]:
        """``rows`` with, for each kind of :data:`EXTRA_BAD_KINDS`, one good row spoiled with it
        (with probability ``each``)."""
        out = list(rows)
        kinds = EXTRA_BAD_KINDS.get(entity, ())
        good = [i for i, r in enumerate(out) if r.label == "ok"]
        rng.shuffle(good)
        m = self._mapping[entity]
        for reason in kinds:
            if not good or rng.random() >= each:
                continue
            i = good.pop()
            row = dict(out[i].row)
            if reason is Reason.BAD_ID_FORMAT:
                row[m["id_number"]] = str(row[m["id_number"]])[:17]
            elif reason is Reason.BAD_ID_BIRTHDATE:
                body = str(row[m["id_number"]])[:10] + "13" + str(row[m["id_number"]])[12:17]
                row[m["id_number"]] = body + id_check_char(body)
            elif reason is Reason.MISSING_FIELD:
                row[m["kind" if entity == "cases" else "name"]] = ""
            elif reason is Reason.BAD_COORDINATES:
                row[m["lon"]] = "东经" + str(row[m["lon"]])
            elif reason is Reason.BAD_USCC_FORMAT:
                row[m["uscc"]] = str(row[m["uscc"]])[:17] + "I"  # I is outside GB 32100
            elif reason is Reason.BAD_VALUE:
                if entity == "cases":
                    row[m["workers_affected"]] = "0"
                else:
                    row[m["union_established"]] = "不详"
            out[i] = replace(out[i], row=row, label=reason.value)
        return out

    def _good(self, entity: str) -> list[SandboxRow]:
        return [r for r in self._current[entity].values() if r.label not in _REASONS]

    # -- cross-city people ----------------------------------------------------------------------

    def _shared_people(self) -> list[SharedPerson]:
        people: list[SharedPerson] = []
        me = self.plan.city_code
        for other in self._province:
            if other == me:
                continue
            pair = (min(me, other), max(me, other))
            rng = random.Random(f"gridflow-province:{self.seed}:{pair[0]}:{pair[1]}")
            n = max(2, round(_SHARED_PER_PAIR * self.volume))
            for _ in range(n):
                home = rng.choice(pair)[:4] + "02"  # a real district code of either city
                birth = date(1965, 1, 1) + timedelta(days=rng.randrange(0, 36 * 365))
                male = rng.random() < 0.55
                seq = rng.randrange(0, 500) * 2 + (1 if male else 0)
                body = f"{home}{birth:%Y%m%d}{seq:03d}"
                surname = rng.choice("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
                given = rng.choice("伟强军磊洋勇杰涛斌超" if male else "芳娜敏静丽艳娟霞燕玲")
                people.append(
                    SharedPerson(
                        id_number=body + id_check_char(body),
                        name=surname + given + rng.choice("明华平文英兰"),
                        gender="1" if male else "2",
                        birth_date=f"{birth:%Y-%m-%d}",
                        cities=pair,
                    )
                )
        return people

    def _add_shared_workers(self, window: tuple[datetime, datetime]) -> None:
        if not self._shared:
            return
        donors = self._fresh("shared", window, workers=len(self._shared), enterprises=1, cases=0).rows(
            "workers"
        )
        firms = [r.row[self._f("enterprises", "uscc")] for r in self._good("enterprises")]
        rng = random.Random(f"gridflow-timeline:{self.seed}:{self.plan.city_code}:shared")
        rows = []
        for person, donor in zip(self._shared, donors, strict=False):
            row = dict(donor.row)
            row[self._f("workers", "id_number")] = person.id_number
            row[self._f("workers", "name")] = person.name
            row[self._f("workers", "gender")] = person.gender
            row[self._f("workers", "birth_date")] = person.birth_date
            row[self._f("workers", "enterprise_uscc")] = rng.choice(firms) if firms else ""
            label = (
                donor.label
                if donor.label not in (Reason.BAD_ID_CHECKSUM.value, Reason.BAD_DATE.value)
                else "ok"
            )
            if label == Reason.BAD_USCC_CHECKSUM.value:
                label = "ok"  # the employer was replaced by a valid one
            rows.append(replace(donor, row=row, label=label))
        self._put("workers", rows)

    def _cross_city_cases(self, day: int, window: tuple[datetime, datetime]) -> list[SandboxRow]:
        """Reports about this city's cross-city people due on ``day`` (the other city of each
        pair draws the same people and kinds from the same generator)."""
        me = self.plan.city_code
        worker_field = self._f("workers", "id_number")
        employer = {
            r.row[worker_field]: r.row[self._f("workers", "enterprise_uscc")]
            for r in self._current["workers"].values()
        }
        due: list[tuple[SharedPerson, str]] = []
        for other in self._province:
            if other == me:
                continue
            pair = (min(me, other), max(me, other))
            people = [p for p in self._shared if p.cities == pair]
            rng = random.Random(f"gridflow-province:{self.seed}:{pair[0]}:{pair[1]}:day{day}")
            if day == 0:
                n = max(2, round(3 * _CROSS_CASES_PER_DAY * self.volume))
            else:
                n = _stochastic_round(max(0.5, _CROSS_CASES_PER_DAY * self.volume), rng)
            for person in rng.sample(people, min(n, len(people))):
                due.append((person, rng.choice(_CROSS_KINDS)))
        if not due:
            return []
        donors = [
            r
            for r in self._fresh(f"cross{day}", window, workers=4, enterprises=2, cases=4 * len(due)).rows(
                "cases"
            )
            if r.label == "ok"
        ]
        m = self._mapping["cases"]
        out = []
        for (person, kind), donor in zip(due, donors, strict=False):
            row = dict(donor.row)
            row[m["kind"]] = kind
            row[m["severity"]] = "一般"
            row[m["hardship_grade"]] = ""
            row[m["worker_id_number"]] = person.id_number
            row[m["enterprise_uscc"]] = employer.get(person.id_number, "")
            row[m["workers_affected"]] = "1"
            if kind != "拖欠工资":
                row[m["amount"]] = ""
            row[m["description"]] = f"反映单位{kind}问题，请求协调处理。"
            out.append(replace(donor, row=row, label="ok"))
        return out

    # -- one day --------------------------------------------------------------------------------

    def _generate_day(self, day: int) -> None:
        start = datetime.combine(self.date_of(day), time(), CHINA_TZ)
        window = (start, start + timedelta(days=1))
        rng = random.Random(f"gridflow-timeline:{self.seed}:{self.plan.city_code}:{day}")
        n_workers = len(self._current["workers"])
        n_firms = len(self._current["enterprises"])
        # (a floor of half an event a day, so a CI-sized city still sees every kind of change)
        joins = _stochastic_round(max(0.5, n_workers * _JOIN), rng)
        changes = _stochastic_round(max(0.5, n_workers * _CHANGE), rng)
        leaves = _stochastic_round(max(0.5, n_workers * _LEAVE), rng)
        new_firms = _stochastic_round(max(0.5, n_firms * _NEW_ENTERPRISE), rng)
        cases = _stochastic_round(max(1.5, self._n_cases0 * _CASES), rng)
        fresh = self._fresh(f"day{day}", window, workers=joins + changes, enterprises=new_firms, cases=cases)

        def when() -> datetime:
            return start + timedelta(seconds=rng.randrange(86_400))

        # enterprises: registrations, unions set up, fixes
        self._put("enterprises", self._spoil_extra("enterprises", fresh.rows("enterprises")[:new_firms], rng))
        union_f = self._f("enterprises", "union_established")
        no_union = [r for r in self._good("enterprises") if str(r.row.get(union_f)) == "0"]
        n_union = _stochastic_round(max(0.5, len(no_union) * _UNION_SETUP), rng)
        updates = []
        for r in rng.sample(no_union, min(n_union, len(no_union))):
            at = when()
            row = {**r.row, union_f: "1", self._f("enterprises", "source_updated_at"): _fmt(at)}
            updates.append(replace(r, updated_at=at, row=row))
        self._put("enterprises", updates)
        self._fix("enterprises", rng, when)

        # workers: joins (employed by this city's enterprises), changes, leaves, fixes
        firms = [r.row[self._f("enterprises", "uscc")] for r in self._good("enterprises")]
        employer_f = self._f("workers", "enterprise_uscc")
        new_workers = fresh.rows("workers")
        joined = []
        for r in new_workers[:joins]:
            row = dict(r.row)
            if row.get(employer_f) and r.label != Reason.BAD_USCC_CHECKSUM.value and firms:
                row[employer_f] = rng.choice(firms)
            joined.append(replace(r, row=row))
        self._put("workers", self._spoil_extra("workers", joined, rng))
        self._change_workers(new_workers[joins : joins + changes], firms, rng, when)
        present = sorted(self._current["workers"])
        shared_ids = {p.id_number for p in self._shared}
        id_f = self._f("workers", "id_number")
        candidates = [rid for rid in present if self._current["workers"][rid].row.get(id_f) not in shared_ids]
        for rid in rng.sample(candidates, min(leaves, len(candidates))):
            self._leave("workers", rid)
        self._fix("workers", rng, when)

        # case reports about this city's workers and enterprises, then the cross-city ones
        if "cases" in fresh.entities:
            self._put("cases", self._spoil_extra("cases", self._day_cases(fresh.rows("cases"), rng), rng))
        self._put("cases", self._cross_city_cases(day, window))

    def _change_workers(
        self, donors: Sequence[SandboxRow], firms: Sequence[str], rng: random.Random, when: Any
    ) -> None:
        m = self._mapping["workers"]
        good = sorted(r.record_id for r in self._good("workers"))
        chosen = rng.sample(good, min(len(donors), len(good)))
        place = [m[k] for k in ("address", "lon", "lat", "crs") if k in m]
        spoiled_fields = {
            Reason.BAD_PHONE.value: [m["phone"]],
            Reason.MISSING_COORDINATES.value: place,
            Reason.OUT_OF_CHINA.value: place,
            Reason.UNKNOWN_CRS.value: place,
            Reason.BAD_USCC_CHECKSUM.value: [m["enterprise_uscc"]],
        }
        out = []
        for rid, donor in zip(chosen, donors, strict=False):
            old = self._current["workers"][rid]
            row = dict(old.row)
            label = old.label
            if donor.label in spoiled_fields:  # the city typed the change in wrong
                for f in spoiled_fields[donor.label]:
                    row[f] = donor.row[f]
                label = donor.label
            else:
                what = rng.choice(("address", "employer", "phone"))
                if what == "address":
                    for f in place:
                        row[f] = donor.row[f]
                    if donor.label == "address_only":
                        label = "address_only"
                elif what == "employer" and firms:
                    row[m["enterprise_uscc"]] = rng.choice(firms)
                else:
                    row[m["phone"]] = donor.row[m["phone"]] if donor.label == "ok" else ""
            at = when()
            row[m["source_updated_at"]] = _fmt(at)
            out.append(replace(old, updated_at=at, row=row, label=label))
        self._put("workers", out)

    def _fix(self, entity: str, rng: random.Random, when: Any) -> None:
        bad = sorted(rid for rid, r in self._current[entity].items() if r.label in FIXABLE)
        n = _stochastic_round(len(bad) * _FIX, rng)
        if not n:
            return
        view = _Snapshot(self.plan.city_code, self.plan.crs, self._mapping, {entity: self.rows(entity)})
        fixed = []
        for rid in rng.sample(bad, min(n, len(bad))):
            at = when()
            row = fixed_row(view, entity, rid, updated_at=at)
            fixed.append(SandboxRow(at, rid, row, "ok"))
        self._put(entity, fixed)

    def _day_cases(self, rows: Sequence[SandboxRow], rng: random.Random) -> list[SandboxRow]:
        """The day's reports, about this city's own (valid) workers and enterprises."""
        m = self._mapping["cases"]
        people = [
            r.row[self._f("workers", "id_number")]
            for r in self._current["workers"].values()
            if r.label == "ok"
        ]
        firms = [r.row[self._f("enterprises", "uscc")] for r in self._good("enterprises")]
        out = []
        for r in rows:
            row = dict(r.row)
            if r.label == "ok":
                if row.get(m["worker_id_number"]) and people:
                    row[m["worker_id_number"]] = rng.choice(people)
                if row.get(m["enterprise_uscc"]) and firms:
                    row[m["enterprise_uscc"]] = rng.choice(firms)
            out.append(replace(r, row=row))
        return out


def _fmt(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")
