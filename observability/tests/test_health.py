from unittest import mock

from django.db import OperationalError
from django.test import TestCase


class HealthTests(TestCase):
    """Health is public: these requests carry no credential at all."""

    def test_health_answers_ok_without_touching_the_database(self):
        with self.assertNumQueries(0):
            response = self.client.get("/api/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_db_1_checks_the_database(self):
        response = self.client.get("/api/health/", {"db": "1"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok", "db": "ok"})

    def test_db_1_answers_503_json_when_the_database_is_down(self):
        # The real-server test (test_server.py) points gunicorn at a dead database too.
        with mock.patch("observability.db.default_connection.ensure_connection",
                        side_effect=OperationalError("connection refused\nmore")), \
                self.assertLogs("django.request", "ERROR"):
            response = self.client.get("/api/health/", {"db": "1"})
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json(), {"status": "error", "db": "connection refused"})
