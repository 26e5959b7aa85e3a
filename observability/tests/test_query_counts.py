"""How many queries the fast paths make, per database: an added query fails here, silently nowhere else.

The hot paths are bulk ingest (POST /api/requests/ingest/ and `ingest.receive_batch` behind it)
and the three reads a dashboard polls (KPIs, top endpoints, the time series). Their counts are
pinned exactly, per database, because they legitimately differ: PostgreSQL wraps every read in
SET/RESET statement_timeout, TimescaleDB also reads the aggregates' watermarks (one query),
and SQLite's bulk insert takes one INSERT per 124 rows where PostgreSQL sends one COPY.
They live in one module, not in each endpoint's, so that one table says what every fast path
costs on every database, and a change that moves a count shows up as one diff.

The state is fixed so that the counts are too:
- the API key cache is warm: KeyClient's key is remembered when it is created (apps.py), as
  in a worker that has already served that key; a cold key costs two more queries, pinned
  apart in `test_a_cold_key_costs_one_lookup_and_one_last_used_update`;
- the rollup kind (`db.rollups_are_continuous`) is cached, as in any process after its first
  request;
- the watermark cache (`rollups._marks_cache`, one second) is cleared: each read pays the one
  watermark query a request pays at least once a second;
- nothing is materialized (a TestCase never commits, so no aggregate is ever refreshed): on
  TimescaleDB the watermarks are "nothing yet" and the reads are real-time, for every test;
- the window is whole hours [BASE_TIME, BASE_TIME + 6 h) with events in it;
- the after-commit rollup upkeep of ingest (on TimescaleDB: one watermark query, and no refresh
  since nothing is materialized) is counted, by running the on-commit callbacks inside.

The COPY that stores a batch on PostgreSQL goes through psycopg2's `copy_expert` on the raw
cursor, which Django's query log never sees: the ingest tests also pin that it is one COPY.
"""

import json
from datetime import timedelta
from unittest import mock

from django.db import connection
from django.test.utils import CaptureQueriesContext

from observability import access, db, ingest, rollups
from observability.ingest import copy as ingest_copy
from observability.models import ApiRequest
from observability.tests.utils import BASE_TIME, ApiTestCase, iso, make_events, post_ingest

WINDOW = {"start": iso(BASE_TIME), "end": iso(BASE_TIME + timedelta(hours=6))}

# Queries per call, per database, as measured (CaptureQueriesContext) on SQLite 3.40, PostgreSQL
# 15.20 and PostgreSQL 15.20 + TimescaleDB 2.28.3. Every PostgreSQL read runs under the analytics
# time limit: SET statement_timeout before its first query and RESET after (db.query_time_limit).
#   ingest_view, ingest_service (1000 events; the view adds no query to the service):
#     SQLite       SAVEPOINT, 10 INSERT (bulk_create: 500 rows a call, 124 a statement), RELEASE
#     PostgreSQL   SAVEPOINT, RELEASE (the COPY between them is not logged: see above)
#     TimescaleDB  the same + the dirty ranges' INSERT ... SELECT, in the transaction (rollups.mark_dirty)
#   kpis (an aligned 6 h window, percentiles on):
#     SQLite       the counts, latencies and percentiles in one SELECT
#     PostgreSQL   SET, the same one SELECT, RESET
#     TimescaleDB  SET, the oldest raw chunk (retention.raw_missing_before), the watermarks, the
#                  counts from apirequest_global_hourly, the percentiles from the raw table, RESET
#                  (nothing materialized in the window: no read of the dirty ranges)
#   top_endpoints (sort by hits, limit 10):
#     SQLite       the ranking by hits, then the measures of the ten ranked series
#     PostgreSQL   SET, the ranking with its measures in one SELECT, RESET
#     TimescaleDB  SET, the watermarks, the ranking from apirequest_hourly, RESET
#   timeseries (interval=hour, percentiles on):
#     SQLite       the hourly buckets, their percentiles
#     PostgreSQL   SET, the hourly buckets, their percentiles, RESET
#     TimescaleDB  SET, the watermarks, the dirty ranges (rollups.dirty_ranges, once a request), the
#                  buckets from apirequest_global_hourly (real-time), the percentiles from the raw
#                  table, RESET
PINS = {
    "ingest_view": {"sqlite": 12, "postgresql": 2, "timescaledb": 3},
    "ingest_service": {"sqlite": 12, "postgresql": 2, "timescaledb": 3},
    "kpis": {"sqlite": 1, "postgresql": 3, "timescaledb": 6},
    "top_endpoints": {"sqlite": 2, "postgresql": 3, "timescaledb": 4},
    "timeseries": {"sqlite": 2, "postgresql": 4, "timescaledb": 6},
}
COLD_KEY_EXTRA = 2  # SELECT the key by prefix, UPDATE its last_used_at


