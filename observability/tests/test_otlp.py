"""The OTLP/HTTP receiver: span mapping, both encodings, and the answers the OTLP spec requires."""

import copy
import gzip
import json
import random
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.db import OperationalError
from django.http import JsonResponse
from django.test import Client, RequestFactory, SimpleTestCase, override_settings
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from observability import access, otlp
from observability.models import ApiRequest
from observability.tests.test_body import gzip_bomb
from observability.tests.utils import ApiTestCase, api_key_headers, make_events, post_ingest

TRACES = "/v1/traces"
PROTOBUF = "application/x-protobuf"
START_NS = 1_772_445_600_123_456_789  # 2026-03-02T10:00:00.123456789Z
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")

# examples/trace.json of open-telemetry/opentelemetry-proto, whose one span has no HTTP
# attributes; the tests add them under the current and the older convention names.
SPEC_EXAMPLE = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
            "scope": {"name": "my.library", "version": "1.0.0", "attributes": [
                {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
            "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "parentSpanId": "EEE19B7EC3C1B173",
                "name": "I'm a server span",
                "startTimeUnixNano": 1544712660000000000,
                "endTimeUnixNano": 1544712661000000000,
                "kind": 2,
                "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
            }],
        }],
    }],
}
NEW_NAMES = [
    {"key": "http.request.method", "value": {"stringValue": "POST"}},
    {"key": "http.response.status_code", "value": {"intValue": "201"}},
    {"key": "http.route", "value": {"stringValue": "/orders/{order_id}"}},
    {"key": "url.path", "value": {"stringValue": "/orders/77"}},
    {"key": "enduser.id", "value": {"stringValue": "alice"}},
]
OLD_NAMES = [
    {"key": "http.method", "value": {"stringValue": "GET"}},
    {"key": "http.status_code", "value": {"intValue": 503}},
    {"key": "http.target", "value": {"stringValue": "/users/42/avatar?size=large"}},
]


def spec_example(attributes: list, **span_fields) -> dict:
    body = copy.deepcopy(SPEC_EXAMPLE)
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] += attributes
    span.update(span_fields)
    return body


def attr(key: str, value) -> KeyValue:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(value)
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def server_span(*, attrs: dict, name: str = "GET", kind: int = Span.SPAN_KIND_SERVER,
                start: int = START_NS, latency_ns: int = 12_345_678, span_id: bytes = b"\x01" * 8) -> Span:
    return Span(trace_id=TRACE_ID, span_id=span_id, name=name, kind=kind, start_time_unix_nano=start,
                end_time_unix_nano=start + latency_ns, attributes=[attr(k, v) for k, v in attrs.items()])


def export_request(*spans: Span, service: str | None = "checkout") -> ExportTraceServiceRequest:
    resource_attrs = [attr("service.name", service)] if service is not None else []
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": resource_attrs}, scope_spans=[ScopeSpans(spans=list(spans))])])


HTTP_GET = {"http.request.method": "GET", "http.response.status_code": 200, "http.route": "/orders/{id}"}


class EndpointDerivationTests(SimpleTestCase):
    def test_numeric_uuid_and_long_hex_segments_collapse_to_id(self):
        self.assertEqual(
            otlp.collapse_ids("/users/42/files/3f2b1c9e-0a4d-4c1e-9b7a-2f1e3d4c5b6a/blob/deadbeefcafebabe0123"),
            "/users/{id}/files/{id}/blob/{id}",
        )

    def test_words_short_hex_and_versions_stay(self):
        self.assertEqual(otlp.collapse_ids("/api/v2/cafe/items"), "/api/v2/cafe/items")

    def test_query_strings_and_fragments_are_never_kept(self):
        self.assertEqual(otlp.collapse_ids("/search/7?q=secret#top"), "/search/{id}")

    def test_http_route_wins_as_sent(self):
        attrs = {"http.route": "/users/{user_id}", "url.path": "/users/42"}
        self.assertEqual(otlp.derive_endpoint(attrs.get, "GET /users/42", "GET"), "/users/{user_id}")

    def test_without_route_the_span_names_path_is_used_with_ids_collapsed(self):
        self.assertEqual(otlp.derive_endpoint({"url.path": "/other"}.get, "GET /users/42", "GET"), "/users/{id}")

    def test_without_route_or_path_in_the_name_the_request_path_is_used(self):
        self.assertEqual(otlp.derive_endpoint({"url.path": "/users/42"}.get, "GET", "GET"), "/users/{id}")
        self.assertEqual(otlp.derive_endpoint({"http.target": "/a/1?x=2"}.get, "GET", "GET"), "/a/{id}")
        self.assertEqual(otlp.derive_endpoint({"http.url": "https://h/a/1?x=2"}.get, "GET", "GET"), "/a/{id}")

    def test_a_span_naming_no_route_or_path_has_no_endpoint(self):
        self.assertIsNone(otlp.derive_endpoint({}.get, "GET", "GET"))


