"""What the connected database can do. The only module that asks.

Everything else reads the same relations (`observability_apirequest`, `apirequest_hourly`,
`apirequest_daily`) whatever the database; only migrations and the refresh of continuous
aggregates need to know whether TimescaleDB is behind them.
"""

import logging
import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.db import Error as DatabaseErrorBase
from django.db import InterfaceError, OperationalError
from django.db import connection as default_connection

logger = logging.getLogger(__name__)


def is_postgresql(connection=default_connection) -> bool:
    return connection.vendor == "postgresql"


def groups_by_sorting(connection=default_connection) -> bool:
    """True where GROUP BY sorts every row it groups (SQLite has no hash aggregate), so a
    read should group few rows, or group by an index's leading columns with nothing else to
    fetch, rather than aggregate every column of every group it will then throw away."""
    return connection.vendor == "sqlite"


def timescale_version(connection=default_connection) -> str | None:
    """The TimescaleDB extension version installed in this database, or None."""
    if not is_postgresql(connection):
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cursor.fetchone()
    return row[0] if row else None


def timescale_loadable(connection=default_connection) -> bool:
    """True when CREATE EXTENSION timescaledb would work: installed and preloaded."""
    if not is_postgresql(connection):
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
            " current_setting('shared_preload_libraries')"
        )
        available, preload = cursor.fetchone()
    return bool(available) and "timescaledb" in preload


def use_timescale(connection=default_connection) -> bool:
    """Whether migrations should build the TimescaleDB objects, creating the extension if needed.

    Decided by APM_TIMESCALE: "off" never, "auto" when possible, "require" or fail.
    """
    mode = settings.APM_TIMESCALE
    if mode == "off" or not is_postgresql(connection):
        if mode == "require":
            raise RuntimeError("APM_TIMESCALE=require, but the database is not PostgreSQL.")
        return False
    if timescale_version(connection):
        return True
    if timescale_loadable(connection):
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    if mode == "require":
        raise RuntimeError(
            "APM_TIMESCALE=require, but the timescaledb extension is not installed or not in "
            "shared_preload_libraries."
        )
    return False


def _in_catalog(view: str, column: str, name: str, connection) -> bool:
    # view and column are constants of this module, never client input.
    if not timescale_version(connection):
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM timescaledb_information.{view} WHERE {column} = %s)", [name])
        return cursor.fetchone()[0]


def is_continuous_aggregate(name: str, connection=default_connection) -> bool:
    """True when `name` is a TimescaleDB continuous aggregate in this database."""
    return _in_catalog("continuous_aggregates", "view_name", name, connection)


def is_hypertable(table: str, connection=default_connection) -> bool:
    """True when `table` is a TimescaleDB hypertable in this database."""
    return _in_catalog("hypertables", "hypertable_name", table, connection)


def ping(connection=default_connection, *, timeout: float | None = None) -> str | None:
    """None when the database answers a query, else the first line of the reason.

    With `timeout`, connecting and the query together wait at most about that long (plus half
    a second), whatever the database does: on PostgreSQL the connect is bounded by
    `connect_timeout` and the query by the client-side deadline of `apm_platform.dbguard`.
    """
    if timeout is not None and is_postgresql(connection):
        return _ping_fresh(connection, timeout)
    try:
        with _deadline(connection, timeout):
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    except DatabaseErrorBase as exc:
        if not connection.in_atomic_block:
            connection.close()  # the next request starts with a fresh connection
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _ping_fresh(connection, timeout: float) -> str | None:
    """A ping on a new connection of its own: the request thread's persistent connection may be
    stale (its own health check would wait first), and a probe must not depend on it."""
    from django.db import connections

    probe = connections.create_connection(connection.alias)
    try:
        with _deadline(probe, timeout):
            probe.ensure_connection()
            with probe.cursor() as cursor:
                cursor.execute("SELECT 1")
    except DatabaseErrorBase as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    finally:
        try:
            probe.close()
        except DatabaseErrorBase:
            pass
    return None


@contextmanager
def _deadline(connection, timeout):
    if timeout is None or not is_postgresql(connection):
        yield
        return
    from apm_platform import dbguard

    with dbguard.deadline(timeout + 0.5):
        yield


def round_trip_progressing(connection=default_connection) -> None:
    """The current round trip is making progress (a COPY sent another chunk): restart the
    watchdog's clock on it, so a long COPY that keeps moving is never cut as frozen."""
    if is_postgresql(connection):
        from apm_platform import dbguard

        dbguard.still_working()


