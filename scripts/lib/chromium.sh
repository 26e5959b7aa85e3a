#!/usr/bin/env bash
# Debian's chromium for the dashboard's browser tests (Playwright drives it; Playwright's own
# browser download is not reachable from here).
#
#   source scripts/lib/chromium.sh
#   chromium_find_or_install   # sets CHROMIUM (path) or returns 1 with CHROMIUM_WHY set
#
# Installs `chromium` with apt-get when it is missing and we are root (as pg_cluster.sh does
# for PostgreSQL); otherwise says why it can't.

CHROMIUM=""
CHROMIUM_WHY=""

chromium_find_or_install() {
  local path
  for path in "${APM_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    [ -n "$path" ] && [ -x "$path" ] && { CHROMIUM=$path; return 0; }
  done
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    CHROMIUM_WHY="chromium not found and cannot install it (needs root + apt-get)"
    return 1
  fi
  echo "chromium: installing Debian's chromium (apt-get install --no-install-recommends chromium)..." >&2
  if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends chromium >&2; }; then
    CHROMIUM_WHY="apt-get install chromium failed"
    return 1
  fi
  [ -x /usr/bin/chromium ] || { CHROMIUM_WHY="chromium package installed no /usr/bin/chromium"; return 1; }
  CHROMIUM=/usr/bin/chromium
}
