"""The daily latency histograms per (service, endpoint) in columnstore, read as materialized.

Ranking every series by an approx percentile over 30 days adds up about 3,000,000 daily
histogram rows (1,000 series × 30 days × ~100 bins) into ~240,000 (series, bin) sums and then
ranks each series' bins. Measured on 10M events / 30 days (TimescaleDB 2.28.3, 2 cores), the
grouping alone took 1.1 s through the 0005 aggregate, 0.8–1.0 s once its chunks were
compressed (PostgreSQL's hash aggregate over `varchar COLLATE "C"` keys), and 0.5 s with
`text` keys in compressed chunks, where TimescaleDB's vectorized aggregation groups each
chunk's batches itself. It only does that reading the materialized hypertable directly: the
real-time union puts a subquery between the aggregate and the columnar scan.

So `apirequest_latency_daily` is rebuilt (same name, same columns, same bins; built on the
hourly histograms as before):

- `service` and `endpoint` as `text` (same values; the collation stays "C");
- `materialized_only = true`: the read path never reads it past its watermark anyway
  (`rollups.plan` hands the days after it to the hourly histograms), and the after-write
  refresh re-materializes the buckets a late event touches, as for every aggregate;
- its policy materializes a day an hour after it ends (as `apirequest_global_daily`), so a
  window ending now reads at most the current day from the hourly histograms;
- columnstore, segmented by series and ordered by bin then bucket, with a policy that converts
  a chunk one day after its end (`rollups.Rollup.columnstore_after`; `retention.apply_policies`
  keeps that policy whatever APM_COMPRESS_AFTER_DAYS says). A late event in a converted chunk
  still reaches it: the refresh decompresses the chunk's batches (measured on 10M events: 6 s
  for the first late write into a converted 10-day chunk, 1–2 s for the next ones, 0.1 s in
  row store), and the policy, run every hour, converts the chunk again (about 3 s).

On the 10M-event benchmark database (30 days, 1,000 series) it took 2 min 17 s, most of it
the backfill from the hourly histograms.

TimescaleDB only; elsewhere there is no histogram to rebuild. Reversible: the reverse rebuilds
the 0005 aggregate exactly. Re-runnable after a failure: a relation already in the new shape
(materialized only) is kept.

Nothing is lost where the hourly histograms' retention (APM_RETENTION_HOURLY_DAYS) has dropped
hours the daily ones still hold: a rebuild can only recompute days from hours that exist, so
the days before the oldest hour are set aside in a table first and written back into the
rebuilt aggregate (both ways). Refreshes never reach back there (their windows start at the
raw horizon, and dropping chunks invalidates nothing), so those days stay as they were.
"""

import importlib

from django.db import migrations, transaction

from observability.migrations import _frozen_0002_0003 as before

RELATION = "apirequest_latency_daily"
KEPT = "apirequest_latency_daily_kept"  # days set aside across the rebuild
SOURCE = "apirequest_latency_hourly"
SELECT = ("SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, service::text AS service,"
          " endpoint::text AS endpoint, bin, sum(n)::bigint AS n"
          f" FROM {SOURCE} GROUP BY 1, 2, 3, bin")
END_OFFSET, SCHEDULE, COLUMNSTORE_AFTER, COLUMNSTORE_SCHEDULE = "1 hour", "1 hour", "1 day", "1 hour"


def _materialized_only(cursor) -> bool | None:
    cursor.execute("SELECT materialized_only FROM timescaledb_information.continuous_aggregates"
                   " WHERE view_name = %s AND view_schema = current_schema()", [RELATION])
    row = cursor.fetchone()
    return row[0] if row else None


def _set_aside(cursor) -> None:
    # The days before the hourly histograms' first one: all of them when those are empty.
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {KEPT} AS SELECT bucket, service::text AS service,"
        f" endpoint::text AS endpoint, bin, n FROM {RELATION} WHERE bucket <"
        f" (SELECT coalesce(time_bucket(INTERVAL '1 day', min(bucket)), 'infinity') FROM {SOURCE})"
    )


