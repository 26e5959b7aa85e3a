from io import StringIO

from django.core.management import call_command
from django.db import connection

from observability import db
from observability.models import ApiRequest
from observability.tests.utils import ApiTransactionTestCase, make_events, post_ingest


class MigrationTests(ApiTransactionTestCase):
    def rollup_relations(self):
        with connection.cursor() as cursor:
            names = {info.name for info in connection.introspection.get_table_list(cursor)}
        return {"apirequest_hourly", "apirequest_daily"} & names

    def test_models_and_migrations_do_not_drift(self):
        call_command("makemigrations", "observability", "--check", "--dry-run", stdout=StringIO())

    def test_migrating_back_to_0001_and_forward_again_keeps_every_event(self):
        events = make_events(200)
        post_ingest(self.client, events)
        was_hypertable = db.is_hypertable("observability_apirequest")
        call_command("migrate", "observability", "0001", verbosity=0)
        self.assertEqual(self.rollup_relations(), set())
        self.assertFalse(db.is_hypertable("observability_apirequest"))
        self.assertEqual(ApiRequest.objects.count(), 200)
        # The plain table's id sequence continues after the copied rows.
        created = ApiRequest.objects.create(**{**events[0], "trace_id": "after-rollback"})
        self.assertGreater(created.pk, max(ApiRequest.objects.exclude(pk=created.pk)
                                           .values_list("pk", flat=True)))
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(self.rollup_relations(), {"apirequest_hourly", "apirequest_daily"})
        self.assertEqual(db.is_hypertable("observability_apirequest"), was_hypertable)
        hourly = self.client.get("/api/requests/hourly/", {"page_size": 1000}).json()["results"]
        self.assertEqual(sum(row["hits"] for row in hourly), 201)