class SpanTimeTests(SimpleTestCase):
    def test_span_timestamps_become_the_same_text_as_datetime_gives_to_the_microsecond(self):
        rng = random.Random(11)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        for unix_nano in [1, 999, 86_400 * 10**9 - 1, START_NS, 2**64 - 1] + [
                rng.randrange(1, 2**64) for _ in range(2000)]:
            expected = (epoch + timedelta(microseconds=unix_nano // 1000)).isoformat(timespec="microseconds")
            self.assertEqual(otlp._iso_time(unix_nano), expected)

    def test_a_timestamp_past_year_9999_has_no_text(self):
        self.assertIsNone(otlp._iso_time(10**21))


class FastPathTests(SimpleTestCase):
    def test_the_inlined_mapping_of_common_spans_gives_the_same_event_as_the_general_one(self):
        rng = random.Random(5)
        spans = []
        for i in range(300):
            attrs = {"http.request.method": rng.choice(["GET", "POST", "DELETE", "_OTHER", "get"]),
                     "http.response.status_code": rng.choice([200, 201, 404, 503, 99, 1000, 5, 70_000]),
                     "http.route": rng.choice(["/a/{id}", "/b", "/" + "r" * 200, "/c?x=1", "/é"])}
            if rng.random() < 0.7:
                attrs["enduser.id"] = rng.choice(["u1", "", "ü" * 70, "x" * 130])
            spans.append(server_span(attrs=attrs, start=rng.randrange(1, 2**63), latency_ns=rng.randrange(10**9),
                                     span_id=i.to_bytes(8, "big")))
        raw = export_request(*spans).SerializeToString()
        parsed = otlp._SlimExportTraceServiceRequest.FromString(raw).resource_spans[0].scope_spans[0].spans
        fast = 0
        for span in parsed:
            general = otlp.span_event(service="checkout", name=span.name, trace_id=span.trace_id.hex(),
                                      start=span.start_time_unix_nano, end=span.end_time_unix_nano,
                                      get=otlp._pb_getter(span.attributes))
            inlined = otlp._common_server_span(span, "checkout")
            if inlined is not None:
                fast += 1
                self.assertEqual(inlined, general)
        self.assertTrue(50 < fast < len(parsed))  # both paths ran


class ProtobufExportTests(ApiTestCase):
    def post(self, message, *, gzipped=False, **extra):
        data = message.SerializeToString() if hasattr(message, "SerializeToString") else message
        if gzipped:
            extra["HTTP_CONTENT_ENCODING"] = "gzip"
            data = gzip.compress(data)
        return self.client.post(TRACES, data=data, content_type=extra.pop("content_type", PROTOBUF), **extra)

    def assert_status(self, response, http_status: int, code: int, text: str):
        self.assertEqual(response.status_code, http_status, response.content)
        self.assertEqual(response["Content-Type"], PROTOBUF)
        status = status_pb2.Status.FromString(response.content)
        self.assertEqual(status.code, code)
        self.assertIn(text, status.message)

    def test_a_server_span_becomes_one_event_and_the_answer_is_an_empty_response(self):
        response = self.post(export_request(server_span(attrs={**HTTP_GET, "enduser.id": "u-7"})))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], PROTOBUF)
        self.assertEqual(response.content, b"")  # an ExportTraceServiceResponse with nothing set
        event = ApiRequest.objects.get()
        self.assertEqual(
            (event.service, event.endpoint, event.method, event.status_code, event.trace_id, event.user_ref),
            ("checkout", "/orders/{id}", "GET", 200, TRACE_ID.hex(), "u-7"),
        )
        self.assertEqual(event.time, datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC))
        self.assertAlmostEqual(event.latency_ms, 12.345678, places=6)

    def test_a_gzip_body_is_read(self):
        response = self.post(export_request(server_span(attrs=HTTP_GET)), gzipped=True)
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_other_span_kinds_and_non_http_server_spans_are_accepted_and_not_stored(self):
        spans = [server_span(attrs=HTTP_GET, kind=kind) for kind in
                 (Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER)]
        spans.append(server_span(attrs={"rpc.system": "grpc"}, name="helloworld.Greeter/SayHello"))
        response = self.post(export_request(*spans))
        self.assertEqual((response.status_code, response.content), (200, b""))
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_methods_outside_the_seven_are_rejected_as_partial_success(self):
        spans = [server_span(attrs={**HTTP_GET, "http.request.method": method}, span_id=bytes([i]) * 8)
                 for i, method in enumerate(("_OTHER", "TRACE", "CONNECT", "PATCH"), start=1)]
        response = self.post(export_request(*spans))
        self.assertEqual(response.status_code, 200)
        answer = ExportTraceServiceResponse.FromString(response.content)
        self.assertEqual(answer.partial_success.rejected_spans, 3)
        for method in ("_OTHER", "TRACE", "CONNECT"):
            self.assertIn(f'"{method}" is not a valid choice', answer.partial_success.error_message)
        self.assertIn("0101010101010101", answer.partial_success.error_message)  # names the span
        self.assertEqual(list(ApiRequest.objects.values_list("method", flat=True)), ["PATCH"])

    def test_spans_missing_a_status_a_route_or_a_valid_latency_are_rejected(self):
        spans = [
            server_span(attrs={"http.request.method": "GET", "http.route": "/a"}),
            server_span(attrs={"http.request.method": "GET", "http.response.status_code": 200}),
            server_span(attrs=HTTP_GET, latency_ns=-5_000_000),
            server_span(attrs={**HTTP_GET, "http.response.status_code": 99}),
            server_span(attrs=HTTP_GET),
        ]
        response = self.post(export_request(*spans))
        answer = ExportTraceServiceResponse.FromString(response.content)
        self.assertEqual(answer.partial_success.rejected_spans, 4)
        message = answer.partial_success.error_message
        for text in ("status_code", "no http.route", "latency_ms", "between 100 and 599"):
            self.assertIn(text, message)
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_attribute_values_of_every_scalar_encoding_are_read(self):
        long_route = "/" + "r" * 300  # a string whose length takes two bytes to encode
        spans = [
            server_span(attrs={**HTTP_GET, "http.response.status_code": "404", "enduser.id": 12345678},
                        span_id=b"\x01" * 8),
            server_span(attrs={**HTTP_GET, "http.response.status_code": 70_000}, span_id=b"\x02" * 8),
            server_span(attrs={**HTTP_GET, "http.route": long_route}, span_id=b"\x03" * 8),
            server_span(attrs={**HTTP_GET, "http.response.status_code": 5}, span_id=b"\x04" * 8),
        ]
        answer = ExportTraceServiceResponse.FromString(self.post(export_request(*spans)).content)
        self.assertEqual(answer.partial_success.rejected_spans, 3)
        self.assertIn("no more than 255 characters", answer.partial_success.error_message)
        event = ApiRequest.objects.get()
        self.assertEqual((event.status_code, event.user_ref), (404, "12345678"))

    def test_strings_with_characters_copy_must_escape_are_stored_exactly(self):
        odd = {"http.route": "/a\\b\tc", "enduser.id": "line\nbreak\r"}
        self.post(export_request(server_span(attrs=HTTP_GET, span_id=b"\x01" * 8),
                                 server_span(attrs={**HTTP_GET, **odd}, span_id=b"\x02" * 8),
                                 service="tab\tservice"))
        stored = set(ApiRequest.objects.values_list("service", "endpoint", "user_ref"))
        self.assertEqual(stored, {("tab\tservice", "/orders/{id}", ""), ("tab\tservice", "/a\\b\tc", "line\nbreak\r")})

    def test_a_nul_character_rejects_the_span_instead_of_breaking_the_write(self):
        response = self.post(export_request(server_span(attrs={**HTTP_GET, "http.route": "/a\x00b"}),
                                            server_span(attrs=HTTP_GET)))
        answer = ExportTraceServiceResponse.FromString(response.content)
        self.assertEqual(answer.partial_success.rejected_spans, 1)
        self.assertIn("Null characters are not allowed", answer.partial_success.error_message)
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_without_a_service_name_the_service_is_unknown_service(self):
        self.post(export_request(server_span(attrs=HTTP_GET), service=None))
        self.assertEqual(ApiRequest.objects.get().service, "unknown_service")

    def test_without_http_route_the_endpoint_is_the_path_with_ids_collapsed_and_no_query(self):
        attrs = {"http.method": "DELETE", "http.status_code": 204, "http.target": "/carts/981/items/12?force=1"}
        self.post(export_request(server_span(attrs=attrs, name="DELETE")))
        event = ApiRequest.objects.get()
        self.assertEqual((event.endpoint, event.method, event.status_code), ("/carts/{id}/items/{id}", "DELETE", 204))

    def test_an_undecodable_body_is_a_400_status_in_protobuf(self):
        self.assert_status(self.post(b"\xff\xff\xff"), 400, 3, "not a valid ExportTraceServiceRequest")

    def test_corrupted_bodies_are_answered_200_or_400_never_500(self):
        valid = export_request(*[server_span(attrs={**HTTP_GET, "enduser.id": "u"}, span_id=bytes([i]) * 8)
                                 for i in range(1, 4)]).SerializeToString()
        rng = random.Random(3)
        for _ in range(150):
            body = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            body = bytes(body[: rng.randrange(len(body) + 1)]) if rng.random() < 0.3 else bytes(body)
            response = self.post(body)
            self.assertIn(response.status_code, (200, 400), body)
            if response.status_code == 400:
                self.assertTrue(status_pb2.Status.FromString(response.content).message)

    def test_a_body_that_is_not_gzip_despite_the_header_is_a_400(self):
        response = self.post(export_request(server_span(attrs=HTTP_GET)), HTTP_CONTENT_ENCODING="gzip")
        self.assert_status(response, 400, 3, "gzip")

    @override_settings(APM_INGEST_MAX_BYTES=1024 * 1024)
    def test_a_zip_bomb_is_a_413_status_and_stores_nothing(self):
        response = self.post(gzip_bomb(100 * 1024 * 1024), HTTP_CONTENT_ENCODING="gzip")
        self.assert_status(response, 413, 8, "decompressed")
        self.assertEqual(ApiRequest.objects.count(), 0)

    @override_settings(APM_INGEST_MAX_EVENTS=2)
    def test_more_server_spans_than_the_event_limit_is_a_413(self):
        response = self.post(export_request(*[server_span(attrs=HTTP_GET)] * 3))
        self.assert_status(response, 413, 8, "APM_INGEST_MAX_EVENTS")
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_another_content_type_is_a_415_status_in_json(self):
        response = self.post(b"x", content_type="text/plain")
        self.assertEqual(response.status_code, 415)
        self.assertEqual(response.json()["code"], 3)
        self.assertIn("text/plain", response.json()["message"])

    def test_a_database_outage_is_a_503_with_retry_after_and_stores_nothing(self):
        with mock.patch("observability.ingest.copy._copy_rows", side_effect=OperationalError("down")), \
                mock.patch("django.db.models.query.QuerySet.bulk_create", side_effect=OperationalError("down")), \
                self.assertLogs("django.request", level="ERROR"), \
                self.assertLogs("observability.otlp", level="WARNING") as logged:
            response = self.post(export_request(server_span(attrs=HTTP_GET)))
        self.assertIn("down", "\n".join(logged.output))  # the cause is in the log
        self.assert_status(response, 503, 14, "unavailable")
        self.assertEqual(response["Retry-After"], str(otlp.RETRY_AFTER_SECONDS))
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_get_is_a_405_status(self):
        response = self.client.get(TRACES, CONTENT_TYPE=PROTOBUF)
        self.assert_status(response, 405, 12, "POST")
        self.assertEqual(response["Allow"], "POST")

    def test_the_outcome_counts_accepted_rejected_and_skipped_spans(self):
        spans = [server_span(attrs=HTTP_GET), server_span(attrs={**HTTP_GET, "http.request.method": "TRACE"}),
                 server_span(attrs=HTTP_GET, kind=Span.SPAN_KIND_CLIENT)]
        outcome = otlp.export_traces(export_request(*spans).SerializeToString(), "protobuf")
        self.assertEqual((outcome.spans, outcome.accepted, outcome.rejected, outcome.skipped), (3, 1, 1, 1))


