"""The Postman collection: what newman runs (scripts/test/test_postman.sh) is complete and can fail."""

import json
import re
from pathlib import Path

from django.test import SimpleTestCase

COLLECTION = Path(__file__).resolve().parents[2] / "postman" / "APM_Observability_Step2.postman_collection.json"
# Every endpoint of docs/API.md, as (method, path with {{eventId}} for an id).
README_ENDPOINTS = {
    ("GET", "/api/health/"), ("GET", "/api/requests/"), ("POST", "/api/requests/"),
    ("GET", "/api/requests/{{eventId}}/"), ("PATCH", "/api/requests/{{eventId}}/"),
    ("PUT", "/api/requests/{{eventId}}/"), ("DELETE", "/api/requests/{{eventId}}/"),
    ("POST", "/api/requests/ingest/"), ("GET", "/api/requests/hourly/"), ("GET", "/api/requests/daily/"),
    ("GET", "/api/requests/kpis/"), ("GET", "/api/requests/top-endpoints/"),
}


def requests(collection):
    for folder in collection["item"]:
        for item in folder["item"]:
            yield folder, item


def script(item, listen):
    return "\n".join(line for event in item.get("event", []) if event["listen"] == listen
                     for line in event["script"]["exec"])


class PostmanCollectionTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.collection = json.loads(COLLECTION.read_text())
        cls.items = list(requests(cls.collection))

    def test_it_is_a_v21_collection_that_sends_the_api_key_from_a_variable(self):
        self.assertEqual(self.collection["info"]["schema"],
                         "https://schema.getpostman.com/json/collection/v2.1.0/collection.json")
        self.assertLessEqual({"baseUrl", "apiKey"}, {v["key"] for v in self.collection["variable"]})
        self.assertEqual(self.collection["auth"], {"type": "bearer", "bearer": [
            {"key": "token", "value": "{{apiKey}}", "type": "string"}]})

    def test_it_covers_every_endpoint_of_the_readme(self):
        seen = {(i["request"]["method"], i["request"]["url"]["raw"].replace("{{baseUrl}}", "").split("?")[0])
                for _, i in self.items}
        self.assertLessEqual(README_ENDPOINTS, seen)

    def test_every_request_asserts_its_status_code(self):
        for _, item in self.items:
            tests = script(item, "test")
            self.assertRegex(tests, r"pm\.response\.to\.have\.status\(\d{3}\)", item["name"])
            self.assertIn("pm.expect(", tests, item["name"])
            self.assertTrue(item["request"]["url"]["raw"].startswith("{{baseUrl}}/"), item["name"])

    def test_ids_are_chained_create_read_update_delete(self):
        names = [item["name"] for _, item in self.items]
        create = names.index("Create event")
        self.assertIn('pm.collectionVariables.set("eventId", body.id)', script(self.items[create][1], "test"))
        order = [names.index(n) for n in ("Create event", "Get event", "Patch event", "Replace event",
                                          "Delete event", "Get deleted event is a 404")]
        self.assertEqual(order, sorted(order))
        put = self.items[names.index("Replace event")][1]["request"]
        body = json.loads(put["body"]["raw"])
        self.assertLessEqual({"time", "service", "endpoint", "method", "status_code", "latency_ms"}, set(body))

    def test_each_run_uses_its_own_service_so_it_can_run_again(self):
        self.assertIn('pm.collectionVariables.set("runId"', script(self.items[0][1], "prerequest")
                      + "".join(script(i, "prerequest") for _, i in self.items))
        for _, item in self.items:
            body = item["request"].get("body", {}).get("raw", "")
            for service in re.findall(r'"service": "([^"]*)"', body):
                self.assertEqual(service, "postman-{{runId}}", item["name"])

    def test_health_is_called_without_the_key_and_401s_are_checked(self):
        for _, item in self.items:
            if item["request"]["url"]["raw"].startswith("{{baseUrl}}/api/health/"):
                self.assertEqual(item["request"]["auth"], {"type": "noauth"})
        self.assertTrue(any("to.have.status(401)" in script(i, "test") for _, i in self.items))
