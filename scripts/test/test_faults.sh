#!/usr/bin/env bash
# The fault suite (scripts/test/fault_suite.py) against a throwaway PostgreSQL cluster of its own,
# which it stops, restarts and freezes. Run by scripts/step6_test.sh; alone:
#   bash scripts/test/test_faults.sh
# Exit status 0 on success, 1 on failure, 2 when it could not run (no PostgreSQL).
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/bootstrap.sh
source scripts/lib/bootstrap.sh || exit 2
# shellcheck source=scripts/lib/pg_cluster.sh
source scripts/lib/pg_cluster.sh

pg_cluster_start || { echo "test_faults: could not start a PostgreSQL cluster"; exit 2; }
pg_cluster_createdb apm_faults || exit 2
port=${PG_CLUSTER_URL##*:}
# The options pg_cluster_start passed on the command line, written down so that a plain
# `pg_ctl start` after a stop brings the same cluster back on the same port.
cat >>"$PG_CLUSTER_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_CLUSTER_DIR'
fsync = off
synchronous_commit = off
max_connections = 50
CONF
if [ "$(id -u)" = 0 ]; then ctl="runuser -u postgres -- $PG_BINDIR/pg_ctl -D $PG_CLUSTER_DIR/data"
else ctl="$PG_BINDIR/pg_ctl -D $PG_CLUSTER_DIR/data"; fi
DATABASE_URL="$PG_CLUSTER_URL/apm_faults" FAULT_PG_DATA="$PG_CLUSTER_DIR/data" FAULT_PG_CTL="$ctl" \
  FAULT_PG_LOG="$PG_CLUSTER_DIR/server.log" DJANGO_SECRET_KEY=fault-suite-not-a-secret \
  timeout 300 "$PY" scripts/test/fault_suite.py
