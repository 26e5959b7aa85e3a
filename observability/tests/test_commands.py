import os
import shutil
import subprocess
import sys
import tempfile
from io import StringIO
from pathlib import Path

from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, TestCase

ROOT = Path(__file__).resolve().parents[2]


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


class BadArgumentsOnATerminalTests(SimpleTestCase):
    """Run as a person would (`manage.py ...` in a shell): one clear line and a non-zero exit, no traceback."""

    def run_manage(self, *args):
        env = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_URL": f"sqlite:///{self.tmp}/db.sqlite3",
               "APM_TIMESCALE": "off"}
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def assertOneClearLine(self, result, *words):
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        for word in words:
            self.assertIn(word, lines[0])

    def test_refresh_with_a_start_that_is_not_a_time(self):
        self.assertOneClearLine(self.run_manage("refresh_apirequest_hourly", "--start", "garbage"),
                                "CommandError", "--start", "ISO 8601", "'garbage'")

    def test_refresh_daily_with_a_bad_end(self):
        self.assertOneClearLine(self.run_manage("refresh_apirequest_daily", "--end", "2026-13-01"),
                                "--end", "'2026-13-01'")

    def test_seed_requests_with_a_bad_end(self):
        self.assertOneClearLine(self.run_manage("seed_requests", "--end", "garbage"), "--end", "'garbage'")

    def test_prune_requests_refuses_days_below_one_rather_than_deleting_everything(self):
        self.assertOneClearLine(self.run_manage("prune_requests", "--days", "-3"), "--days must be at least 1")
        self.assertOneClearLine(self.run_manage("prune_requests", "--days", "30", "--batch-size", "0"),
                                "--batch-size must be at least 1")


class WithoutTheVirtualenvTests(SimpleTestCase):
    """`python manage.py ...` with a Python that has no Django: one line saying how to run it, no traceback."""

    def test_it_names_make_manage_with_the_same_arguments_and_the_venv(self):
        # -S: without the site module no site-packages, the venv's included (as a system Python without Django).
        result = subprocess.run([sys.executable, "-I", "-S", "manage.py", "createsuperuser", "--username", "ana"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn('make manage ARGS="createsuperuser --username ana"', lines[0])
        self.assertIn("source .venv/bin/activate", lines[0])
        self.assertIn("Django is not installed", lines[0])

