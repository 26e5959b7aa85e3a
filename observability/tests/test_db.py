"""observability/db.py: what the connected database can do, and how its failures are classified.

Every database the suite runs on has a known answer: SQLite is not PostgreSQL and has no
TimescaleDB; plain PostgreSQL (APM_TIMESCALE=off) has no hypertable and its rollups are plain
views; TimescaleDB has the hypertable `observability_apirequest` and the rollups as continuous
aggregates. Where it can, a test checks the answer against the catalog itself, not through the
function under test.
"""

import socket
import sqlite3
import time
from unittest import mock

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.test import SimpleTestCase, TestCase, override_settings

from observability import db

ROLLUPS = ("apirequest_hourly", "apirequest_daily")


def on_postgresql() -> bool:
    return connection.vendor == "postgresql"


def installed_timescale() -> str | None:
    """The extension's version from pg_available_extensions, not the pg_extension query of db.py."""
    if not on_postgresql():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'")
        row = cursor.fetchone()
    return row[0] if row else None


def catalog_names(table: str, column: str) -> set[str]:
    """Names in TimescaleDB's own catalog tables (not the timescaledb_information views db.py reads)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM _timescaledb_catalog.{table}")
        return {row[0] for row in cursor.fetchall()}


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


class CapabilityTests(TestCase):
    def test_is_postgresql_is_true_only_on_postgresql(self):
        self.assertEqual(db.is_postgresql(), connection.vendor == "postgresql")

    def test_only_sqlite_groups_by_sorting(self):
        self.assertEqual(db.groups_by_sorting(), connection.vendor == "sqlite")

    def test_timescale_version_is_the_installed_extension_or_none(self):
        version = db.timescale_version()
        self.assertEqual(version, installed_timescale())
        if settings.APM_TIMESCALE == "off" or not on_postgresql():
            self.assertIsNone(version)  # migrations never create the extension with it off
        elif settings.APM_TIMESCALE == "require":
            self.assertTrue(version)

    def test_use_timescale_follows_the_setting_and_the_database(self):
        if not on_postgresql():
            self.assertFalse(db.use_timescale())
            with override_settings(APM_TIMESCALE="require"), self.assertRaisesMessage(RuntimeError, "not PostgreSQL"):
                db.use_timescale()
            return
        with override_settings(APM_TIMESCALE="off"):
            self.assertFalse(db.use_timescale())
        if db.timescale_version():
            with override_settings(APM_TIMESCALE="require"):
                self.assertTrue(db.use_timescale())

    def test_the_raw_table_is_a_hypertable_only_on_timescaledb(self):
        if db.timescale_version():
            self.assertIn("observability_apirequest", catalog_names("hypertable", "table_name"))
            self.assertTrue(db.is_hypertable("observability_apirequest"))
        else:
            self.assertFalse(db.is_hypertable("observability_apirequest"))
        self.assertFalse(db.is_hypertable("observability_apikey"))

    def test_the_rollups_are_continuous_aggregates_only_on_timescaledb(self):
        if db.timescale_version():
            caggs = catalog_names("continuous_agg", "user_view_name")
            for name in ROLLUPS:
                self.assertIn(name, caggs)
                self.assertTrue(db.is_continuous_aggregate(name), name)
        else:
            for name in ROLLUPS:
                self.assertFalse(db.is_continuous_aggregate(name), name)
        self.assertFalse(db.is_continuous_aggregate("observability_apirequest"))

    def test_the_rollups_are_plain_views_on_postgresql_without_timescaledb(self):
        if not on_postgresql() or db.timescale_version():
            self.skipTest(f"plain PostgreSQL only ({db.describe()})")
        with connection.cursor() as cursor:
            cursor.execute("SELECT viewname FROM pg_views WHERE viewname = ANY(%s)", [list(ROLLUPS)])
            self.assertEqual({row[0] for row in cursor.fetchall()}, set(ROLLUPS))

    def test_rollups_are_continuous_exactly_where_the_hourly_rollup_is_an_aggregate(self):
        expected = bool(db.timescale_version()) and "apirequest_hourly" in catalog_names(
            "continuous_agg", "user_view_name")
        self.assertEqual(db.rollups_are_continuous(), expected)

    def test_rollups_are_continuous_is_answered_from_the_cache_after_the_first_call(self):
        db.rollups_are_continuous()
        with self.assertNumQueries(0):
            db.rollups_are_continuous()

    def test_forget_rollup_kind_clears_the_cached_answer(self):
        self.addCleanup(db.forget_rollup_kind)
        actual = db.rollups_are_continuous()
        key = str(connection.settings_dict.get("NAME"))
        db._ROLLUP_KIND[key] = not actual  # a stale answer, as before a migration built the aggregates
        self.assertEqual(db.rollups_are_continuous(), not actual)
        db.forget_rollup_kind()
        self.assertEqual(db._ROLLUP_KIND, {})
        # Asking again asks the database: none on SQLite, the extension on PostgreSQL, and the
        # catalog too where the extension is installed.
        expected_queries = 0 if not on_postgresql() else 2 if db.timescale_version() else 1
        with self.assertNumQueries(expected_queries):
            self.assertEqual(db.rollups_are_continuous(), actual)

    def test_describe_names_the_database_and_its_version(self):
        name = db.describe()
        if not on_postgresql():
            self.assertEqual(name, f"SQLite {sqlite3.sqlite_version}")
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version')")
            version = cursor.fetchone()[0].split()[0]
        timescale = installed_timescale()
        expected = f"PostgreSQL {version}" + (f" + TimescaleDB {timescale}" if timescale else "")
        self.assertEqual(name, expected)


class PingTests(TestCase):
    def test_a_live_database_answers_none(self):
        self.assertIsNone(db.ping())

    def test_a_live_database_answers_none_within_a_timeout(self):
        self.assertIsNone(db.ping(timeout=5))

    def broken_connection(self):
        """A connection of the default alias whose settings point nowhere."""
        broken = connections.create_connection(DEFAULT_DB_ALIAS)
        if on_postgresql():
            broken.settings_dict = {**broken.settings_dict, "HOST": "127.0.0.1", "PORT": closed_loopback_port()}
        else:
            broken.settings_dict = {**broken.settings_dict, "NAME": "/nonexistent-dir/apm.sqlite3"}
        self.addCleanup(broken.close)
        return broken

    def test_a_database_that_cannot_be_reached_answers_the_reason(self):
        reason = db.ping(self.broken_connection())
        self.assertIsInstance(reason, str)
        self.assertTrue(reason)
        self.assertNotIn("\n", reason)
        if on_postgresql():
            self.assertIn("refused", reason.lower())
        else:
            self.assertIn("unable to open database file", reason)

    def test_with_a_timeout_postgresql_is_probed_on_a_fresh_connection_of_the_alias(self):
        if not on_postgresql():
            self.skipTest(f"the fresh-connection probe is PostgreSQL's ({db.describe()})")
        # ping(timeout=...) opens a new connection from the alias's settings, so the settings
        # themselves are what must point at a closed port.
        with mock.patch.dict(connections.settings[DEFAULT_DB_ALIAS],
                             {"HOST": "127.0.0.1", "PORT": closed_loopback_port()}):
            began = time.monotonic()
            reason = db.ping(timeout=2)
            took = time.monotonic() - began
        self.assertIsInstance(reason, str)
        self.assertIn("refused", reason.lower())
        self.assertLess(took, 2.5)
        self.assertIsNone(db.ping(timeout=2))  # the request's own connection was never touched


class FakePgError(Exception):
    """Stands for the psycopg2 error Django's OperationalError is raised `from`."""

    def __init__(self, pgcode):
        super().__init__(f"pgcode {pgcode}")
        self.pgcode = pgcode


