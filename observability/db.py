"""What the connected database can do. The only module that asks.

Everything else reads the same relations (`observability_apirequest`, `apirequest_hourly`,
`apirequest_daily`) whatever the database; only migrations and the refresh of continuous
aggregates need to know whether TimescaleDB is behind them.
"""

from django.conf import settings
from django.db import Error as DatabaseErrorBase
from django.db import connection as default_connection


def is_postgresql(connection=default_connection) -> bool:
    return connection.vendor == "postgresql"


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


def ping(connection=default_connection) -> str | None:
    """None when the database answers a query, else the first line of the reason."""
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseErrorBase as exc:
        if not connection.in_atomic_block:
            connection.close()  # the next request starts with a fresh connection
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


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


def forget_rollup_kind(**kwargs) -> None:
    """Drop the cache above; connected to pre/post_migrate, which create or drop the aggregates."""
    _ROLLUP_KIND.clear()
