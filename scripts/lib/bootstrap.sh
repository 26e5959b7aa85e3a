#!/usr/bin/env bash
# Create .venv and install the pinned requirements when they changed (sourced by the scripts
# and the Makefile). Sets PY to the virtualenv's python.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_venv="$_root/.venv"
_stamp="$_venv/.requirements.sha256"
_want=$(cat "$_root/requirements.txt" "$_root/requirements-dev.txt" | sha256sum | cut -d' ' -f1)
if [ ! -x "$_venv/bin/python" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "bootstrap: installing requirements into .venv ..." >&2
  python3 -m venv "$_venv" || { echo "bootstrap: python3 -m venv failed" >&2; return 1 2>/dev/null || exit 1; }
  "$_venv/bin/python" -m pip install -q --disable-pip-version-check -r "$_root/requirements-dev.txt" >&2 \
    || { echo "bootstrap: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
  echo "$_want" > "$_stamp"
fi
PY="$_venv/bin/python"
export PY