def wrapped(django_error, cause):
    """A Django error raised from `cause`, as Django's wrap_database_errors raises it."""
    try:
        raise django_error from cause
    except type(django_error) as exc:
        return exc


class ErrorClassificationTests(SimpleTestCase):
    def test_operational_and_interface_errors_mean_the_database_is_unavailable(self):
        self.assertTrue(db.is_unavailable(OperationalError("server closed the connection unexpectedly")))
        self.assertTrue(db.is_unavailable(InterfaceError("connection already closed")))
        self.assertTrue(db.is_unavailable(OperationalError("database is locked")))

    def test_other_errors_are_not_unavailability(self):
        self.assertFalse(db.is_unavailable(IntegrityError("duplicate key")))
        self.assertFalse(db.is_unavailable(ValueError("not a database error")))

    def test_a_statement_timeout_is_a_time_limit_not_unavailability(self):
        exc = wrapped(OperationalError("canceling statement due to statement timeout"), FakePgError("57014"))
        self.assertTrue(db.is_time_limit(exc))
        self.assertFalse(db.is_unavailable(exc))

    def test_other_postgresql_errors_are_not_time_limits(self):
        exc = wrapped(OperationalError("terminating connection due to administrator command"), FakePgError("57P01"))
        self.assertFalse(db.is_time_limit(exc))
        self.assertTrue(db.is_unavailable(exc))

    def test_only_an_operational_error_is_a_time_limit(self):
        self.assertFalse(db.is_time_limit(wrapped(InterfaceError("cancelled"), FakePgError("57014"))))
        self.assertFalse(db.is_time_limit(ValueError("interrupted")))

    def test_sqlite_interrupted_is_a_time_limit_only_when_the_limit_fired(self):
        exc = OperationalError("interrupted")
        with mock.patch.object(db._limit, "fired", False, create=True):
            self.assertFalse(db.is_time_limit(exc))
        with mock.patch.object(db._limit, "fired", True, create=True):
            self.assertTrue(db.is_time_limit(exc))
            self.assertFalse(db.is_time_limit(OperationalError("database is locked")))

    def test_a_failed_commit_leaves_its_outcome_unknown(self):
        from apm_platform.dbguard import CommitOutcomeUnknown

        self.assertTrue(db.commit_outcome_unknown(CommitOutcomeUnknown("The connection failed during COMMIT")))

    def test_a_failed_commit_behind_a_failed_reconnect_is_still_found(self):
        from apm_platform.dbguard import CommitOutcomeUnknown

        # atomic() reconnects in its `finally` after a failed COMMIT: the COMMIT's error is
        # the surfacing error's context, and Django's wrapper its cause.
        try:
            try:
                raise wrapped(OperationalError("COMMIT failed"), CommitOutcomeUnknown("during COMMIT"))
            except OperationalError:
                raise InterfaceError("connection already closed")  # noqa: B904 (context, as in atomic)
        except InterfaceError as exc:
            surfaced = exc
        self.assertTrue(db.commit_outcome_unknown(surfaced))

    def test_other_errors_say_nothing_about_a_commit(self):
        self.assertFalse(db.commit_outcome_unknown(OperationalError("server closed the connection unexpectedly")))
        self.assertFalse(db.commit_outcome_unknown(wrapped(OperationalError("x"), FakePgError("57014"))))


