"""A real gunicorn on a loopback port, DEBUG off: health, the API, static files, a dead DB."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from django.test import SimpleTestCase

from benchmarks.support import ROOT, Gunicorn, free_port


def serve(env: dict) -> Gunicorn:
    """gunicorn with DEBUG off, answering to 127.0.0.1 only."""
    return Gunicorn({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "server-test-" + "x" * 50,
                     "DJANGO_ALLOWED_HOSTS": "127.0.0.1", **env})


def manage(*args, env) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True, capture_output=True, text=True,
                          env={**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 60, **env}).stdout


def server_key_headers(env: dict, scope: str = "admin") -> dict:
    """A new key of `scope` in the database of a server started with `env`, as headers.

    A live server on its own database can't see keys made in the test database
    (`api_key_headers`): its key comes from the command, as an operator's would.
    """
    key = manage("create_api_key", f"server-test {scope}", "--scope", scope, env=env).splitlines()[-1]
    return {"Authorization": f"Bearer {key}"}


class RealServerTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory()
        # Its own SQLite database, whatever the suite runs on (APM_TIMESCALE=require would refuse it).
        cls.env = {"DATABASE_URL": f"sqlite:///{cls.tmp.name}/server.sqlite3", "APM_TIMESCALE": "auto",
                   "DJANGO_STATIC_ROOT": f"{cls.tmp.name}/static"}
        manage("migrate", "--noinput", env=cls.env)
        manage("collectstatic", "--noinput", env=cls.env)
        cls.auth = server_key_headers(cls.env, "admin")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

    def test_gunicorn_serves_health_the_api_and_static_files_with_debug_off(self):
        with serve(self.env) as server:
            status, _, body = server.request("GET", "/api/health/?db=1")
            self.assertEqual((status, json.loads(body)), (200, {"status": "ok", "db": "ok"}))

            event = {"time": "2026-03-02T10:00:00Z", "service": "s", "endpoint": "/e", "method": "get",
                     "status_code": 500, "latency_ms": 3.5}
            status, _, body = server.request("POST", "/api/requests/ingest/?strict=true", json.dumps([event]),
                                             {"Content-Type": "application/json", **self.auth})
            self.assertEqual((status, json.loads(body)), (201, {"inserted": 1, "rejected": 0, "errors": []}))
            status, _, body = server.request("GET", "/api/requests/kpis/", headers=self.auth)
            self.assertEqual(json.loads(body)["errors"], 1)
            status, headers, body = server.request("GET", "/api/requests/kpis/")
            self.assertEqual((status, headers.get("WWW-Authenticate")), (401, 'Bearer realm="apm"'))

            status, _, body = server.request("GET", "/nowhere/")
            self.assertEqual((status, json.loads(body)), (404, {"detail": "Not found."}))

            manifest = json.loads(Path(self.env["DJANGO_STATIC_ROOT"], "staticfiles.json").read_text())
            name, hashed = next(iter(manifest["paths"].items()))
            for path in (name, hashed):
                status, headers, body = server.request("GET", f"/static/{path}")
                self.assertEqual(status, 200, path)
                self.assertEqual(body, Path(self.env["DJANGO_STATIC_ROOT"], path).read_bytes())
            status, headers, _ = server.request("GET", f"/static/{hashed}")
            self.assertIn("immutable", headers.get("Cache-Control", ""))

    def test_health_with_db_answers_503_quickly_when_the_database_is_unreachable(self):
        # A port that accepts connections and never answers: only the timeout can end the wait.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        held = []
        stop = threading.Event()

        def accept():
            silent.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(silent.accept()[0])
                except OSError:
                    pass

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        refused = free_port()
        try:
            for url in (f"postgres://apm@127.0.0.1:{refused}/apm",
                        f"postgres://apm@127.0.0.1:{silent.getsockname()[1]}/apm"):
                env = {**self.env, "DATABASE_URL": url, "DB_CONNECT_TIMEOUT": "2"}
                with serve(env) as server:
                    started = time.monotonic()
                    status, headers, body = server.request("GET", "/api/health/?db=1")
                    elapsed = time.monotonic() - started
                    self.assertEqual(status, 503, url)
                    self.assertTrue(headers["Content-Type"].startswith("application/json"))
                    self.assertEqual(json.loads(body)["status"], "error")
                    self.assertTrue(json.loads(body)["db"])
                    self.assertLess(elapsed, 10, f"{url}: the DB check took {elapsed:.1f}s")
                    status, _, body = server.request("GET", "/api/health/")
                    self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
        finally:
            stop.set()
            acceptor.join()
            for conn in held:
                conn.close()
            silent.close()

    def test_behind_tls_only_health_skips_the_https_redirect_and_the_container_check_passes(self):
        env = {**self.env, "DJANGO_SECURE_SSL_REDIRECT": "1", "DJANGO_ALLOWED_HOSTS": "apm.example.com"}
        with serve(env) as server:
            host = {"Host": "apm.example.com"}
            status, _, body = server.request("GET", "/api/health/", headers=host)
            self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
            status, headers, _ = server.request("GET", "/api/requests/kpis/", headers={**host, **self.auth})
            self.assertEqual((status, headers["Location"]), (301, "https://apm.example.com/api/requests/kpis/"))
            # docker/healthcheck.py is what compose runs in the container (PORT is its port there).
            check = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], capture_output=True,
                                   text=True, env={**os.environ, **env, "PORT": str(server.port)})
            self.assertEqual(check.returncode, 0, check.stderr)
        check = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], capture_output=True,
                               text=True, env={**os.environ, **env, "PORT": str(free_port())})
        self.assertEqual(check.returncode, 1, "no server: unhealthy")

    def test_static_files_never_include_the_code_or_the_environment(self):
        # The defect this guards: an empty DJANGO_STATIC_ROOT (as in .env.example) made the working
        # directory the static root, and WhiteNoise served settings.py and .env with 200.
        with serve({**self.env, "DJANGO_STATIC_ROOT": ""}) as server:
            for path in ("apm_platform/settings.py", "docker/entrypoint.sh", ".env", ".env.example", "manage.py",
                         "db.sqlite3", "../manage.py", "%2e%2e/manage.py"):
                status, _, body = server.request("GET", f"/static/{path}")
                self.assertEqual(status, 404, path)
                self.assertNotIn(b"SECRET_KEY", body, path)
