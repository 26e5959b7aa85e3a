"""The dirty-range table: late writes record what they touched, a background worker refreshes it.

Before, a write that held one event below a continuous aggregate's watermark refreshed every
aggregate before it answered (`rollups.refresh_after_write`): about ten refresh calls, each
waiting on the aggregate's lock while a policy ran, serialized across senders. Now the write
inserts a row here in its own transaction and answers; `manage.py refresh_rollups --follow`
re-materializes the ranges within seconds, and the read planner reads them from a finer tier or
raw events meanwhile, so late events are visible, exact, at once.

Created on every database (it stays empty where the rollups are plain views). Reversible.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("observability", "0008_fine_tier_every_15_seconds")]

    operations = [
        migrations.CreateModel(
            name="DirtyRange",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("lo", models.DateTimeField()),
                ("hi", models.DateTimeField()),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "apirequest_dirty"},
        ),
    ]
