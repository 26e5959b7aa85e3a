"""`apirequest_daily`: day x service x endpoint, same columns as the hourly rollup.

On TimescaleDB it is a continuous aggregate over the raw hypertable, not a hierarchical one
over `apirequest_hourly`. Counts, sums and maxima could be rolled up exactly from hours, but
the contract's per-day p95 can't (a percentile of hourly percentiles is not the day's
percentile) and a continuous aggregate reads from exactly one source. Two aggregates joined
by a view would make `apirequest_daily` no longer a continuous aggregate and double the
refresh work, so the daily aggregate reads the raw events once a day's bucket closes.
Elsewhere it is a plain view.
"""

from django.db import migrations

from observability.migrations import _frozen_0002_0003 as rollup_sql


def forward(apps, schema_editor):
    connection = schema_editor.connection
    timescale = rollup_sql.is_hypertable(rollup_sql.RAW, connection)
    rollup_sql.create_rollup(connection, "apirequest_daily", timescale=timescale)


def backward(apps, schema_editor):
    rollup_sql.drop_rollup(schema_editor.connection, "apirequest_daily")


class Migration(migrations.Migration):
    atomic = False  # continuous aggregates can't be created inside a transaction block

    dependencies = [("observability", "0002_timescale")]

    operations = [migrations.RunPython(forward, backward)]
