"""The raw table becomes a hypertable; `apirequest_hourly` a continuous aggregate.

On TimescaleDB (see `db.use_timescale` and APM_TIMESCALE) the raw table is partitioned by
time and the hourly rollup is a real-time continuous aggregate with a refresh policy. On
PostgreSQL without the extension and on SQLite, `apirequest_hourly` is a plain view with the
same columns, so the read path is the same everywhere; only its speed differs.
"""

from django.db import migrations

from observability.migrations import _frozen_0002_0003 as rollup_sql


def forward(apps, schema_editor):
    connection = schema_editor.connection
    timescale = rollup_sql.use_timescale(connection)
    if timescale:
        rollup_sql.make_hypertable(connection)
    rollup_sql.create_rollup(connection, "apirequest_hourly", timescale=timescale)


def backward(apps, schema_editor):
    connection = schema_editor.connection
    rollup_sql.drop_rollup(connection, "apirequest_hourly")
    if rollup_sql.is_hypertable(rollup_sql.RAW, connection):
        model = apps.get_model("observability", "ApiRequest")
        rollup_sql.unmake_hypertable(connection, schema_editor, model)


class Migration(migrations.Migration):
    # CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) and its first refresh can't
    # run inside a transaction block.
    atomic = False

    dependencies = [("observability", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
