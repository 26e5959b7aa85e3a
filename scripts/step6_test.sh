#!/usr/bin/env bash
# The test command (`make test`): lint, migration checks and the full suite, on every database
# this machine can offer, logged to reports/step6_tests.log.
#
#   DATABASE_URL unset: SQLite, then PostgreSQL in a throwaway cluster started here, then
#                       TimescaleDB in the same cluster when the extension is installed.
#   DATABASE_URL set:   that database only.
#   APM_REQUIRE_POSTGRES=1 (set by .ci/run): fail when PostgreSQL can't be used.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p reports
exec > >(tee reports/step6_tests.log) 2>&1

# shellcheck source=scripts/lib/bootstrap.sh
source scripts/lib/bootstrap.sh || exit 1
# shellcheck source=scripts/lib/pg_cluster.sh
source scripts/lib/pg_cluster.sh

export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-step6-tests-only-not-a-secret}"
export DJANGO_DEBUG=0
export APM_TEST_RESULTS_FILE
APM_TEST_RESULTS_FILE=$(mktemp /tmp/apm-results.XXXXXX)
work=$(mktemp -d /tmp/apm-step6.XXXXXX)
status=0
declare -a ran=()

step() { printf '\n== %s\n' "$*"; }

run_suite() {  # run_suite LABEL DATABASE_URL APM_TIMESCALE
  local label=$1 url=$2 mode=$3 ok=1
  step "$label: makemigrations --check"
  DATABASE_URL=$url APM_TIMESCALE=$mode "$PY" manage.py makemigrations --check --dry-run || ok=0
  step "$label: migrate"
  DATABASE_URL=$url APM_TIMESCALE=$mode "$PY" manage.py migrate --noinput -v 1 || ok=0
  step "$label: manage.py test"
  DATABASE_URL=$url APM_TIMESCALE=$mode "$PY" manage.py test --noinput -v 1 || ok=0
  if [ $ok = 1 ]; then ran+=("$label: ok"); else ran+=("$label: FAILED"); status=1; fi
}

step "ruff"
"$PY" -m ruff check . || status=1

# Static files for WhiteNoise (DEBUG is off in tests, as in production).
export DJANGO_STATIC_ROOT="$work/static"
step "collectstatic"
"$PY" manage.py collectstatic --noinput -v 0 || status=1

# The front-proxy test (observability/tests/test_proxy.py) needs nginx; it skips without.
# shellcheck source=scripts/lib/nginx.sh
source scripts/lib/nginx.sh
step "nginx for the front-proxy test"
if nginx_find_or_install; then
  export APM_NGINX="$NGINX"
  proxy_line="front proxy (nginx): test_proxy ran in each suite above with $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
else
  proxy_line="front proxy (nginx): test_proxy skipped ($NGINX_WHY)"
fi
echo "$proxy_line"

if [ -n "${DATABASE_URL:-}" ]; then
  run_suite "DATABASE_URL" "$DATABASE_URL" "${APM_TIMESCALE:-auto}"
else
  run_suite "SQLite" "sqlite:///$work/apm.sqlite3" off
  step "starting a throwaway PostgreSQL cluster"
  if pg_cluster_start; then
    pg_cluster_createdb apm && run_suite "PostgreSQL" "$PG_CLUSTER_URL/apm" off
    if [ -n "$PG_TIMESCALE" ]; then
      pg_cluster_createdb apm_ts && run_suite "TimescaleDB" "$PG_CLUSTER_URL/apm_ts" require
    else
      ran+=("TimescaleDB: not installed on this machine, not run")
    fi
  else
    ran+=("PostgreSQL: could not start a cluster")
    [ "${APM_REQUIRE_POSTGRES:-0}" = 1 ] && status=1
  fi
fi

ran+=("$proxy_line")

step "fault suite (PostgreSQL stopped, restarted and frozen under ingest)"
bash scripts/test/test_faults.sh; rc=$?
case $rc in
  0) ran+=("fault suite: ok (see the table above)") ;;
  2) ran+=("fault suite: skipped (no PostgreSQL cluster could be started)")
     [ "${APM_REQUIRE_POSTGRES:-0}" = 1 ] && status=1 ;;
  *) ran+=("fault suite: FAILED"); status=1 ;;
esac
step "API contract: schema, offline docs, schemathesis, Postman import (scripts/test/test_schemathesis.sh)"
bash scripts/test/test_schemathesis.sh | tee "$work/contract.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
ran+=("$(tail -n 1 "$work/contract.log")")
step "Postman collection (newman, against gunicorn)"
bash scripts/test/test_postman.sh "$work/postman.summary" || status=1; ran+=("$(cat "$work/postman.summary" 2>/dev/null || echo 'Postman/newman: FAILED (no summary)')")
step "dashboard in a real browser (scripts/test/test_dashboard.sh)"
# shellcheck source=scripts/test/test_dashboard.sh
source scripts/test/test_dashboard.sh || status=1
ran+=("$DASHBOARD_RESULT")
step "examples (make demo --check)"
examples=$(bash scripts/test/test_examples.sh | tee /dev/stderr | tail -n 1)
ran+=("$examples"); [[ $examples == "examples: FAILED"* ]] && status=1

step "summary"
for line in "${ran[@]}"; do echo "  $line"; done
"$PY" - "$APM_TEST_RESULTS_FILE" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for r in rows:
    print(f"  {r['database']}: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped")
total = {k: sum(r[k] for r in rows) for k in ("passed", "failed", "skipped")}
print(f"databases: {', '.join(r['database'] for r in rows) or 'none'}")
print(f"tests: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
PYEOF
rm -rf "$work" "$APM_TEST_RESULTS_FILE"
[ $status = 0 ] && echo "step6: OK" || echo "step6: FAILED"
exit $status
