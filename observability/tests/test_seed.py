from datetime import UTC, datetime, timedelta
from io import StringIO
from unittest import mock

from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TestCase, TransactionTestCase

from observability import retention, rollups
from observability.management.commands import seed_requests
from observability.models import ApiRequest
from observability.tests.utils import api_key_headers, skip_unless_timescale

END = "2026-03-01T00:00:00Z"


def snapshot():
    return list(ApiRequest.objects.order_by("trace_id", "time").values_list(
        "time", "service", "endpoint", "method", "status_code", "latency_ms", "trace_id", "user_ref"))


class SeedRequestsTests(TestCase):
    def seed(self, *extra):
        out = StringIO()
        # --no-refresh: a TestCase is one transaction, where TimescaleDB refuses to refresh.
        call_command("seed_requests", "--events", "3000", "--days", "2", "--end", END, "--batch", "1000",
                     "--no-refresh", *extra, stdout=out)
        return out.getvalue()

    def test_the_same_seed_gives_the_same_rows_and_another_seed_others(self):
        self.seed("--seed", "5")
        first = snapshot()
        ApiRequest.objects.all().delete()
        self.seed("--seed", "5", "--batch", "700")
        self.assertEqual(snapshot(), first)
        ApiRequest.objects.all().delete()
        self.seed("--seed", "6")
        self.assertNotEqual(snapshot(), first)

    def test_the_end_may_be_given_as_a_datetime_from_code(self):
        # The benchmarks call the command with end=datetime(...); argparse never sees it.
        self.seed("--seed", "5")
        first = snapshot()
        ApiRequest.objects.all().delete()
        call_command("seed_requests", events=3000, days=2, end=datetime.fromisoformat(END), batch=1000,
                     no_refresh=True, seed=5, stdout=StringIO())
        self.assertEqual(snapshot(), first)

    def test_rows_are_valid_within_the_span_and_shaped_like_traffic(self):
        out = self.seed()
        self.assertIn("Seeded 3,000 events over 2 days", out)
        self.assertIn("100.0%", out)
        rows = snapshot()
        self.assertEqual(len(rows), 3000)
        end = datetime(2026, 3, 1, tzinfo=UTC)
        self.assertTrue(all(end.replace(day=1, month=2, hour=0) <= r[0] < end for r in rows))
        self.assertTrue(all(r[5] >= 0 and 100 <= r[4] <= 599 and r[3] in {"GET", "POST", "PUT", "DELETE"}
                            for r in rows))
        per_series = {}
        for r in rows:
            per_series[(r[1], r[2])] = per_series.get((r[1], r[2]), 0) + 1
        busiest = sorted(per_series.values(), reverse=True)
        self.assertGreater(busiest[0], 10 * (3000 / 1000))  # a hot endpoint, far above the mean
        latencies = sorted(r[5] for r in rows)
        self.assertGreater(latencies[-1], 5 * latencies[len(latencies) // 2])  # a slow tail
        errors = sum(1 for r in rows if r[4] >= 500)
        self.assertTrue(0 < errors < 300, errors)

    def test_it_says_what_it_will_add_and_about_how_long_before_it_starts_and_what_it_took_at_the_end(self):
        with mock.patch.dict(seed_requests.SEED_RATE, {connection.vendor: 1_000}):  # 3,000 events: ~3 s
            out = StringIO()
            call_command("seed_requests", "--events", "3000", "--days", "2", "--end", END, "--services", "4",
                         "--endpoints-per-service", "5", "--no-refresh", stdout=out)
        lines = out.getvalue().splitlines()
        name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[connection.vendor]
        self.assertEqual(lines[0], "Seeding 3,000 events over 2 days (2026-02-27T00:00:00+00:00 to "
                                   f"2026-03-01T00:00:00+00:00), 4 services x 5 endpoints (20 series), on {name}: "
                                   "about 3 s at ~1,000 events/s.")
        self.assertRegex(lines[-1], r"^Seeded 3,000 events over 2 days .* in \d+\.\ds \([\d,]+/s\)\. "
                                    r"\d+\.\ds in all\.$")
        self.assertEqual([seed_requests._duration(s) for s in (0.4, 42, 600)], ["under 1 s", "42 s", "10.0 min"])

    def test_bad_sizes_are_refused(self):
        with self.assertRaises(CommandError):
            call_command("seed_requests", "--events", "-1", stdout=StringIO())
        with self.assertRaises(CommandError):
            call_command("seed_requests", "--end", "yesterday", stdout=StringIO())


class SeedOnTimescaleTests(TransactionTestCase):
    """A seeded history answers at its usual speed at once: refreshed, and columnar where the
    read path wants it (the benchmarks time it right after seeding)."""

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def test_seeding_refreshes_the_rollups_and_converts_the_columnar_ones(self):
        skip_unless_timescale(self, "continuous aggregates and their columnstore policies")
        out = StringIO()
        call_command("seed_requests", "--events", "2000", "--days", "3", "--end", END, stdout=out)
        self.assertIn("Rollups refreshed. Columnstore policies run (apirequest_latency_daily).", out.getvalue())
        with connection.cursor() as cursor:
            # Every chunk the policy converts (ended over a day ago; an earlier test may have
            # left a newer one).
            cursor.execute("SELECT count(*) FILTER (WHERE c.is_compressed), count(*)"
                           " FROM timescaledb_information.chunks c"
                           " JOIN timescaledb_information.continuous_aggregates a"
                           "  ON a.materialization_hypertable_name = c.hypertable_name"
                           " WHERE a.view_name = 'apirequest_latency_daily'"
                           "  AND c.range_end < now() - interval '1 day'")
            compressed, chunks = cursor.fetchone()
        self.assertEqual((compressed, chunks > 0), (chunks, True))
        # Every seeded event, ranked from the converted daily histograms.
        top = self.client.get("/api/requests/top-endpoints/", {
            "start": "2026-02-26T00:00:00Z", "end": END, "precision": "approx", "sort": "p95_latency_ms",
            "limit": 1000}, headers=api_key_headers("read")).json()
        self.assertEqual((sum(row["hits"] for row in top["results"]), top["precision"]), (2000, "approx"))
        self.assertTrue(all(row["p95_latency_ms"] for row in top["results"]))

    def test_a_late_event_in_a_converted_chunk_is_converted_again_by_the_hourly_policy(self):
        skip_unless_timescale(self, "continuous aggregates and their columnstore policies")
        call_command("seed_requests", "--events", "2000", "--days", "3", "--end", END, stdout=StringIO())
        with connection.cursor() as cursor:
            # The chunks the policy converts (an earlier test may have left a newer one).
            cursor.execute("SELECT c FROM show_chunks('apirequest_latency_daily',"
                           " older_than => now() - interval '1 day') AS c")
            chunks = [chunk for (chunk,) in cursor.fetchall()]

            def row_store():  # rows outside the columnstore, in the chunks' own heaps
                return sum(self._count(cursor, f"SELECT count(*) FROM ONLY {chunk}") for chunk in chunks)

            self.assertTrue(chunks)
            self.assertEqual(row_store(), 0)
            late = {"time": "2026-02-27T12:00:00Z", "service": "late", "endpoint": "/x", "method": "GET",
                    "status_code": 200, "latency_ms": 12.5}
            response = self.client.post("/api/requests/ingest/", [late], content_type="application/json",
                                        headers=api_key_headers("ingest"))
            self.assertEqual(response.json()["inserted"], 1)
            self.assertIsNone(rollups.refresh_dirty().failed)  # the background refresher's pass
            self.assertGreater(row_store(), 0)  # the refresh decompressed batches
            cursor.execute("SELECT schedule_interval FROM timescaledb_information.jobs"
                           " WHERE proc_name = 'policy_compression' AND hypertable_name = 'apirequest_latency_daily'")
            self.assertEqual(cursor.fetchone()[0], timedelta(hours=1))
        retention.convert_columnar_now()  # the policy's next run
        with connection.cursor() as cursor:
            self.assertEqual(row_store(), 0)
        top = self.client.get("/api/requests/top-endpoints/", {
            "start": "2026-02-27T00:00:00Z", "end": "2026-02-28T00:00:00Z", "precision": "approx",
            "service": "late", "with_p95": "true"}, headers=api_key_headers("read")).json()["results"]
        self.assertEqual([r["hits"] for r in top], [1])
        self.assertLessEqual(abs(top[0]["p50_latency_ms"] - 12.5), 12.5 * rollups.MAX_RELATIVE_ERROR)

    @staticmethod
    def _count(cursor, sql):
        cursor.execute(sql)
        return cursor.fetchone()[0]
