#!/usr/bin/env bash
# Install everything gridflow needs on a fresh Debian 12 machine: system packages (PostgreSQL 15,
# PostGIS 3, Chromium for browser tests) and a project virtualenv in .venv. Idempotent and quick
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in postgresql-15 postgresql-15-postgis-3 chromium chromium-driver; do
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
# Reinstall only when the dependency list changed.
hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "gridflow: installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  # PYTHONDONTWRITEBYTECODE is set on these machines: compile once so start-up stays fast.
  .venv/bin/python -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
  echo "$hash" > "$stamp"
fi