def database_label() -> str:
    """"sqlite", "postgresql" or "timescaledb": the database the suite runs on, as PINS keys it."""
    if connection.vendor == "sqlite":
        return "sqlite"
    return "timescaledb" if db.timescale_version() else "postgresql"


class QueryCountTestCase(ApiTestCase):
    def setUp(self):
        super().setUp()
        self.label = database_label()
        db.rollups_are_continuous()  # the process's first request asks once, then never again
        db.has_table(rollups.DIRTY)  # so does its first write or read of the dirty ranges
        rollups._marks_cache.clear()
        self.addCleanup(rollups._marks_cache.clear)

    def assertQueries(self, pin: str, call, *, extra: int = 0):
        """Run `call` (and the on-commit callbacks it leaves) and check its count is the pin."""
        expected = PINS[pin][self.label] + extra
        with CaptureQueriesContext(connection) as captured:
            with self.captureOnCommitCallbacks(execute=True):
                result = call()
        queries = "\n".join(f"  {q['sql'][:160]}" for q in captured.captured_queries)
        self.assertEqual(len(captured), expected,
                         f"{pin} on {db.describe()} made {len(captured)} queries, pinned {expected}:\n{queries}")
        return result


class IngestQueryCountTests(QueryCountTestCase):
    def setUp(self):
        super().setUp()
        self.events = make_events(1000, seed=11)
        copies = mock.patch.object(ingest_copy, "_copy_rows", wraps=ingest_copy._copy_rows)
        self.copy_rows = copies.start()
        self.addCleanup(copies.stop)

    def assert_one_copy_where_postgresql(self):
        self.assertEqual(self.copy_rows.call_count, 1 if connection.vendor == "postgresql" else 0)
        self.assertEqual(ApiRequest.objects.count(), 1000)

    def test_a_bulk_ingest_request_makes_its_pinned_queries(self):
        response = self.assertQueries("ingest_view", lambda: post_ingest(self.client, self.events))
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["inserted"], 1000)
        self.assert_one_copy_where_postgresql()

    def test_receive_batch_makes_its_pinned_queries(self):
        body = json.dumps(self.events).encode()
        received = self.assertQueries("ingest_service", lambda: ingest.receive_batch(
            body=body, content_type="application/json", principal=None, strict=False))
        self.assertEqual((received.status, received.body["inserted"]), (200, 1000))
        self.assert_one_copy_where_postgresql()

    def test_a_cold_key_costs_one_lookup_and_one_last_used_update(self):
        access.clear_cache()
        response = self.assertQueries("ingest_view", lambda: post_ingest(self.client, self.events),
                                      extra=COLD_KEY_EXTRA)
        self.assertEqual(response.status_code, 200, response.content)


class ReadQueryCountTests(QueryCountTestCase):
    @classmethod
    def setUpTestData(cls):
        ingest.ingest_events(make_events(600, seed=5), strict=True)

    def get(self, url, **params):
        response = self.client.get(url, {**WINDOW, **params})
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def test_kpis_over_an_aligned_window_make_their_pinned_queries(self):
        body = self.assertQueries("kpis", lambda: self.get("/api/requests/kpis/"))
        self.assertEqual(body["hits"], 600)

    def test_top_endpoints_over_an_aligned_window_make_their_pinned_queries(self):
        body = self.assertQueries("top_endpoints", lambda: self.get("/api/requests/top-endpoints/"))
        self.assertTrue(body)

    def test_an_hourly_timeseries_over_an_aligned_window_makes_its_pinned_queries(self):
        body = self.assertQueries("timeseries", lambda: self.get("/api/requests/timeseries/", interval="hour"))
        self.assertTrue(body)