class JsonExportTests(ApiTestCase):
    def post(self, payload, **extra):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.client.post(TRACES, data=data, content_type="application/json", **extra)

    def test_the_spec_example_with_current_attribute_names_is_stored(self):
        response = self.post(spec_example(NEW_NAMES))
        self.assertEqual((response.status_code, response.json()), (200, {}))
        event = ApiRequest.objects.get()
        self.assertEqual(
            (event.service, event.endpoint, event.method, event.status_code, event.latency_ms, event.trace_id,
             event.user_ref),
            ("my.service", "/orders/{order_id}", "POST", 201, 1000.0, "5b8efff798038103d269b633813fc60c", "alice"),
        )
        self.assertEqual(event.time, datetime(2018, 12, 13, 14, 51, tzinfo=UTC))

    def test_the_spec_example_with_older_attribute_names_is_stored(self):
        self.post(spec_example(OLD_NAMES, startTimeUnixNano="1544712660000000000",
                               endTimeUnixNano="1544712660250000000"))
        event = ApiRequest.objects.get()
        self.assertEqual((event.endpoint, event.method, event.status_code, event.latency_ms),
                         ("/users/{id}/avatar", "GET", 503, 250.0))

    def test_the_spec_example_as_published_is_accepted_and_not_stored(self):
        # Its one SERVER span carries no HTTP attributes: not a request of ours.
        self.assertEqual((self.post(SPEC_EXAMPLE).status_code, ApiRequest.objects.count()), (200, 0))

    def test_a_gzip_json_body_is_read(self):
        response = self.post(gzip.compress(json.dumps(spec_example(NEW_NAMES)).encode()),
                             HTTP_CONTENT_ENCODING="gzip")
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_partial_success_is_reported_in_otlp_json(self):
        body = spec_example(NEW_NAMES)
        rejected = copy.deepcopy(body["resourceSpans"][0]["scopeSpans"][0]["spans"][0])
        rejected["attributes"][1] = {"key": "http.request.method", "value": {"stringValue": "CONNECT"}}
        rejected["spanId"] = "AAAAAAAAAAAAAAAA"
        body["resourceSpans"][0]["scopeSpans"][0]["spans"].append(rejected)
        answer = self.post(body).json()
        self.assertEqual(answer["partialSuccess"]["rejectedSpans"], "1")  # int64: a string in JSON
        self.assertIn("AAAAAAAAAAAAAAAA", answer["partialSuccess"]["errorMessage"])
        self.assertEqual(ApiRequest.objects.count(), 1)

    def test_a_start_time_past_year_9999_rejects_the_span(self):
        answer = self.post(spec_example(NEW_NAMES, startTimeUnixNano="1" + "0" * 21,
                                        endTimeUnixNano="2" + "0" * 21)).json()
        self.assertIn("out of range", answer["partialSuccess"]["errorMessage"])
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_a_lone_surrogate_rejects_the_span_instead_of_breaking_the_write(self):
        route = {"key": "http.route", "value": {"stringValue": "/a\ud800"}}
        body = json.dumps(spec_example([*NEW_NAMES[:2], route])).encode()
        self.assertIn(b"\\ud800", body)
        answer = self.post(body).json()
        self.assertEqual(answer["partialSuccess"]["rejectedSpans"], "1")
        self.assertIn("Unicode", answer["partialSuccess"]["errorMessage"])
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_a_trace_id_that_is_not_hex_rejects_the_span(self):
        answer = self.post(spec_example(NEW_NAMES, traceId="W4739/eYA4ED0mm2M4E/xg==")).json()
        self.assertEqual(answer["partialSuccess"]["rejectedSpans"], "1")
        self.assertIn("hex", answer["partialSuccess"]["errorMessage"])

    def test_bad_json_bodies_are_a_400_status_in_json(self):
        for body, text in ((b"{", "not valid JSON"), (b"[]", "JSON object"),
                           (b'{"resourceSpans": {}}', "resourceSpans"),
                           (b'{"resourceSpans": [1]}', "must be an object"),
                           (b'{"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]}', "spans"),
                           (b"[" * 100_000, "not valid JSON")):
            with self.subTest(body=body):
                response = self.post(body)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response["Content-Type"], "application/json")
                self.assertEqual(response.json()["code"], 3)
                self.assertIn(text, response.json()["message"])

    def test_unknown_fields_and_odd_attribute_values_are_ignored(self):
        body = spec_example(NEW_NAMES + [{"key": "x", "value": {"arrayValue": {"values": []}}}, "junk"],
                            somethingNew={"a": 1})
        body["futureField"] = True
        self.assertEqual(self.post(body).json(), {})
        self.assertEqual(ApiRequest.objects.count(), 1)


