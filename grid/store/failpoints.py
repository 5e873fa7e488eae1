"""Fail points for crash tests: SIGKILL this process at a named point of the sync.

``GRIDFLOW_FAILPOINT=NAME:N`` kills the process the N-th time NAME is reached — honoured only
when the settings say ``env = "test"``, so a production process never acts on it (it is a
test hook, not a setting). Points: ``after_fetch``
(a page fetched, nothing written), ``before_commit`` (a page written, not committed),
``after_commit`` (a page committed).
"""

from __future__ import annotations

import os
import signal

from grid.settings import get_settings

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("GRIDFLOW_FAILPOINT")
    if not spec or get_settings().env != "test":
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or "1"):
        os.kill(os.getpid(), signal.SIGKILL)
