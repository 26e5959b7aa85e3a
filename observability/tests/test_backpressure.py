"""When the database can't serve: 503 + Retry-After and nothing stored; a read past its time
limit: 504; a failed refresh after a committed write: still the write's 2xx."""

import time
from unittest import mock

from django.db import OperationalError, connection, connections
from django.test import override_settings

from observability import ingest
from observability.models import ApiRequest
from observability.tests.utils import (
    LIST_URL,
    ApiTestCase,
    ApiTransactionTestCase,
    make_event,
    make_events,
    post_ingest,
)


class DatabaseUnavailableTests(ApiTestCase):
    def setUp(self):
        self.client.raise_request_exception = False

    def assert_503(self, response):
        self.assertEqual(response.status_code, 503, response.content[:300])
        self.assertEqual(response["Retry-After"], "5")
        self.assertIn("unavailable", response.json()["detail"])

    def test_ingest_answers_503_with_retry_after_and_stores_nothing_when_the_database_fails(self):
        with mock.patch.object(ingest.copy, "_copy_rows" if connection.vendor == "postgresql" else "ApiRequest",
                               side_effect=OperationalError("server closed the connection unexpectedly")), \
                self.assertLogs("apm_platform.middleware", "WARNING"):
            self.assert_503(post_ingest(self.client, make_events(50)))
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_reads_and_the_crud_answer_503_too(self):
        down = OperationalError("connection refused")
        with mock.patch("observability.views.analytics.kpis", side_effect=down), \
                self.assertLogs("apm_platform.middleware", "WARNING"):
            self.assert_503(self.client.get(LIST_URL + "kpis/"))
        with mock.patch("observability.views.ApiRequestViewSet.perform_create", side_effect=down), \
                self.assertLogs("apm_platform.middleware", "WARNING"):
            self.assert_503(self.client.post(LIST_URL, make_event(), content_type="application/json"))

    @override_settings(APM_RETRY_AFTER=17)
    def test_retry_after_is_configurable(self):
        with mock.patch("observability.views.analytics.kpis", side_effect=OperationalError("x")), \
                self.assertLogs("apm_platform.middleware", "WARNING"):
            self.assertEqual(self.client.get(LIST_URL + "kpis/")["Retry-After"], "17")

    def test_an_outage_outside_a_drf_view_is_a_503_as_well(self):
        from apm_platform.middleware import server_error

        try:
            raise OperationalError("the database system is shutting down")
        except OperationalError:
            with self.assertLogs("apm_platform.middleware", "WARNING"):
                response = server_error(None)
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response["Retry-After"], "5")


class TimeLimitTests(ApiTransactionTestCase):
    """A read whose query runs past APM_QUERY_TIMEOUT is cancelled: 504, promptly."""

    def slow_query(self, **kwargs):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_sleep(10)")
            else:  # about a minute of work for SQLite unless interrupted
                cursor.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                               "WHERE x < 1000000000) SELECT count(*) FROM c")
        return {}

    @override_settings(APM_QUERY_TIMEOUT=1)
    def test_a_read_past_the_time_limit_is_a_504_naming_the_limit(self):
        started = time.monotonic()
        with mock.patch("observability.views.analytics.kpis", side_effect=self.slow_query), \
                self.assertLogs("apm_platform.middleware", "WARNING"):
            response = self.client.get(LIST_URL + "kpis/")
        elapsed = time.monotonic() - started
        self.assertEqual(response.status_code, 504, response.content[:300])
        self.assertIn("time limit of 1 s", response.json()["detail"])
        self.assertIn("precision=approx", response.json()["detail"])
        self.assertLess(elapsed, 5)
        # The limit ends with the request: writes and later reads are not cut short.
        self.assertEqual(post_ingest(self.client, [make_event()]).status_code, 200)
        self.assertEqual(self.client.get(LIST_URL + "kpis/").json()["hits"], 1)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW statement_timeout")
                self.assertEqual(cursor.fetchone()[0], "0")


