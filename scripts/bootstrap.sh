#!/usr/bin/env bash
# Install everything gridflow needs on a fresh Debian 12 machine: system packages (PostgreSQL 15,
# PostGIS 3, Chromium for browser tests, CJK fonts) and a project virtualenv in .venv holding
# exactly the versions pinned (with hashes) in requirements.lock. Idempotent and quick when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The lock must describe this pyproject.toml (a fresh machine gets exactly what CI tested).
python3 scripts/lock_fingerprint.py --check

need_apt=()
for pkg in postgresql-15 postgresql-15-postgis-3 chromium chromium-driver fonts-noto-cjk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "gridflow: missing system packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "gridflow: installing system packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${GRIDFLOW_PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when the lock changed. `pip install -r` adds and upgrades but never removes, so
# a package dropped from the lock is uninstalled first.
hash=$(sha256sum requirements.lock | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "gridflow: installing Python dependencies from requirements.lock into .venv"
  locked=$(grep -oE '^[A-Za-z0-9_.-]+==' requirements.lock | sed 's/==$//' | tr 'A-Z_.' 'a-z--' | sort -u)
  extra=$(.venv/bin/python -m pip freeze --exclude-editable 2>/dev/null | grep -oE '^[A-Za-z0-9_.-]+==' \
    | sed 's/==$//' | tr 'A-Z_.' 'a-z--' | sort -u | comm -23 - <(echo "$locked") \
    | grep -vxE 'pip|gridflow' || true)
  if [ -n "$extra" ]; then
    # shellcheck disable=SC2086
    .venv/bin/python -m pip uninstall -q -y $extra
  fi
  .venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  .venv/bin/python -m pip check
  # PYTHONDONTWRITEBYTECODE is set on these machines: compile once so start-up stays fast.
  .venv/bin/python -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
  echo "$hash" > "$stamp"
fi
