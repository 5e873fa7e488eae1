"""The install is locked: requirements.lock pins every dependency with hashes and describes the
pyproject.toml it was made from; a changed pyproject.toml without a refreshed lock is refused by
name of the refresh command (scripts/bootstrap.sh runs the same check, so CI fails)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grid.settings import PROJECT_ROOT

LOCK = PROJECT_ROOT / "requirements.lock"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "lock_fingerprint.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(PROJECT_ROOT / "scripts" / "lock_fingerprint.py", tmp_path / "scripts")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    shutil.copy(LOCK, tmp_path)
    return tmp_path


def test_committed_lock_matches_pyproject() -> None:
    """Rule: the lock in the repository was made from the pyproject.toml beside it."""
    proc = _check(PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("edit", "stale"),
    [
        pytest.param(('"orjson>=3.10",', '"orjson>=3.10",\n  "requests",'), True, id="a dependency added"),
        pytest.param(('"sqlalchemy>=2.0.40,<2.1"', '"sqlalchemy>=2.0,<3"'), True, id="a range widened"),
        pytest.param(('"pytest>=8.3",', ""), True, id="a dev dependency removed"),
        pytest.param(
            ("line-length = 110", "line-length = 100"), False, id="a tool setting is not a dependency"
        ),
    ],
)
def test_changed_pyproject_needs_a_refreshed_lock(copy: Path, edit: tuple[str, str], stale: bool) -> None:
    """Rule: changing what pyproject.toml installs without refreshing the lock fails, with a message
    that names the refresh command; other edits do not."""
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert edit[0] in text
    pyproject.write_text(text.replace(*edit), encoding="utf-8")
    proc = _check(copy)
    if stale:
        assert proc.returncode == 1
        assert "scripts/lock" in proc.stderr and "requirements.lock" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr


def test_lock_without_fingerprint_is_refused(copy: Path) -> None:
    """Rule: a lock that was not made by scripts/lock (no fingerprint) is refused."""
    lock = copy / "requirements.lock"
    lock.write_text(re.sub(r"^# pyproject-fingerprint: .*\n", "", lock.read_text(), flags=re.M))
    proc = _check(copy)
    assert proc.returncode == 1 and "scripts/lock" in proc.stderr


def test_every_locked_package_is_pinned_with_hashes() -> None:
    """Rule: every requirement in the lock is an exact pin followed by at least one sha256 hash
    (pip installs it with --require-hashes)."""
    text = LOCK.read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 3)[3])
    pins = [b for b in blocks if b.strip() and not b.startswith("#")]
    assert len(pins) > 100
    for block in pins:
        first = block.splitlines()[0]
        assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[^\s]+ \\$", first), first
        assert "--hash=sha256:" in block, first
    names = {b.split("==")[0].lower() for b in pins}
    # Direct dependencies, dev tools and the build backend are all in it.
    assert {"prefect", "sqlalchemy", "psycopg2-binary", "pytest", "ruff", "mypy", "setuptools", "uv"} <= names