# --- When the database can't answer: 503, or 504 for a query past its time limit ------------


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that say the database can't serve now (down, refusing, frozen, out of
    connections, shutting down, locked): the client should retry later (503)."""
    return isinstance(exc, (OperationalError, InterfaceError)) and not is_time_limit(exc)


def commit_outcome_unknown(exc: BaseException) -> bool:
    """True when the connection failed during a COMMIT (PostgreSQL): it may have happened."""
    # Walk causes and contexts: Django's atomic() reconnects in its `finally` after a failed
    # COMMIT, so the error that surfaces may be that reconnect's, with the COMMIT's behind it.
    pending, seen = [exc], 0
    while pending and seen < 20:
        current = pending.pop()
        seen += 1
        if type(current).__name__ == "CommitOutcomeUnknown":
            return True
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def is_time_limit(exc: BaseException) -> bool:
    """True when a query was cancelled by the analytics time limit (504)."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if getattr(cause, "pgcode", None) == "57014":  # query_canceled: statement_timeout
        return True
    return getattr(_limit, "fired", False) and "interrupted" in str(exc)


_limit = threading.local()


@contextmanager
def query_time_limit(seconds: float | None = None, connection=default_connection):
    """Cancel the queries inside once they have run `seconds` (APM_QUERY_TIMEOUT) in total on
    SQLite, or any one of them past it on PostgreSQL (statement_timeout); the error is an
    OperationalError that `is_time_limit` recognises."""
    seconds = seconds or settings.APM_QUERY_TIMEOUT
    state = {"installed": False}
    _limit.fired = False
    if is_postgresql(connection):
        from apm_platform import dbguard

        def limit(execute, sql, params, many, context):
            if not state["installed"]:
                state["installed"] = True  # before the SET itself passes through here
                context["cursor"].execute(f"SET statement_timeout = {int(seconds * 1000)}")
            # The client-side deadline of the query itself must outlast the server's own limit,
            # or a slow query would be cut (503) instead of cancelled (504). Everything else
            # (the SET, connection health checks) keeps the short DB_QUERY_TIMEOUT.
            with dbguard.round_trip_timeout(seconds + 2):
                return execute(sql, params, many, context)

        with connection.execute_wrapper(limit):
            try:
                yield
            finally:
                if state["installed"]:
                    _reset_statement_timeout(connection)
        return
    deadline = time.monotonic() + seconds

    def progress():
        if time.monotonic() > deadline:
            _limit.fired = True
            return 1  # interrupts the statement: sqlite3.OperationalError("interrupted")
        return 0

    def install(execute, sql, params, many, context):
        if not state["installed"]:
            state["installed"] = True
            context["connection"].connection.set_progress_handler(progress, 10_000)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(install):
        try:
            yield
        finally:
            if state["installed"] and connection.connection is not None:
                connection.connection.set_progress_handler(None, 0)


def _reset_statement_timeout(connection) -> None:
    if connection.connection is None or connection.in_atomic_block and connection.needs_rollback:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("RESET statement_timeout")
    except DatabaseErrorBase as exc:
        logger.warning("Could not reset statement_timeout (%s); closing the connection.", exc)
        if not connection.in_atomic_block:
            connection.close()


def describe(connection=default_connection) -> str:
    """A human name for the database, e.g. "PostgreSQL 15.20 + TimescaleDB 2.28.3"."""
    if connection.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    if not is_postgresql(connection):
        return connection.vendor
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0].split()[0]
    name = f"PostgreSQL {version}"
    ts = timescale_version(connection)
    return f"{name} + TimescaleDB {ts}" if ts else name


_ROLLUP_KIND: dict[str, bool] = {}


def rollups_are_continuous(connection=default_connection) -> bool:
    """True when the hourly rollup is a continuous aggregate; cached per database name."""
    key = str(connection.settings_dict.get("NAME"))
    if key not in _ROLLUP_KIND:
        _ROLLUP_KIND[key] = is_continuous_aggregate("apirequest_hourly", connection)
    return _ROLLUP_KIND[key]


_TABLES: dict[tuple[str, str], bool] = {}


def has_table(name: str, connection=default_connection) -> bool:
    """True when table `name` exists in this database; cached per database name (a migration
    may be rolled back below the one that creates it: the code then goes without it)."""
    key = (str(connection.settings_dict.get("NAME")), name)
    if key not in _TABLES:
        with connection.cursor() as cursor:
            _TABLES[key] = name in connection.introspection.table_names(cursor)
    return _TABLES[key]


def forget_rollup_kind(**kwargs) -> None:
    """Drop the caches above; connected to pre/post_migrate, which create or drop the aggregates."""
    _ROLLUP_KIND.clear()
    _TABLES.clear()
