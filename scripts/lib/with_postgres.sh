#!/usr/bin/env bash
# Run a command with DATABASE_URL set: the caller's, or a throwaway PostgreSQL cluster on
# loopback (with TimescaleDB preloaded where it is installed), stopped afterwards.
#   scripts/lib/with_postgres.sh python scripts/bench/bench_ingest.py
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${DATABASE_URL:-}" ]; then
  "$@"
  exit $?
fi
# shellcheck source=scripts/lib/pg_cluster.sh
source scripts/lib/pg_cluster.sh
pg_cluster_start
pg_cluster_createdb apm_bench
export DATABASE_URL="$PG_CLUSTER_URL/apm_bench"
"$@"
