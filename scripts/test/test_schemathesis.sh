#!/usr/bin/env bash
# The API contract, checked against a real gunicorn on a throwaway SQLite database:
#   1. the OpenAPI schema validates (spectacular --validate --fail-on-warn);
#   2. /api/docs/ and /api/redoc/ load every script and stylesheet from this server (offline);
#   3. schemathesis fuzzes every operation: positive and negative data, every check, stateful
#      links (create -> read -> update -> delete), fixed seed, bounded examples;
#   4. Postman import: openapi-to-postmanv2 (npm) converts the schema and newman runs the
#      collection against the server (skipped, with the reason, when npm is missing).
# Credentials: an admin key made by `manage.py create_api_key` in the server's own database (as an
# operator would), or APM_FUZZ_HEADER="Name: value" to use your own; with it, schemathesis's
# ignored_auth check sends each operation without the credential and expects a refusal. The docs
# pages are for people: they are fetched with a session (a user logged in on /accounts/login/).
# Knobs: APM_FUZZ_SEED (default 13), APM_FUZZ_EXAMPLES (default 15 per operation),
# APM_FUZZ_POSTMAN=0 skips step 4, APM_FUZZ_DATABASE_URL fuzzes another (throwaway) database. The last line printed is the one-line summary.
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/bootstrap.sh
source scripts/lib/bootstrap.sh || { echo "API contract: FAILED (bootstrap)"; exit 1; }

SEED=${APM_FUZZ_SEED:-13}
EXAMPLES=${APM_FUZZ_EXAMPLES:-15}
NPM_VERSIONS="openapi-to-postmanv2@6.3.3 newman@6.2.2"
TOOLS="$PWD/.tools/npm"
work=$(mktemp -d /tmp/apm-contract.XXXXXX)
gunicorn_pid=""
cleanup() {
  if [ -n "$gunicorn_pid" ]; then kill "$gunicorn_pid" 2>/dev/null; wait "$gunicorn_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# APM_FUZZ_DATABASE_URL: fuzz against that (migrated, throwaway) database instead of SQLite.
export DATABASE_URL="${APM_FUZZ_DATABASE_URL:-sqlite:///$work/contract.sqlite3}" DJANGO_DEBUG=0 \
  APM_TIMESCALE="$([ -n "${APM_FUZZ_DATABASE_URL:-}" ] && echo auto || echo off)" \
  DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-contract-tests-only-not-a-secret-0123456789abcdef}" \
  DJANGO_STATIC_ROOT="$work/static" DJANGO_ALLOWED_HOSTS=127.0.0.1
declare -a results=()
status=0
fail() { results+=("$1: FAILED"); status=1; }

echo "== schema: spectacular --validate --fail-on-warn"
if "$PY" manage.py spectacular --validate --fail-on-warn --file "$work/openapi.yaml"; then
  results+=("schema valid")
else
  fail "schema"
fi

"$PY" manage.py migrate --noinput -v 0 && "$PY" manage.py collectstatic --noinput -v 0 \
  || { echo "API contract: FAILED (migrate/collectstatic)"; exit 1; }
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
GUNICORN_BIND="127.0.0.1:$port" GUNICORN_WORKERS=2 GUNICORN_ACCESSLOG="" GUNICORN_LOGLEVEL=warning \
  GUNICORN_MAX_REQUESTS=0 "$PY" -m gunicorn -c gunicorn.conf.py apm_platform.wsgi:application \
  2> "$work/gunicorn.log" &
gunicorn_pid=$!
for _ in $(seq 100); do
  curl -fs "$base/api/health/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$base/api/health/" >/dev/null || { cat "$work/gunicorn.log"; echo "API contract: FAILED (gunicorn)"; exit 1; }

# Credential headers, one "Name: value" per line.
if [ -n "${APM_FUZZ_HEADER:-}" ]; then
  printf '%s\n' "$APM_FUZZ_HEADER" > "$work/headers"
else
  key=$("$PY" manage.py create_api_key contract-tests --scope admin 2>"$work/headers.err" | tail -n 1)
  if [ -n "$key" ]; then echo "Authorization: Bearer $key" > "$work/headers"
  else cat "$work/headers.err"; : > "$work/headers"; fail "credentials"; fi
fi
declare -a header_args=() curl_headers=()
while IFS= read -r line; do
  [ -n "$line" ] && header_args+=(-H "$line") && curl_headers+=(-H "$line")
done < "$work/headers"

echo "== docs pages load offline (every script and stylesheet from $base), for a logged-in user"
docs_ok=1
# A user logs in on the login page (its CSRF token from the form's cookie); curl keeps the session.
jar="$work/cookies"
docs_password="contract-docs-$RANDOM$RANDOM"
"$PY" manage.py shell -c "from django.contrib.auth import get_user_model
get_user_model().objects.create_user('docs-reader', password='$docs_password')" || docs_ok=0
curl -fs -c "$jar" -b "$jar" -o /dev/null "$base/accounts/login/" || docs_ok=0
csrf=$(awk '$6 == "csrftoken" { print $7 }' "$jar" 2>/dev/null)
code=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{http_code}' -X POST "$base/accounts/login/" \
  --data-urlencode "username=docs-reader" --data-urlencode "password=$docs_password" \
  --data-urlencode "csrfmiddlewaretoken=$csrf")
