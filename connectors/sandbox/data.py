"""Deterministic records for the sandbox grid system, in the city's own field names.

:class:`SandboxDataset` generates what a municipal grid system (Yichang's, by default) would export:
enterprises and workers with real-format credit codes and resident IDs, Chinese names, addresses
in the city, GCJ-02 points inside the grid cells, update times spread over two years (with bulk
imports that share one timestamp, so paging must break ties), and a known share of bad rows.

With ``n_cases`` it also generates case reports (entity ``cases``): labour disputes and hardship
reports about its workers and enterprises, in the city's words (``拖欠工资``, ``苗头性问题``,
``深度困难``), some with a phone number in the free-text description, as officers write them.

Every row carries a ground-truth label in :attr:`SandboxDataset.labels`: for a bad row the
:class:`connectors.reasons.Reason` value validation must reject it with, for a good row ``"ok"``
or the messy-but-valid variant it exercises (``"address_only"``, ``"legacy_id"``, ``"fullwidth_id"``,
``"lowercase_x"``, ``"agricultural_uscc"``).

The same arguments always produce the same rows (``random.Random`` and numpy generators seeded
from ``seed`` and the entity name; string seeding is stable across runs and platforms).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import shapely
from shapely.geometry import Polygon

from connectors.reasons import Reason
from connectors.validate import CHINA_TZ, resolve_crs
from geodata.codes import chain_codes

__all__ = [
    "CASE_BAD_KINDS",
    "ENTERPRISE_BAD_KINDS",
    "WORKER_BAD_KINDS",
    "YICHANG_MAPPING",
    "DatasetLike",
    "SandboxDataset",
    "SandboxRow",
]

#: The Yichang grid system's field names (canonical -> city), as in config/sources/yichang.toml.
YICHANG_MAPPING: dict[str, dict[str, str]] = {
    "enterprises": {
        "source_record_id": "ywid",
        "source_updated_at": "gxsj",
        "uscc": "tyxydm",
        "name": "qymc",
        "union_established": "sfjh",
        "employee_count": "zgrs",
        "address": "jydz",
        "lon": "jd",
        "lat": "wd",
        "crs": "zbx",
        "legal_rep_phone": "fddbrdh",
    },
    "workers": {
        "source_record_id": "ywid",
        "source_updated_at": "gxsj",
        "id_number": "sfzh",
        "name": "xm",
        "gender": "xb",
        "birth_date": "csrq",
        "phone": "lxdh",
        "enterprise_uscc": "dwtyxydm",
        "address": "jzdz",
        "lon": "jd",
        "lat": "wd",
        "crs": "zbx",
    },
    "grid_officers": {
        "source_record_id": "wgybh",
        "source_updated_at": "gxsj",
        "name": "xm",
        "phone": "lxdh",
        "cells": "fzwg",
        "active": "zgzt",
    },
    "cases": {
        "source_record_id": "ywid",
        "source_updated_at": "gxsj",
        "kind": "ajlx",
        "reported_at": "sbsj",
        "severity": "jjcd",
        "hardship_grade": "knlb",
        "worker_id_number": "sfzh",
        "enterprise_uscc": "dwtyxydm",
        "workers_affected": "sjrs",
        "amount": "sqje",
        "description": "ajms",
        "address": "fsdz",
        "lon": "jd",
        "lat": "wd",
        "crs": "zbx",
    },
}

WORKER_BAD_KINDS: tuple[Reason, ...] = (
    Reason.BAD_ID_CHECKSUM,
    Reason.BAD_USCC_CHECKSUM,
    Reason.MISSING_COORDINATES,
    Reason.OUT_OF_CHINA,
    Reason.UNKNOWN_CRS,
    Reason.BAD_PHONE,
    Reason.BAD_DATE,
)
ENTERPRISE_BAD_KINDS: tuple[Reason, ...] = (
    Reason.BAD_USCC_CHECKSUM,
    Reason.MISSING_COORDINATES,
    Reason.OUT_OF_CHINA,
    Reason.UNKNOWN_CRS,
    Reason.BAD_PHONE,
)
CASE_BAD_KINDS: tuple[Reason, ...] = (
    Reason.UNKNOWN_CASE_KIND,
    Reason.BAD_AMOUNT,
    Reason.MISSING_PARTY,
    Reason.BAD_ID_CHECKSUM,
    Reason.BAD_DATE,
)

# Case kinds with rough shares (wage arrears is the largest group), as the city writes them.
_CASE_KINDS = (
    ("wage_arrears", "拖欠工资", 40),
    ("labour_contract", "劳动合同", 10),
    ("dismissal", "解除或终止劳动关系", 8),
    ("social_insurance", "社会保险", 10),
    ("work_injury", "工伤", 8),
    ("occupational_safety", "职业安全卫生", 4),
    ("hardship", "困难职工帮扶", 20),
)
_CASE_GRADES = ("深度困难", "相对困难", "意外致困")
_CASE_STORIES = {
    "wage_arrears": "反映{firm}拖欠{n}名职工{months}个月工资，多次讨要未果。",
    "labour_contract": "反映{firm}未依法签订书面劳动合同，要求补签并支付双倍工资。",
    "dismissal": "反映被{firm}无故辞退，未支付经济补偿金。",
    "social_insurance": "反映{firm}未为职工缴纳社会保险。",
    "work_injury": "职工在{firm}作业时受伤，单位拒绝申报工伤认定。",
    "occupational_safety": "反映{firm}车间粉尘超标，无防护用品。",
    "hardship": "职工家庭因{cause}陷入困难，申请帮扶。",
}
_HARDSHIP_CAUSES = ("重病", "意外事故", "失业", "子女就学", "自然灾害")
_BAD_KINDS_TEXT = ("其他", "投诉", "咨询")
_BAD_AMOUNTS = ("-500", "十万", "12.345", "NaN")
_BAD_REPORT_TIMES = ("2026-13-45 10:00:00", "不详", "2026-02-30 08:00:00")

# --- name and place material ----------------------------------------------------------------

# Common surnames with rough relative frequencies (per mille of the population).
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_SURNAME_WEIGHTS = [max(1.0, 75.0 / (1 + i * 0.35)) for i in range(len(_SURNAMES))]
_GIVEN_MALE = "伟强军磊洋勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆帅旭宁龙林阳建国峰成文亮志海东兵锋涛晨博"
_GIVEN_FEMALE = "芳娜敏静丽艳娟霞燕玲桂英秀兰婷雪琳慧莉倩萍红梅琴颖晶洁佳欣怡悦璐蓉薇丹凤雯琪晓露月"
_ROADS = (
    "沿江大道", "夷陵大道", "东山大道", "发展大道", "城东大道", "西陵一路", "西陵二路", "珍珠路",
    "胜利四路", "解放路", "云集路", "港窑路", "长江大道", "隆康路", "桔城路", "白龙岗路", "峡州路",
    "大公桥路", "夷兴大道", "东艳路", "求索路", "金东方路", "兴发大道", "清江大道", "丹阳路",
    "马家店路", "玉泉路",
)  # fmt: skip
_FIRM_WORDS = "三峡长江夷陵西陵清江峡州楚天鄂西宜兴昌达恒信华泰鼎盛宏远金桥新港联创众合顺通"
_INDUSTRIES = (
    "化工", "建材", "物流", "食品", "电子", "机械", "纺织", "茶业", "旅游", "建筑工程", "商贸", "餐饮管理",
    "汽车服务", "磷化工", "医药", "船舶修造", "新能源", "环保科技", "家政服务", "物业管理",
)  # fmt: skip
_FIRM_FORMS = ("有限公司", "有限责任公司", "股份有限公司")
_MOBILE_PREFIXES = tuple(
    [f"13{d}" for d in range(10)]
    + ["150", "151", "152", "153", "155", "156", "157", "158", "159", "166", "170", "173", "175"]
    + ["176", "177", "178", "180", "181", "182", "183", "185", "186", "187", "188", "189", "191"]
    + ["198", "199"]
)
# Real county codes outside the city, for migrant workers' IDs (Wuhan, Jingzhou, Enshi,
# Chongqing, Henan, Hunan, Sichuan), and Yichang's former 宜昌县 (420521, abolished 2001).
_OTHER_AREA_CODES = (
    "420102", "420111", "421002", "421023", "422801", "422822", "500101", "500233", "411302",
    "411303", "430602", "431102", "510104", "420521",
)  # fmt: skip
_UNKNOWN_CRS_VALUES = ("BJ54", "XIAN80", "北京54")
# Points well outside China's box (Tokyo, Paris, New York, Jakarta).
_ABROAD = ((139.6917, 35.6895), (2.3522, 48.8566), (-74.0060, 40.7128), (106.8456, -6.2088))
_BAD_PHONES = ("1381234567", "138123456789", "12345", "0717-123", "2345678", "+1 415 555 0100")

# Names of the Yichang chain; other units come from ``names``.
_YICHANG_NAMES = {
    "420000000000": "湖北省",
    "420500000000": "宜昌市",
    "420502000000": "西陵区",
    "420503000000": "伍家岗区",
    "420504000000": "点军区",
    "420505000000": "猇亭区",
    "420506000000": "夷陵区",
    "420525000000": "远安县",
    "420526000000": "兴山县",
    "420527000000": "秭归县",
    "420528000000": "长阳土家族自治县",
    "420529000000": "五峰土家族自治县",
    "420581000000": "宜都市",
    "420582000000": "当阳市",
    "420583000000": "枝江市",
}

_FULLWIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def id_check_char(body17: str) -> str:
    """GB 11643 MOD 11-2 check character of a 17-digit ID body."""
    c = (1 - 2 * int(body17, 13)) % 11
    return "X" if c == 10 else str(c)


def uscc_check_char(body17: str) -> str:
    """GB 32100 check character of a 17-character credit-code body."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(body17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total) % 31]


