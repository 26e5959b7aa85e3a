from io import StringIO

from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, TestCase


class WaitForDbTests(TestCase):
    def test_it_returns_at_once_when_the_database_is_up(self):
        out = StringIO()
        call_command("wait_for_db", "--timeout", "5", stdout=out)
        self.assertIn("Database is up (after 1 try)", out.getvalue())


class WaitForDbGivesUpTests(SimpleTestCase):
    def test_it_gives_up_with_a_clear_message_when_the_database_stays_down(self):
        from unittest import mock

        from django.db import OperationalError

        with mock.patch("observability.db.default_connection.ensure_connection",
                        side_effect=OperationalError("could not connect to server")), \
                self.assertRaises(CommandError) as caught:
            call_command("wait_for_db", "--timeout", "0.3", "--interval", "0.1", stdout=StringIO())
        self.assertIn("Database not reachable after", str(caught.exception))
        self.assertIn("could not connect to server", str(caught.exception))


class RefreshCommandTests(SimpleTestCase):
    def test_start_must_come_before_end(self):
        with self.assertRaises(CommandError):
            call_command("refresh_apirequest_hourly", "--start", "2026-01-02", "--end", "2026-01-01")

    def test_times_must_be_iso_8601(self):
        with self.assertRaises(CommandError):
            call_command("refresh_apirequest_daily", "--start", "last tuesday")
