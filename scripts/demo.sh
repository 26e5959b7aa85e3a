#!/usr/bin/env bash
# `make demo`: the backend, the example apps of docs/examples/ (each in its own virtualenv under
# .demo/, instrumented with OpenTelemetry and exporting to the backend) and the traffic generator,
# so the dashboard fills with live data within a minute. Ctrl-C stops everything it started.
#
#   scripts/demo.sh            serve until Ctrl-C (traffic for DEMO_SECONDS, then the apps stay up)
#   scripts/demo.sh --check    self-test for `make test`: a fresh SQLite database, free ports,
#                              a short burst of traffic, then compare what the backend stored with
#                              what the generator saw; exit 0 (passed), 1 (failed), 77 (skipped)
#
# Environment: DEMO_PORT (backend, 8000), DEMO_DJANGO_PORT (8001), DEMO_FASTAPI_PORT (8002),
# DEMO_APPS ("django fastapi"), DEMO_REQUESTS (1500), DEMO_SECONDS (120), DEMO_RATE (15);
# DATABASE_URL as for `make run` (SQLite db.sqlite3 by default).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
examples=$root/docs/examples
check=0
[ "${1:-}" = --check ] && check=1

say() { printf 'demo: %s\n' "$*"; }
skip() { say "SKIPPED: $*"; exit 77; }

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping ${#pids[@]} processes"
    kill "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
  fi
  [ -n "${scratch:-}" ] && rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_busy() { "$PY" -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"; }

# shellcheck source=scripts/lib/bootstrap.sh
source scripts/lib/bootstrap.sh || exit 1

apps=${DEMO_APPS:-django fastapi}
declare -A service=([django]=shop-django [fastapi]=inventory-fastapi)
declare -A port
if [ $check = 1 ]; then
  scratch=$(mktemp -d /tmp/apm-demo.XXXXXX)
  export DATABASE_URL="sqlite:///$scratch/demo.sqlite3"
  credentials=$scratch/credentials.json
  backend_port=$(free_port); port[django]=$(free_port); port[fastapi]=$(free_port)
  requests=${DEMO_REQUESTS:-120}; seconds=${DEMO_SECONDS:-60}; rate=${DEMO_RATE:-40}
  logs=$scratch
else
  credentials=$root/.local-credentials.json  # the same login and key as `make run`
  backend_port=${DEMO_PORT:-8000}; port[django]=${DEMO_DJANGO_PORT:-8001}; port[fastapi]=${DEMO_FASTAPI_PORT:-8002}
  requests=${DEMO_REQUESTS:-1500}; seconds=${DEMO_SECONDS:-120}; rate=${DEMO_RATE:-15}
  logs=$root/.demo/logs
  for p in "$backend_port" $(for app in $apps; do echo "${port[$app]}"; done); do
    if port_busy "$p"; then
      say "port $p on 127.0.0.1 is in use (make run?); stop it or set DEMO_PORT / DEMO_DJANGO_PORT / DEMO_FASTAPI_PORT"
      exit 1
    fi
  done
fi
mkdir -p "$logs"

# One virtualenv per example app, rebuilt when its requirements change (as scripts/lib/bootstrap.sh).
for app in $apps; do
  req=$examples/${app}_app/requirements.txt
  venv=$root/.demo/venv-$app
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/opentelemetry-instrument" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "installing docs/examples/${app}_app/requirements.txt into .demo/venv-$app ..."
    if ! { python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"; } \
        > "$logs/pip-$app.log" 2>&1; then
      tail -n 5 "$logs/pip-$app.log" >&2
      if [ $check = 1 ]; then skip "could not install the $app example's requirements (see above)"; fi
      say "could not install the $app example's requirements (log: $logs/pip-$app.log)"; exit 1
    fi
    echo "$want" > "$venv/.requirements.sha256"
  fi
done

# The backend: migrate, the local admin key, gunicorn on loopback.
export DJANGO_DEBUG=1  # local_credentials and the demo's static files want development settings
"$PY" manage.py migrate --noinput -v 0 || { say "migrate failed"; exit 1; }
backend=http://127.0.0.1:$backend_port
[ $check = 0 ] && { "$PY" manage.py local_credentials --url "$backend" --file "$credentials" || exit 1; }
key=$("$PY" manage.py local_credentials --key-only --file "$credentials" | tail -n 1) || exit 1
GUNICORN_BIND=127.0.0.1:$backend_port GUNICORN_WORKERS=2 GUNICORN_ACCESSLOG="" GUNICORN_LOGLEVEL=warning \
  "$PY" -m gunicorn -c gunicorn.conf.py apm_platform.wsgi:application > "$logs/backend.log" 2>&1 &
pids+=($!)

# The example apps, under opentelemetry-instrument: the OTEL_* variables are all they need.
export OTEL_EXPORTER_OTLP_ENDPOINT=$backend
export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer $key"
export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
export OTEL_TRACES_EXPORTER=otlp OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none
export OTEL_BSP_SCHEDULE_DELAY=1000  # export spans every second (default 5 s): a livelier demo
targets=()
for app in $apps; do
  venv=$root/.demo/venv-$app
  if [ "$app" = django ]; then
    (cd "$examples/django_app" && DJANGO_SETTINGS_MODULE=shop.settings OTEL_SERVICE_NAME=${service[$app]} \
      exec "$venv/bin/opentelemetry-instrument" "$venv/bin/python" manage.py runserver --noreload \
      "127.0.0.1:${port[$app]}") > "$logs/$app.log" 2>&1 &
  else
    (cd "$examples/fastapi_app" && OTEL_SERVICE_NAME=${service[$app]} \
      exec "$venv/bin/opentelemetry-instrument" "$venv/bin/uvicorn" app:app --host 127.0.0.1 \
      --port "${port[$app]}" --log-level warning) > "$logs/$app.log" 2>&1 &
  fi
  pids+=($!)
  targets+=(--app "$app=http://127.0.0.1:${port[$app]}")
done

for _ in $(seq 1 120); do
  curl -fsS -o /dev/null "$backend/api/health/" 2>/dev/null && break
  sleep 0.5
done
curl -fsS -o /dev/null "$backend/api/health/" || { say "the backend did not start:"; tail -n 20 "$logs/backend.log"; exit 1; }

if [ $check = 1 ]; then
  traffic_json=$scratch/traffic.json
  "$PY" "$examples/traffic.py" "${targets[@]}" --requests "$requests" --seconds "$seconds" --rate "$rate" \
    --seed 16 --json "$traffic_json" || { tail -n 20 "$logs"/*.log; exit 1; }
  checks=()
  for app in $apps; do checks+=(--app "$app=${service[$app]}=$root/.demo/venv-$app/bin/python"); done
  if "$PY" scripts/test/check_demo.py --backend "$backend" --key "$key" --traffic "$traffic_json" "${checks[@]}"; then
    exit 0
  fi
  for app in $apps; do say "--- $app log"; tail -n 20 "$logs/$app.log"; done
  exit 1
fi

say "backend at $backend (dashboard: $backend/, log in as printed above); logs in .demo/logs/"
for app in $apps; do say "$app example (${service[$app]}) at http://127.0.0.1:${port[$app]}"; done
say "sending up to $requests requests over ${seconds}s; Ctrl-C stops everything"
"$PY" "$examples/traffic.py" "${targets[@]}" --requests "$requests" --seconds "$seconds" --rate "$rate"
say "traffic done; the backend and the apps keep running until Ctrl-C (or rerun traffic.py)"
wait
