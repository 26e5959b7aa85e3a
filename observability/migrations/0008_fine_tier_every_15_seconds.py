"""The minute tier's policy: every 15 s, 15 s after the minute (it was 30 s and 30 s).

Queries of all traffic read the minute tier (`apirequest_global_minute`) past the hourly
aggregates' watermark, and the raw events past its own watermark in real time. That tail is
the minute, the end offset and the schedule: at most 2 min with 30 s + 30 s, 1.5 min now. Measured
with `make bench-fresh ARGS="--rates 1000"` (1,000 events/s, the worst case just before a
policy run): fine-tier lag 161 s -> 98 s; KPIs with approx percentiles over the last 24 h
154.0 -> 121.7 ms, the hourly time series 146.8 -> 115.1 ms (target 150 ms).

The cost: twice the policy runs, each over less; and an event that arrives more than 15 s
after it happened (30 s before) may land in a minute already materialized, and its write then
refreshes that minute (`rollups.refresh_after_write`), as for any late event.

Only the job changes (`alter_job`): its start offset, which `retention.apply_policies` sets
from APM_RETENTION_FINE_DAYS, is kept. TimescaleDB only. Reversible.
"""

from django.db import migrations

from observability.migrations import _frozen_0002_0003 as before

FINE = "apirequest_global_minute"


def _set_policy(connection, offset: str) -> None:
    if not before.is_continuous_aggregate(FINE, connection):
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT alter_job(job_id, schedule_interval => %s::interval,"
            " config => jsonb_set(config, '{end_offset}', to_jsonb(%s::text)))"
            " FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = %s",
            [offset, offset, FINE],
        )


def every_15_seconds(apps, schema_editor):
    _set_policy(schema_editor.connection, "15 seconds")


def every_30_seconds(apps, schema_editor):
    _set_policy(schema_editor.connection, "30 seconds")


class Migration(migrations.Migration):
    dependencies = [("observability", "0007_columnar_series_histograms")]

    operations = [migrations.RunPython(every_15_seconds, every_30_seconds)]
