#!/usr/bin/env bash
# Create .venv and install the pinned requirements when they changed (sourced by the scripts
# and the Makefile). Sets PY to the virtualenv's python.
#
#   APM_BOOTSTRAP=runtime source scripts/lib/bootstrap.sh   # requirements.txt: what `make run` needs
#   source scripts/lib/bootstrap.sh    # (APM_BOOTSTRAP=dev) requirements-dev.txt too: tests, lint,
#                                  # benchmarks; the default, so every test script installs what it runs
#
# (An environment variable, not an argument: a sourced script sees its caller's arguments.) Each mode has its own stamp, the hash of the files
# it installed: a dev install satisfies runtime too (requirements-dev.txt includes
# requirements.txt), a runtime install never pulls in the development tools.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_venv="$_root/.venv"
_mode=${APM_BOOTSTRAP:-dev}
case $_mode in
  runtime) _files=("$_root/requirements.txt") ;;
  dev) _files=("$_root/requirements.txt" "$_root/requirements-dev.txt") ;;
  *) echo "bootstrap: unknown mode '$_mode' (runtime or dev)" >&2; return 1 2>/dev/null || exit 1 ;;
esac
# The dev stamp keeps the name it had before there were modes: an existing .venv stays current.
_stamp_of() { if [ "$1" = dev ]; then echo "$_venv/.requirements.sha256"; else echo "$_venv/.requirements-runtime.sha256"; fi; }
_hash_of() {  # _hash_of MODE: the hash its stamp must hold
  if [ "$1" = runtime ]; then cat "$_root/requirements.txt"; else cat "$_root/requirements.txt" "$_root/requirements-dev.txt"; fi \
    | sha256sum | cut -d' ' -f1
}
_current() {  # _current MODE: true when the venv holds what MODE needs
  [ "$(cat "$(_stamp_of "$1")" 2>/dev/null)" = "$(_hash_of "$1")" ] && return 0
  [ "$1" = runtime ] && [ "$(cat "$(_stamp_of dev)" 2>/dev/null)" = "$(_hash_of dev)" ]
}
if [ ! -x "$_venv/bin/python" ] || ! _current "$_mode"; then
  echo "bootstrap: installing ${_files[-1]##*/} into .venv ..." >&2
  python3 -m venv "$_venv" || { echo "bootstrap: python3 -m venv failed" >&2; return 1 2>/dev/null || exit 1; }
  "$_venv/bin/python" -m pip install -q --disable-pip-version-check -r "${_files[-1]}" >&2 \
    || { echo "bootstrap: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
  _hash_of "$_mode" > "$(_stamp_of "$_mode")"
  # requirements-dev.txt includes requirements.txt: a dev install is a runtime install too.
  [ "$_mode" = dev ] && _hash_of runtime > "$(_stamp_of runtime)"
fi
PY="$_venv/bin/python"
export PY
unset -f _stamp_of _hash_of _current
