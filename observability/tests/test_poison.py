"""Every poison value is that event's error (or a 400/415 for the body), never a 500, the same
through bulk ingest and the CRUD POST, and analytics keep answering after them."""

import json
from datetime import UTC, datetime, timedelta

from observability.models import ApiRequest
from observability.tests.utils import LIST_URL, ApiTestCase, iso, make_event, post_ingest

NOW = datetime.now(UTC)

# (field, value as JSON text, why it is poison). JSON text, so that literals json.dumps can't
# write (NaN, 1e999, a 5,000-digit number, a lone surrogate escape) are in the table too.
POISON = [
    ("latency_ms", "1e308", "finite, but past one day: two of them overflow a sum"),
    ("latency_ms", "86400000.001", "just past one day"),
    ("latency_ms", "1e999", "past a float"),
    ("latency_ms", "NaN", "NaN literal"),
    ("latency_ms", "-Infinity", "minus infinity"),
    ("latency_ms", '"1e308"', "a string of a huge number"),
    ("latency_ms", "1" + "0" * 5000, "a 5,001-digit integer"),
    ("latency_ms", "[1]", "a list"),
    ("method", '["GET"]', "a list (unhashable in a set lookup)"),
    ("method", '{"GET": 1}', "an object"),
    ("method", '"\\ud800GET"', "a lone surrogate (the message must still encode)"),
    ("method", '"' + "G" * 5000 + '"', "5,000 characters"),
    ("status_code", '"--200"', "two minus signs"),
    ("status_code", '"\u00b2"', "a superscript two: isdigit() is true, int() refuses"),
    ("status_code", '"' + "2" * 5000 + '"', "a 5,000-digit string"),
    ("status_code", "2" * 5000, "a 5,000-digit integer"),
    ("status_code", '"\u0662\u0660\u0660"', "Arabic-Indic digits"),
    ("status_code", "[200]", "a list"),
    ("status_code", "1e308", "a float too large for the range"),
    ("time", '"2026-03-02T10:00:00+16:00"', "offset past +15:59"),
    ("time", '"2026-03-02T10:00:00-23:59"', "offset past -15:59"),
    ("time", json.dumps(iso(NOW + timedelta(hours=25))), "25 hours ahead of the server clock"),
    ("time", '"9999-12-31T23:59:59Z"', "the end of the calendar"),
    ("time", '"0001-01-01T00:00:00+05:00"', "year 0 once in UTC"),
    ("time", '["2026-03-02T10:00:00Z"]', "a list"),
    ("time", '"\\ud800"', "a lone surrogate"),
    ("service", '{"a": [[[[[]]]]]}', "an object"),
    ("service", "[" * 50 + "]" * 50, "nested lists"),
    ("endpoint", '"\\u0000"', "a NUL"),
    ("trace_id", "12", "a number"),
    ("user_ref", "true", "a boolean"),
]


def event_text(field: str, value: str) -> str:
    """One event as JSON text with `field` set to the raw JSON `value`."""
    event = make_event(time=iso(NOW - timedelta(hours=1)))
    event[field] = "__POISON__"
    return json.dumps(event).replace('"__POISON__"', value)


class PoisonValueTests(ApiTestCase):
    def test_each_poison_value_is_its_events_error_and_the_batch_stores_the_rest(self):
        for field, value, why in POISON:
            with self.subTest(field=field, why=why):
                good = json.dumps(make_event(time=iso(NOW - timedelta(hours=2))))
                body = f"[{good}, {event_text(field, value)}, {good}]"
                response = post_ingest(self.client, body)
                self.assertEqual(response.status_code, 200, response.content[:300])
                result = response.json()
                self.assertEqual((result["inserted"], result["rejected"]), (2, 1))
                self.assertEqual(result["errors"][0]["index"], 1)
                self.assertIn(field, result["errors"][0]["errors"])
                ApiRequest.objects.all().delete()

    def test_each_poison_value_is_a_400_naming_the_field_on_the_crud_post(self):
        for field, value, why in POISON:
            with self.subTest(field=field, why=why):
                response = self.client.post(LIST_URL, data=event_text(field, value),
                                            content_type="application/json")
                self.assertEqual(response.status_code, 400, response.content[:300])
                self.assertIn(field, response.json())
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_the_limits_themselves_are_accepted(self):
        body = [make_event(latency_ms=86_400_000, time="2026-03-02T10:00:00+15:59"),
                make_event(latency_ms=0, time="2026-03-02T10:00:00-15:59"),
                make_event(time=iso(NOW + timedelta(hours=23)))]
        self.assertEqual(post_ingest(self.client, body).json()["inserted"], 3)
        times = sorted(ApiRequest.objects.values_list("time", flat=True))
        self.assertEqual(times[:2], [datetime(2026, 3, 1, 18, 1, tzinfo=UTC),
                                     datetime(2026, 3, 3, 1, 59, tzinfo=UTC)])

    def test_analytics_answer_after_a_poison_batch(self):
        post_ingest(self.client, "[" + ", ".join(event_text(f, v) for f, v, _ in POISON) + "]")
        post_ingest(self.client, [make_event(latency_ms=86_400_000)] * 2)
        for path in ("kpis/", "top-endpoints/", "hourly/", "daily/", ""):
            response = self.client.get(LIST_URL + path)
            self.assertEqual(response.status_code, 200, path)
        self.assertEqual(self.client.get(LIST_URL + "kpis/").json()["max_latency_ms"], 86_400_000)


