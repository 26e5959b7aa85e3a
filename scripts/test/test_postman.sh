#!/usr/bin/env bash
# Runs the Postman collection (postman/) with newman against a real gunicorn, twice in a row (it
# must be re-runnable), on a throwaway SQLite database with DEBUG off and a fresh admin key.
#
#   scripts/test/test_postman.sh [SUMMARY_FILE]
#
# newman 6 comes from npm into .cache/newman (gitignored) the first time; without npm (or when
# the install fails) the run is skipped with the reason. The last line (also written to
# SUMMARY_FILE) says whether it ran, passed, or was skipped. Exit status 1 only on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
summary_file=${1:-/dev/null}
finish() { echo "$1"; echo "$1" > "$summary_file"; exit "$2"; }

# shellcheck source=scripts/lib/bootstrap.sh
source scripts/lib/bootstrap.sh || finish "Postman/newman: FAILED (could not bootstrap .venv)" 1

collection=postman/APM_Observability_Step2.postman_collection.json
prefix=.cache/newman
newman=$prefix/node_modules/.bin/newman
if [ ! -x "$newman" ]; then
  command -v npm >/dev/null || finish "Postman/newman: skipped (npm is not installed; install Node.js 18+ to run it)" 0
  echo "postman: npm install --prefix $prefix newman@6"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error newman@6 >&2 \
    || finish "Postman/newman: skipped (npm install newman@6 failed: no registry?)" 0
fi
version=$("$newman" --version)

work=$(mktemp -d /tmp/apm-postman.XXXXXX)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

export DJANGO_DEBUG=0 DJANGO_SECRET_KEY=postman-tests-only-not-a-secret DJANGO_ALLOWED_HOSTS=127.0.0.1 DJANGO_LOG_LEVEL=ERROR \
  DATABASE_URL="sqlite:///$work/postman.sqlite3" APM_TIMESCALE=off DJANGO_STATIC_ROOT="$work/static"
unset DATABASE_PASSWORD
"$PY" manage.py migrate --noinput -v 0 || finish "Postman/newman: FAILED (migrate)" 1
key=$("$PY" manage.py create_api_key postman --scope admin | tail -n 1)
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
GUNICORN_BIND=127.0.0.1:$port GUNICORN_WORKERS=2 GUNICORN_ACCESSLOG= GUNICORN_LOGLEVEL=warning \
  "$PY" -m gunicorn -c gunicorn.conf.py apm_platform.wsgi:application &
server_pid=$!
for _ in $(seq 100); do
  "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/api/health/', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

total=0
for run in 1 2; do
  echo "postman: newman $version, run $run of 2 against gunicorn on 127.0.0.1:$port"
  "$newman" run "$collection" --env-var "baseUrl=http://127.0.0.1:$port" --env-var "apiKey=$key" \
    --reporters cli,json --reporter-json-export "$work/run$run.json" --color off \
    || finish "Postman/newman: FAILED (run $run of 2; see the newman output above)" 1
  counts=$("$PY" -c 'import json, sys; s = json.load(open(sys.argv[1]))["run"]["stats"]["assertions"]; print(s["total"], s["failed"])' "$work/run$run.json")
  read -r asserted failed <<< "$counts"
  [ "$failed" = 0 ] && [ "$asserted" -gt 0 ] || finish "Postman/newman: FAILED (run $run: $failed of $asserted assertions failed)" 1
  total=$((total + asserted))
done
finish "Postman/newman: ok (newman $version, 2 runs in a row on SQLite + gunicorn, $total assertions passed)" 0
