#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for the test command and the benchmarks.
#
#   source scripts/lib/pg_cluster.sh
#   pg_cluster_start          # sets PG_CLUSTER_URL (postgres://...@127.0.0.1:PORT) and PG_TIMESCALE
#   pg_cluster_stop           # also runs on exit
#
# PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` user that
# Debian's package creates (the package is installed if missing). The cluster preloads
# TimescaleDB where the extension is installed, so one cluster serves both the plain
# PostgreSQL and the TimescaleDB runs (the extension only exists in databases that create it).

PG_CLUSTER_DIR=""
PG_CLUSTER_URL=""
PG_TIMESCALE=""

_pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

_pg_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "pg_cluster: PostgreSQL server binaries not found and cannot install them (need root + apt-get)" >&2
    return 1
  fi
  echo "pg_cluster: installing PostgreSQL 15 from Debian's packages..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2
}

_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_cluster_start() {
  local bindir port pkglib preload=""
  bindir=$(_pg_bindir) || { _pg_install && bindir=$(_pg_bindir); } || return 1
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    _pg_install || return 1
  fi
  PG_CLUSTER_DIR=$(mktemp -d /tmp/apm-pg.XXXXXX)
  chmod 755 "$PG_CLUSTER_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_CLUSTER_DIR"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pkglib=$("$bindir/pg_config" --pkglibdir 2>/dev/null || echo "$bindir/../lib")
  if [ -e "$pkglib/timescaledb.so" ]; then
    preload="-c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
    PG_TIMESCALE=1
  fi
  _pg_as_owner "$bindir/initdb" -D "$PG_CLUSTER_DIR/data" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$PG_CLUSTER_DIR/initdb.log" 2>&1 \
    || { cat "$PG_CLUSTER_DIR/initdb.log" >&2; return 1; }
  # fsync off: a throwaway cluster for tests and benchmarks, never for data worth keeping.
  _pg_as_owner "$bindir/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_CLUSTER_DIR -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=50 $preload" start \
    >/dev/null || { cat "$PG_CLUSTER_DIR/server.log" >&2; return 1; }
  PG_BINDIR=$bindir
  PG_CLUSTER_URL="postgres://postgres@127.0.0.1:$port"
  trap pg_cluster_stop EXIT
}

pg_cluster_createdb() {  # pg_cluster_createdb NAME
  "$PG_BINDIR/createdb" -h 127.0.0.1 -p "${PG_CLUSTER_URL##*:}" -U postgres "$1"
}

pg_cluster_stop() {
  [ -n "$PG_CLUSTER_DIR" ] && [ -d "$PG_CLUSTER_DIR/data" ] || return 0
  _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1
  rm -rf "$PG_CLUSTER_DIR"
  PG_CLUSTER_DIR=""
}
