#!/usr/bin/env bash
# The dashboard's browser tests (observability/tests/test_dashboard_browser.py): Playwright
# driving Debian's chromium against a live server, once, on SQLite. Installs chromium when it is
# missing and we are root; otherwise skips and says why. Called by scripts/step6_test.sh, which
# reads DASHBOARD_RESULT (the summary line); usable alone: `bash scripts/test/test_dashboard.sh`.
#
# Exit status: 0 passed or skipped, 1 failed.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
# shellcheck source=scripts/lib/bootstrap.sh
source scripts/lib/bootstrap.sh || exit 1
# shellcheck source=scripts/lib/chromium.sh
source scripts/lib/chromium.sh

DASHBOARD_RESULT=""
_dash_main() {
  if [ "${APM_BROWSER_TESTS:-}" = 0 ]; then
    DASHBOARD_RESULT="Dashboard (chromium): skipped (APM_BROWSER_TESTS=0)"
    return 0
  fi
  if ! chromium_find_or_install; then
    DASHBOARD_RESULT="Dashboard (chromium): skipped ($CHROMIUM_WHY)"
    echo "dashboard: $DASHBOARD_RESULT"
    return 0
  fi
  local work rc=0
  work=$(mktemp -d /tmp/apm-dash.XXXXXX)
  echo "dashboard: browser tests with $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null | head -1))"
  # Own static root and database: this may run alone, and the suite's results file is the
  # per-database summary's, not ours.
  DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-dashboard-tests-only-not-a-secret}" DJANGO_DEBUG=0 \
    DJANGO_STATIC_ROOT="$work/static" "$PY" manage.py collectstatic --noinput -v 0 || rc=1
  if [ $rc = 0 ]; then
    env -u APM_TEST_RESULTS_FILE DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-dashboard-tests-only-not-a-secret}" \
      DJANGO_DEBUG=0 DJANGO_STATIC_ROOT="$work/static" DATABASE_URL="sqlite:///$work/apm.sqlite3" \
      APM_TIMESCALE=off APM_BROWSER_TESTS=1 APM_CHROMIUM="$CHROMIUM" \
      "$PY" manage.py test --noinput -v 1 observability.tests.test_dashboard_browser 2>&1 | tee "$work/out.log"
    rc=${PIPESTATUS[0]}
  fi
  local counts
  counts=$(grep -o 'passed.*skipped' "$work/out.log" 2>/dev/null | tail -1)
  if [ $rc = 0 ]; then
    DASHBOARD_RESULT="Dashboard (chromium): ok${counts:+ ($(grep -o '[0-9]* passed, [0-9]* failed, [0-9]* skipped' "$work/out.log" | tail -1))}"
  else
    DASHBOARD_RESULT="Dashboard (chromium): FAILED"
  fi
  rm -rf "$work"
  return $rc
}

_dash_main
_rc=$?
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "$DASHBOARD_RESULT"
  exit $_rc
fi
(exit $_rc)
