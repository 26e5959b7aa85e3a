"""The Postman collection's requests work as written against the API."""

import json
from pathlib import Path

from observability.tests.utils import ApiTestCase

COLLECTION = Path(__file__).resolve().parents[2] / "postman" / "APM_Observability_Step2.postman_collection.json"
EXPECTED = {
    "Create event": 201, "List events (newest first)": 200, "Get event": 200, "Patch event": 200,
    "Replace event": 200, "Delete event": 204, "Ingest a list (non-strict)": 200,
    "Ingest with the events wrapper": 200, "Ingest strict (all or nothing)": 400,
}


class PostmanCollectionTests(ApiTestCase):
    def test_every_request_in_the_collection_gets_the_documented_status(self):
        collection = json.loads(COLLECTION.read_text())
        self.assertEqual(collection["info"]["schema"],
                         "https://schema.getpostman.com/json/collection/v2.1.0/collection.json")
        self.assertIn("baseUrl", {v["key"] for v in collection["variable"]})
        event_id = None
        seen = {}
        for folder in collection["item"]:
            for item in folder["item"]:
                request = item["request"]
                url = request["url"]["raw"].replace("{{baseUrl}}", "")
                if event_id is not None:
                    url = url.replace("{{eventId}}", str(event_id))
                body = request.get("body", {}).get("raw")
                response = self.client.generic(request["method"], url, data=body or "",
                                               content_type="application/json")
                seen[item["name"]] = response.status_code
                if item["name"] == "Create event":
                    event_id = response.json()["id"]
        self.assertEqual(seen, EXPECTED)
