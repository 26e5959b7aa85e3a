#!/bin/sh
# Container start: wait for the database (bounded), migrate, apply the retention policies,
# collect static files, then start
# gunicorn apm_platform.wsgi:application (or the command given, for
# `docker compose run web python manage.py ...`).
set -eu
cd "$(dirname "$0")/.."  # /app in the image

echo "entrypoint: waiting for the database (up to ${DB_WAIT_TIMEOUT:-60}s)"
python manage.py wait_for_db --timeout "${DB_WAIT_TIMEOUT:-60}"

echo "entrypoint: migrate"
python manage.py migrate --noinput

# Retention and columnstore policies follow the environment, so they are applied at every
# start (idempotent), not frozen in a migration.
echo "entrypoint: apply_policies"
python manage.py apply_policies

echo "entrypoint: collectstatic"
python manage.py collectstatic --noinput -v 0

if [ "$#" -eq 0 ]; then
  set -- gunicorn -c gunicorn.conf.py apm_platform.wsgi:application
fi
echo "entrypoint: exec $*"
exec "$@"
