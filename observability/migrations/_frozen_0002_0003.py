"""The DDL migrations 0002 and 0003 ran, frozen with them (private: the loader skips `_`).

Migrations must not import live code that keeps changing (the rollup catalogue now lives in
`observability/rollups.py`): what these functions create is what 0002/0003 created, forever.
Later changes of DDL are new migrations with their own reverse.

Every database gets relations with the same names and columns (`bucket, service, endpoint,
hits, errors, latency_sum_ms, avg_latency_ms, max_latency_ms, p95_latency_ms`).
"""

from django.conf import settings

RAW = "observability_apirequest"

# The aggregate columns, written once for PostgreSQL (plain view and continuous aggregate).
_PG_AGGREGATES = """
    count(*) AS hits,
    count(*) FILTER (WHERE status_code >= 500) AS errors,
    sum(latency_ms) AS latency_sum_ms,
    avg(latency_ms) AS avg_latency_ms,
    max(latency_ms) AS max_latency_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms
"""

# The same on SQLite, with the percentile_cont aggregate registered in apps.py.
_SQLITE_AGGREGATES = """
    count(*) AS hits,
    sum(status_code >= 500) AS errors,
    sum(latency_ms) AS latency_sum_ms,
    avg(latency_ms) AS avg_latency_ms,
    max(latency_ms) AS max_latency_ms,
    percentile_cont(latency_ms, 0.95) AS p95_latency_ms
"""

# relation -> (TimescaleDB bucket width, policy (end_offset, schedule), SQLite bucket format)
ROLLUPS = {
    "apirequest_hourly": ("1 hour", ("1 hour", "5 minutes"), "%Y-%m-%d %H:00:00"),
    "apirequest_daily": ("1 day", ("1 day", "1 hour"), "%Y-%m-%d 00:00:00"),
}


def _select(bucket_sql: str, aggregates: str) -> str:
    return (
        f"SELECT {bucket_sql} AS bucket, service, endpoint,{aggregates}"
        f"FROM {RAW} GROUP BY 1, service, endpoint"
    )


def create_rollup(connection, relation: str, *, timescale: bool) -> None:
    """Create `relation` as a continuous aggregate (TimescaleDB) or a plain view."""
    width, (end_offset, schedule), sqlite_format = ROLLUPS[relation]
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            bucket = f"strftime('{sqlite_format}', time)"
            cursor.execute(f"CREATE VIEW {relation} AS {_select(bucket, _SQLITE_AGGREGATES)}")
        elif not timescale:
            # date_bin with a UTC origin: buckets don't depend on the session's time zone.
            bucket = f"date_bin(INTERVAL '{width}', time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
            cursor.execute(f"CREATE VIEW {relation} AS {_select(bucket, _PG_AGGREGATES)}")
            # A filter on the view's bucket reaches the table as this expression; the index
            # turns it into a range scan instead of aggregating the whole table.
            cursor.execute(f"CREATE INDEX {relation}_bucket ON {RAW} (({bucket}))")
        else:
            bucket = f"time_bucket(INTERVAL '{width}', time)"
            # Real-time (materialized_only = false): buckets past the watermark are computed
            # from the raw table at query time, so just-ingested data shows at once.
            cursor.execute(
                f"CREATE MATERIALIZED VIEW {relation} WITH (timescaledb.continuous,"
                f" timescaledb.materialized_only = false) AS {_select(bucket, _PG_AGGREGATES)}"
                " WITH NO DATA"
            )
            # start_offset NULL: each run covers all history, but only re-materializes the
            # buckets the invalidation log marks as changed, so late data is picked up however
            # late it is. end_offset keeps the still-filling bucket out of the materialization.
            cursor.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
                " end_offset => %s::interval, schedule_interval => %s::interval)",
                [relation, end_offset, schedule],
            )
            # Materialize existing history now, so a migrated deployment is fast at once.
            cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, now() - %s::interval)",
                           [relation, end_offset])


def drop_rollup(connection, relation: str) -> None:
    """Drop `relation`, whichever kind it is."""
    with connection.cursor() as cursor:
        if is_continuous_aggregate(relation, connection):
            cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [relation])
            cursor.execute(f"DROP MATERIALIZED VIEW {relation}")
        else:
            cursor.execute(f"DROP VIEW IF EXISTS {relation}")
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP INDEX IF EXISTS {relation}_bucket")


def make_hypertable(connection) -> None:
    """Turn the raw table into a hypertable partitioned by time in one-day chunks.

    One day: at about 10M events a month a day is ~350k rows (~100 MB with indexes), so the
    chunks being written stay in memory; a daily bucket never spans chunks; and a late event
    re-materializes buckets of a single chunk.
    """
    with connection.cursor() as cursor:
        # A hypertable's unique indexes must include the time column.
        cursor.execute(f"ALTER TABLE {RAW} DROP CONSTRAINT {RAW}_pkey")
        cursor.execute(f"ALTER TABLE {RAW} ADD CONSTRAINT {RAW}_pkey PRIMARY KEY (id, time)")
        cursor.execute(
            "SELECT create_hypertable(%s, by_range('time', INTERVAL '1 day'),"
            " create_default_indexes => false, migrate_data => true)",
            [RAW],
        )


def unmake_hypertable(connection, schema_editor, model) -> None:
    """Turn the hypertable back into the plain table of migration 0001, keeping its rows."""
    old = f"{RAW}_hypertable"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [RAW])
        (sequence,) = cursor.fetchone()
        cursor.execute(f"ALTER TABLE {RAW} RENAME TO {old}")
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {old}_id_seq")
        cursor.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {RAW}_pkey TO {old}_pkey")
        # Index names are schema-wide: free them for the table create_model builds.
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname <> %s",
            [old, f"{old}_pkey"],
        )
        for (index,) in cursor.fetchall():
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(index)}")
    schema_editor.create_model(model)
    columns = ", ".join(f.column for f in model._meta.concrete_fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RAW} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {old}"
        )
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE(MAX(id), 0) + 1, false)"
            f" FROM {RAW}",
            [RAW],
        )
        cursor.execute(f"DROP TABLE {old}")


# --- What the database can do, as 0002/0003 asked it -----------------------------------------


def _timescale_version(connection) -> str | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cursor.fetchone()
    return row[0] if row else None


def use_timescale(connection) -> bool:
    """APM_TIMESCALE: "off" never, "auto" when possible (creating the extension), "require" or fail."""
    mode = settings.APM_TIMESCALE
    if mode == "off" or connection.vendor != "postgresql":
        if mode == "require":
            raise RuntimeError("APM_TIMESCALE=require, but the database is not PostgreSQL.")
        return False
    if _timescale_version(connection):
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
            " current_setting('shared_preload_libraries')"
        )
        available, preload = cursor.fetchone()
    if available and "timescaledb" in preload:
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
    if not _timescale_version(connection):
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM timescaledb_information.{view} WHERE {column} = %s)", [name])
        return cursor.fetchone()[0]


def is_continuous_aggregate(name: str, connection) -> bool:
    return _in_catalog("continuous_aggregates", "view_name", name, connection)


def is_hypertable(table: str, connection) -> bool:
    return _in_catalog("hypertables", "hypertable_name", table, connection)
