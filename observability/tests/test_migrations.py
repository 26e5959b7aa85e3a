from io import StringIO

from django.core.management import call_command
from django.db import connection
from django.test import TransactionTestCase

from observability import db, rollups
from observability.models import ApiRequest
from observability.tests.utils import ApiTransactionTestCase, make_events, post_ingest


def relations() -> set[str]:
    with connection.cursor() as cursor:
        return {info.name for info in connection.introspection.get_table_list(cursor)}


def one_row(sql: str, params=()) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


class MigrationTests(ApiTransactionTestCase):
    def tearDown(self):
        # Migrating forward materializes history into the continuous aggregates, which the
        # flush after this test does not empty: delete and refresh so later tests start clean.
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def rollup_relations(self):
        return {"apirequest_hourly", "apirequest_daily"} & relations()

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
        self.assertEqual(relations() & histograms, set())
        self.assertEqual(self.rollup_relations(), {"apirequest_hourly", "apirequest_daily"})
        self.assertEqual(sum(r["hits"] for r in self.client.get("/api/requests/daily/").json()["results"]), 120)
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(relations() & histograms, histograms if db.rollups_are_continuous() else set())
        body = self.client.get("/api/requests/kpis/", {"precision": "approx"}).json()
        self.assertEqual((body["hits"], body["precision"]),
                         (120, "approx" if db.rollups_are_continuous() else "exact"))


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
        # The dirty-range table (0009) is the refresher's queue, not a rollup.
        self.assertIn(rollups.DIRTY, names)
        built = {name for name in names if (name.startswith("apirequest_") or name == "observability_apirequest")
                 and name != rollups.DIRTY}
        # Elsewhere the hourly and daily counts are plain views; the fine tiers (0006, 0010) and
        # the histograms exist only as continuous aggregates.
        expected = {r.relation for r in rollups.CATALOGUE if db.rollups_are_continuous() or r.kind == "raw"
                    or (r.kind == "counts" and rollups.tier_for(r.width) != "fine")}
        self.assertEqual(built, expected)
        for rollup in rollups.aggregates():
            self.assertIn(rollup.source, rollups.BY_RELATION)
            # Sources come first, so refreshing in catalogue order feeds hierarchical aggregates.
            self.assertLess(rollups.CATALOGUE.index(rollups.BY_RELATION[rollup.source]),
                            rollups.CATALOGUE.index(rollup))
            if db.rollups_are_continuous():
                self.assertTrue(db.is_continuous_aggregate(rollup.relation), rollup.relation)

    def test_the_catalogue_states_the_policies_and_columnstore_the_migrations_set(self):
        if not db.rollups_are_continuous():
            self.skipTest(f"policies exist on TimescaleDB only ({db.describe()})")
        with connection.cursor() as cursor:
            cursor.execute("SELECT hypertable_name, proc_name, config->>'end_offset', schedule_interval,"
                           " config->>'compress_after' FROM timescaledb_information.jobs"
                           " WHERE proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression')")
            jobs = {(view, proc): (end, schedule, after) for view, proc, end, schedule, after in cursor.fetchall()}
            for rollup in rollups.aggregates():
                end, schedule, _ = jobs[(rollup.relation, "policy_refresh_continuous_aggregate")]
                cursor.execute("SELECT %s::interval, %s::interval", [end, schedule])
                self.assertEqual((rollup.refresh.end_offset, rollup.refresh.schedule), cursor.fetchone(),
                                 rollup.relation)
                columnar = jobs.get((rollup.relation, "policy_compression"))
                if rollup.columnstore_after is None:
                    self.assertIsNone(columnar, rollup.relation)
                else:
                    cursor.execute("SELECT %s::interval", [columnar[2]])
                    self.assertEqual(cursor.fetchone()[0], rollup.columnstore_after)


class MigrationRoundTripCase(ApiTransactionTestCase):
    """A test that migrates back and forth: the database ends at the latest migration whatever
    happens in between (a failure between two migrate calls must not leave later tests behind)."""

    def setUp(self):
        self.addCleanup(call_command, "migrate", "observability", verbosity=0)


