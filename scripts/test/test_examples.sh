#!/usr/bin/env bash
# Part of the test command: the docs/examples apps and `make demo`, for real. Checks the demo
# script's syntax, then runs `scripts/demo.sh --check` (the example apps in their own
# virtualenvs under .demo/, instrumented by opentelemetry-instrument, exporting to a live
# gunicorn of ours on a fresh SQLite database; the backend must store one event per call with
# the right service, method, route and status). Prints one summary line last:
#   examples: ok | examples: FAILED (...) | examples: skipped (...)
# Exit status: 0 ok or skipped, 1 failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! bash -n scripts/demo.sh; then
  echo "examples: FAILED (scripts/demo.sh has a syntax error)"; exit 1
fi
# The demo builds on the OTLP receiver and the API keys; a branch without them can't run it.
if ! grep -q 'v1/traces' apm_platform/urls.py || [ ! -f observability/management/commands/local_credentials.py ]; then
  echo "examples: skipped (needs POST /v1/traces and manage.py local_credentials, not on this branch yet)"; exit 0
fi
if ! command -v curl > /dev/null; then
  echo "examples: skipped (curl is not installed; the demo script needs it)"; exit 0
fi
bash scripts/demo.sh --check
rc=$?
case $rc in
  0) echo "examples: ok (make demo's apps export to gunicorn; every call stored with its service, route and status)" ;;
  77) echo "examples: skipped (the example apps' requirements could not be installed; see above)"; rc=0 ;;
  *) echo "examples: FAILED (scripts/demo.sh --check exited $rc)"; rc=1 ;;
esac
exit $rc
