import json

from django.test import override_settings

from observability.models import ApiRequest
from observability.tests.utils import INGEST_URL, ApiTestCase, make_event, post_ingest


class BadBodyTests(ApiTestCase):
    def assert_json_error(self, response, status, *words):
        self.assertEqual(response.status_code, status, response.content)
        self.assertTrue(response["Content-Type"].startswith("application/json"))
        detail = response.json()["detail"]
        for word in words:
            self.assertIn(word, detail)
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_a_body_that_is_not_json_is_a_400(self):
        self.assert_json_error(post_ingest(self.client, b"{not json"), 400, "not valid JSON")

    def test_an_empty_body_is_a_400(self):
        self.assert_json_error(post_ingest(self.client, b"  \n"), 400, "empty")

    def test_json_of_another_shape_is_a_400(self):
        for body in ('{"items": []}', '{"events": {}}', '"text"', "42", "null"):
            self.assert_json_error(post_ingest(self.client, body), 400, "list")

    def test_a_body_that_is_not_utf8_is_a_400(self):
        self.assert_json_error(post_ingest(self.client, b'[{"service": "\xff"}]'), 400)

    def test_a_content_type_other_than_json_is_a_415(self):
        response = post_ingest(self.client, json.dumps([make_event()]), content_type="text/plain")
        self.assert_json_error(response, 415, "text/plain")
        response = self.client.post(INGEST_URL, {"a": "b"})  # multipart form
        self.assert_json_error(response, 415)

    @override_settings(APM_INGEST_MAX_EVENTS=5)
    def test_more_events_than_the_limit_is_a_413_and_stores_nothing(self):
        self.assert_json_error(post_ingest(self.client, [make_event()] * 6), 413, "limit is 5")
        self.assertEqual(post_ingest(self.client, [make_event()] * 5).json()["inserted"], 5)

    @override_settings(APM_INGEST_MAX_BYTES=1000)
    def test_a_body_over_the_byte_limit_is_a_413_and_stores_nothing(self):
        self.assert_json_error(post_ingest(self.client, [make_event()] * 10), 413, "1000 bytes")


class BadFieldTests(ApiTestCase):
    def rejected_fields(self, **overrides):
        response = post_ingest(self.client, [make_event(**overrides)], strict=True)
        self.assertEqual(response.status_code, 400, response.content)
        self.assertEqual(ApiRequest.objects.count(), 0)
        return response.json()["errors"][0]["errors"]

    def test_nan_and_infinity_latencies_are_rejected_in_every_spelling(self):
        for literal in ("NaN", "Infinity", "-Infinity", '"NaN"', '"inf"', "1e999"):
            body = json.dumps([make_event()]).replace("12.5", literal)
            response = post_ingest(self.client, body, strict=True)
            self.assertEqual(response.status_code, 400, literal)
            self.assertIn("latency_ms", response.json()["errors"][0]["errors"], literal)
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_negative_and_non_numeric_latencies_are_rejected(self):
        for value in (-0.001, "fast", True, None, {}, 10**400, "1" + "0" * 400):
            self.assertIn("latency_ms", self.rejected_fields(latency_ms=value), value)

    def test_a_latency_above_one_day_is_rejected_on_every_path(self):
        for value in (86_400_000.5, 86_400_001, 10**18, "86400001"):
            self.assertEqual(self.rejected_fields(latency_ms=value),
                             {"latency_ms": ["Ensure this value is less than or equal to 86400000 (one day)."]}, value)
        response = self.client.post("/api/requests/", make_event(latency_ms=86_400_001),
                                    content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(post_ingest(self.client, [make_event(latency_ms=86_400_000)]).json()["inserted"], 1)

    def test_a_method_of_another_type_is_that_events_error_not_a_500(self):
        for value in ({}, [], 7, None):
            self.assertIn("method", self.rejected_fields(method=value), value)

    def test_nul_characters_are_rejected_in_every_string_field(self):
        for field in ("service", "endpoint", "trace_id", "user_ref"):
            errors = self.rejected_fields(**{field: "a\x00b"})
            self.assertEqual(errors, {field: ["Null characters are not allowed."]})

    def test_lone_surrogates_are_rejected(self):
        body = json.dumps([make_event()]).replace("checkout", "\\ud800x")
        response = post_ingest(self.client, body, strict=True)
        self.assertEqual(response.json()["errors"][0]["errors"], {"service": ["Not valid Unicode text."]})

    def test_string_lengths_are_enforced(self):
        self.assertIn("service", self.rejected_fields(service="s" * 101))
        self.assertIn("endpoint", self.rejected_fields(endpoint="/" * 256))
        self.assertIn("trace_id", self.rejected_fields(trace_id="t" * 65))
        self.assertIn("user_ref", self.rejected_fields(user_ref="u" * 129))
        response = post_ingest(self.client, [make_event(service="s" * 100, endpoint="/" * 255,
                                                        trace_id="t" * 64, user_ref="u" * 128)])
        self.assertEqual(response.json()["inserted"], 1)

    def test_status_codes_outside_100_to_599_are_rejected(self):
        for value in (99, 600, -200, 200.5, "2xx", False, 10**400):
            self.assertIn("status_code", self.rejected_fields(status_code=value), value)

    def test_unknown_methods_and_bad_times_are_rejected(self):
        self.assertIn("method", self.rejected_fields(method="TRACE"))
        for value in ("yesterday", "2026-13-01T00:00:00Z", 1700000000, None, "0001-01-01T00:00:00+05:00",
                      "9999-12-31T23:00:00-05:00"):
            self.assertIn("time", self.rejected_fields(time=value), value)

    def test_required_fields_are_named_when_missing(self):
        errors = post_ingest(self.client, [{}], strict=True).json()["errors"][0]["errors"]
        self.assertEqual(set(errors), {"time", "service", "endpoint", "method", "status_code",
                                       "latency_ms"})
        self.assertEqual(errors["time"], ["This field is required."])


class CopyEscapingTests(ApiTestCase):
    def test_only_a_body_with_a_backslash_can_need_copy_escaping(self):
        from observability.ingest import needs_copy_escaping

        self.assertFalse(needs_copy_escaping(json.dumps([make_event(endpoint="/a b/'quoted'")]).encode()))
        for text in ("tab\t", "line\n", "cr\r", "back\\slash", "nul\x00", "\ud800"):
            self.assertTrue(needs_copy_escaping(json.dumps([make_event(endpoint=text)]).encode()), text)
