"""A minute tier for every series (TimescaleDB only): the per-series counts and histograms by the minute.

Queries of all traffic read `apirequest_global_minute` (0006) past the hourly aggregates'
watermark, so their raw tail stays a minute or two at any ingest rate. Queries filtered by a
service or an endpoint had no such tier: past the watermark of `apirequest_hourly` and of the
hourly histograms (their policies run every 5 minutes, an hour after the hour) they aggregated
up to an hour and more of raw events, at query time, on every request. Three continuous
aggregates give them the same fine tier:

- `apirequest_minute`: per (minute, service, endpoint) hits, errors, the latency sum and max,
  with the columns (names and types) of `apirequest_hourly` that add up across buckets; no
  average (the sum over the hits) and no p95 (the /hourly/ and /daily/ rows keep their exact
  per-bucket p95 from `apirequest_hourly`/`_daily`, which this tier does not serve).
- `apirequest_latency_minute`: per (minute, service, endpoint, bin) the count, as
  `apirequest_latency_hourly`;
- `apirequest_service_latency_minute`: per (minute, service, bin), as
  `apirequest_service_latency_hourly`.

All three from the raw hypertable, real-time (materialized_only = false), with the index shape
of their hourly siblings (0002/0005), and the policy of the whole-traffic minute tier (0006,
0008): every 15 s, up to 15 s ago, over the last two days only (the fine window,
`constants.FINE_WINDOW_DAYS`; `retention.apply_policies` keeps that start and gives them the
fine tier's retention, APM_RETENTION_FINE_DAYS). The migration materializes those two days.

Bins as in 0005: k = floor(ln(latency) / ln(1.02)) over the latency capped at 86,400,000 ms,
latencies below 0.01 ms in bin -32768. Elsewhere (PostgreSQL without the extension, SQLite)
nothing is created: the planner never reads a fine tier there (`rollups._fine_mark`).

The SQL is frozen here; the read path finds these relations through `observability/rollups.py`.
Re-runnable after a failure (IF NOT EXISTS); reversible.
"""

from django.db import migrations, models

from observability.migrations import _frozen_0002_0003 as before

RAW = "observability_apirequest"
CAP = "86400000.0"  # ms; the ingest limit, and the value of anything stored above it
_LATENCY = f"LEAST(latency_ms, {CAP}::float8)"
# ln(1.02) as float8 so that the division is float8 (the read path bins raw edges the same way).
_BIN = (f"(CASE WHEN latency_ms < 0.01 THEN -32768"
        f" ELSE floor(ln({_LATENCY}) / ln(1.02::float8)) END)::smallint")
_BUCKET = "time_bucket(INTERVAL '1 minute', time)"
# The fine window, and the policy of 0008: run every 15 s, materialize up to 15 s ago.
START_OFFSET, END_OFFSET, SCHEDULE = "2 days", "15 seconds", "15 seconds"

TIERS = (
    # relation, select, create_group_indexes, indexes built after the backfill
    # As apirequest_hourly (0002): TimescaleDB's group indexes, (service, bucket) and (endpoint, bucket).
    ("apirequest_minute",
     f"SELECT {_BUCKET} AS bucket, service, endpoint, count(*) AS hits,"
     f" count(*) FILTER (WHERE status_code >= 500) AS errors,"
     f" sum({_LATENCY}) AS latency_sum_ms, max({_LATENCY}) AS max_latency_ms"
     f" FROM {RAW} GROUP BY 1, service, endpoint",
     True, ()),
    # As the hourly histograms (0005): (series, bucket) and (bucket).
    ("apirequest_latency_minute",
     f"SELECT {_BUCKET} AS bucket, service, endpoint, {_BIN} AS bin, count(*) AS n"
     f" FROM {RAW} GROUP BY 1, service, endpoint, {_BIN}",
     False, ("service, endpoint, bucket", "bucket")),
    ("apirequest_service_latency_minute",
     f"SELECT {_BUCKET} AS bucket, service, {_BIN} AS bin, count(*) AS n"
     f" FROM {RAW} GROUP BY 1, service, {_BIN}",
     False, ("service, bucket", "bucket")),
)


def create_tiers(apps, schema_editor):
    # Not atomic (continuous aggregates refuse a transaction): IF NOT EXISTS lets a run that
    # stopped half-way be run again.
    connection = schema_editor.connection
    if not before.is_hypertable(RAW, connection):
        return
    with connection.cursor() as cursor:
        for relation, select, group_indexes, indexes in TIERS:
            cursor.execute(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {relation} WITH (timescaledb.continuous,"
                f" timescaledb.materialized_only = false, timescaledb.create_group_indexes = {group_indexes})"
                f" AS {select} WITH NO DATA"
            )
            cursor.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => %s::interval,"
                " end_offset => %s::interval, schedule_interval => %s::interval, if_not_exists => true)",
                [relation, START_OFFSET, END_OFFSET, SCHEDULE],
            )
            # The fine window only, as the policy will keep it: nothing before it is ever read.
            cursor.execute("CALL refresh_continuous_aggregate(%s, now() - %s::interval, now() - %s::interval)",
                           [relation, START_OFFSET, END_OFFSET])
            for number, columns in enumerate(indexes):
                cursor.execute(f"CREATE INDEX IF NOT EXISTS {relation}_{number} ON {relation} ({columns})")


def drop_tiers(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for relation, *_ in reversed(TIERS):
            if before.is_continuous_aggregate(relation, connection):
                cursor.execute("SELECT remove_retention_policy(%s, if_exists => true)", [relation])
                cursor.execute("SELECT remove_compression_policy(%s, if_exists => true)", [relation])
                cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [relation])
                cursor.execute(f"DROP MATERIALIZED VIEW {relation}")


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

    dependencies = [("observability", "0009_dirty_ranges")]

    operations = [
        migrations.CreateModel(
            name="ApiRequestMinute",
            fields=[
                ("pk", models.CompositePrimaryKey("bucket", "service", "endpoint", blank=True, editable=False,
                                                  primary_key=True, serialize=False)),
                ("bucket", models.DateTimeField()),
                ("service", models.CharField(max_length=100)),
                ("endpoint", models.CharField(max_length=255)),
                ("hits", models.BigIntegerField()),
                ("errors", models.BigIntegerField()),
                ("latency_sum_ms", models.FloatField()),
                ("max_latency_ms", models.FloatField()),
            ],
            options={"db_table": "apirequest_minute", "managed": False},
        ),
        _histogram_model("LatencyMinute", "apirequest_latency_minute", endpoint=True),
        _histogram_model("ServiceLatencyMinute", "apirequest_service_latency_minute", endpoint=False),
        migrations.RunPython(create_tiers, drop_tiers),
    ]
