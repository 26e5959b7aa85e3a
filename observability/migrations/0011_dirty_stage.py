"""Dirty ranges advance through the tiers: the refresher's cost no longer follows the daily tiers.

Measured with `make bench-live` (2M events, 1,000 events/s, 2% late): one refresher pass
refreshed every aggregate over every range, so each pass (every second) re-read a whole day of
`apirequest_latency_daily` (columnstore, built on the hourly tier), 0.7–1.7 s of the pass's
2.6 s, and the refresher's backend took 68% of a core. Now a row records how far the
refresher has brought it (`stage`): the minute tiers every pass, the hourly ones every few
seconds, the daily ones every minute, each over the rows that reached the tier below; the planner
reads a row around only the tiers it has not reached yet.

A database default (the write's one-statement INSERT doesn't name the column); existing rows
are at stage 0, as they were. Reversible.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("observability", "0010_series_minute_tiers")]

    operations = [
        migrations.AddField(
            model_name="dirtyrange",
            name="stage",
            field=models.SmallIntegerField(db_default=0),
        ),
    ]
