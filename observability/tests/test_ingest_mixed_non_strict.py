
from observability.models import ApiRequest
from observability.tests.utils import ApiTestCase, make_event, make_events, post_ingest


class NonStrictIngestTests(ApiTestCase):
    def test_valid_events_are_stored_and_invalid_ones_reported_by_index(self):
        events = make_events(10)
        events[2]["status_code"] = 700
        events[5] = {**events[5], "latency_ms": -3}
        del events[7]["service"]
        response = post_ingest(self.client, events)
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual((body["inserted"], body["rejected"]), (7, 3))
        self.assertEqual([e["index"] for e in body["errors"]], [2, 5, 7])
        self.assertEqual(set(body["errors"][0]["errors"]), {"status_code"})
        self.assertEqual(set(body["errors"][1]["errors"]), {"latency_ms"})
        self.assertEqual(body["errors"][2]["errors"], {"service": ["This field is required."]})
        stored = set(ApiRequest.objects.values_list("trace_id", flat=True))
        self.assertEqual(stored, {e["trace_id"] for i, e in enumerate(events) if i not in (2, 5, 7)})

    def test_every_field_of_an_invalid_event_is_reported(self):
        bad = {"time": "yesterday", "service": "", "endpoint": "x" * 256, "method": "FETCH",
               "status_code": "abc", "latency_ms": [1], "trace_id": "t" * 65, "user_ref": 5}
        body = post_ingest(self.client, [bad]).json()
        self.assertEqual(set(body["errors"][0]["errors"]), set(bad))
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_items_that_are_not_objects_are_rejected_not_fatal(self):
        body = post_ingest(self.client, [make_event(), 42, "event", None, [1]]).json()
        self.assertEqual((body["inserted"], body["rejected"]), (1, 4))
        self.assertIn("non_field_errors", body["errors"][0]["errors"])

    def test_only_the_first_100_errors_are_listed_and_truncation_is_flagged(self):
        events = [make_event(status_code=1) for _ in range(150)] + [make_event()]
        body = post_ingest(self.client, events).json()
        self.assertEqual((body["inserted"], body["rejected"]), (1, 150))
        self.assertEqual(len(body["errors"]), 100)
        self.assertEqual(body["errors"][-1]["index"], 99)
        self.assertIs(body["errors_truncated"], True)
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_strict_false_is_the_default_behaviour(self):
        response = post_ingest(self.client, [make_event(), make_event(method="NOPE")], strict=False)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["inserted"], 1)
