"""Latency histograms, overflow-safe rollups, and a SQLite schema any sqlite3 client can read.

1. `apirequest_hourly` / `apirequest_daily` are rebuilt with every latency capped at
   86,400,000 ms (one day, the ingest limit) before sum, avg, max and p95: rows stored before
   the cap existed may hold up to 1.8e308, and two of them overflow a float8 sum (PostgreSQL
   raises "value out of range") and make every read of the rollup fail.
2. On TimescaleDB, four real-time continuous aggregates of latency-histogram bin counts:
   hourly per (service, endpoint) and per service, from the raw hypertable, and daily ones
   built hierarchically on them (counts add up, so the hierarchy is exact). Bin
   k = floor(ln(latency) / ln(1.02)) over the capped latency, so every stored value lands in
   a bin between -233 and 923 (a smallint); latencies below 0.01 ms go to the zero bin -32768.
3. On SQLite the raw table's text columns lose the "C" collation (BINARY is byte order there
   already) and the views compute p95 with window functions instead of a Python aggregate, so
   the stock sqlite3 module can open and query every relation. PostgreSQL keeps "C".

The SQL is frozen here; the read path finds these relations through `observability/rollups.py`.
Nothing here depends on migration 0004 (API keys).
"""

from django.db import migrations, models

import observability.models
from observability.migrations import _frozen_0002_0003 as before

RAW = "observability_apirequest"
CAP = "86400000.0"  # ms; the ingest limit, and the value of anything stored above it
ZERO_BIN = -32768
HISTOGRAMS = (
    # relation, source, width, series, (end_offset, schedule)
    ("apirequest_latency_hourly", RAW, "1 hour", "service, endpoint", ("1 hour", "5 minutes")),
    ("apirequest_service_latency_hourly", RAW, "1 hour", "service", ("1 hour", "5 minutes")),
    ("apirequest_latency_daily", "apirequest_latency_hourly", "1 day", "service, endpoint", ("1 day", "1 hour")),
    ("apirequest_service_latency_daily", "apirequest_service_latency_hourly", "1 day", "service", ("1 day", "1 hour")),
)
COUNTS = (
    ("apirequest_hourly", "1 hour", ("1 hour", "5 minutes"), "%Y-%m-%d %H:00:00"),
    ("apirequest_daily", "1 day", ("1 day", "1 hour"), "%Y-%m-%d 00:00:00"),
)

_PG_LATENCY = f"LEAST(latency_ms, {CAP}::float8)"
_PG_COUNTS = f"""
    count(*) AS hits,
    count(*) FILTER (WHERE status_code >= 500) AS errors,
    sum({_PG_LATENCY}) AS latency_sum_ms,
    avg({_PG_LATENCY}) AS avg_latency_ms,
    max({_PG_LATENCY}) AS max_latency_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY {_PG_LATENCY}) AS p95_latency_ms
"""
# ln(1.02) as float8 so that the division is float8 (the read path bins raw edges the same way).
_PG_BIN = (
    f"(CASE WHEN latency_ms < 0.01 THEN {ZERO_BIN}"
    f" ELSE floor(ln({_PG_LATENCY}) / ln(1.02::float8)) END)::smallint"
)


def _pg_counts_select(bucket: str) -> str:
    return f"SELECT {bucket} AS bucket, service, endpoint,{_PG_COUNTS}FROM {RAW} GROUP BY 1, service, endpoint"


def _sqlite_counts_view(relation: str, fmt: str) -> str:
    # p95 as PostgreSQL's percentile_cont(0.95): position 0.95 * (n - 1) in the bucket's sorted
    # latencies, interpolated between the two ranks around it; plain SQL, no registered function.
    # (SQLite before 3.44 has no ordered aggregate and no correlated LIMIT/OFFSET, so ranks come
    # from a window.) The API doesn't read these views: on SQLite the raw table answers faster
    # (see rollups.fast_rollups); they are here for other SQLite clients, with the same columns.
    lat = f"min(latency_ms, {CAP})"
    pos = "0.95 * (n - 1)"
    lo = f"CAST({pos} AS INTEGER)"
    return f"""
CREATE VIEW {relation} AS
SELECT bucket, service, endpoint,
    count(*) AS hits,
    sum(status_code >= 500) AS errors,
    sum(lat) AS latency_sum_ms,
    avg(lat) AS avg_latency_ms,
    max(lat) AS max_latency_ms,
    max(CASE WHEN rank = {lo} THEN lat END)
      + (max(CASE WHEN rank = min({lo} + 1, n - 1) THEN lat END)
         - max(CASE WHEN rank = {lo} THEN lat END))
      * max({pos} - {lo}) AS p95_latency_ms
FROM (
    SELECT strftime('{fmt}', time) AS bucket, service, endpoint, status_code, {lat} AS lat,
        row_number() OVER series - 1 AS rank,
        count(*) OVER (series ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS n
    FROM {RAW}
    WINDOW series AS (PARTITION BY strftime('{fmt}', time), service, endpoint ORDER BY {lat})
)
GROUP BY bucket, service, endpoint
"""


def _is_hypertable(connection) -> bool:
    return before.is_hypertable(RAW, connection)


def drop_old_rollups(apps, schema_editor):
    connection = schema_editor.connection
    for relation in ("apirequest_daily", "apirequest_hourly"):
        before.drop_rollup(connection, relation)


