"""The typed decoding of an ordinary batch (ingest._Event) gives the answers the field rules give."""

import json
from datetime import UTC, datetime, timedelta

from django.test import override_settings
from django.utils import timezone

from observability import ingest
from observability.models import ApiRequest
from observability.tests.utils import ApiTestCase, make_event, make_events, post_ingest

FAR_AHEAD = (timezone.now() + timedelta(days=3)).isoformat()

# Events (as JSON text) that the typed decoder refuses, so their batch goes the way that decodes
# each event on its own, or that it accepts but `_row` hands to the field rules; some valid, some not.
ODD_EVENTS = {
    "lower-case method": json.dumps(make_event(method="get")),
    "unknown method": json.dumps(make_event(method="BREW")),
    "status as a float": json.dumps(make_event(status_code=200.0)),
    "status as a string": json.dumps(make_event(status_code="503")),
    "status true": json.dumps(make_event(status_code=True)),
    "status below 100": json.dumps(make_event(status_code=99)),
    "status above 599": json.dumps(make_event(status_code=600)),
    "integral latency": json.dumps(make_event(latency_ms=5)),
    "negative zero latency": json.dumps(make_event(latency_ms=-0.0)),
    "latency of one day": json.dumps(make_event(latency_ms=86_400_000)),
    "latency past one day": json.dumps(make_event(latency_ms=86_400_000.5)),
    "latency past a float": json.dumps(make_event(latency_ms=12.5)).replace("12.5", "1e400"),
    "latency as a string": json.dumps(make_event(latency_ms="7.25")),
    "time with an offset": json.dumps(make_event(time="2026-03-02T10:00:00+05:30")),
    "time with a space": json.dumps(make_event(time="2026-03-02 10:00:00")),
    "compact time": json.dumps(make_event(time="20260302T100000Z")),
    "offset of 16 hours": json.dumps(make_event(time="2026-03-02T10:00:00+16:00")),
    "time far ahead": json.dumps(make_event(time=FAR_AHEAD)),
    "time that is not one": json.dumps(make_event(time="yesterday")),
    "empty time": json.dumps(make_event(time="")),
    "time as a number": json.dumps(make_event(time=1772445600)),
    "100 two-byte characters": json.dumps(make_event(service="é" * 100), ensure_ascii=False),
    "101 two-byte characters": json.dumps(make_event(service="é" * 101), ensure_ascii=False),
    "100 four-byte characters": json.dumps(make_event(service="😀" * 100), ensure_ascii=False),
    "empty service": json.dumps(make_event(service="")),
    "null trace id": json.dumps(make_event(trace_id=None)),
    "no user ref": json.dumps({k: v for k, v in make_event().items() if k != "user_ref"}),
    "no endpoint": json.dumps({k: v for k, v in make_event().items() if k != "endpoint"}),
    "nested unknown field": json.dumps(make_event(attributes=[[[{"deep": [1, {"x": None}]}]]])),
    "duplicate key, last valid": json.dumps(make_event())[:-1] + ', "service": 5, "service": "a"}',
    "duplicate key, last invalid": json.dumps(make_event())[:-1] + ', "service": "a", "service": 5}',
    "a list, not an event": "[1, 2]",
}


