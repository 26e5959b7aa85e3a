#!/usr/bin/env bash
# nginx for the front-proxy test (observability/tests/test_proxy.py runs docker/nginx.conf in
# front of a test gunicorn).
#
#   source scripts/lib/nginx.sh
#   nginx_find_or_install   # sets NGINX (path) or returns 1 with NGINX_WHY set
#
# Installs Debian's nginx-light with apt-get when it is missing and we are root (as
# scripts/lib/chromium.sh does for chromium); otherwise says why it can't.

NGINX=""
NGINX_WHY=""

nginx_find_or_install() {
  local path
  for path in "${APM_NGINX:-}" "$(command -v nginx 2>/dev/null)" /usr/sbin/nginx; do
    [ -n "$path" ] && [ -x "$path" ] && { NGINX=$path; return 0; }
  done
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    NGINX_WHY="nginx not found and cannot install it (needs root + apt-get)"
    return 1
  fi
  echo "nginx: installing Debian's nginx-light (apt-get install --no-install-recommends nginx-light)..." >&2
  # policy-rc.d or not, the package's own service is never needed: the test runs its own nginx.
  if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends nginx-light >&2; }; then
    NGINX_WHY="apt-get install nginx-light failed"
    return 1
  fi
  [ -x /usr/sbin/nginx ] || { NGINX_WHY="nginx-light installed no /usr/sbin/nginx"; return 1; }
  NGINX=/usr/sbin/nginx
}
