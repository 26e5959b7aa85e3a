"""Retention per tier: settings, the per-event rule, pruning, and on TimescaleDB rollups that
outlive the raw chunks (also when late events land in compressed chunks)."""

import io
import threading
from datetime import UTC, datetime, timedelta

from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings

from observability import db, ingest, retention, rollups
from observability.models import ApiRequest
from observability.tests.utils import (
    ApiTestCase,
    ApiTransactionTestCase,
    floor_to,
    iso,
    make_event,
    make_events,
    post_ingest,
    skip_unless_timescale,
)

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def store(events):
    """Store client events as the ingest path does, without its retention check."""
    rows = [ingest.validate_event(event) for event in events]
    assert all(type(row) is tuple for row in rows), rows
    return ingest.store_rows(rows)


@override_settings(APM_RETENTION_RAW_DAYS=30)
class TooOldEventTests(ApiTestCase):
    def test_bulk_ingest_refuses_an_event_older_than_the_raw_retention_per_event(self):
        now = datetime.now(UTC)
        events = [make_event(time=now - 31 * DAY), make_event(time=now - 29 * DAY)]
        response = post_ingest(self.client, events)
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual((body["inserted"], body["rejected"]), (1, 1))
        self.assertEqual(body["errors"][0]["index"], 0)
        self.assertIn("Older than the raw retention", body["errors"][0]["errors"]["time"][0])
        self.assertIn("APM_RETENTION_RAW_DAYS=30", body["errors"][0]["errors"]["time"][0])
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_strict_ingest_stores_nothing_when_one_event_is_too_old(self):
        now = datetime.now(UTC)
        response = post_ingest(self.client, [make_event(time=now - 40 * DAY), make_event(time=now)], strict=True)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_a_single_post_of_a_too_old_event_is_a_400_naming_time(self):
        response = self.client.post("/api/requests/", make_event(time=datetime.now(UTC) - 60 * DAY),
                                    content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertIn("Older than the raw retention", response.json()["time"][0])


class PruneTests(TestCase):
    def test_prune_deletes_only_events_older_than_the_cutoff_in_batches_while_ingest_goes_on(self):
        now = datetime.now(UTC).replace(microsecond=0)
        old = make_events(250, start=now - 50 * DAY, span=10 * DAY, seed=1)
        kept = make_events(120, start=now - 20 * DAY, span=19 * DAY, seed=2)
        store(old + kept)
        arriving = []

        def ingest_between_batches(deleted, total):
            # Events keep arriving between batches, some right at the cutoff's side that stays.
            batch = make_events(5, start=now - 30 * DAY + HOUR, span=DAY, seed=total)
            arriving.extend(batch)
            store(batch)

        deleted, batches = retention.prune_raw(cutoff=now - 30 * DAY, batch_size=40,
                                               on_batch=ingest_between_batches)
        self.assertEqual(deleted, 250)
        self.assertEqual(batches, 7)  # 6 full batches of 40 and one of 10
        self.assertFalse(ApiRequest.objects.filter(time__lt=now - 30 * DAY).exists())
        self.assertEqual(ApiRequest.objects.count(), len(kept) + len(arriving))

    def test_the_command_prints_progress_and_a_summary_line(self):
        if db.is_hypertable(retention.RAW):
            self.skipTest("on TimescaleDB prune_requests runs the policies (tested below)")
        now = datetime.now(UTC)
        store(make_events(30, start=now - 40 * DAY, span=DAY) + make_events(5, start=now - DAY, span=HOUR))
        out = io.StringIO()
        with override_settings(APM_RETENTION_RAW_DAYS=30):
            call_command("prune_requests", "--batch-size", "10", stdout=out)
        lines = out.getvalue().splitlines()
        # Off a terminal, a progress line per batch here (each batch is a third of the 30 due).
        self.assertEqual([line.split()[:2] for line in lines[:-1]],
                         [["33.3%", "10/30"], ["66.7%", "20/30"], ["100.0%", "30/30"]])
        self.assertRegex(lines[-1], r"^Deleted 30 events older than \S+ in 3 batches in [\d.]+s\.$")
        self.assertEqual(ApiRequest.objects.count(), 5)

    def test_the_command_keeps_everything_when_raw_retention_is_forever(self):
        if db.is_hypertable(retention.RAW):
            self.skipTest("on TimescaleDB prune_requests runs the policies (tested below)")
        store(make_events(3, start=datetime(2000, 1, 1, tzinfo=UTC)))
        out = io.StringIO()
        call_command("prune_requests", stdout=out)
        self.assertIn("APM_RETENTION_RAW_DAYS=0 keeps raw events forever", out.getvalue())
        self.assertEqual(ApiRequest.objects.count(), 3)


class NoDroppedRawEventsTests(ApiTestCase):
    def test_without_timescaledb_rollups_follow_raw_so_no_window_is_refused(self):
        if db.rollups_are_continuous():
            self.skipTest("on TimescaleDB rollups outlive raw chunks (tested below)")
        store(make_events(20, start=datetime(2020, 1, 1, tzinfo=UTC)))
        with override_settings(APM_RETENTION_RAW_DAYS=30):
            self.assertIsNone(retention.raw_missing_before(None))
            response = self.client.get("/api/requests/kpis/")
        self.assertEqual((response.status_code, response.json()["hits"]), (200, 20))


# --- TimescaleDB: the real thing ----------------------------------------------------------------


def _rollup_rows(relation):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT bucket, service, endpoint, hits, errors, latency_sum_ms, max_latency_ms,"
                       f" p95_latency_ms FROM {relation} ORDER BY 1, 2, 3")
        return cursor.fetchall()