def _write_back(connection, cursor) -> None:
    """Put the days set aside into the rebuilt aggregate's storage, once (one transaction)."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [KEPT])
    if not cursor.fetchone()[0]:
        return
    cursor.execute("SELECT format('%%I.%%I', materialization_hypertable_schema, materialization_hypertable_name)"
                   " FROM timescaledb_information.continuous_aggregates"
                   " WHERE view_name = %s AND view_schema = current_schema()", [RELATION])
    (storage,) = cursor.fetchone()
    with transaction.atomic(using=connection.alias):
        cursor.execute(f"INSERT INTO {storage} (bucket, service, endpoint, bin, n)"
                       f" SELECT bucket, service, endpoint, bin, n FROM {KEPT}")
        cursor.execute(f"DROP TABLE {KEPT}")


def _drop(cursor) -> None:
    cursor.execute("SELECT remove_compression_policy(%s, if_exists => true)", [RELATION])
    cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [RELATION])
    cursor.execute(f"DROP MATERIALIZED VIEW {RELATION}")


def columnar(apps, schema_editor):
    connection = schema_editor.connection
    if not before.is_hypertable("observability_apirequest", connection):
        return
    with connection.cursor() as cursor:
        state = _materialized_only(cursor)
        if state is False:
            _set_aside(cursor)
            _drop(cursor)  # the 0005 shape
        if state is not True:
            cursor.execute(
                f"CREATE MATERIALIZED VIEW {RELATION} WITH (timescaledb.continuous,"
                " timescaledb.materialized_only = true, timescaledb.create_group_indexes = false)"
                f" AS {SELECT} WITH NO DATA"
            )
        cursor.execute(
            "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL, end_offset => %s::interval,"
            " schedule_interval => %s::interval, if_not_exists => true)",
            [RELATION, END_OFFSET, SCHEDULE],
        )
        cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, now() - %s::interval)", [RELATION, END_OFFSET])
        _write_back(connection, cursor)
        # After the backfill: the row-store chunks (the newest) keep a series index for the
        # top-N reads; converted chunks find a series by their segment index.
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {RELATION}_0 ON {RELATION} (service, endpoint, bucket)")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {RELATION}_1 ON {RELATION} (bucket)")
        cursor.execute(
            f"ALTER MATERIALIZED VIEW {RELATION} SET (timescaledb.enable_columnstore = true,"
            " timescaledb.segmentby = 'service, endpoint', timescaledb.orderby = 'bin, bucket')"
        )
        # Convert what is old enough now, before the policy exists: its first run starts at
        # once, and two conversions of one chunk make one of them fail.
        cursor.execute(
            "SELECT count(compress_chunk(c, if_not_compressed => true))"
            " FROM show_chunks(%s, older_than => now() - %s::interval) AS c",
            [RELATION, COLUMNSTORE_AFTER],
        )
        # Every hour: a late event in a converted chunk makes its refresh decompress the chunk's
        # batches (each spans the chunk's days), and the chunk reads from the row store until
        # the policy converts it again (about 3 s for a 10-day chunk of 1,000 series).
        cursor.execute("SELECT add_compression_policy(%s, compress_after => %s::interval,"
                       " schedule_interval => %s::interval, if_not_exists => true)",
                       [RELATION, COLUMNSTORE_AFTER, COLUMNSTORE_SCHEDULE])


def row_store(apps, schema_editor):
    connection = schema_editor.connection
    if not before.is_continuous_aggregate(RELATION, connection):
        return
    with connection.cursor() as cursor:
        if _materialized_only(cursor) is False:
            _write_back(connection, cursor)  # already the 0005 shape
            return
        _set_aside(cursor)
        _drop(cursor)
        old = importlib.import_module("observability.migrations.0005_latency_histograms")
        relation, source, width, series, (end_offset, schedule) = next(
            h for h in old.HISTOGRAMS if h[0] == RELATION)
        select = (f"SELECT time_bucket(INTERVAL '{width}', bucket) AS bucket, {series}, bin,"
                  f" sum(n)::bigint AS n FROM {source} GROUP BY 1, {series}, bin")
        old._create_cagg(cursor, relation, select, end_offset, schedule, indexes=(f"{series}, bucket", "bucket"))
        _write_back(connection, cursor)


class Migration(migrations.Migration):
    # Continuous aggregates can't be created or refreshed inside a transaction block.
    atomic = False

    dependencies = [("observability", "0006_global_and_fine_tiers")]

    operations = [migrations.RunPython(columnar, row_store)]
