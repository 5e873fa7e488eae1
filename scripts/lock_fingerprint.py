"""Fingerprint of what pyproject.toml asks to install, kept in requirements.lock's header.

`scripts/lock` writes it when it refreshes the lock; `scripts/bootstrap.sh` (and so CI) refuses
to install when pyproject.toml's dependency lists no longer match the lock. Standard library only:
it runs before the virtualenv exists.

    python3 scripts/lock_fingerprint.py            # print the fingerprint of pyproject.toml
    python3 scripts/lock_fingerprint.py --check    # exit 1 with a message when the lock is stale
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PREFIX = "# pyproject-fingerprint: "
REFRESH = "scripts/lock"


def fingerprint(pyproject: Path = ROOT / "pyproject.toml") -> str:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data.get("project", {})
    wanted = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {
            k: sorted(v) for k, v in sorted(project.get("optional-dependencies", {}).items())
        },
        "build-system": sorted(data.get("build-system", {}).get("requires", [])),
    }
    blob = json.dumps(wanted, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def locked_fingerprint(lock: Path = LOCK) -> str | None:
    if not lock.exists():
        return None
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(PREFIX):
            return line[len(PREFIX) :].strip()
    return None


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        print(fingerprint())
        return 0
    locked = locked_fingerprint()
    if locked is None:
        print(f"gridflow: {LOCK.name} is missing or has no fingerprint: run {REFRESH}", file=sys.stderr)
        return 1
    if locked != fingerprint():
        print(
            f"gridflow: pyproject.toml's dependencies changed but {LOCK.name} was not refreshed: "
            f"run {REFRESH} and commit both",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