class OtherSignalsAndAccessTests(ApiTestCase):
    def test_metrics_and_logs_are_accepted_and_dropped_in_either_encoding(self):
        for path in ("/v1/metrics", "/v1/logs"):
            response = self.client.post(path, data=b"\x0a\x00", content_type=PROTOBUF)
            self.assertEqual((response.status_code, response.content, response["Content-Type"]), (200, b"", PROTOBUF))
            response = self.client.post(path, data=b"{}", content_type="application/json")
            self.assertEqual((response.status_code, response.json()), (200, {}))
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_metrics_and_logs_that_are_not_an_export_request_at_all_are_a_400_status(self):
        for path in ("/v1/metrics", "/v1/logs"):
            for body, content_type in ((b"[null, null]", "application/json"), (b"{", "application/json"),
                                       (b"\x0a\x05ab", PROTOBUF), (b"[null, null]", PROTOBUF)):
                response = self.client.post(path, data=body, content_type=content_type)
                self.assertEqual(response.status_code, 400, (path, body, content_type))
                self.assertEqual(response["Content-Type"], content_type)
            gzipped = gzip.compress(b'{"resourceMetrics": []}')
            response = self.client.post(path, data=gzipped, content_type="application/json",
                                        HTTP_CONTENT_ENCODING="gzip")
            self.assertEqual((response.status_code, response.json()), (200, {}))

    def test_an_access_refusal_becomes_a_status_keeping_its_headers(self):
        refusal = JsonResponse({"detail": "Invalid API key."}, status=401)
        refusal["WWW-Authenticate"] = "Bearer"
        request = RequestFactory().post(TRACES, data=b"\x0a\x00", content_type=PROTOBUF)
        response = otlp.from_error_response(refusal, request)
        self.assertEqual((response.status_code, response["WWW-Authenticate"]), (401, "Bearer"))
        status = status_pb2.Status.FromString(response.content)
        self.assertEqual((status.code, status.message), (16, "Invalid API key."))

    def test_a_rate_limit_refusal_keeps_retry_after(self):
        refusal = JsonResponse({"detail": "Slow down."}, status=429)
        refusal["Retry-After"] = "30"
        request = RequestFactory().post(TRACES, data=b"{}", content_type="application/json")
        response = otlp.from_error_response(refusal, request)
        self.assertEqual((response.status_code, response["Retry-After"]), (429, "30"))
        self.assertEqual(json.loads(response.content), {"code": 8, "message": "Slow down."})