def _compressed_chunks(relation):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM timescaledb_information.chunks"
                       " WHERE hypertable_name = %s AND is_compressed", [relation])
        return cursor.fetchone()[0]


class TimescaleRetentionTests(ApiTransactionTestCase):
    """Raw chunks dropped by the retention policy; rollups keep their history through every
    kind of refresh; late events into compressed chunks still reach the rollups."""

    def setUp(self):
        skip_unless_timescale(self, "retention and columnstore policies")
        self.now = floor_to(datetime.now(UTC), HOUR)

    def tearDown(self):
        # Leave the test database as migrations made it: no policies, nothing compressed, empty.
        with override_settings(APM_RETENTION_RAW_DAYS=0, APM_RETENTION_HOURLY_DAYS=0,
                               APM_RETENTION_DAILY_DAYS=0, APM_COMPRESS_AFTER_DAYS=0):
            retention.apply_policies()
        with connection.cursor() as cursor:
            cursor.execute("SELECT decompress_chunk(format('%I.%I', chunk_schema, chunk_name)::regclass)"
                           " FROM timescaledb_information.chunks WHERE is_compressed")
            cursor.execute(f"TRUNCATE {retention.RAW}")
            cursor.execute(f"ALTER TABLE {retention.RAW} SET (timescaledb.compress = false)")
            for agg in retention.continuous_aggregates():
                if not rollups.BY_RELATION[agg.view].columnstore_after:  # columnar by its migration
                    cursor.execute(f"ALTER MATERIALIZED VIEW {agg.view} SET (timescaledb.compress = false)")
        for agg in retention.continuous_aggregates():
            rollups.refresh(agg.view, None, None)

    def _materialize_all(self):
        for agg in retention.continuous_aggregates():
            rollups.refresh(agg.view, None, None)

    def _policies(self):
        return override_settings(APM_RETENTION_RAW_DAYS=30, APM_RETENTION_HOURLY_DAYS=400,
                                 APM_RETENTION_DAILY_DAYS=0, APM_COMPRESS_AFTER_DAYS=7)

    def test_rollups_answer_the_same_after_raw_chunks_are_dropped_and_every_refresh_runs(self):
        old = make_events(400, start=self.now - 50 * DAY, span=12 * DAY, seed=3)
        recent = make_events(200, start=self.now - 10 * DAY, span=9 * DAY, seed=4)
        store(old + recent)
        self._materialize_all()
        boundary = floor_to(self.now - 30 * DAY, DAY)
        before = {rel: [r for r in _rollup_rows(rel) if r[0] < boundary]
                  for rel in ("apirequest_hourly", "apirequest_daily")}
        self.assertEqual(sum(r[3] for r in before["apirequest_daily"]), len(old))
        kpi_url = (f"/api/requests/kpis/?start={(self.now - 60 * DAY).isoformat()}"
                   f"&end={boundary.isoformat()}&with_p95=false").replace("+00:00", "Z")
        kpis_before = self.client.get(kpi_url).json()
        self.assertEqual(kpis_before["hits"], len(old))

        with self._policies():
            out = io.StringIO()
            call_command("apply_policies", stdout=out)
            self.assertIn("observability_apirequest: retention 30 d, columnstore after 7 d", out.getvalue())
            self.assertIn("apirequest_hourly: tier hourly, refresh from -30 d, retention 400 d", out.getvalue())
            self.assertIn("apirequest_daily: tier daily, refresh from -30 d, kept forever", out.getvalue())
            # The minute tier is refreshed over its own two days, whatever the raw horizon.
            self.assertIn("apirequest_global_minute: tier fine, refresh from -2 d, kept forever", out.getvalue())
            call_command("prune_requests", stdout=io.StringIO())  # runs the policies now
            self.assertFalse(ApiRequest.objects.filter(time__lt=boundary - DAY).exists())
            self.assertEqual(ApiRequest.objects.filter(time__gte=self.now - 29 * DAY).count(), len(recent))
            self.assertGreater(_compressed_chunks(retention.RAW), 0)

            # Every kind of refresh: the commands (default window), each policy's job, and the
            # after-write refresh of a late event inside the retention.
            for relation in ("apirequest_hourly", "apirequest_daily"):
                call_command(f"refresh_{relation}", stdout=io.StringIO())
            with connection.cursor() as cursor:
                cursor.execute("SELECT job_id FROM timescaledb_information.jobs"
                               " WHERE proc_name = 'policy_refresh_continuous_aggregate'")
                for (job,) in cursor.fetchall():
                    cursor.execute("CALL run_job(%s)", [job])
            response = post_ingest(self.client, [make_event(time=self.now - 20 * DAY)])
            self.assertEqual(response.json()["inserted"], 1)

            after = {rel: [r for r in _rollup_rows(rel) if r[0] < boundary] for rel in before}
            self.assertEqual(after, before)
            self.assertEqual(self.client.get(kpi_url).json(), kpis_before)

            # Exact percentiles over the dropped window: a clear 400 naming where raw starts.
            response = self.client.get(kpi_url.replace("with_p95=false", "with_p95=true"))
            self.assertEqual(response.status_code, 400)
            self.assertIn("Raw events before", response.json()["detail"])
            # A filter the rollups don't have, or a start that is not a whole hour: raw needed, 400.
            self.assertEqual(self.client.get(kpi_url + "&method=GET").status_code, 400)
            top_url = kpi_url.replace("/kpis/", "/top-endpoints/").replace("&with_p95=false", "&limit=1000")
            response = self.client.get(top_url)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(sum(row["hits"] for row in response.json()["results"]), len(old))
            old_start = iso(self.now - 60 * DAY)
            unaligned = top_url.replace(old_start, iso(self.now - 60 * DAY + HOUR / 2))
            self.assertNotEqual(unaligned, top_url)
            self.assertEqual(self.client.get(unaligned).status_code, 400)
            # ...and the same window with a start inside the raw retention is answered.
            inside = (f"/api/requests/kpis/?start={(self.now - 20 * DAY).isoformat()}").replace("+00:00", "Z")
            self.assertEqual(self.client.get(inside).status_code, 200)

            # Applying again changes nothing (same jobs, same answers).
            with connection.cursor() as cursor:
                cursor.execute("SELECT array_agg(job_id ORDER BY job_id) FROM timescaledb_information.jobs")
                jobs = cursor.fetchone()[0]
                call_command("apply_policies", stdout=io.StringIO())
                cursor.execute("SELECT array_agg(job_id ORDER BY job_id) FROM timescaledb_information.jobs")
                self.assertEqual(cursor.fetchone()[0], jobs)

    def test_the_columnar_histograms_keep_their_columnstore_whatever_the_settings(self):
        with override_settings(APM_RETENTION_RAW_DAYS=0, APM_COMPRESS_AFTER_DAYS=0):
            lines = retention.apply_policies()
        self.assertIn("apirequest_latency_daily: tier daily, refresh all history, kept forever,"
                      " columnstore after 1 d", lines)
        self.assertIn("apirequest_service_latency_daily: tier daily, refresh all history, kept forever,"
                      " no columnstore", lines)

    def test_settings_that_would_make_a_rollup_lose_history_are_refused_with_a_reason(self):
        with override_settings(APM_RETENTION_RAW_DAYS=30, APM_RETENTION_HOURLY_DAYS=10):
            with self.assertRaisesMessage(CommandError, "APM_RETENTION_HOURLY_DAYS=10 is shorter than"):
                call_command("apply_policies", stdout=io.StringIO())
        with override_settings(APM_RETENTION_RAW_DAYS=1):
            with self.assertRaisesMessage(CommandError, "APM_RETENTION_RAW_DAYS=1 is too short for apirequest_daily"):
                call_command("apply_policies", stdout=io.StringIO())
        with override_settings(APM_RETENTION_FINE_DAYS=1):
            with self.assertRaisesMessage(CommandError, "APM_RETENTION_FINE_DAYS=1 is shorter than the 2 days"):
                call_command("apply_policies", stdout=io.StringIO())
        with connection.cursor() as cursor:  # nothing was changed on the way
            # (The minute tiers' refresh starts two days back from their migrations, 0006 and
            # 0010, on.)
            # (apirequest_latency_daily is columnar from its migration 0007 on.)
            cursor.execute("SELECT count(*) FROM timescaledb_information.jobs WHERE (proc_name IN"
                           " ('policy_retention', 'policy_compression')"
                           "     AND hypertable_name <> 'apirequest_latency_daily')"
                           " OR (config->>'start_offset' IS NOT NULL"
                           "     AND hypertable_name <> ALL(%s))",
                           [[r.relation for r in rollups.aggregates() if rollups.tier_for(r.width) == "fine"]])
            self.assertEqual(cursor.fetchone()[0], 0)

    def test_late_events_into_compressed_chunks_work_through_ingest_crud_and_refresh(self):
        first = make_events(300, start=self.now - 12 * DAY, span=2 * DAY, seed=5)
        store(first)
        self._materialize_all()
        with self._policies():
            retention.apply_policies()
            retention.run_policies_now()
            self.assertGreater(_compressed_chunks(retention.RAW), 0)

            late = make_events(50, start=self.now - 12 * DAY, span=2 * DAY, seed=6, service="late")
            response = post_ingest(self.client, late)
            self.assertEqual(response.json()["inserted"], 50)
            self.assertIsNone(rollups.refresh_dirty().failed)  # the background refresher's pass
            rows = [r for r in _rollup_rows("apirequest_hourly") if r[1] == "late"]
            self.assertEqual(sum(r[3] for r in rows), 50)

            stored = list(ApiRequest.objects.filter(service="late").order_by("id"))
            patched, deleted = stored[0], stored[-1]
            response = self.client.patch(f"/api/requests/{patched.id}/", {"status_code": 503},
                                         content_type="application/json")
            self.assertEqual(response.status_code, 200)
            response = self.client.delete(f"/api/requests/{deleted.id}/")
            self.assertEqual(response.status_code, 204)
            self.assertIsNone(rollups.refresh_dirty().failed)
            rows = [r for r in _rollup_rows("apirequest_hourly") if r[1] == "late"]
            self.assertEqual(sum(r[3] for r in rows), 49)
            expected_errors = 1 + sum(1 for e in stored[1:-1] if e.status_code >= 500)
            self.assertEqual(sum(r[4] for r in rows), expected_errors)
            daily = [r for r in _rollup_rows("apirequest_daily") if r[1] == "late"]
            self.assertEqual(sum(r[3] for r in daily), 49)