class TypedDecodingTests(ApiTestCase):
    def test_an_ordinary_batch_is_decoded_typed_in_one_call(self):
        raw = json.dumps(make_events(100)).encode()
        events = ingest.parse_batch(raw)
        self.assertEqual({type(e) for e in events}, {ingest._Event})
        result = ingest.ingest_events(events, strict=True, escape=ingest.needs_copy_escaping(raw))
        self.assertEqual((result.inserted, result.rejected), (100, 0))

    def test_a_batch_with_a_backslash_or_a_wrapper_is_not(self):
        escaped = json.dumps(make_events(3, endpoint="/a\\b")).encode()
        wrapped = json.dumps({"events": make_events(3)}).encode()
        for raw in (escaped, wrapped):
            self.assertNotIn(ingest._Event, {type(e) for e in ingest.parse_batch(raw)}, raw[:40])

    def test_every_odd_event_gets_the_answer_of_the_field_rules_beside_valid_ones(self):
        for name, text in ODD_EVENTS.items():
            with self.subTest(name):
                ApiRequest.objects.all().delete()
                before, after = make_event(trace_id="before"), make_event(trace_id="after")
                body = f"[{json.dumps(before)}, {text}, {json.dumps(after)}]".encode()
                # The reference: the field rules on the event decoded alone by the standard library.
                expected = ingest.validate_event(json.loads(text))
                response = post_ingest(self.client, body)
                self.assertEqual(response.status_code, 200, response.content[:300])
                answer = response.json()
                if isinstance(expected, dict):
                    self.assertEqual(answer, {"inserted": 2, "rejected": 1,
                                              "errors": [{"index": 1, "errors": expected}]})
                    self.assertEqual(ApiRequest.objects.count(), 2)
                else:
                    self.assertEqual(answer, {"inserted": 3, "rejected": 0, "errors": []})
                    stored = ApiRequest.objects.exclude(trace_id__in=["before", "after"]).get()
                    self.assertEqual(tuple(getattr(stored, c) for c in ingest.COLUMNS), expected[:8])

    def test_a_time_the_typed_decoder_accepts_but_the_rules_refuse_leaves_its_neighbours_typed(self):
        raw = f"[{json.dumps(make_event())}, {ODD_EVENTS['time far ahead']}]".encode()
        events = ingest.parse_batch(raw)
        self.assertEqual({type(e) for e in events}, {ingest._Event})
        result = ingest.ingest_events(events, strict=False, escape=False)
        self.assertEqual((result.inserted, result.rejected), (1, 1))
        self.assertEqual(result.errors, [{"index": 1, "errors": {"time": [ingest.TOO_FAR_AHEAD]}}])

    @override_settings(APM_INGEST_MAX_EVENTS=10)
    def test_a_full_batch_on_a_route_with_two_parameters_is_decoded_typed(self):
        raw = json.dumps(make_events(10, endpoint="/orgs/{org}/users/{id}")).encode()  # 30 braces
        self.assertEqual({type(e) for e in ingest.parse_batch(raw)}, {ingest._Event})

    @override_settings(APM_INGEST_MAX_EVENTS=3)
    def test_too_many_valid_events_are_a_413(self):
        response = post_ingest(self.client, make_events(4))
        self.assertEqual(response.status_code, 413)
        self.assertIn("the limit is 3", response.json()["detail"])
        self.assertEqual(post_ingest(self.client, make_events(3)).json()["inserted"], 3)
        self.assertEqual(ApiRequest.objects.count(), 3)

    def test_an_offset_with_60_or_more_minutes_is_stored_as_the_instant_python_reads(self):
        # PostgreSQL refuses "+00:60" (and with it the whole COPY): it must get the time as
        # Python formats it, on the typed path and the other.
        for batch in ([make_event(time="2026-03-02T10:00:00+00:60", trace_id="a"),
                       make_event(time="2026-03-02T10:00:00+05:99", trace_id="b")],
                      [make_event(time="2026-03-02T10:00:00+00:60", trace_id="a", method="get"),
                       make_event(time="2026-03-02T10:00:00+05:99", trace_id="b", method="get")]):
            ApiRequest.objects.all().delete()
            response = post_ingest(self.client, batch)
            self.assertEqual(response.json(), {"inserted": 2, "rejected": 0, "errors": []})
            self.assertEqual(ApiRequest.objects.get(trace_id="a").time, datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
            self.assertEqual(ApiRequest.objects.get(trace_id="b").time, datetime(2026, 3, 2, 3, 21, tzinfo=UTC))

    def test_a_time_longer_than_the_plain_form_sends_its_batch_the_other_way(self):
        long_time = "2026-03-02T10:00:00.123456+05:30:00"  # seconds in the offset: valid, 35 characters
        raw = json.dumps([make_event(), make_event(time=long_time)]).encode()
        self.assertEqual({type(e) for e in ingest.parse_batch(raw)}, {dict})
        response = post_ingest(self.client, raw)
        self.assertEqual(response.json(), {"inserted": 2, "rejected": 0, "errors": []})
