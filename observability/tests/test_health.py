from unittest import mock

from django.db import OperationalError, connections
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
        # On the class: on PostgreSQL the ping opens a connection of its own.
        with mock.patch.object(connections["default"].__class__, "ensure_connection",
                        side_effect=OperationalError("connection to 10.0.0.7:5432 refused\nmore")), \
                self.assertLogs("observability.views", "WARNING") as logs:
            response = self.client.get("/api/health/", {"db": "1"})
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response["Retry-After"], "5")
        # An anonymous caller learns nothing about the database's address; the log does.
        self.assertEqual(response.json(), {"status": "error", "db": "unavailable"})
        self.assertIn("10.0.0.7:5432 refused", "\n".join(logs.output))
