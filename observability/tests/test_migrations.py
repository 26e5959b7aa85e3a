from io import StringIO

from django.core.management import call_command
from django.db import connection
from django.test import TransactionTestCase

from observability import db, rollups
from observability.models import ApiRequest
from observability.tests.utils import ApiTransactionTestCase, make_events, post_ingest


class MigrationTests(ApiTransactionTestCase):
    def tearDown(self):
        # Migrating forward materializes history into the continuous aggregates, which the
        # flush after this test does not empty: delete and refresh so later tests start clean.
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

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

    def test_migrating_back_to_0003_and_forward_again_rebuilds_rollups_and_histograms(self):
        histograms = {r.relation for r in rollups.aggregates() if r.kind == "histogram"}
        post_ingest(self.client, make_events(120))
        call_command("migrate", "observability", "0003", verbosity=0)
        self.assertEqual(self.relations() & histograms, set())
        self.assertEqual(self.rollup_relations(), {"apirequest_hourly", "apirequest_daily"})
        self.assertEqual(sum(r["hits"] for r in self.client.get("/api/requests/daily/").json()["results"]), 120)
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(self.relations() & histograms, histograms if db.rollups_are_continuous() else set())
        body = self.client.get("/api/requests/kpis/", {"precision": "approx"}).json()
        self.assertEqual((body["hits"], body["precision"]),
                         (120, "approx" if db.rollups_are_continuous() else "exact"))

    def relations(self):
        with connection.cursor() as cursor:
            return {info.name for info in connection.introspection.get_table_list(cursor)}


class SqliteSchemaTests(ApiTransactionTestCase):
    def test_the_plain_sqlite3_module_reads_and_writes_every_relation(self):
        if connection.vendor != "sqlite":
            self.skipTest(f"checks the SQLite schema ({db.describe()} is not SQLite)")
        import sqlite3

        events = make_events(150)
        post_ingest(self.client, events)
        connection.ensure_connection()
        plain = sqlite3.connect(":memory:")  # no collation, no function of this project
        connection.connection.backup(plain)
        schema = " ".join(sql for (sql,) in plain.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
        self.assertNotIn('COLLATE "C"', schema)
        plain.execute(
            "INSERT INTO observability_apirequest (time, service, endpoint, method, status_code, latency_ms,"
            " trace_id, user_ref) VALUES ('2026-03-02 10:00:00', 'plain', '/x', 'GET', 200, 1.5, '', '')"
        )
        self.assertEqual(plain.execute("SELECT count(*) FROM observability_apirequest"
                                       " WHERE service = 'plain' ORDER BY endpoint").fetchone(), (1,))
        api = self.client.get("/api/requests/hourly/", {"page_size": 1000}).json()["results"]
        rows = plain.execute("SELECT service, endpoint, hits, p95_latency_ms FROM apirequest_hourly"
                             " WHERE service <> 'plain' ORDER BY bucket, service, endpoint").fetchall()
        self.assertEqual([(r[0], r[1], r[2]) for r in rows], [(r["service"], r["endpoint"], r["hits"]) for r in api])
        for got, want in zip(rows, api, strict=True):
            self.assertAlmostEqual(got[3], want["p95_latency_ms"])
        self.assertEqual(plain.execute("SELECT sum(hits) FROM apirequest_daily").fetchone(), (151,))


class CatalogueTests(TransactionTestCase):
    def test_the_catalogue_names_every_relation_the_migrations_built(self):
        with connection.cursor() as cursor:
            names = {info.name for info in connection.introspection.get_table_list(cursor)}
        built = {name for name in names if name.startswith("apirequest_") or name == "observability_apirequest"}
        expected = {r.relation for r in rollups.CATALOGUE
                    if r.kind in ("raw", "counts") or db.rollups_are_continuous()}
        self.assertEqual(built, expected)
        for rollup in rollups.aggregates():
            self.assertIn(rollup.source, rollups.BY_RELATION)
            # Sources come first, so refreshing in catalogue order feeds hierarchical aggregates.
            self.assertLess(rollups.CATALOGUE.index(rollups.BY_RELATION[rollup.source]),
                            rollups.CATALOGUE.index(rollup))
            if db.rollups_are_continuous():
                self.assertTrue(db.is_continuous_aggregate(rollup.relation), rollup.relation)