class ColumnarHistogramMigrationTests(MigrationRoundTripCase):
    """0007: the per-series daily histograms become columnar, text-keyed and materialized-only,
    and the reverse brings back 0005's real-time row-store aggregate; answers are the same."""

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def shape(self):
        return one_row("SELECT c.materialized_only, c.compression_enabled, a.atttypid::regtype::text"
                       " FROM timescaledb_information.continuous_aggregates c"
                       " JOIN pg_attribute a ON a.attrelid = 'apirequest_latency_daily'::regclass"
                       "  AND a.attname = 'endpoint' WHERE c.view_name = 'apirequest_latency_daily'")

    def test_migrating_0007_back_and_forth_keeps_the_approx_answers(self):
        if not db.rollups_are_continuous():
            self.skipTest(f"the histograms exist on TimescaleDB only ({db.describe()})")
        from datetime import UTC, datetime, timedelta

        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
        post_ingest(self.client, make_events(300, start=day, span=timedelta(days=5), seed=70))
        rollups.refresh_all(None, None)
        query = {"precision": "approx", "sort": "p95_latency_ms", "limit": 100,
                 "start": day.isoformat().replace("+00:00", "Z"),
                 "end": (day + timedelta(days=6)).isoformat().replace("+00:00", "Z")}
        top = self.client.get("/api/requests/top-endpoints/", query).json()
        self.assertEqual(top["precision"], "approx")
        self.assertEqual(self.shape(), (True, True, "text"))
        call_command("migrate", "observability", "0006", verbosity=0)
        self.assertEqual(self.shape(), (False, False, "character varying"))
        self.assertEqual(self.client.get("/api/requests/top-endpoints/", query).json(), top)
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(self.shape(), (True, True, "text"))
        with connection.cursor() as cursor:  # the 20-day-old chunk was converted at once
            cursor.execute("SELECT count(*) FROM timescaledb_information.chunks c"
                           " JOIN timescaledb_information.continuous_aggregates a"
                           "  ON a.materialization_hypertable_name = c.hypertable_name"
                           " WHERE a.view_name = 'apirequest_latency_daily' AND c.is_compressed")
            self.assertGreater(cursor.fetchone()[0], 0)
        self.assertEqual(self.client.get("/api/requests/top-endpoints/", query).json(), top)

    def test_days_the_hourly_histograms_no_longer_hold_survive_the_rebuild_both_ways(self):
        if not db.rollups_are_continuous():
            self.skipTest(f"the histograms exist on TimescaleDB only ({db.describe()})")
        from datetime import UTC, datetime, timedelta

        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        old, recent = today - timedelta(days=60), today - timedelta(days=5)
        post_ingest(self.client, make_events(200, start=old, span=timedelta(days=2), seed=71)
                    + make_events(100, start=recent, span=timedelta(days=2), seed=72))
        rollups.refresh_all(None, None)
        # The hourly histograms' retention drops the old hours (as APM_RETENTION_HOURLY_DAYS would).
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM drop_chunks('apirequest_latency_hourly', older_than => %s)",
                           [today - timedelta(days=30)])
            self.assertGreater(cursor.fetchone()[0], 0)
        query = {"precision": "approx", "sort": "p50_latency_ms", "limit": 100,
                 "start": old.isoformat().replace("+00:00", "Z"),
                 "end": (old + timedelta(days=3)).isoformat().replace("+00:00", "Z")}
        top = self.client.get("/api/requests/top-endpoints/", query).json()
        self.assertEqual(sum(row["hits"] for row in top["results"]), 200)
        self.assertIsNotNone(top["results"][0]["p50_latency_ms"])
        call_command("migrate", "observability", "0006", verbosity=0)
        self.assertEqual(self.client.get("/api/requests/top-endpoints/", query).json(), top)
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(self.client.get("/api/requests/top-endpoints/", query).json(), top)
        self.assertEqual(relations() & {"apirequest_latency_daily_kept"}, set())


