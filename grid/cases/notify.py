"""Where a notice goes and in what shape: 企业微信 (WeCom) and DingTalk group robots, per unit,
cell or officer, configured in a file (``config/notify.toml``, or ``GRIDFLOW_NOTIFY_FILE``).

Routing, most specific rule first (the rule that matched is stored with the delivery, in
``notification_outbox.delivered_via``, so "why did this notice go to group X" has an answer):

1. a robot that lists, under ``officers``, the roster id of the grid officer who owns the case
   (``case_file.owner_officer``) when the notice is addressed to that officer's cell;
2. a robot that lists the recipient's own code (a unit's 12-digit code or a cell's 15 digits);
3. the robot of the nearest unit above it (the town's group when a community has none, …, the
   province's);
4. the generic JSON webhook of the notice's target (``GRIDFLOW_WEBHOOKS``: the union system);
5. nothing: the notice waits in the outbox (and in the in-app 通知 list) until a route exists.

A robot serves the targets it names (``targets``, default ``["union"]``): a dual report to the
same-level government (``government``) goes to a robot only if one says so.

Secrets never live in the file: a robot's URL (WeCom's carries ``key=…``, DingTalk's
``access_token=…``) is ``GRIDFLOW_NOTIFY_<NAME>_URL`` or the file ``<state>/keys/notify/<name>.url``;
DingTalk's signing secret (``SEC…``) is ``GRIDFLOW_NOTIFY_<NAME>_SECRET`` or
``<state>/keys/notify/<name>.secret``. DingTalk posts are signed: ``timestamp`` (ms) and
``sign = urlencode(base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")))`` appended to the URL.

Both robots answer HTTP 200 with ``{"errcode": 0, …}`` on success; any other errcode is a failure,
stored as ``errcode N`` (never the body, which may echo the message or the URL).

Message text is built from the allow-listed payload only (``grid.cases.outbox.ALLOWED_KEYS``):
codes, kinds, levels, times and counts — no personal data can reach a group chat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import httpx

from geodata.codes import chain_codes, is_cell_code, is_division_code, own_prefix
from grid.cases.outbox import TARGETS, targets_from_env
from grid.cases.states import State
from grid.settings import get_settings

RobotKind = Literal["wecom", "dingtalk"]
ROBOT_KINDS: Final = ("wecom", "dingtalk")
NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
#: WeCom refuses markdown content over 4096 bytes; DingTalk's limit is larger. Stay under both.
MAX_TEXT_BYTES: Final = 4000
#: Times in messages are local (the officers' clock), minutes only.
LOCAL_TZ: Final = ZoneInfo("Asia/Shanghai")
_TIME_KEYS: Final = frozenset({"resolve_by", "due_at", "at"})


class NotifyConfigError(ValueError):
    """A notify file that cannot be used, or a robot whose secret is missing (one sentence)."""


@dataclass(frozen=True, slots=True)
class Robot:
    name: str
    kind: RobotKind
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    codes: tuple[str, ...] = ()
    officers: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("union",)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one notice goes: a robot or the generic webhook, and the rule that chose it."""

    kind: Literal["wecom", "dingtalk", "webhook"]
    url: str = field(repr=False)
    via: str
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Routing:
    """The robots of the notify file plus the generic webhooks (``GRIDFLOW_WEBHOOKS``)."""

    robots: tuple[Robot, ...] = ()
    webhooks: Mapping[str, str] = field(default_factory=dict)
    case_url: str | None = None  # e.g. "https://grid.example/cases/{case_id}"

    def __bool__(self) -> bool:
        return bool(self.robots or self.webhooks)

    def route(self, target: str, recipient: str, officer: str | None = None) -> Route | None:
        """The most specific route for a notice to ``recipient`` on ``target`` (None: wait);
        ``officer``: the roster id of the grid officer who owns the case on that cell, if any."""
        mine = [r for r in self.robots if target in r.targets]
        for r in mine:
            if officer is not None and officer in r.officers:
                return Route(r.kind, r.url, f"robot:{r.name} (officer)", r.secret)
        for r in mine:
            if recipient in r.codes:
                return Route(r.kind, r.url, f"robot:{r.name} (own code)", r.secret)
        if is_division_code(recipient) or is_cell_code(recipient):
            # nearest unit above first
            for code in reversed(chain_codes(recipient)):
                if code == recipient:
                    continue
                for r in mine:
                    if code in r.codes:
                        return Route(r.kind, r.url, f"robot:{r.name} (unit above {code})", r.secret)
        url = self.webhooks.get(target)
        if url:
            return Route("webhook", url, f"webhook:{target}")
        return None

    def sql_filter(self) -> dict[str, list[str]]:
        """What the deliverer's query needs to take only notices that may have a route: the
        webhook targets; (code prefix, target) pairs of the robots (a unit's code covers its
        subtree); (officer, target) pairs (exact)."""
        out: dict[str, list[str]] = {
            "hooks": sorted(self.webhooks),
            "pre": [],
            "pre_t": [],
            "eq": [],
            "eq_t": [],
        }
        for r in self.robots:
            for t in r.targets:
                for code in r.codes:
                    out["pre"].append(own_prefix(code))
                    out["pre_t"].append(t)
                for officer in r.officers:
                    out["eq"].append(officer)
                    out["eq_t"].append(t)
        return out


