"""The sandbox's roster (网格员花名册): grid officers for a city's cells, with a few bad rows.

:func:`roster_rows` takes a city's cell codes and a seed and returns rows in the city's field names
(:data:`ROSTER_MAPPING`, as ``config/sources/yichang.toml``'s ``[mapping.grid_officers]``), each
labelled like :class:`connectors.sandbox.data.SandboxRow`: ``"ok"``, ``"inactive"`` (an officer who
left: loaded, owns nothing), or the :class:`connectors.reasons.Reason` a bad row must be
quarantined with. The shape, for ``n`` cells: most cells have one officer, about one in twenty a
second one (the ownership tie-break), about one in twenty none (their cases go to the community);
an officer may serve two neighbouring cells. The same arguments always give the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from connectors.reasons import Reason
from connectors.sandbox.data import YICHANG_MAPPING, SandboxRow

__all__ = ["ROSTER_BAD_KINDS", "ROSTER_MAPPING", "roster_rows"]

#: Canonical -> the Yichang grid system's roster field names.
ROSTER_MAPPING: Final[dict[str, str]] = YICHANG_MAPPING["grid_officers"]
#: The bad rows a roster carries, each quarantined with its reason.
ROSTER_BAD_KINDS: Final[tuple[Reason, ...]] = (
    Reason.MISSING_RECORD_ID,
    Reason.BAD_PHONE,
    Reason.UNKNOWN_CELL,
    Reason.MISSING_FIELD,
)
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈"
)
_GIVEN = (
    "伟芳娜敏静强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅鹏飞鑫波宇浩凯健俊帆帅旭宁龙林阳建国峰成文亮志海"
)
_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "158", "159",
             "180", "181", "186", "187", "188", "189")  # fmt: skip
_BAD_PHONES = ("1381234567", "12345", "0717-123", "+1 415 555 0100")


def _name(rng: random.Random) -> str:
    given = rng.choice(_GIVEN) + (rng.choice(_GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(_SURNAMES) + given


def _phone(rng: random.Random) -> str:
    return rng.choice(_PREFIXES) + f"{rng.randrange(10**8):08d}"


def roster_rows(
    cells: Sequence[str],
    *,
    seed: int,
    as_of: datetime,
    mapping: Mapping[str, str] | None = None,
    bad_rows: int | None = None,
) -> list[SandboxRow]:
    """The roster of ``cells`` (15-digit codes of one city), sorted by (update time, officer id).

    ``bad_rows`` (default: one per 200 cells, at least one of each kind in ``ROSTER_BAD_KINDS``)
    are added beside the good ones. Officer ids are ``WG`` + the city's 4 digits + a number.
    """
    f = dict(mapping or ROSTER_MAPPING)
    codes = sorted(set(cells))
    if not codes:
        return []
    rng = random.Random(f"roster:{seed}:{codes[0][:4]}:{len(codes)}")
    city = codes[0][:4]
    rows: list[SandboxRow] = []
    serial = 0

    def when() -> datetime:
        return (as_of - timedelta(seconds=rng.randrange(1, 400 * 86400))).replace(microsecond=0)

    def officer(served: list[str], *, active: bool = True, label: str = "ok") -> dict[str, object]:
        nonlocal serial
        serial += 1
        rid = f"WG{city}{serial:06d}"
        t = when()
        row: dict[str, object] = {
            f["source_record_id"]: rid,
            f["source_updated_at"]: t.strftime("%Y-%m-%d %H:%M:%S"),
            f["name"]: _name(rng),
            f["phone"]: _phone(rng),
            f["cells"]: ",".join(served),
            f["active"]: "1" if active else "0",
        }
        rows.append(SandboxRow(t, rid, row, label))
        return row

    i = 0
    while i < len(codes):
        roll = rng.random()
        if roll < 0.05:  # a cell nobody serves: its cases go to the community union
            i += 1
            continue
        if roll < 0.10 and i + 1 < len(codes) and codes[i + 1][:12] == codes[i][:12]:
            officer([codes[i], codes[i + 1]])  # one officer for two neighbouring cells
            i += 2
            continue
        officer([codes[i]])
        if roll > 0.95:  # a second officer on the same cell: the ownership tie-break decides
            officer([codes[i]])
        i += 1
    for _ in range(max(1, len(codes) // 100)):  # officers who left: loaded, inactive
        officer([rng.choice(codes)], active=False, label="inactive")

    n_bad = max(len(ROSTER_BAD_KINDS), len(codes) // 200) if bad_rows is None else bad_rows
    for k in range(n_bad):
        reason = ROSTER_BAD_KINDS[k % len(ROSTER_BAD_KINDS)]
        row = officer([rng.choice(codes)], label=reason.value)
        rid = str(row[f["source_record_id"]])
        if reason is Reason.MISSING_RECORD_ID:
            row[f["source_record_id"]] = ""
        elif reason is Reason.BAD_PHONE:
            row[f["phone"]] = rng.choice(_BAD_PHONES)
        elif reason is Reason.UNKNOWN_CELL:  # a cell of the right shape that the city does not have
            row[f["cells"]] = (
                codes[-1][:12] + "999" if not codes[-1].endswith("999") else city + "99" + "0" * 9
            )
        elif reason is Reason.MISSING_FIELD:
            row[f["name"]] = ""
        rows[-1] = SandboxRow(rows[-1].updated_at, rid, row, reason.value)
    rows.sort(key=lambda r: (r.updated_at, r.record_id))
    return rows