class FineTierPolicyMigrationTests(MigrationRoundTripCase):
    """0008: the minute tier's policy runs every 15 s, 15 s after the minute; back to 30 s."""

    def policy(self):
        return one_row("SELECT (config->>'end_offset')::interval, schedule_interval,"
                       " (config->>'start_offset')::interval FROM timescaledb_information.jobs"
                       " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
                       " AND hypertable_name = 'apirequest_global_minute'")

    def test_migrating_0008_back_and_forth_sets_the_offset_and_schedule_and_keeps_the_start(self):
        if not db.rollups_are_continuous():
            self.skipTest(f"policies exist on TimescaleDB only ({db.describe()})")
        from datetime import timedelta

        end, schedule, start = self.policy()
        self.assertEqual((end, schedule), (timedelta(seconds=15), timedelta(seconds=15)))
        call_command("migrate", "observability", "0007", verbosity=0)
        self.assertEqual(self.policy(), (timedelta(seconds=30), timedelta(seconds=30), start))
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(self.policy(), (timedelta(seconds=15), timedelta(seconds=15), start))


class SeriesMinuteTierMigrationTests(MigrationRoundTripCase):
    """0010: the series' minute tiers, real-time, refreshed every 15 s over their last two days."""

    TIERS = ("apirequest_minute", "apirequest_latency_minute", "apirequest_service_latency_minute")

    def policies(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT hypertable_name, (config->>'start_offset')::interval,"
                           " (config->>'end_offset')::interval, schedule_interval FROM timescaledb_information.jobs"
                           " WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = ANY(%s)",
                           [list(self.TIERS)])
            return {name: tuple(rest) for name, *rest in cursor.fetchall()}

    def test_migrating_0010_back_and_forth_drops_and_rebuilds_the_tiers_with_their_policy(self):
        if not db.rollups_are_continuous():
            self.skipTest(f"the minute tiers exist on TimescaleDB only ({db.describe()})")
        from datetime import UTC, datetime, timedelta

        now = datetime.now(UTC)
        events = make_events(60, start=now - timedelta(hours=1), span=timedelta(minutes=50))
        post_ingest(self.client, events)
        want = (timedelta(days=2), timedelta(seconds=15), timedelta(seconds=15))
        self.assertEqual(self.policies(), dict.fromkeys(self.TIERS, want))
        call_command("migrate", "observability", "0009", verbosity=0)
        self.assertEqual(relations() & set(self.TIERS), set())
        self.assertEqual(self.policies(), {})
        call_command("migrate", "observability", verbosity=0)
        self.assertEqual(self.policies(), dict.fromkeys(self.TIERS, want))
        with connection.cursor() as cursor:
            # Read as materialized only since 0012 (the planner reads raw events past the
            # watermark); real-time again when 0012 is reverted.
            materialized_only = ("SELECT view_name FROM timescaledb_information.continuous_aggregates"
                                 " WHERE view_name = ANY(%s) AND materialized_only")
            cursor.execute(materialized_only, [[*self.TIERS, "apirequest_global_minute"]])
            self.assertEqual({name for (name,) in cursor.fetchall()}, {*self.TIERS, "apirequest_global_minute"})
            call_command("migrate", "observability", "0011", verbosity=0)
            cursor.execute(materialized_only, [[*self.TIERS, "apirequest_global_minute"]])
            self.assertEqual(cursor.fetchall(), [])
            call_command("migrate", "observability", verbosity=0)
            # The migration materialized the recent window: the minutes of those events are there.
            for relation in self.TIERS:
                column = "hits" if relation == "apirequest_minute" else "n"
                cursor.execute(f"SELECT sum({column}) FROM {relation} WHERE bucket < %s",
                               [rollups.watermark(relation)])
                self.assertEqual(cursor.fetchone()[0], len(events), relation)