class PruneUnderConcurrentIngestTests(TransactionTestCase):
    """Real concurrency (PostgreSQL): an ingest thread keeps writing while prune deletes."""

    def test_nothing_inside_the_retention_is_lost_while_a_thread_ingests(self):
        if connection.vendor != "postgresql":
            self.skipTest("threads sharing one SQLite file serialize anyway; interleaving is tested above")
        now = datetime.now(UTC).replace(microsecond=0)
        store(make_events(2000, start=now - 60 * DAY, span=20 * DAY, seed=8))
        stop = threading.Event()
        started = threading.Event()
        sent = []

        def keep_ingesting():
            from django.db import connections
            try:
                seed = 100
                while not stop.is_set():
                    batch = make_events(50, start=now - 30 * DAY + HOUR, span=29 * DAY, seed=seed)
                    result = ingest.ingest_events(batch, strict=True)
                    sent.append(result.inserted)
                    started.set()
                    seed += 1
            finally:
                connections.close_all()

        thread = threading.Thread(target=keep_ingesting)
        thread.start()
        try:
            self.assertTrue(started.wait(timeout=30), "the ingest thread should be writing before prune starts")
            deleted, batches = retention.prune_raw(cutoff=now - 30 * DAY, batch_size=100, pause=0.01)
        finally:
            stop.set()
            thread.join(timeout=60)
        self.assertEqual((deleted, batches), (2000, 20))
        self.assertFalse(ApiRequest.objects.filter(time__lt=now - 30 * DAY).exists())
        self.assertEqual(ApiRequest.objects.count(), 2000 - deleted + sum(sent))
