"""A small WSGI app instrumented with OpenTelemetry, exporting with the stock OTLP/HTTP exporter.

Run by test_otlp_live as a separate process (the SDK and the semantic-convention mode are
process-wide), configured only by the standard environment variables a user would set
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, ...). It serves
the app on a loopback port, drives REQUESTS through it over HTTP, flushes the exporter, and
prints the SERVER spans it recorded (JSON, one list on stdout) for the test to compare with
what the receiver stored.
"""

import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

# (route template or None, path pattern, status, milliseconds the handler takes)
ROUTES = [
    ("/users/{id}", r"/users/\d+", 200, 25),
    ("/orders/{id}/items", r"/orders/\d+/items", 201, 40),
    ("/boom", r"/boom", 503, 15),
    (None, r"/files/[^/]+", 404, 5),  # a handler that sets no route: the path is used
]
# (method, path) driven through the app, in order.
REQUESTS = [
    ("GET", "/users/42"),
    ("GET", "/users/7?tab=settings"),
    ("POST", "/orders/981/items"),
    ("DELETE", "/boom"),
    ("GET", "/files/3f2b1c9e-0a4d-4c1e-9b7a-2f1e3d4c5b6a?token=secret"),
]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    for route, pattern, status, millis in ROUTES:
        if re.fullmatch(pattern, path):
            if route:
                # What a framework's instrumentation does once its router has matched.
                trace.get_current_span().set_attribute("http.route", route)
            time.sleep(millis / 1000)
            start_response(f"{status} X", [("Content-Type", "text/plain")])
            return [b"ok"]
    start_response("500 X", [("Content-Type", "text/plain")])
    return [b"no route"]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main() -> int:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME from the environment
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers: env
    trace.set_tracer_provider(provider)

    server = make_server("127.0.0.1", 0, OpenTelemetryMiddleware(app), handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for method, path in REQUESTS:
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}{path}", method=method)
        try:
            urllib.request.urlopen(request, timeout=30).read()
        except urllib.error.HTTPError as exc:
            exc.read()
    server.shutdown()
    if not provider.force_flush(30_000):
        print("force_flush timed out", file=sys.stderr)
        return 1
    provider.shutdown()

    spans = [
        {
            "trace_id": format_trace_id(span.context.trace_id),
            "name": span.name,
            "start_ns": span.start_time,
            "end_ns": span.end_time,
            "attributes": dict(span.attributes),
            "service": span.resource.attributes.get("service.name"),
        }
        for span in memory.get_finished_spans() if span.kind == SpanKind.SERVER
    ]
    print(json.dumps(spans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
