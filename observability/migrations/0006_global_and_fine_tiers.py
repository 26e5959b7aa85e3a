"""Whole-traffic latency stats by the minute, the hour and the day (TimescaleDB only).

The questions asked most — KPIs and the time series of all traffic — read the per-series
rollups today: 1,000 series × 720 hours = 720,000 rows for a month of hourly points, and at a
sustained 1,000 events/s the newest one or two hours (the hourly aggregates' refresh lag) are
aggregated from raw events on every query. Three continuous aggregates answer them instead,
one row per (bucket, latency bin) holding everything the read path needs — the bin's count,
its errors, the sum and the max of its latencies — so counts and approx percentiles come from
one read:

- `apirequest_global_minute`: from the raw table, refreshed every 30 seconds up to the last
  minute that ended 30 seconds ago. The planner reads it only for what the hourly one has not materialized yet, so the
  raw tail a query aggregates stays within a few minutes at any ingest rate. It is the "fine"
  retention tier (APM_RETENTION_FINE_DAYS) and the source of nothing.
- `apirequest_global_hourly`: from the raw table (not from the minute one, whose retention is
  short), refreshed every 5 minutes up to the last whole hour.
- `apirequest_global_daily`: built on the hourly one (counts, sums and maxima add up exactly).

A time series of a month by the hour would still read 720 × ~310 bins and run a window over
them (about 0.5 s here), so a fourth aggregate keeps, per hour of all traffic, the counts and
the exact p50/p90/p95/p99 (`percentile_cont` over the hour's events, one sort for the four):
`apirequest_global_percentiles_hourly`, from the raw table, refreshed every 5 minutes.

Bins as in 0005: k = floor(ln(latency) / ln(1.02)) over the latency capped at 86,400,000 ms,
latencies below 0.01 ms in bin -32768. Elsewhere (PostgreSQL without the extension, SQLite)
nothing is created: the read path answers from the raw table there.

The SQL is frozen here; the read path finds these relations through `observability/rollups.py`.
"""

from django.db import migrations, models

import observability.models
from observability.migrations import _frozen_0002_0003 as before

RAW = "observability_apirequest"
CAP = "86400000.0"
_LATENCY = f"LEAST(latency_ms, {CAP}::float8)"
_BIN = (f"(CASE WHEN latency_ms < 0.01 THEN -32768"
        f" ELSE floor(ln({_LATENCY}) / ln(1.02::float8)) END)::smallint")
TIERS = (
    # relation, width, start_offset (None: all history), end_offset, schedule, source (None: raw)
    # The minute tier is read only for the last hour or so: it is materialized, and kept exact
    # for late data, over its last two days only (backfilling a month of minutes would be ~500
    # rows per minute of history for nothing).
    ("apirequest_global_minute", "1 minute", "2 days", "30 seconds", "30 seconds", None),
    ("apirequest_global_hourly", "1 hour", None, "0", "5 minutes", None),
    # The daily one an hour after the day: by then the hourly one has materialized the day's
    # last hour, so a day is never materialized from hours still aggregated in real time.
    ("apirequest_global_daily", "1 day", None, "1 hour", "1 hour", "apirequest_global_hourly"),
    ("apirequest_global_percentiles_hourly", "1 hour", None, "0", "5 minutes", None),
)


def _select(relation: str, width: str, source: str | None) -> str:
    if relation == "apirequest_global_percentiles_hourly":
        return (f"SELECT time_bucket(INTERVAL '{width}', time) AS bucket, count(*) AS hits,"
                f" count(*) FILTER (WHERE status_code >= 500) AS errors,"
                f" sum({_LATENCY}) AS latency_sum_ms, max({_LATENCY}) AS max_latency_ms,"
                f" percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY {_LATENCY})"
                f" AS percentiles FROM {RAW} GROUP BY 1")
    if source is None:
        return (f"SELECT time_bucket(INTERVAL '{width}', time) AS bucket, {_BIN} AS bin, count(*) AS n,"
                f" count(*) FILTER (WHERE status_code >= 500) AS errors,"
                f" sum({_LATENCY}) AS latency_sum_ms, max({_LATENCY}) AS max_latency_ms"
                f" FROM {RAW} GROUP BY 1, {_BIN}")
    return (f"SELECT time_bucket(INTERVAL '{width}', bucket) AS bucket, bin, sum(n)::bigint AS n,"
            f" sum(errors)::bigint AS errors, sum(latency_sum_ms) AS latency_sum_ms,"
            f" max(max_latency_ms) AS max_latency_ms FROM {source} GROUP BY 1, bin")