class ReceiverAccessTests(ApiTestCase):
    """The receivers call access.check like every write: an ingest key, answered in OTLP's shape."""

    def setUp(self):
        access.clear_rate_limits()
        self.addCleanup(access.clear_rate_limits)

    def export(self, spans: int, headers: dict):
        request = export_request(*[server_span(attrs=HTTP_GET, span_id=bytes([i + 1]) * 8) for i in range(spans)])
        auth = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
        return Client().post(TRACES, data=request.SerializeToString(), content_type=PROTOBUF, **auth)

    def test_without_a_key_or_with_a_read_key_nothing_is_stored_and_the_refusal_is_a_status(self):
        for path in (TRACES, "/v1/metrics", "/v1/logs"):
            response = Client().post(path, data=b"\x0a\x00", content_type=PROTOBUF)
            self.assertEqual((response.status_code, response["WWW-Authenticate"]), (401, 'Bearer realm="apm"'), path)
            self.assertEqual(status_pb2.Status.FromString(response.content).code, 16, path)  # UNAUTHENTICATED
        response = self.export(1, api_key_headers("read"))
        self.assertEqual(response.status_code, 403)
        self.assertEqual(status_pb2.Status.FromString(response.content).code, 7)  # PERMISSION_DENIED
        self.assertEqual(self.export(1, api_key_headers("ingest")).status_code, 200)
        self.assertEqual(ApiRequest.objects.count(), 1)

    @override_settings(APM_INGEST_RATE_LIMIT=10, APM_INGEST_RATE_BURST=20)
    def test_the_ingest_rate_limit_counts_server_spans_and_a_refusal_stores_nothing(self):
        key = api_key_headers("ingest")
        now = [1000.0]
        with mock.patch("observability.access.time.monotonic", side_effect=lambda: now[0]):
            self.assertEqual(self.export(15, key).status_code, 200)  # 5 tokens left
            refused = self.export(10, key)
            self.assertEqual((refused.status_code, refused["Retry-After"]), (429, "1"))  # 5 missing at 10/s
            status = status_pb2.Status.FromString(refused.content)
            self.assertEqual(status.code, 8)  # RESOURCE_EXHAUSTED
            self.assertIn("rate limit", status.message)
            self.assertEqual(ApiRequest.objects.count(), 15)
            # Bulk ingest and OTLP share the key's bucket.
            self.assertEqual(post_ingest(Client(), make_events(5), **{"HTTP_AUTHORIZATION": key["Authorization"]})
                             .status_code, 200)
            self.assertEqual(self.export(1, key).status_code, 429)
            now[0] += 1.0  # 10 tokens
            self.assertEqual(self.export(10, key).status_code, 200)
        self.assertEqual(ApiRequest.objects.count(), 15 + 5 + 10)