def _secret(name: str, what: Literal["url", "secret"], *, state_dir: Path) -> str | None:
    var = f"GRIDFLOW_NOTIFY_{name.upper()}_{what.upper()}"
    value = os.environ.get(var, "").strip()
    if value:
        return value
    path = state_dir / "keys" / "notify" / f"{name}.{what}"
    if path.exists():
        return path.read_text().strip() or None
    return None


def _str_list(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise NotifyConfigError(f"{where} must be a list of strings")
    return tuple(x.strip() for x in raw)


def load_routing(
    path: Path | None = None, *, webhooks: Mapping[str, str] | None = None, state_dir: Path | None = None
) -> Routing:
    """The routing of the notify file (missing file: no robots) and the generic webhooks."""
    settings = get_settings()
    path = path or settings.notify_file
    state_dir = state_dir or settings.state_dir
    hooks = dict(targets_from_env() if webhooks is None else webhooks)
    if not path.exists():
        return Routing((), hooks)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise NotifyConfigError(f"{path.name}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"robots", "links"})
    if unknown:
        raise NotifyConfigError(f"{path.name}: unknown sections {unknown}; expected robots, links")
    links = data.get("links", {})
    case_url = links.get("case_url") if isinstance(links, dict) else None
    if case_url is not None and (not isinstance(case_url, str) or "{case_id}" not in case_url):
        raise NotifyConfigError(f"{path.name}: links.case_url must be a string containing {{case_id}}")
    robots: list[Robot] = []
    raw_robots = data.get("robots", {})
    if not isinstance(raw_robots, dict):
        raise NotifyConfigError(f"{path.name}: [robots.NAME] tables expected")
    for name, spec in sorted(raw_robots.items()):
        where = f"{path.name}: robots.{name}"
        if not NAME_RE.match(name):
            raise NotifyConfigError(f"{where}: a robot name is lower-case letters, digits and _")
        if not isinstance(spec, dict):
            raise NotifyConfigError(f"{where} must be a table")
        extra = sorted(set(spec) - {"kind", "codes", "officers", "targets"})
        if extra:
            raise NotifyConfigError(f"{where}: unknown keys {extra}")
        kind = spec.get("kind")
        if kind not in ROBOT_KINDS:
            raise NotifyConfigError(f"{where}: kind must be one of {', '.join(ROBOT_KINDS)}")
        codes = _str_list(spec.get("codes"), f"{where}.codes")
        for c in codes:
            if not (is_division_code(c) or is_cell_code(c)):
                raise NotifyConfigError(f"{where}.codes: {c!r} is not a 12-digit unit or 15-digit cell code")
        officers = _str_list(spec.get("officers"), f"{where}.officers")
        if not codes and not officers:
            raise NotifyConfigError(f"{where}: lists no codes and no officers")
        targets = _str_list(spec.get("targets", ["union"]), f"{where}.targets")
        bad = sorted(set(targets) - set(TARGETS))
        if bad or not targets:
            raise NotifyConfigError(f"{where}.targets: expected some of {', '.join(TARGETS)}")
        url = _secret(name, "url", state_dir=state_dir)
        if not url:
            raise NotifyConfigError(
                f"{where}: no URL; set GRIDFLOW_NOTIFY_{name.upper()}_URL or write "
                f"<state>/keys/notify/{name}.url"
            )
        if not url.startswith(("https://", "http://")):
            raise NotifyConfigError(f"{where}: the URL must be http(s)")
        secret = _secret(name, "secret", state_dir=state_dir) if kind == "dingtalk" else None
        robots.append(Robot(name, kind, url, secret, codes, officers, targets))
    return Routing(tuple(robots), hooks, case_url)


# ----------------------------------------------------------------------------- formats


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature of a custom robot post (already URL-encoded, as the query wants it)."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def signed_url(url: str, secret: str | None, *, timestamp_ms: int | None = None) -> str:
    """A DingTalk URL with ``&timestamp=…&sign=…`` (unchanged without a secret)."""
    if not secret:
        return url
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={ts}&sign={dingtalk_sign(secret, ts)}"


_LINE_KEYS: Final[Sequence[tuple[str, str]]] = (
    ("level_zh", "层级"),
    ("state", "状态"),
    ("owner_code", "承办单位"),
    ("recipient_code", "接收单位"),
    ("chain_code", "所在网格/区划"),
    ("criticised_unit", "被通报单位"),
    ("workers_affected", "涉及人数"),
    ("resolve_by", "办结时限"),
    ("due_at", "到期时间"),
    ("at", "时间"),
)


def title(payload: Mapping[str, Any]) -> str:
    return f"{payload.get('topic_zh', '通知')} · 案件 {payload.get('case_id', '')}"


def _shown(key: str, value: Any) -> str:
    """A payload value as an officer reads it: local times, Chinese state labels."""
    text = str(value)
    if key in _TIME_KEYS:
        try:
            return datetime.fromisoformat(text).astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return text
    if key == "state":
        try:
            return State(text).label_zh
        except ValueError:
            return text
    return text


def markdown(payload: Mapping[str, Any], *, case_url: str | None = None) -> str:
    """The message text: allow-listed payload keys only, in Chinese."""
    lines = [f"### {title(payload)}"]
    kind = payload.get("kind_zh") or payload.get("kind")
    sev = payload.get("severity_zh") or payload.get("severity")
    if kind or sev:
        lines.append(f"> {kind or ''} · {sev or ''}")
    for key, label in _LINE_KEYS:
        value = payload.get(key)
        if value is None or value == "":
            continue
        lines.append(f"- {label}：{_shown(key, value)}")
    if payload.get("dual_report"):
        lines.append("- **双报告：已同时报送同级党委政府**")
    if case_url and payload.get("case_id") is not None:
        lines.append(f"\n[查看案件]({case_url.replace('{case_id}', str(payload['case_id']))})")
    text = "\n".join(lines)
    raw = text.encode()
    return text if len(raw) <= MAX_TEXT_BYTES else raw[:MAX_TEXT_BYTES].decode("utf-8", "ignore")


def body_for(route: Route, payload: Mapping[str, Any], *, case_url: str | None = None) -> dict[str, Any]:
    """The JSON body a route expects."""
    if route.kind == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": markdown(payload, case_url=case_url)}}
    if route.kind == "dingtalk":
        return {
            "msgtype": "markdown",
            "markdown": {"title": title(payload), "text": markdown(payload, case_url=case_url)},
        }
    return dict(payload)


def post(
    client: httpx.Client, route: Route, payload: Mapping[str, Any], *, notice_id: int, case_url: str | None
) -> str | None:
    """Post one notice; None on success, else a short error without a URL or a body."""
    url = signed_url(route.url, route.secret) if route.kind == "dingtalk" else route.url
    try:
        resp = client.post(
            url,
            json=body_for(route, payload, case_url=case_url),
            headers={"Idempotency-Key": f"gridflow-notice-{notice_id}"},
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if not 200 <= resp.status_code < 300:
        return f"HTTP {resp.status_code}"
    if route.kind == "webhook":
        return None
    try:
        answer = resp.json()
    except ValueError:
        return "answer is not JSON"
    code = answer.get("errcode") if isinstance(answer, dict) else None
    if code == 0:
        return None
    return f"errcode {int(code)}" if isinstance(code, int) else "answer has no errcode"