def create_tiers(apps, schema_editor):
    # Not atomic (continuous aggregates refuse a transaction): IF NOT EXISTS lets a run that
    # stopped half-way be run again.
    connection = schema_editor.connection
    if not before.is_hypertable(RAW, connection):
        return
    with connection.cursor() as cursor:
        for relation, width, start_offset, end_offset, schedule, source in TIERS:
            # Real-time, as every rollup: a client reading the relation itself sees fresh data.
            # One index, on (bucket, bin), built after the backfill.
            cursor.execute(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {relation} WITH (timescaledb.continuous,"
                f" timescaledb.materialized_only = false, timescaledb.create_group_indexes = false)"
                f" AS {_select(relation, width, source)} WITH NO DATA"
            )
            # end_offset 0: the refresh window is rounded inward to whole buckets, so each run
            # materializes every bucket that has ended (and re-materializes invalidated ones).
            # The minute tier runs every 30 s and waits 30 s more: events that arrive up to half
            # a minute after they happened (SDK batching) then land in minutes not yet
            # materialized and need no refresh after their write, and the tail it leaves to
            # raw events is at most two minutes.
            cursor.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => %s::interval,"
                " end_offset => %s::interval, schedule_interval => %s::interval, if_not_exists => true)",
                [relation, start_offset, end_offset, schedule],
            )
            cursor.execute("CALL refresh_continuous_aggregate(%s, now() - %s::interval, now())",
                           [relation, start_offset])
            if relation != "apirequest_global_percentiles_hourly":  # it has the bucket index
                cursor.execute(f"CREATE INDEX IF NOT EXISTS {relation}_0 ON {relation} (bucket, bin)")


def drop_tiers(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for relation, *_ in reversed(TIERS):
            if before.is_continuous_aggregate(relation, connection):
                cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [relation])
                cursor.execute(f"DROP MATERIALIZED VIEW {relation}")


def _model(name, table):
    return migrations.CreateModel(
        name=name,
        fields=[
            ("bucket", models.DateTimeField()),
            ("bin", models.SmallIntegerField()),
            ("n", models.BigIntegerField()),
            ("errors", models.BigIntegerField()),
            ("latency_sum_ms", models.FloatField()),
            ("max_latency_ms", models.FloatField()),
            ("pk", models.CompositePrimaryKey("bucket", "bin", blank=True, editable=False, primary_key=True,
                                              serialize=False)),
        ],
        options={"db_table": table, "abstract": False, "managed": False},
    )


class Migration(migrations.Migration):
    # Continuous aggregates can't be created or refreshed inside a transaction block.
    atomic = False

    dependencies = [("observability", "0005_latency_histograms")]

    operations = [
        _model("GlobalLatencyMinute", "apirequest_global_minute"),
        _model("GlobalLatencyHourly", "apirequest_global_hourly"),
        _model("GlobalLatencyDaily", "apirequest_global_daily"),
        migrations.CreateModel(
            name="GlobalPercentilesHourly",
            fields=[
                ("bucket", models.DateTimeField(primary_key=True, serialize=False)),
                ("hits", models.BigIntegerField()),
                ("errors", models.BigIntegerField()),
                ("latency_sum_ms", models.FloatField()),
                ("max_latency_ms", models.FloatField()),
                ("percentiles", observability.models.FloatArrayField()),
            ],
            options={"db_table": "apirequest_global_percentiles_hourly", "managed": False},
        ),
        migrations.RunPython(create_tiers, drop_tiers),
    ]
