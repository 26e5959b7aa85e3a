#!/bin/sh
# Container start: wait for the database (bounded), migrate, collect static files, then run
# the command (gunicorn by default; `docker compose run web python manage.py ...` also works).
set -eu
cd "$(dirname "$0")/.."  # /app in the image

echo "entrypoint: waiting for the database (up to ${DB_WAIT_TIMEOUT:-60}s)"
python manage.py wait_for_db --timeout "${DB_WAIT_TIMEOUT:-60}"

echo "entrypoint: migrate"
python manage.py migrate --noinput

echo "entrypoint: collectstatic"
python manage.py collectstatic --noinput -v 0

echo "entrypoint: exec $*"
exec "$@"
