"""The compose stack's front proxy (docker/nginx.conf), run for real in front of a test gunicorn.

The same file compose mounts is started on loopback with its own prefix, pid, log and temp
paths (no root needed); only its upstream address and listen port are rewritten. Skips when
nginx is not installed (scripts/step6_test.sh installs it with apt-get when it can).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

from observability.tests.live import Gunicorn, free_port, manage, server_key_headers
from observability.tests.utils import make_event

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "docker" / "nginx.conf"
STALLED = 300
# The shipped shape on 2 cores (gunicorn.conf.py: 2 x cores + 1 workers, 8 threads each).
WORKERS = 5


def find_nginx() -> str | None:
    return os.environ.get("APM_NGINX") or shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def render(text: str, *, upstream_port: int, listen_port: int, prefix: str, nginx: str) -> str:
    """docker/nginx.conf as it runs here: same directives, loopback addresses, paths under `prefix`."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    temp_paths = "".join(
        f"    {name}_temp_path {prefix}/{name}_temp;\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if name == "client_body" or f"--without-http_{name}_module" not in built
    )
    substitutions = [
        ("set $app web:8000;", f"set $app 127.0.0.1:{upstream_port};"),
        ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
        ("error_log /var/log/nginx/error.log", f"error_log {prefix}/error.log"),
        ("access_log /var/log/nginx/access.log;", "access_log off;"),
        ("\nhttp {\n", f"\nhttp {{\n{temp_paths}"),
    ]
    for old, new in substitutions:
        # Each once, exactly: a change to the compose config that this misses must fail here.
        if text.count(old) != 1:
            raise AssertionError(f"docker/nginx.conf no longer has exactly one {old.strip()!r}")
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx running `config` with `prefix` as its home, started and stopped as a context manager."""

    def __init__(self, nginx: str, *, upstream_port: int, prefix: str):
        self.port = free_port()
        self.prefix = prefix
        self.conf = Path(prefix) / "nginx.conf"
        self.conf.write_text(render(CONFIG.read_text(), upstream_port=upstream_port, listen_port=self.port,
                                    prefix=prefix, nginx=nginx))
        globals_ = f"daemon off; pid {prefix}/nginx.pid;"
        if os.geteuid() == 0:  # root: run the workers as root too, so they can use the temp dir
            globals_ += " user root root;"
        self.command = [nginx, "-p", prefix, "-e", f"{prefix}/error.log", "-c", str(self.conf), "-g", globals_]
        self.process = None

    def __enter__(self):
        check = subprocess.run([*self.command, "-t"], capture_output=True, text=True)
        if check.returncode:
            raise AssertionError(f"nginx -t refused the rendered config:\n{check.stderr}")
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        raise AssertionError(f"nginx did not start: {Path(self.prefix, 'error.log').read_text()}")

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown
            self.process.wait(timeout=10)


def get(port: int, path: str, headers: dict | None = None, *, timeout: float) -> tuple[int, dict, bytes, float]:
    """One GET on a fresh connection: (status, headers, body, seconds), or status 0 on a timeout."""
    import http.client

    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "127.0.0.1", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read(), time.monotonic() - began
    except (TimeoutError, ConnectionError):
        return 0, {}, b"", time.monotonic() - began
    finally:
        conn.close()


def stall(port: int, count: int, auth: dict) -> list[socket.socket]:
    """`count` connections that never finish a request: a third stop in the middle of their
    headers, the others send complete headers (with a valid key, so the app waits for the body)
    and then only the start of the body they announced."""
    key = "".join(f"{name}: {value}\r\n" for name, value in auth.items()).encode()
    sockets = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if n % 3 == 0:
            sock.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Still-Typing: ")
        else:
            sock.sendall(b"POST /api/requests/ingest/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + key +
                         b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n[{\"time\":")
        sockets.append(sock)
    time.sleep(0.5)  # let the server take them all in before the probes
    return sockets


def probes(port: int, count: int = 10, *, timeout: float = 1.0) -> list[tuple[int, float]]:
    results = []
    for _ in range(count):
        status, _, _, seconds = get(port, "/api/health/", timeout=timeout)
        results.append((status, round(seconds, 3)))
        time.sleep(0.1)
    return results


class FrontProxyTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        nginx = find_nginx()
        if nginx is None:
            raise unittest.SkipTest("nginx is not installed (apt-get install nginx-light; step6_test.sh does as root)")
        cls.tmp = tempfile.TemporaryDirectory()
        os.chmod(cls.tmp.name, 0o755)
        # The app trusts X-Forwarded-Proto (as behind TLS): the proxy must set it itself.
        env = {"DATABASE_URL": f"sqlite:///{cls.tmp.name}/proxy.sqlite3", "APM_TIMESCALE": "auto"}
        manage("migrate", "--noinput", env=env)
        cls.auth = server_key_headers(env, "admin")
        cls.gunicorn = Gunicorn({**env, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "proxy-test-" + "x" * 50,
                                 "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                                 "DJANGO_SECURE_PROXY_SSL_HEADER": "1"},
                                workers=WORKERS)
        cls.gunicorn.__enter__()
        try:
            cls.proxy = Nginx(nginx, upstream_port=cls.gunicorn.port, prefix=cls.tmp.name).__enter__()
        except BaseException:
            cls.gunicorn.__exit__()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proxy.__exit__()
        cls.gunicorn.__exit__()
        cls.tmp.cleanup()
        super().tearDownClass()

    def test_health_answers_within_a_second_through_the_proxy_while_300_connections_stall(self):
        self.assertEqual(get(self.proxy.port, "/api/health/", timeout=5)[0], 200)
        held = stall(self.proxy.port, STALLED, self.auth)
        try:
            results = probes(self.proxy.port)
        finally:
            for sock in held:
                sock.close()
        self.assertEqual([s for s, _ in results], [200] * len(results), results)
        self.assertLess(max(t for _, t in results), 1.0, results)

    def test_a_forwarded_proto_sent_by_the_client_is_replaced_not_believed(self):
        status, _, _ = self.gunicorn.request("POST", "/api/requests/ingest/", json.dumps([make_event()] * 2),
                                             {**self.auth, "Content-Type": "application/json"})
        self.assertEqual(status, 200)
        # The pagination link is absolute: its scheme is what the app believes the client used.
        path = "/api/requests/?page_size=1"
        spoofed = {**self.auth, "X-Forwarded-Proto": "https"}
        # Straight to gunicorn the lie works...
        _, _, body, _ = get(self.gunicorn.port, path, spoofed, timeout=5)
        self.assertTrue(json.loads(body)["next"].startswith("https://"), body)
        # ...through the proxy the app learns the truth, and the Host with its port.
        status, _, body, _ = get(self.proxy.port, path, {**spoofed, "Host": f"127.0.0.1:{self.proxy.port}"},
                                 timeout=5)
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["next"].startswith(f"http://127.0.0.1:{self.proxy.port}/api/requests/?"),
                        body)

    def test_a_body_over_the_apps_cap_is_refused_by_the_proxy_in_json(self):
        cap = int(re.search(r"client_max_body_size (\d+)m;", CONFIG.read_text()).group(1)) * 1024 * 1024
        self.assertEqual(cap, settings.APM_INGEST_MAX_BYTES)
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5) as sock:
            sock.sendall(b"POST /api/requests/ingest/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {cap + 1}\r\n\r\n".encode())
            answer = sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertIn(b" 413 ", head.split(b"\r\n")[0])
        self.assertIn(b"Content-Type: application/json", head)
        self.assertIn("16 MiB", json.loads(body)["detail"])