def _org_code(digits8: str) -> str:
    """GB 11714 organisation code (8 digits + its own check character), as embedded in a USCC."""
    total = sum(int(c) * w for c, w in zip(digits8, _ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return digits8 + ("X" if c == 10 else "0" if c == 11 else str(c))


def _wrong(correct: str, alphabet: str, rng: random.Random) -> str:
    return rng.choice([c for c in alphabet if c != correct])


@dataclass(frozen=True, slots=True)
class SandboxRow:
    """One exported row with the keys the sandbox API orders and filters by."""

    updated_at: datetime  # tz-aware, Asia/Shanghai, whole seconds
    record_id: str
    row: dict[str, Any]  # the city's field names -> values, as JSON would carry them
    label: str  # "ok", a variant name, or the Reason value the row must be rejected with


class DatasetLike(Protocol):
    """What the HTTP app and the fixes read of a dataset (a :class:`SandboxDataset`, or a
    timeline's current export, :class:`connectors.sandbox.province.CityTimeline`)."""

    @property
    def city_code(self) -> str: ...
    @property
    def crs(self) -> str: ...
    @property
    def mapping(self) -> dict[str, dict[str, str]]: ...
    @property
    def entities(self) -> tuple[str, ...]: ...
    def rows(self, entity: str) -> list[SandboxRow]: ...


@dataclass(frozen=True, slots=True)
class _Place:
    lon: np.ndarray
    lat: np.ndarray
    cell: np.ndarray  # index into cells per record


class SandboxDataset:
    """Generated enterprises and workers of one city, sorted by (update time, record id).

    ``cells`` are ``(15-digit cell code, WGS84 polygon)`` pairs; points are drawn inside them and
    exported in ``crs``. ``names`` adds division names (12-digit code -> name) for addresses, e.g.
    towns and communities of a :class:`geodata.world.SampleWorld`; the Yichang city and counties are
    built in. ``mapping`` defaults to Yichang's field names.
    """

    def __init__(
        self,
        cells: Sequence[tuple[str, Polygon]],
        *,
        city_code: str,
        n_workers: int = 20_000,
        n_enterprises: int = 2_000,
        seed: int = 20260101,
        bad_fraction: float = 0.03,
        crs: str = "gcj02",
        as_of: datetime,
        names: Mapping[str, str] | None = None,
        mapping: Mapping[str, Mapping[str, str]] | None = None,
        n_cases: int = 0,
        window: tuple[datetime, datetime] | None = None,
        stochastic_bad: bool = False,
        every_bad_kind: bool = False,
        roster: bool = False,
    ) -> None:
        if not cells:
            raise ValueError("need at least one cell")
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be between 0 and 1")
        if n_workers < 0 or n_enterprises < 0 or n_cases < 0 or (n_workers and not n_enterprises):
            raise ValueError("counts must be non-negative, and workers need at least one enterprise")
        if n_cases and not (n_workers and n_enterprises):
            raise ValueError("case reports need workers and enterprises to be about")
        canonical_crs = resolve_crs(crs)
        if canonical_crs is None:
            raise ValueError(f"unknown sandbox CRS {crs!r}")
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=CHINA_TZ)
        self.city_code = city_code
        self.crs = canonical_crs
        self.as_of = as_of.astimezone(CHINA_TZ).replace(microsecond=0)
        self.seed = seed
        self.bad_fraction = bad_fraction
        # ``window``: every update time falls in [start, end) instead of the two years before
        # ``as_of`` (one simulated day of a timeline); ``stochastic_bad``: the number of bad rows
        # is rounded at random and the reason codes start at a random one, so a few rows a day
        # still carry a few percent of bad rows of every kind over the days.
        self._window = window
        self._stochastic_bad = stochastic_bad
        self._every_bad_kind = every_bad_kind  # at least one bad row of each kind when n allows
        self.mapping = {e: dict(m) for e, m in (mapping or YICHANG_MAPPING).items()}
        self._cells = [(code, poly) for code, poly in cells]
        self._names = {**_YICHANG_NAMES, **(names or {})}
        self._city_word = self._names.get(city_code, "宜昌市").removesuffix("市")
        self._addr_prefix = [self._address_prefix(code) for code, _ in self._cells]
        county_codes = sorted({code[:6] for code, _ in self._cells})
        self._county_codes = county_codes

        ent_rows, usccs = self._enterprises(n_enterprises)
        wrk_rows = self._workers(n_workers, usccs)
        self._rows: dict[str, list[SandboxRow]] = {
            "enterprises": sorted(ent_rows, key=lambda r: (r.updated_at, r.record_id)),
            "workers": sorted(wrk_rows, key=lambda r: (r.updated_at, r.record_id)),
        }
        if roster:  # the roster of its cells (connectors.sandbox.roster), loaded before case reports
            from connectors.sandbox.roster import roster_rows  # roster builds on this module

            if "grid_officers" not in self.mapping:
                raise ValueError("the mapping has no 'grid_officers' field names")
            self._rows["grid_officers"] = roster_rows(
                [code for code, _ in self._cells],
                seed=seed,
                as_of=self.as_of,
                mapping=self.mapping["grid_officers"],
            )
        if n_cases:
            if "cases" not in self.mapping:
                raise ValueError("the mapping has no 'cases' field names")
            case_rows = self._cases(n_cases, wrk_rows, ent_rows)
            self._rows["cases"] = sorted(case_rows, key=lambda r: (r.updated_at, r.record_id))

    # -- public ---------------------------------------------------------------------------------

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(self._rows)

    def rows(self, entity: str) -> list[SandboxRow]:
        """All rows of ``entity`` ordered by (update time, record id)."""
        try:
            return self._rows[entity]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r}; known: {', '.join(self._rows)}") from None

    def updated_at(self, entity: str) -> dict[str, datetime]:
        """record id -> its update time (the version a correct load keeps)."""
        return {r.record_id: r.updated_at for r in self.rows(entity)}

    @property
    def workers(self) -> list[dict[str, Any]]:
        return [r.row for r in self._rows["workers"]]

    @property
    def enterprises(self) -> list[dict[str, Any]]:
        return [r.row for r in self._rows["enterprises"]]

    def labels(self, entity: str) -> dict[str, str]:
        """record id -> label (see the module docstring)."""
        return {r.record_id: r.label for r in self.rows(entity)}

    # -- generation -----------------------------------------------------------------------------

    def _address_prefix(self, cell_code: str) -> str:
        parts: list[str] = []
        for code in chain_codes(cell_code)[:-1]:  # province .. community (the cell has no name here)
            name = self._names.get(code)
            if name and (not parts or parts[-1] != name):
                parts.append(name)
        return "".join(parts)

    def _points(self, n: int, rng: np.random.Generator) -> _Place:
        """``n`` points (in the sandbox CRS) inside randomly chosen cells."""
        cell = rng.integers(0, len(self._cells), size=n)
        lon = np.empty(n)
        lat = np.empty(n)
        for ci in np.unique(cell):
            idx = np.flatnonzero(cell == ci)
            poly = self._cells[int(ci)][1]
            x0, y0, x1, y1 = poly.bounds
            got_x: list[np.ndarray] = []
            got_y: list[np.ndarray] = []
            need = len(idx)
            have = 0
            for _ in range(100):
                k = max(8, 3 * (need - have))
                xs = rng.uniform(x0, x1, k)
                ys = rng.uniform(y0, y1, k)
                inside = shapely.contains_xy(poly, xs, ys)
                got_x.append(xs[inside])
                got_y.append(ys[inside])
                have += int(inside.sum())
                if have >= need:
                    break
            else:  # a degenerate sliver: fall back to a point on its surface
                p = poly.representative_point()
                got_x.append(np.full(need, p.x))
                got_y.append(np.full(need, p.y))
            lon[idx] = np.concatenate(got_x)[:need]
            lat[idx] = np.concatenate(got_y)[:need]
        lon, lat = self._from_wgs84(lon, lat)
        return _Place(lon=lon, lat=lat, cell=cell)

    def _from_wgs84(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from geodata import crs as gcrs

        if self.crs == "gcj02":
            return gcrs.wgs84_to_gcj02(lon, lat)
        if self.crs == "bd09":
            return gcrs.wgs84_to_bd09(lon, lat)
        return lon, lat  # wgs84 / cgcs2000: the same to well under a metre

    def _times(self, n: int, rng: random.Random) -> list[datetime]:
        """Update times: mostly spread over two years, a quarter in three bulk imports sharing one
        timestamp each, and a few percent in the last three days (the nightly delta)."""
        if self._window is not None:
            start, end = self._window
            span = max(1, int((end - start).total_seconds()))
            return [start + timedelta(seconds=rng.randrange(span)) for _ in range(n)]
        as_of = self.as_of
        bulk = [as_of - timedelta(days=d, hours=h) for d, h in ((400, 7), (200, 15), (30, 3))]
        out = []
        for _ in range(n):
            u = rng.random()
            if u < 0.25:
                out.append(rng.choice(bulk))
            elif u < 0.29:
                out.append(as_of - timedelta(seconds=rng.randrange(1, 3 * 86_400)))
            else:
                out.append(as_of - timedelta(seconds=rng.randrange(3 * 86_400, 730 * 86_400)))
        return out

    def _ids(self, n: int, rng: random.Random) -> list[str]:
        return [f"{rng.getrandbits(128):032x}" for _ in range(n)]

    def _bad_plan(self, n: int, kinds: Sequence[Reason], rng: random.Random) -> dict[int, Reason]:
        if self._stochastic_bad:
            n_bad = int(n * self.bad_fraction + rng.random())
            first = rng.randrange(len(kinds))
        else:
            n_bad, first = round(n * self.bad_fraction), 0
        if self._every_bad_kind and self.bad_fraction > 0 and n >= 4 * len(kinds):
            n_bad = max(n_bad, len(kinds))
        chosen = rng.sample(range(n), n_bad) if n_bad else []
        return {i: kinds[(first + k) % len(kinds)] for k, i in enumerate(chosen)}

    def _address(self, cell: int, rng: random.Random, *, home: bool) -> str:
        addr = f"{self._addr_prefix[cell]}{rng.choice(_ROADS)}{rng.randint(1, 399)}号"
        if home:
            addr += f"{rng.randint(1, 30)}栋{rng.randint(1, 4)}单元{rng.randint(1, 25)}0{rng.randint(1, 4)}室"
        return addr

    def _firm_name(self, rng: random.Random, seen: set[str]) -> str:
        for attempt in range(50):
            words = rng.choice(_FIRM_WORDS) + rng.choice(_FIRM_WORDS)
            if attempt >= 10:  # crowded name space: a third word, as real registrations do
                words += rng.choice(_FIRM_WORDS)
            name = f"{self._city_word}{words}{rng.choice(_INDUSTRIES)}{rng.choice(_FIRM_FORMS)}"
            if name not in seen:
                break
        seen.add(name)
        return name

    def _mobile(self, rng: random.Random) -> str:
        return rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(100_000_000):08d}"

    def _export(self, entity: str, canonical: dict[str, Any]) -> dict[str, Any]:
        m = self.mapping[entity]
        return {m[k]: v for k, v in canonical.items() if k in m}

    def _enterprises(self, n: int) -> tuple[list[SandboxRow], list[str]]:
        rng = random.Random(f"gridflow-sandbox:{self.seed}:enterprises")
        np_rng = np.random.default_rng([self.seed, 1])
        place = self._points(n, np_rng)
        times = self._times(n, rng)
        ids = self._ids(n, rng)
        bad = self._bad_plan(n, ENTERPRISE_BAD_KINDS, rng)
        rows: list[SandboxRow] = []
        usccs: list[str] = []
        names_seen: set[str] = set()
        for i in range(n):
            cell = int(place.cell[i])
            county = self._cells[cell][0][:6]
            label = "ok"
            u = rng.random()
            if u < 0.02:
                head, label = "N2", "agricultural_uscc"  # 农业 authority, 集体经济组织: valid, stdnum refuses
            elif u < 0.12:
                head = "92"  # 个体工商户
            else:
                head = "91"  # 企业
            body = head + county + _org_code(f"{rng.randrange(10**8):08d}")
            uscc = body + uscc_check_char(body)
            usccs.append(uscc)
            name = self._firm_name(rng, names_seen)
            size = int(min(20_000, max(1, np_rng.lognormal(2.8, 1.2))))
            union = rng.random() < (0.85 if size >= 25 else 0.35)
            address = self._address(cell, rng, home=False)
            lon = f"{place.lon[i]:.6f}"
            lat = f"{place.lat[i]:.6f}"
            zbx = "gcj02" if self.crs == "gcj02" and rng.random() < 0.3 else ""
            rec: dict[str, Any] = {
                "source_record_id": ids[i],
                "source_updated_at": times[i].strftime("%Y-%m-%d %H:%M:%S"),
                "uscc": uscc,
                "name": name,
                "union_established": "1" if union else "0",
                "employee_count": str(size) if rng.random() > 0.05 else "",
                "address": address,
                "lon": lon,
                "lat": lat,
                "crs": zbx,
                "legal_rep_phone": self._mobile(rng),
            }
            kind = bad.get(i)
            if kind is not None:
                label = kind.value
                self._spoil(rec, kind, rng)
            elif rng.random() < 0.04:
                rec["lon"] = rec["lat"] = ""
                label = "address_only"
            rows.append(SandboxRow(times[i], ids[i], self._export("enterprises", rec), label))
        return rows, usccs

    def _workers(self, n: int, usccs: Sequence[str]) -> list[SandboxRow]:
        rng = random.Random(f"gridflow-sandbox:{self.seed}:workers")
        np_rng = np.random.default_rng([self.seed, 2])
        place = self._points(n, np_rng)
        times = self._times(n, rng)
        ids = self._ids(n, rng)
        bad = self._bad_plan(n, WORKER_BAD_KINDS, rng)
        first_birth = datetime(1960, 1, 1).toordinal()
        last_birth = min(datetime(2005, 12, 31).toordinal(), self.as_of.toordinal())
        rows: list[SandboxRow] = []
        surnames = list(_SURNAMES)
        for i in range(n):
            cell = int(place.cell[i])
            own_county = self._cells[cell][0][:6]
            u = rng.random()
            if u < 0.75:
                area = own_county
            elif u < 0.88:
                area = rng.choice(self._county_codes)
            else:
                area = rng.choice(_OTHER_AREA_CODES)
            birth = datetime.fromordinal(rng.randint(first_birth, last_birth)).date()
            male = rng.random() < 0.52
            seq = rng.randrange(0, 500) * 2 + (1 if male else 0)
            body = f"{area}{birth:%Y%m%d}{seq:03d}"
            id18 = body + id_check_char(body)
            label = "ok"
            sfzh = id18
            v = rng.random()
            if v < 0.02 and birth.year < 2000:
                sfzh = f"{area}{birth:%y%m%d}{seq:03d}"  # legacy 15-digit
                label = "legacy_id"
            elif v < 0.03:
                sfzh = id18.translate(_FULLWIDTH)
                label = "fullwidth_id"
            elif id18.endswith("X") and v < 0.5:
                sfzh = id18[:17] + "x"
                label = "lowercase_x"
            given = _GIVEN_MALE if male else _GIVEN_FEMALE
            name = rng.choices(surnames, weights=_SURNAME_WEIGHTS)[0] + "".join(
                rng.choice(given) for _ in range(1 if rng.random() < 0.3 else 2)
            )
            w = rng.random()
            if w < 0.08:
                phone = f"0717-{rng.randint(3, 8)}{rng.randrange(10**6):06d}"
            elif w < 0.12:
                phone = "+86 " + self._mobile(rng)
            elif w < 0.15:
                phone = ""
            else:
                phone = self._mobile(rng)
            d = rng.random()
            csrq = f"{birth:%Y-%m-%d}" if d < 0.8 else f"{birth:%Y/%m/%d}" if d < 0.9 else f"{birth:%Y%m%d}"
            rec: dict[str, Any] = {
                "source_record_id": ids[i],
                "source_updated_at": times[i].strftime("%Y-%m-%d %H:%M:%S"),
                "id_number": sfzh,
                "name": name,
                "gender": ("1" if male else "2") if rng.random() < 0.8 else ("男" if male else "女"),
                "birth_date": csrq,
                "phone": phone,
                "enterprise_uscc": rng.choice(usccs) if rng.random() < 0.85 else "",
                "address": self._address(cell, rng, home=True),
                "lon": f"{place.lon[i]:.6f}",
                "lat": f"{place.lat[i]:.6f}",
                "crs": "gcj02" if self.crs == "gcj02" and rng.random() < 0.3 else "",
            }
            kind = bad.get(i)
            if kind is not None:
                if kind is Reason.BAD_ID_CHECKSUM:
                    rec["id_number"] = id18[:17] + _wrong(id18[17], "0123456789X", rng)
                elif kind is Reason.BAD_USCC_CHECKSUM and not rec["enterprise_uscc"]:
                    rec["enterprise_uscc"] = usccs[0]
                label = kind.value
                self._spoil(rec, kind, rng)
            elif rng.random() < 0.05:
                rec["lon"] = rec["lat"] = ""
                label = "address_only"
            rows.append(SandboxRow(times[i], ids[i], self._export("workers", rec), label))
        return rows

    def _cases(
        self, n: int, workers: Sequence[SandboxRow], enterprises: Sequence[SandboxRow]
    ) -> list[SandboxRow]:
        rng = random.Random(f"gridflow-sandbox:{self.seed}:cases")
        np_rng = np.random.default_rng([self.seed, 3])
        place = self._points(n, np_rng)
        times = self._times(n, rng)
        ids = self._ids(n, rng)
        bad = self._bad_plan(n, CASE_BAD_KINDS, rng)
        wm, em = self.mapping["workers"], self.mapping["enterprises"]
        people = [r.row[wm["id_number"]] for r in workers if r.label == "ok"]
        firms = [
            (r.row[em["uscc"]], r.row[em["name"]])
            for r in enterprises
            if r.label in ("ok", "address_only", "agricultural_uscc")
        ]
        if not people or not firms:
            raise ValueError("case reports need at least one valid worker and one valid enterprise")
        kinds = [k for k, _, _ in _CASE_KINDS]
        weights = [w for _, _, w in _CASE_KINDS]
        labels = {k: zh for k, zh, _ in _CASE_KINDS}
        rows: list[SandboxRow] = []
        for i in range(n):
            cell = int(place.cell[i])
            kind = rng.choices(kinds, weights=weights)[0]
            u = rng.random()
            kind_text = (
                labels[kind] if u < 0.7 else kind if u < 0.9 else ("欠薪" if kind == "wage_arrears" else kind)
            )
            s = rng.random()
            severity = (
                ("一般" if rng.random() < 0.5 else "")
                if s < 0.85
                else "苗头性问题"
                if s < 0.95
                else "突发性群体性事件"
            )
            affected = 1
            if severity == "突发性群体性事件":
                affected = rng.randint(10, 60)
            elif severity == "苗头性问题":
                affected = rng.randint(3, 9)
            elif kind == "wage_arrears" and rng.random() < 0.2:
                affected = rng.randint(2, 15)
            uscc, firm = rng.choice(firms)
            worker = rng.choice(people)
            hardship = kind == "hardship"
            if not hardship and rng.random() < 0.15:
                worker = ""  # a dispute reported about the enterprise only
            if hardship or rng.random() < 0.1:
                uscc = "" if hardship and rng.random() < 0.5 else uscc
            amount = ""
            if kind == "wage_arrears":
                amount = f"{rng.randint(5, 600) * 100 * affected}.00"
            elif kind in ("dismissal", "work_injury") and rng.random() < 0.5:
                amount = f"{rng.randint(10, 900) * 100}"
            story = _CASE_STORIES[kind].format(
                firm=firm, n=affected, months=rng.randint(1, 8), cause=rng.choice(_HARDSHIP_CAUSES)
            )
            if rng.random() < 0.3:
                story += f"联系电话{self._mobile(rng)}。"
            reported = times[i] - timedelta(seconds=rng.randrange(0, 30 * 86_400))
            rec: dict[str, Any] = {
                "source_record_id": ids[i],
                "source_updated_at": times[i].strftime("%Y-%m-%d %H:%M:%S"),
                "kind": kind_text,
                "reported_at": reported.strftime("%Y-%m-%d %H:%M:%S"),
                "severity": severity,
                "hardship_grade": rng.choice(_CASE_GRADES) if hardship else "",
                "worker_id_number": worker,
                "enterprise_uscc": uscc,
                "workers_affected": str(affected),
                "amount": amount,
                "description": story,
                "address": self._address(cell, rng, home=hardship),
                "lon": f"{place.lon[i]:.6f}",
                "lat": f"{place.lat[i]:.6f}",
                "crs": "gcj02" if self.crs == "gcj02" and rng.random() < 0.3 else "",
            }
            label = "ok"
            reason = bad.get(i)
            if reason is not None:
                label = reason.value
                self._spoil_case(rec, reason, rng)
            elif rng.random() < 0.05:
                rec["lon"] = rec["lat"] = ""
                label = "address_only"
            rows.append(SandboxRow(times[i], ids[i], self._export("cases", rec), label))
        return rows

    def _spoil_case(self, rec: dict[str, Any], kind: Reason, rng: random.Random) -> None:
        """Give a case report exactly one defect of ``kind``."""
        if kind is Reason.UNKNOWN_CASE_KIND:
            rec["kind"] = rng.choice(_BAD_KINDS_TEXT)
        elif kind is Reason.BAD_AMOUNT:
            rec["amount"] = rng.choice(_BAD_AMOUNTS)
        elif kind is Reason.MISSING_PARTY:
            rec["worker_id_number"] = ""
            if rec["hardship_grade"] == "":
                rec["enterprise_uscc"] = ""
        elif kind is Reason.BAD_ID_CHECKSUM:
            if not rec["worker_id_number"]:
                rec["worker_id_number"] = self._any_worker_id(rng)
            wid = rec["worker_id_number"]
            rec["worker_id_number"] = wid[:17] + _wrong(wid[17], "0123456789X", rng)
        elif kind is Reason.BAD_DATE:
            rec["reported_at"] = rng.choice(_BAD_REPORT_TIMES)

    def _any_worker_id(self, rng: random.Random) -> str:
        body = f"{rng.choice(self._county_codes)}19800101{rng.randrange(1000):03d}"
        return body + id_check_char(body)

    def _spoil(self, rec: dict[str, Any], kind: Reason, rng: random.Random) -> None:
        """Give ``rec`` exactly one defect of ``kind`` (ID checksums are spoiled by the caller)."""
        if kind is Reason.BAD_USCC_CHECKSUM:
            key = "uscc" if "uscc" in rec else "enterprise_uscc"
            code = rec[key]
            rec[key] = code[:17] + _wrong(code[17], _USCC_ALPHABET, rng)
        elif kind is Reason.MISSING_COORDINATES:
            rec["lon"] = rec["lat"] = rec["address"] = ""
        elif kind is Reason.OUT_OF_CHINA:
            lon, lat = rng.choice(_ABROAD)
            rec["lon"], rec["lat"] = f"{lon:.6f}", f"{lat:.6f}"
        elif kind is Reason.UNKNOWN_CRS:
            rec["crs"] = rng.choice(_UNKNOWN_CRS_VALUES)
        elif kind is Reason.BAD_PHONE:
            rec["legal_rep_phone" if "legal_rep_phone" in rec else "phone"] = rng.choice(_BAD_PHONES)
        elif kind is Reason.BAD_DATE:
            birth = rec["birth_date"].replace("/", "-")
            rec["birth_date"] = rng.choice((f"{birth[:4]}-13-45", f"{birth[:4]}-02-30", "不详"))