class PoisonBodyTests(ApiTestCase):
    def assert_error(self, response, status, word=""):
        self.assertEqual(response.status_code, status, response.content[:300])
        self.assertIn(word, response.json()["detail"])
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_bodies_in_other_encodings_are_a_400(self):
        text = json.dumps([make_event()])
        for encoding in ("utf-16", "utf-16-le", "utf-32", "latin-1"):
            body = text.replace("checkout", "caf\u00e9").encode(encoding)
            with self.subTest(encoding=encoding):
                self.assert_error(post_ingest(self.client, body), 400)
                self.assert_error(self.client.post(LIST_URL, body, content_type="application/json"), 400)
        # A surrogate written as raw UTF-8 bytes is not UTF-8 either.
        body = text.replace("checkout", "x").encode().replace(b'"x"', b'"\xed\xa0\x80"')
        self.assert_error(post_ingest(self.client, body), 400, "UTF-8")

    def test_a_charset_other_than_utf8_is_a_400(self):
        body = json.dumps([make_event()])
        self.assert_error(post_ingest(self.client, body, content_type="application/json; charset=utf-16"),
                          400, "UTF-8")
        response = post_ingest(self.client, body, content_type="application/json; charset=UTF-8")
        self.assertEqual(response.json()["inserted"], 1)

    def test_media_types_that_only_start_like_json_are_a_415(self):
        for content_type in ("application/jsonp", "application/json-seq", "application/jsonx; charset=utf-8"):
            with self.subTest(content_type=content_type):
                self.assert_error(post_ingest(self.client, json.dumps([make_event()]),
                                              content_type=content_type), 415)
                self.assert_error(self.client.post(LIST_URL, json.dumps(make_event()),
                                                   content_type=content_type), 415)

    def test_a_deeply_nested_body_is_a_400_on_crud_and_on_ingest(self):
        deep = "[" * 100_000 + "]" * 100_000
        self.assert_error(self.client.post(LIST_URL, deep, content_type="application/json"), 400)
        self.assert_error(self.client.post(LIST_URL, '{"service": ' + deep + "}",
                                           content_type="application/json"), 400)
        response = post_ingest(self.client, deep)
        self.assertEqual(response.json()["rejected"], 1)

    def test_an_event_nested_past_the_decoders_limit_is_only_that_events_error(self):
        deep = "[" * 100_000 + "]" * 100_000
        event = json.dumps(make_event())
        for body in (f"[{event}, {event[:-1]}, \"x\": {deep}}}, 7, {event}]",
                     f"[{deep}, {event}, NaN]", '{"events": [' + f"{event}, {deep}" + "]}"):
            with self.subTest(body=body[:40]):
                result = post_ingest(self.client, body).json()
                self.assertEqual(result["inserted"], 2 if body.count("checkout") == 3 else 1, result)
                self.assertTrue(all(e["errors"] for e in result["errors"]))
                ApiRequest.objects.all().delete()

    def test_the_event_limit_is_enforced_while_decoding(self):
        from django.test import override_settings

        with override_settings(APM_INGEST_MAX_EVENTS=3):
            for body in ("[{}, {}, {}, {}]", "[1,2,3,4]", '{"events": [[], [], [], []]}',
                         "[NaN, NaN, NaN, NaN]"):
                self.assert_error(post_ingest(self.client, body), 413, "limit is 3")
            self.assertEqual(post_ingest(self.client, "[{}, {}, {}]").json()["rejected"], 3)

    def test_the_unknown_fields_of_a_large_event_are_never_built(self):
        import tracemalloc

        from observability import ingest

        filler = ",".join(["{}"] * 500_000)  # 1.5 MB that would be 500,000 dicts (~35 MB)
        event = json.dumps(make_event())[:-1] + f', "attributes": [{filler}]}}'
        raw = f"[{event}]".encode()
        tracemalloc.start()
        events = ingest.parse_batch(raw)
        result = ingest.ingest_events(events, strict=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.assertEqual(result.inserted, 1)
        self.assertLess(peak, len(raw), f"peak {peak / 1e6:.1f} MB for a {len(raw) / 1e6:.1f} MB body")


class PoisonFilterTests(ApiTestCase):
    def test_filter_values_the_database_cant_hold_are_400s_naming_them(self):
        cases = [("status_code", "99999999999999999999"), ("status_code", "200,-99999999999999999999"),
                 ("start", "0001-01-01T00:00:00+05:00"), ("end", "9999-12-31T23:00:00-05:00")]
        for name, value in cases:
            for path in ("", "kpis/", "top-endpoints/", "hourly/"):
                if path == "hourly/" and name == "status_code":
                    continue
                with self.subTest(name=name, value=value, path=path):
                    response = self.client.get(LIST_URL + path, {name: value})
                    self.assertEqual(response.status_code, 400, response.content[:200])
                    self.assertIn(name, response.json())