@override_settings(APM_INGEST_MAX_BYTES=64 * 1024)
class DecodeCostTests(SimpleTestCase):
    """What a body makes the decoders build is bounded before they build it (API.md
    "Back-pressure": RSS growth over idle at most 4x the byte limit)."""

    def test_a_protobuf_body_of_many_empty_spans_is_a_413_before_parsing(self):
        # 96 KiB of cost budget (1.5 x 64 KiB) / 128 per message: 768 messages at most.
        spans = [Span()] * 1000
        raw = export_request(*spans).SerializeToString()
        with self.assertRaises(otlp.OtlpError) as caught:
            list(otlp.spans_from_protobuf(raw, otlp.ExportOutcome()))
        self.assertEqual(caught.exception.status, 413)

    def test_a_protobuf_body_within_the_cost_is_parsed(self):
        raw = export_request(*[server_span(attrs=HTTP_GET)] * 100).SerializeToString()
        events = list(otlp.spans_from_protobuf(raw, otlp.ExportOutcome()))
        self.assertEqual(len(events), 100)

    def test_the_cost_walk_counts_attributes_not_bytes_that_look_like_tags(self):
        # Values full of \n, \x12 and J (the tag bytes) pass the quick bound but not the walk.
        attrs = {**HTTP_GET, "http.user_agent": "\n\x12J" * 400}
        raw = export_request(*[server_span(attrs=attrs)] * 40).SerializeToString()
        self.assertGreater(otlp.PB_MESSAGE_COST * (raw.count(b"\n") + raw.count(b"\x12") + raw.count(b"J")),
                           64 * 1024 * 3 // 2)
        self.assertEqual(len(list(otlp.spans_from_protobuf(raw, otlp.ExportOutcome()))), 40)

    def test_an_otlp_json_body_of_more_values_than_the_bound_is_a_413(self):
        raw = b'{"resourceSpans":[],"x":[' + b",".join([b"{}"] * 1100) + b"]}"  # 64 KiB / 64 = 1024
        with self.assertRaises(otlp.OtlpError) as caught:
            list(otlp.spans_from_json(raw, otlp.ExportOutcome()))
        self.assertEqual(caught.exception.status, 413)

    def test_a_huge_string_attribute_is_decoded_only_as_far_as_it_is_too_long(self):
        value = AnyValue(string_value="r" * (otlp.MAX_DECODED_STRING * 3)).SerializeToString()
        self.assertEqual(otlp._any_value(value), "r" * otlp.MAX_DECODED_STRING)
        short = AnyValue(string_value="é" * 300).SerializeToString()
        self.assertEqual(otlp._any_value(short), "é" * 300)
