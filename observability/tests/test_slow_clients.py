"""A real gunicorn (gthread) with clients that misbehave: stalled connections, bodies shorter
than their Content-Length, request lines past gunicorn's limit, and the largest bodies within
the byte limit with the worker's memory watched."""

import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from django.db import connection
from django.test import SimpleTestCase

from observability.tests.test_server import manage, serve, server_key_headers
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


class SlowClientTests(SimpleTestCase):
    def setUp(self):
        once(self)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.env = {"DATABASE_URL": f"sqlite:///{cls.tmp.name}/slow.sqlite3", "APM_TIMESCALE": "auto",
                   "DJANGO_STATIC_ROOT": f"{cls.tmp.name}/static", "GUNICORN_READ_TIMEOUT": "2",
                   "GUNICORN_TIMEOUT": "30"}
        manage("migrate", "--noinput", env=cls.env)
        # The server's own database holds its keys (see server_key_headers).
        cls.ingest_key = server_key_headers(cls.env, "ingest")
        cls.read_key = server_key_headers(cls.env, "read")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

    def stalled(self, server, data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(data)
        return sock

    def test_three_stalled_connections_dont_stop_health_probes_and_are_dropped(self):
        with serve(self.env) as server:
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
        with serve(self.env) as server:
            head = (b"POST /api/requests/ingest/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n")
            head += b"".join(f"{k}: {v}\r\n".encode() for k, v in self.ingest_key.items())
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
        with serve(self.env) as server:
            sock = self.stalled(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = sock.recv(65536)
            sock.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            self.assertRegex(head.split(b"\r\n")[0], rb" 4\d\d ")
            self.assertIn(b"Content-Type: application/json", head)
            self.assertIn("detail", json.loads(body))
            # A long but allowed request line (8,000 bytes) reaches the app.
            status, _, body = server.request("GET", "/api/requests/?search=" + "x" * 7900, headers=self.read_key)
            self.assertEqual(status, 200, body[:200])


class WorstBodyMemoryTests(SimpleTestCase):
    """RSS growth of a real worker over idle, for the worst bodies within the byte limit, stays
    within 4x that limit (API.md: no body within the limits is a memory spike)."""

    LIMIT = 16 * 1024 * 1024

    def setUp(self):
        once(self)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.env = {"DATABASE_URL": f"sqlite:///{cls.tmp.name}/rss.sqlite3", "APM_TIMESCALE": "auto",
                   "DJANGO_STATIC_ROOT": f"{cls.tmp.name}/static", "GUNICORN_TIMEOUT": "60",
                   "APM_INGEST_MAX_BYTES": str(cls.LIMIT)}
        manage("migrate", "--noinput", env=cls.env)
        cls.ingest_key = server_key_headers(cls.env, "ingest")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

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
        }

    def test_worst_bodies_grow_a_worker_by_at_most_4x_the_byte_limit(self):
        figures = []
        for name, body in self.worst_bodies().items():
            self.assertLessEqual(len(body), self.LIMIT, name)
            with self.subTest(body=name), serve(self.env) as server:
                pid = worker_pid(server)
                for _ in range(3):  # warm up: imports, first queries
                    server.request("POST", "/api/requests/ingest/", json.dumps([make_event()]),
                                   {"Content-Type": "application/json", **self.ingest_key})
                idle = memory_kib(pid)["VmRSS"]
                status, _, answer = server.request("POST", "/api/requests/ingest/", body,
                                                   {"Content-Type": "application/json",
                                                    **self.ingest_key})
                self.assertLess(status, 500, answer[:200])
                growth = (memory_kib(pid)["VmHWM"] - idle) * 1024
                figures.append(f"{name}: {status}, +{growth / 2**20:.0f} MiB ({growth / self.LIMIT:.1f}x)")
                self.assertLessEqual(growth, 4 * self.LIMIT, f"{name}: grew {growth / 2**20:.0f} MiB")
        print("\nworst-body RSS growth over idle (16 MiB limit): " + "; ".join(figures))