def end_sleepers(testcase) -> None:
    """A query cut on the client side runs on in the server until it ends or writes: end the
    test's pg_sleep()s so that the test database can be dropped."""
    def end():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE query LIKE 'SELECT pg_sleep%%' AND pid <> pg_backend_pid()")
    testcase.addCleanup(end)


class ClientDeadlineTests(ApiTransactionTestCase):
    """apm_platform.dbguard: a round trip past its deadline is cut on the client side."""

    def setUp(self):
        if connection.vendor != "postgresql":
            self.skipTest(f"a client-side deadline is for PostgreSQL connections ({connection.vendor} is local)")
        end_sleepers(self)

    def fresh(self):
        conn = connections.create_connection("default")
        self.addCleanup(conn.close)
        return conn

    def test_a_round_trip_past_its_deadline_is_cut_and_the_next_connection_works(self):
        from apm_platform import dbguard

        conn = self.fresh()
        started = time.monotonic()
        with self.assertRaises(OperationalError) as caught, dbguard.round_trip_timeout(1):
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(10)")
        self.assertLess(time.monotonic() - started, 3)
        self.assertIsInstance(caught.exception.__cause__, dbguard.DeadlineExceeded)
        conn.close()
        with conn.cursor() as cursor:  # reconnects
            cursor.execute("SELECT 1")
            self.assertEqual(cursor.fetchone(), (1,))

    def test_a_long_query_on_a_live_server_outlasts_the_default_deadline(self):
        from apm_platform import dbguard

        conn = self.fresh()
        with mock.patch.object(dbguard, "DEFAULT_TIMEOUT", 0.5), dbguard.round_trip_timeout(5):
            with conn.cursor() as cursor:
                # Past DEFAULT_TIMEOUT, so the watchdog probes the server: alive, so it waits on.
                cursor.execute("SELECT pg_sleep(1.5), 7")
                self.assertEqual(cursor.fetchone()[1], 7)


    def test_batch_commands_wait_past_the_request_deadline_while_the_server_answers(self):
        # migrate backfilling a continuous aggregate, or seed_requests refreshing one, runs
        # single statements for minutes: manage.py lifts the request deadline for them.
        import manage
        from apm_platform import dbguard

        self.assertTrue(manage.is_batch_command(["manage.py", "migrate"]))
        self.assertTrue(manage.is_batch_command(["manage.py", "seed_requests", "--events", "10"]))
        self.assertFalse(manage.is_batch_command(["manage.py", "runserver"]))
        self.assertFalse(manage.is_batch_command(["manage.py", "test"]))
        conn = self.fresh()
        with mock.patch.object(dbguard, "DEFAULT_TIMEOUT", 0.5), \
                mock.patch.object(dbguard, "PROCESS_TIMEOUT", dbguard.BATCH_TIMEOUT):
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(1.5), 7")
                self.assertEqual(cursor.fetchone()[1], 7)
        with mock.patch.object(dbguard, "DEFAULT_TIMEOUT", 0.5), self.assertRaises(OperationalError):
            with conn.cursor() as cursor:  # without batch mode the same query is cut
                cursor.execute("SELECT pg_sleep(1.5), 7")


class HealthTimeTests(ApiTestCase):
    @override_settings(DB_CONNECT_TIMEOUT=1)
    def test_health_with_db_is_bounded_even_when_the_query_hangs(self):
        if connection.vendor != "postgresql":
            self.skipTest("needs PostgreSQL: a query that hangs")
        end_sleepers(self)
        from apm_platform import dbguard

        real = dbguard.GuardedCursor.execute

        def hang(cursor, query, vars=None):
            return real(cursor, "SELECT pg_sleep(30)" if query == "SELECT 1" else query, vars)

        started = time.monotonic()
        with mock.patch.object(dbguard.GuardedCursor, "execute", hang), \
                self.assertLogs("observability.views", "WARNING"):
            response = self.client.get("/api/health/", {"db": "1"})
        self.assertEqual((response.status_code, response.json()["db"]), (503, "unavailable"))
        self.assertLess(time.monotonic() - started, 1 + 1)


