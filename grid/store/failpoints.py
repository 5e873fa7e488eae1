"""Fail points for crash tests: SIGKILL this process at a named point of the sync.

``GRIDFLOW_FAILPOINT=NAME:N`` kills the process the N-th time NAME is reached — honoured only
when ``GRIDFLOW_ENV=test``, so a production process never reads it. Points: ``after_fetch``
(a page fetched, nothing written), ``before_commit`` (a page written, not committed),
``after_commit`` (a page committed).
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("GRIDFLOW_FAILPOINT")
    if not spec or os.environ.get("GRIDFLOW_ENV") != "test":
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or "1"):
        os.kill(os.getpid(), signal.SIGKILL)
