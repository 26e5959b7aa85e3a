"""A real gunicorn (gthread) with clients that misbehave: stalled connections, bodies shorter
than their Content-Length, request lines past gunicorn's limit, and the largest bodies within
the byte limit with the worker's memory watched."""

import gzip
import json
import socket
import subprocess
import time
from pathlib import Path

from django.db import connection

from observability.otlp import _varint
from observability.tests.live import LiveGunicornTestCase
from observability.tests.test_body import gzip_bomb
from observability.tests.test_otlp import HTTP_GET, START_NS, export_request, server_span
from observability.tests.utils import make_event


def once(testcase) -> None:
    # These tests serve their own SQLite database whatever the suite runs on: run them once.
    if connection.vendor != "sqlite":
        testcase.skipTest("uses its own SQLite database; runs once, in the SQLite run of the suite")


def worker_pid(server) -> int:
    """The one worker of a one-worker gunicorn: the master's only child."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        if len(children) == 1:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError(f"expected one worker, found {children}")


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


class SlowClientTests(LiveGunicornTestCase):
    # The server's own database holds its keys (see server_key_headers).
    key_scopes = ("ingest", "read")

    def setUp(self):
        once(self)

    @classmethod
    def server_env(cls):
        return {"GUNICORN_READ_TIMEOUT": "2", "GUNICORN_TIMEOUT": "30"}

    def stalled(self, server, data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(data)
        return sock

    def test_three_stalled_connections_dont_stop_health_probes_and_are_dropped(self):
        with self.serve() as server:
            stalled = [self.stalled(server, b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")
                       for _ in range(3)]
            time.sleep(0.5)  # each is now in a worker thread, reading headers
            for _ in range(10):
                started = time.monotonic()
                status, _, body = server.request("GET", "/api/health/")
                self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
                # Generous for a loaded CI machine; a blocked thread would take the 2 s read timeout.
                self.assertLess(time.monotonic() - started, 1.5)
            # GUNICORN_READ_TIMEOUT=2: the stalled connections are closed, their threads free.
            for sock in stalled:
                started = time.monotonic()
                self.assertEqual(sock.recv(1024), b"")
                self.assertLess(time.monotonic() - started, 8)  # the socket itself gives up at 10
                sock.close()

    def test_a_body_shorter_than_its_content_length_is_a_400_and_frees_the_thread(self):
        with self.serve() as server:
            head = (b"POST /api/requests/ingest/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n")
            head += b"".join(f"{k}: {v}\r\n".encode() for k, v in self.keys["ingest"].items())
            sock = self.stalled(server, head + b"\r\n" + b'[{"time": "2026')
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            sock.close()
            self.assertLess(time.monotonic() - started, 6)
            status_line, _, rest = answer.partition(b"\r\n")
            self.assertIn(b" 400 ", status_line, answer[:300])
            self.assertIn("Content-Length", json.loads(rest.partition(b"\r\n\r\n")[2])["detail"])
            status, _, body = server.request("GET", "/api/health/")
            self.assertEqual(status, 200)

    def test_gunicorns_own_errors_are_json(self):
        with self.serve() as server:
            sock = self.stalled(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = sock.recv(65536)
            sock.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            self.assertRegex(head.split(b"\r\n")[0], rb" 4\d\d ")
            self.assertIn(b"Content-Type: application/json", head)
            self.assertIn("detail", json.loads(body))
            # A long but allowed request line (8,000 bytes) reaches the app.
            status, _, body = server.request("GET", "/api/requests/?search=" + "x" * 7900, headers=self.keys["read"])
            self.assertEqual(status, 200, body[:200])


class WorstBodyMemoryTests(LiveGunicornTestCase):
    """RSS growth of a real worker over idle, for the worst bodies within the byte limit, stays
    within 4x that limit (API.md: no body within the limits is a memory spike)."""

    LIMIT = 16 * 1024 * 1024
    key_scopes = ("ingest",)

    def setUp(self):
        once(self)

    @classmethod
    def server_env(cls):
        return {"GUNICORN_TIMEOUT": "60", "APM_INGEST_MAX_BYTES": str(cls.LIMIT)}

    @classmethod
    def fill(cls, head: bytes, unit: bytes, tail: bytes, sep: bytes = b",") -> bytes:
        n = (cls.LIMIT - len(head) - len(tail)) // (len(unit) + len(sep))
        return head + sep.join([unit] * n) + tail

    def worst_bodies(self) -> dict[str, bytes]:
        event = json.dumps(make_event()).encode()
        small = json.dumps(make_event())[:-1].encode()
        per_event = (self.LIMIT // 10_000) - len(small) - 20
        # The costliest body the one-call decode accepts: 20,000 objects, then 2-byte strings.
        costly = b"[" + b",".join([b'{"a":"ab"}'] * 10_000) + b',{"b":["'
        costly += b'","'.join([b"ab"] * (self.LIMIT // 64 - 30_002)) + b'"]}'
        costly += b',{"p":"' + b"p" * (self.LIMIT - len(costly) - 10) + b'"}]'
        # The costliest body the typed decode takes whole: 40,002 tiny valid events (four '{'
        # per allowed event), padded to the limit; every one is built before the 413.
        tiny = (b'{"time":"ab","service":"ab","endpoint":"ab","method":"GET","status_code":500,'
                b'"latency_ms":0.5,"trace_id":"ab","user_ref":"ab"')
        typed = b"[" + b",".join([tiny + b"}"] * 40_001) + b"," + tiny + b',"p":"'
        typed += b"p" * (self.LIMIT - len(typed) - 3) + b'"}]'
        return {
            "one-call decode at its bounds": costly,
            "5.6M empty objects": self.fill(b"[", b"{}", b"]"),
            "8.4M zeros": self.fill(b"[", b"0", b"]"),
            "one event, 16 MiB unknown field of {}": self.fill(b"[" + small + b', "x": [', b"{}", b"]}]"),
            "10,000 events, 1.6 KiB of tiny values each": b"[" + b",".join(
                [small + b', "x": [' + b",".join([b'"ab"'] * (per_event // 5)) + b"]}"] * 10_000) + b"]",
            "10,000 valid events padded with unknown strings": b"[" + b",".join(
                [small + b', "x": "' + b"p" * per_event + b'"}'] * 10_000) + b"]",
            "one 16 MiB service string": b'[{"service": "' + b"s" * (self.LIMIT - 100) + b'"}]',
            "16 MiB of [ (nesting)": b"[" * (self.LIMIT // 2) + b"]" * (self.LIMIT // 2),
            "NaN-bearing 5.6M elements": self.fill(b"[" + event + b",", b"NaN", b"]"),
            "typed decode at its bounds": typed,  # last: gzip_bodies takes the first three
        }

    def gzip_bodies(self) -> dict[str, tuple[bytes, int]]:
        """gzip bodies for bulk ingest: (compressed body, inflated size)."""
        bodies = {}
        for name, body in list(self.worst_bodies().items())[:3]:
            bodies[f"gzip of {name}"] = (gzip.compress(body, 6), len(body))
        exact = self.fill(b"[", b"{}", b"]")
        exact += b" " * (self.LIMIT - len(exact))  # inflates to the cap exactly
        bodies["gzip inflating to exactly the cap (5.6M {})"] = (gzip.compress(exact, 6), len(exact))
        bodies["gzip bomb: 1 GiB of zeros"] = (gzip_bomb(1024 * 1024 * 1024), 1024 * 1024 * 1024)
        return bodies

    def otlp_bodies(self) -> dict[str, tuple[str, bytes]]:
        """/v1/traces bodies within the byte limit: (content type, body)."""
        ld = _varint  # a length-delimited field is tag, varint length, bytes

        def field(tag: bytes, data: bytes) -> bytes:
            return tag + ld(len(data)) + data

        def pb_spans(spans: bytes) -> bytes:  # ExportTraceServiceRequest{resource_spans{scope_spans{spans}}}
            return field(b"\x0a", field(b"\x12", spans))

        def pb_span(content: bytes) -> bytes:
            return field(b"\x12", content)

        room = self.LIMIT - 64
        # 10,000 SERVER HTTP spans, each with as many attributes as fit in 16 MiB.
        per_span = (self.LIMIT // 10_000) - 200
        extra = {f"a{i:03d}": "v" * 8 for i in range(per_span // 22)}
        spans = [server_span(attrs={**HTTP_GET, **extra}, span_id=i.to_bytes(8, "big"))
                 for i in range(1, 10_001)]
        maximal = export_request(*spans).SerializeToString()
        # 10,000 spans with as many attributes as otlp.check_protobuf_cost lets through.
        within = {f"a{i:03d}": "v" * 8 for i in range(15)}
        spans = [server_span(attrs={**HTTP_GET, **within}, span_id=i.to_bytes(8, "big")) for i in range(1, 10_001)]
        accepted = export_request(*spans).SerializeToString()
        del spans
        server_kind = b"\x30\x02"
        pb_get = (field(b"\x4a", field(b"\x0a", b"http.request.method") + field(b"\x12", field(b"\x0a", b"GET")))
                  + field(b"\x4a", field(b"\x0a", b"http.response.status_code") + field(b"\x12", b"\x18\xc8\x01")))
        json_span = json.dumps({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "0000000000000001",
                                "name": "GET", "kind": 2, "startTimeUnixNano": str(START_NS),
                                "endTimeUnixNano": str(START_NS + 12_345_678), "attributes": [
                                    {"key": k, "value": {"stringValue": v} if type(v) is str else {"intValue": v}}
                                    for k, v in {**HTTP_GET, **extra}.items()]}).encode()
        json_maximal = (b'{"resourceSpans":[{"scopeSpans":[{"spans":['
                        + b",".join([json_span] * min(10_000, room // (len(json_span) + 1))) + b"]}]}]}")
        # The most plain HTTP spans an OTLP/JSON body may hold: one value per `,` `:` `[`.
        plain_span = json_span[:json_span.index(b'"attributes"')] + json.dumps({"attributes": [
            {"key": k, "value": {"stringValue": v} if type(v) is str else {"intValue": v}}
            for k, v in HTTP_GET.items()]}).encode()[1:]
        values = sum(plain_span.count(c) + 1 for c in b",:[")
        json_plain = (b'{"resourceSpans":[{"scopeSpans":[{"spans":['
                      + b",".join([plain_span] * (self.LIMIT // 64 // values - 1)) + b"]}]}]}")
        bodies = {
            "protobuf: 10,000 SERVER spans, maximal attributes": (PROTOBUF, maximal),
            "protobuf: 10,000 SERVER spans, 18 attributes each": (PROTOBUF, accepted),
            "protobuf: 8.4M empty spans": (PROTOBUF, pb_spans(b"\x12\x00" * (room // 2))),
            "protobuf: 4.2M tiny SERVER spans": (PROTOBUF, pb_spans(pb_span(server_kind) * (room // 4))),
            "protobuf: one span, 8.4M empty attributes": (
                PROTOBUF, pb_spans(pb_span(server_kind + b"\x4a\x00" * (room // 2)))),
            "protobuf: one span, 2.8M tiny attributes (9,025 keys)": (PROTOBUF, pb_spans(pb_span(server_kind + b"".join(
                field(b"\x4a", field(b"\x0a", bytes((32 + i // 95 % 95, 32 + i % 95)))) for i in range(room // 6))))),
            "protobuf: one span, 5.6M unknown varint fields": (
                PROTOBUF, pb_spans(pb_span(server_kind + b"\xf8\x06\x00" * (room // 3)))),
            "protobuf: unknown fields nested 100 deep": (PROTOBUF, pb_spans(pb_span(
                server_kind + nested(b"\xfa\x06", 100, b"\x08\x01" * (room // 2 - 400))))),
            "protobuf: one 16 MiB attribute string (http.route)": (PROTOBUF, pb_spans(pb_span(
                server_kind + pb_get + field(b"\x4a", field(b"\x0a", b"http.route")
                                             + field(b"\x12", field(b"\x0a", b"/" * (room - 120))))))),
            "OTLP/JSON: 10,000 SERVER spans, maximal attributes": (JSON, json_maximal),
            "OTLP/JSON: 5.6M empty spans": (JSON, self.fill(b'{"resourceSpans":[{"scopeSpans":[{"spans":[',
                                                              b"{}", b"]}]}]}")),
            "OTLP/JSON: 16 MiB unknown field of {}": (JSON, self.fill(b'{"resourceSpans":[],"x":[', b"{}", b"]}")),
            "OTLP/JSON: one span, 16 MiB of tiny attributes": (JSON, self.fill(
                b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":2,"attributes":[', b"{}", b"]}]}]}]}")),
            "OTLP/JSON: one 16 MiB attribute string (http.route)": (JSON, (
                b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":2,"startTimeUnixNano":1,"endTimeUnixNano":2,"attributes":['
                b'{"key":"http.request.method","value":{"stringValue":"GET"}},'
                b'{"key":"http.response.status_code","value":{"intValue":200}},'
                b'{"key":"http.route","value":{"stringValue":"/' + b"r" * (room - 400) + b'"}}]}]}]}]}')),
            "OTLP/JSON: SERVER spans with HTTP attributes, as many as decode": (JSON, json_plain),
            "OTLP/JSON: 16 MiB of [ (nesting)": (JSON, b'{"x":' + b"[" * (room // 2) + b"]" * (room // 2) + b"}"),
        }
        for name, (kind, body) in list(bodies.items()):
            if "maximal" in name or "empty spans" in name or "as many" in name or "18 attr" in name:
                bodies[f"gzip {name}"] = (kind, gzip.compress(body, 6))
        bodies["gzip bomb to /v1/traces: 1 GiB of zeros"] = (PROTOBUF, gzip_bomb(1024 * 1024 * 1024))
        return bodies

    def measure(self, name: str, path: str, body: bytes, headers: dict, figures: list) -> None:
        with self.subTest(body=name), self.serve() as server:
            pid = worker_pid(server)
            for _ in range(3):  # warm up: imports, first queries
                server.request("POST", "/api/requests/ingest/", json.dumps([make_event()]),
                               {"Content-Type": "application/json", **self.keys["ingest"]})
                server.request("POST", "/v1/traces", export_request(server_span(attrs=HTTP_GET))
                               .SerializeToString(), {"Content-Type": PROTOBUF, **self.keys["ingest"]})
            idle = memory_kib(pid)["VmRSS"]
            status, _, answer = server.request("POST", path, body, {**headers, **self.keys["ingest"]})
            self.assertLess(status, 500, answer[:200])
            growth = (memory_kib(pid)["VmHWM"] - idle) * 1024
            figures.append(f"{name}: {status}, +{growth / 2**20:.0f} MiB ({growth / self.LIMIT:.1f}x)")
            self.assertLessEqual(growth, 4 * self.LIMIT, f"{name}: grew {growth / 2**20:.0f} MiB")

    def test_worst_bodies_grow_a_worker_by_at_most_4x_the_byte_limit(self):
        figures = []
        for name, body in self.worst_bodies().items():
            self.assertLessEqual(len(body), self.LIMIT, name)
            self.measure(name, "/api/requests/ingest/", body, {"Content-Type": "application/json"}, figures)
        print("\nworst-body RSS growth over idle (16 MiB limit): " + "; ".join(figures))

    def test_worst_gzip_bodies_grow_a_worker_by_at_most_4x_the_byte_limit(self):
        figures = []
        for name, (body, inflated) in self.gzip_bodies().items():
            self.assertTrue("bomb" in name or inflated <= self.LIMIT, name)
            self.measure(name, "/api/requests/ingest/", body,
                         {"Content-Type": "application/json", "Content-Encoding": "gzip"}, figures)
        print("\nworst gzip body RSS growth over idle (16 MiB limit): " + "; ".join(figures))

    def test_worst_otlp_bodies_grow_a_worker_by_at_most_4x_the_byte_limit(self):
        figures = []
        for name, (kind, body) in self.otlp_bodies().items():
            self.assertLessEqual(len(body), self.LIMIT, name)
            headers = {"Content-Type": kind}
            if name.startswith("gzip"):
                headers["Content-Encoding"] = "gzip"
                if "bomb" not in name:
                    self.assertLessEqual(len(gzip.decompress(body)), self.LIMIT, name)
            self.measure(name, "/v1/traces", body, headers, figures)
        print("\nworst OTLP body RSS growth over idle (16 MiB limit): " + "; ".join(figures))


PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def nested(tag: bytes, depth: int, inner: bytes) -> bytes:
    """`inner` wrapped `depth` times in the length-delimited field `tag`."""
    for _ in range(depth):
        inner = tag + _varint(len(inner)) + inner
    return inner