def create_old_rollups(apps, schema_editor):
    connection = schema_editor.connection
    timescale = _is_hypertable(connection)
    for relation in ("apirequest_hourly", "apirequest_daily"):
        before.create_rollup(connection, relation, timescale=timescale)


def create_rollups(apps, schema_editor):
    connection = schema_editor.connection
    timescale = _is_hypertable(connection)
    with connection.cursor() as cursor:
        for relation, width, (end_offset, schedule), fmt in COUNTS:
            if connection.vendor == "sqlite":
                cursor.execute(_sqlite_counts_view(relation, fmt))
            elif not timescale:
                bucket = f"date_bin(INTERVAL '{width}', time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
                cursor.execute(f"CREATE VIEW {relation} AS {_pg_counts_select(bucket)}")
                # A filter on the view's bucket reaches the table as this expression.
                cursor.execute(f"CREATE INDEX {relation}_bucket ON {RAW} (({bucket}))")
            else:
                _create_cagg(cursor, relation, _pg_counts_select(f"time_bucket(INTERVAL '{width}', time)"),
                             end_offset, schedule, indexes=())
        if not timescale:
            return  # the histograms exist only where continuous aggregates keep them cheap
        for relation, source, width, series, (end_offset, schedule) in HISTOGRAMS:
            if source == RAW:
                select = (f"SELECT time_bucket(INTERVAL '{width}', time) AS bucket, {series},"
                          f" {_PG_BIN} AS bin, count(*) AS n FROM {RAW} GROUP BY 1, {series}, {_PG_BIN}")
            else:
                # Hierarchical: a day's bin count is the sum of its hours' (exact).
                select = (f"SELECT time_bucket(INTERVAL '{width}', bucket) AS bucket, {series}, bin,"
                          f" sum(n)::bigint AS n FROM {source} GROUP BY 1, {series}, bin")
            _create_cagg(cursor, relation, select, end_offset, schedule,
                         indexes=(f"{series}, bucket", "bucket"))


def _create_cagg(cursor, relation, select, end_offset, schedule, *, indexes):
    # Real-time (materialized_only = false): buckets past the watermark are computed from the
    # source at query time, so just-ingested data shows at once. No default group indexes:
    # the ones below are built after the backfill, which is cheaper than maintaining them
    # row by row during it.
    cursor.execute(
        f"CREATE MATERIALIZED VIEW {relation} WITH (timescaledb.continuous,"
        f" timescaledb.materialized_only = false, timescaledb.create_group_indexes = {not indexes})"
        f" AS {select} WITH NO DATA"
    )
    # start_offset NULL: each run covers all history but re-materializes only invalidated
    # buckets, so late data is picked up however late it is.
    cursor.execute(
        "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
        " end_offset => %s::interval, schedule_interval => %s::interval)",
        [relation, end_offset, schedule],
    )
    cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, now() - %s::interval)", [relation, end_offset])
    for number, columns in enumerate(indexes):
        cursor.execute(f"CREATE INDEX {relation}_{number} ON {relation} ({columns})")


def drop_rollups(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for relation, *_ in reversed(HISTOGRAMS):
            if before.is_continuous_aggregate(relation, connection):
                cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [relation])
                cursor.execute(f"DROP MATERIALIZED VIEW {relation}")
    for relation in ("apirequest_daily", "apirequest_hourly"):
        before.drop_rollup(connection, relation)


def _histogram_model(name, table, *, endpoint):
    series = [("endpoint", models.CharField(max_length=255))] if endpoint else []
    key = ("bucket", "service", "endpoint", "bin") if endpoint else ("bucket", "service", "bin")
    return migrations.CreateModel(
        name=name,
        fields=[
            ("bucket", models.DateTimeField()),
            ("service", models.CharField(max_length=100)),
            ("bin", models.SmallIntegerField()),
            ("n", models.BigIntegerField()),
            ("pk", models.CompositePrimaryKey(*key, blank=True, editable=False, primary_key=True,
                                              serialize=False)),
            *series,
        ],
        options={"db_table": table, "abstract": False, "managed": False},
    )


class Migration(migrations.Migration):
    # Continuous aggregates can't be created or refreshed inside a transaction block.
    atomic = False

    dependencies = [("observability", "0003_daily_cagg")]

    operations = [
        # The views read the raw table's columns: drop them before SQLite rebuilds the table.
        migrations.RunPython(drop_old_rollups, create_old_rollups),
        migrations.AlterField(
            model_name="apirequest", name="service",
            field=observability.models.ByteOrderCharField(db_collation="C", max_length=100),
        ),
        migrations.AlterField(
            model_name="apirequest", name="endpoint",
            field=observability.models.ByteOrderCharField(db_collation="C", max_length=255),
        ),
        _histogram_model("LatencyHourly", "apirequest_latency_hourly", endpoint=True),
        _histogram_model("LatencyDaily", "apirequest_latency_daily", endpoint=True),
        _histogram_model("ServiceLatencyHourly", "apirequest_service_latency_hourly", endpoint=False),
        _histogram_model("ServiceLatencyDaily", "apirequest_service_latency_daily", endpoint=False),
        migrations.RunPython(create_rollups, drop_rollups),
    ]