[ "$code" = 302 ] || { echo "login: answered $code, not 302"; docs_ok=0; }
for page in /api/docs/ /api/redoc/; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "${curl_headers[@]}" "$base$page")
  [ "$code" = 302 ] || { echo "$page without a session: answered $code, not 302 to the login page"; docs_ok=0; }
  html=$(curl -fs -b "$jar" "$base$page") || { echo "$page: no answer"; docs_ok=0; continue; }
  if grep -Eo '(src|href)="https?://[^"]+"' <<<"$html"; then echo "$page: loads from another host"; docs_ok=0; fi
  assets=$(grep -Eo '(src|href)="/static/[^"]+"' <<<"$html" | sed -E 's/^(src|href)="//; s/"$//')
  [ -n "$assets" ] || { echo "$page: no static assets found"; docs_ok=0; }
  for asset in $assets; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$base$asset")
    [ "$code" = 200 ] || { echo "$page: $asset answered $code"; docs_ok=0; }
  done
  echo "$page: $(wc -w <<<"$assets") static assets, all 200"
done
if [ $docs_ok = 1 ]; then results+=("docs offline"); else fail "docs offline"; fi

echo "== schemathesis (seed $SEED, at most $EXAMPLES examples per operation)"
declare -a exclude=()
if [ ${#header_args[@]} -eq 0 ]; then
  echo "no credential: ignored_auth not checked"
  exclude=(--exclude-checks ignored_auth)
fi
# One worker: with several, hypothesis' lambda introspection trips over threads on Python 3.11.
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/scripts/test" timeout 300 "$(dirname "$PY")/st" run \
    "$base/api/schema/?format=json" --url "$base" "${header_args[@]}" \
    --checks all "${exclude[@]}" --mode all --phases examples,coverage,fuzzing,stateful \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 30 \
    --suppress-health-check too_slow,filter_too_much --no-color 2>&1 | tee "$work/st.log"
st_rc=${PIPESTATUS[0]}
if [ "$st_rc" = 0 ]; then
  results+=("schemathesis passed ($(grep -Eo '[0-9]+ generated' "$work/st.log" | head -1) test cases, seed $SEED)")
else
  echo "schemathesis failed (exit $st_rc); every failure above ends with the curl that reproduces it."
  fail "schemathesis"
fi

echo "== Postman import: openapi-to-postmanv2 + newman"
if [ "${APM_FUZZ_POSTMAN:-1}" = 0 ]; then
  results+=("Postman import skipped (APM_FUZZ_POSTMAN=0)")
elif ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  results+=("Postman import skipped (npm/node not installed)")
else
  if [ ! -x "$TOOLS/node_modules/.bin/newman" ] || [ ! -x "$TOOLS/node_modules/.bin/openapi2postmanv2" ] \
      || [ "$(cat "$TOOLS/.versions" 2>/dev/null)" != "$NPM_VERSIONS" ]; then
    echo "installing $NPM_VERSIONS into $TOOLS"
    mkdir -p "$TOOLS"
    # shellcheck disable=SC2086
    if npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error $NPM_VERSIONS >"$work/npm.log" 2>&1; then
      echo "$NPM_VERSIONS" > "$TOOLS/.versions"
    else
      cat "$work/npm.log"
    fi
  fi
  if [ -x "$TOOLS/node_modules/.bin/newman" ] && [ -x "$TOOLS/node_modules/.bin/openapi2postmanv2" ]; then
    curl -fs "${curl_headers[@]}" "$base/api/schema/?format=json" -o "$work/openapi.json"
    if "$TOOLS/node_modules/.bin/openapi2postmanv2" -s "$work/openapi.json" -o "$work/collection.json" \
        -O folderStrategy=Tags,requestParametersResolution=Schema,exampleParametersResolution=Schema \
        > "$work/convert.log" 2>&1 \
      && "$TOOLS/node_modules/.bin/newman" run "$work/collection.json" --env-var "baseUrl=$base" \
        --env-var "bearerToken=$(sed -n 's/^Authorization: Bearer //p' "$work/headers" | head -1)" \
        --reporters cli,json --reporter-json-export "$work/newman.json" --color off > "$work/newman.log" 2>&1 \
      ; [ -s "$work/newman.json" ] \
      && "$PY" scripts/test/check_newman.py "$work/openapi.json" "$work/newman.json" "$work/headers"; then
      results+=("Postman import ok ($(cat "$work/newman.summary"))")
    else
      tail -n 40 "$work/convert.log" "$work/newman.log" 2>/dev/null
      fail "Postman import"
    fi
  else
    results+=("Postman import skipped (npm install failed: see above)")
  fi
fi

summary=$(IFS=';'; echo "${results[*]}" | sed 's/;/; /g')
if [ $status = 0 ]; then echo "API contract: ok: $summary"; else echo "API contract: FAILED: $summary"; fi
exit $status
