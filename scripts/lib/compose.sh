#!/usr/bin/env bash
# `make up` / `make down` / `make logs`: docker compose with the project's files, once it is
# known to be new enough. docker/docker-compose.yml needs Compose v2.24.0 or later (`name:`,
# `env_file` with `required`); Debian 12's docker-compose 1.29 rejects it, so say so in one
# line instead of letting it fail on the file. With DB_PORT set (environment or .env), the
# database is published too (docker/docker-compose.db-port.yml).
#
#   bash scripts/lib/compose.sh up --build -d
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
COMPOSE_MIN=2.24.0

if ! command -v docker >/dev/null 2>&1; then
  echo "compose: docker not found; install Docker Engine with the Compose plugin v$COMPOSE_MIN or later (docs/DEPLOY.md)" >&2
  exit 1
fi
if ! version=$(docker compose version --short 2>/dev/null) || [ -z "$version" ]; then
  echo "compose: 'docker compose' (the Compose v2 plugin) is missing; v$COMPOSE_MIN or later is needed (docker-compose 1.x can't read docker/docker-compose.yml; docs/DEPLOY.md)" >&2
  exit 1
fi
version=${version#v}
if [ "$(printf '%s\n%s\n' "$COMPOSE_MIN" "$version" | sort -V | head -n 1)" != "$COMPOSE_MIN" ]; then
  echo "compose: Docker Compose $version is too old; v$COMPOSE_MIN or later is needed (docs/DEPLOY.md)" >&2
  exit 1
fi

files=(-f docker/docker-compose.yml)
db_port=${DB_PORT:-}
if [ -z "$db_port" ] && [ -f .env ]; then
  db_port=$(sed -n 's/^[[:space:]]*DB_PORT[[:space:]]*=[[:space:]]*//p' .env | tail -n 1 | tr -d "\"' \r")
fi
[ -n "$db_port" ] && files+=(-f docker/docker-compose.db-port.yml)
exec docker compose --env-file .env "${files[@]}" "$@"
