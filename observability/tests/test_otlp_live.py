"""The receiver with the real thing: an app instrumented with the OpenTelemetry SDK exports with
the stock OTLP/HTTP exporter to a live gunicorn of ours, on the suite's database; and chunked
uploads, which only a real server produces, through the same gunicorn."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from observability.tests.live import LiveGunicornTestCase
from observability.tests.test_otlp import HTTP_GET, export_request, server_span
from observability.tests.utils import ApiTransactionTestCase, api_key_headers, make_events

OTEL_APP = Path(__file__).with_name("otel_app.py")
# The routes otel_app drives, as the receiver must store them: (method, endpoint, status, ms).
EXPECTED = [
    ("GET", "/users/{id}", 200, 25),
    ("GET", "/users/{id}", 200, 25),
    ("POST", "/orders/{id}/items", 201, 40),
    ("DELETE", "/boom", 503, 15),
    ("GET", "/files/{id}", 404, 5),
]


class LiveOtlpTests(LiveGunicornTestCase, ApiTransactionTestCase):
    serve_class = True
    # gunicorn's own database (SQLite): its keys come from the command, as an operator's would.
    key_scopes = ("ingest", "read")

    @classmethod
    def server_env(cls):
        return {"APM_INGEST_MAX_BYTES": str(1024 * 1024)}

    @classmethod
    def shared_database(cls):
        """The suite's own database where a second process can reach it (PostgreSQL); else None,
        a fresh SQLite file (the suite's is in memory)."""
        if connection.vendor != "postgresql":
            return None
        s = connection.settings_dict
        auth = quote(s["USER"] or "", safe="") + (":" + quote(s["PASSWORD"], safe="") if s["PASSWORD"] else "")
        url = f"postgres://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"
        return {"DATABASE_URL": url, "APM_TIMESCALE": os.environ.get("APM_TIMESCALE", "auto")}

    def key_headers(self, scope: str) -> dict:
        """A key of `scope` the server accepts: made in its own SQLite file, or (PostgreSQL)
        in the suite's database it shares, anew for each test since the tests flush it."""
        return self.keys.get(scope) or api_key_headers(scope)

    def stored(self, **params) -> list[dict]:
        query = "&".join(f"{k}={quote(str(v))}" for k, v in {**params, "page_size": 1000}.items())
        status, _, body = self.server.request("GET", f"/api/requests/?{query}", headers=self.key_headers("read"))
        self.assertEqual(status, 200, body)
        return json.loads(body)["results"]

    def run_instrumented_app(self, service: str, **env) -> list[dict]:
        headers = ",".join(f"{name}={quote(value)}" for name, value in self.key_headers("ingest").items())
        result = subprocess.run(
            [sys.executable, str(OTEL_APP)], capture_output=True, text=True, timeout=120,
            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.server.port}",
                 "OTEL_EXPORTER_OTLP_HEADERS": headers, "OTEL_SERVICE_NAME": service, **env},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        # The exporter logs any answer but 200 (and a partial success) on stderr.
        self.assertNotIn("Failed to export", result.stderr)
        self.assertNotIn("partial", result.stderr.lower())
        return json.loads(result.stdout)

    def assert_stored_like_spans(self, service: str, spans: list[dict]):
        self.assertEqual(len(spans), len(EXPECTED))
        events = {e["trace_id"]: e for e in self.stored(service=service)}
        self.assertEqual(len(events), len(spans))
        for span, (method, endpoint, status, millis) in zip(
                sorted(spans, key=lambda s: s["start_ns"]), EXPECTED, strict=True):
            event = events[span["trace_id"]]  # the trace id is the span's
            self.assertEqual((event["service"], event["endpoint"], event["method"], event["status_code"]),
                             (service, endpoint, method, status), span)
            latency = (span["end_ns"] - span["start_ns"]) / 1e6
            self.assertAlmostEqual(event["latency_ms"], latency, delta=1.0)
            self.assertGreaterEqual(event["latency_ms"], millis)
            self.assertNotIn("?", event["endpoint"])
        self.assertFalse(any("secret" in json.dumps(e) for e in events.values()))

    def test_the_stock_exporter_with_older_http_attribute_names(self):
        spans = self.run_instrumented_app("shop-old", OTEL_SEMCONV_STABILITY_OPT_IN="")
        self.assertIn("http.method", spans[0]["attributes"])
        self.assertIn("http.status_code", spans[0]["attributes"])
        self.assert_stored_like_spans("shop-old", spans)

    def test_the_stock_exporter_with_current_http_attribute_names_and_gzip(self):
        spans = self.run_instrumented_app("shop-new", OTEL_SEMCONV_STABILITY_OPT_IN="http",
                                          OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
        self.assertIn("http.request.method", spans[0]["attributes"])
        self.assertIn("http.response.status_code", spans[0]["attributes"])
        self.assertNotIn("http.method", spans[0]["attributes"])
        self.assert_stored_like_spans("shop-new", spans)

    def post_chunked(self, path: str, data: bytes, headers: dict) -> tuple[int, bytes]:
        conn = self.server.connection(timeout=60)
        try:
            pieces = (data[i:i + 1000] for i in range(0, len(data), 1000))
            conn.request("POST", path, body=pieces, encode_chunked=True,
                         headers={**headers, "Transfer-Encoding": "chunked", **self.key_headers("ingest")})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def test_chunked_bodies_plain_and_gzip_reach_bulk_ingest_and_the_receiver(self):
        events = make_events(30, service="chunked")
        data = json.dumps(events).encode()
        status, body = self.post_chunked("/api/requests/ingest/", data, {"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)["inserted"]), (200, 30), body)
        status, body = self.post_chunked("/api/requests/ingest/", gzip.compress(data),
                                         {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        self.assertEqual((status, json.loads(body)["inserted"]), (200, 30), body)
        self.assertEqual(len(self.stored(service="chunked")), 60)

        spans = export_request(*[server_span(attrs=HTTP_GET)] * 7, service="chunked-otlp").SerializeToString()
        status, body = self.post_chunked("/v1/traces", gzip.compress(spans),
                                         {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(len(self.stored(service="chunked-otlp")), 7)

    def test_a_chunked_zip_bomb_is_a_413_and_the_worker_survives(self):
        from observability.tests.test_body import gzip_bomb

        status, body = self.post_chunked("/v1/traces", gzip_bomb(50 * 1024 * 1024),
                                         {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        self.assertEqual(status, 413, body)
        status, _, _ = self.server.request("GET", "/api/health/")
        self.assertEqual(status, 200)