class QueryTimeLimitTests(TestCase):
    """A real query past the limit is cancelled with an error is_time_limit recognises."""

    def test_a_query_past_the_time_limit_is_recognised_as_a_time_limit(self):
        if on_postgresql():
            sql, params = "SELECT pg_sleep(2)", []
        else:  # a CPU-bound query the progress handler interrupts
            sql = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
                   "SELECT count(*) FROM n")
            params = [10**9]
        began = time.monotonic()
        # On PostgreSQL the limit's RESET then runs in the aborted transaction (needs_rollback is
        # not set yet inside the block), fails and is logged as a warning: kept out of the
        # output here, not asserted (the transaction's rollback undoes the SET anyway).
        with self.assertRaises(OperationalError) as caught, transaction.atomic(), \
                mock.patch.object(db.logger, "warning"):
            with db.query_time_limit(0.2), connection.cursor() as cursor:
                cursor.execute(sql, params)
        self.assertLess(time.monotonic() - began, 1.8)
        self.assertTrue(db.is_time_limit(caught.exception), caught.exception)
        self.assertFalse(db.is_unavailable(caught.exception))
        with connection.cursor() as cursor:  # the connection still serves
            cursor.execute("SELECT 1")
            self.assertEqual(cursor.fetchone()[0], 1)
