"""A real gunicorn on a loopback port, DEBUG off: health, the API, static files, a dead DB."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from django.test import SimpleTestCase

from observability.tests.live import ROOT, SERVER_ENV, Gunicorn, LiveGunicornTestCase, free_port, manage


class RealServerTests(LiveGunicornTestCase):
    collectstatic = True
    key_scopes = ("admin",)

    def test_gunicorn_serves_health_the_api_and_static_files_with_debug_off(self):
        with self.serve() as server:
            status, _, body = server.request("GET", "/api/health/?db=1")
            self.assertEqual((status, json.loads(body)), (200, {"status": "ok", "db": "ok"}))

            event = {"time": "2026-03-02T10:00:00Z", "service": "s", "endpoint": "/e", "method": "get",
                     "status_code": 500, "latency_ms": 3.5}
            status, _, body = server.request("POST", "/api/requests/ingest/?strict=true", json.dumps([event]),
                                             {"Content-Type": "application/json", **self.keys["admin"]})
            self.assertEqual((status, json.loads(body)), (201, {"inserted": 1, "rejected": 0, "errors": []}))
            status, _, body = server.request("GET", "/api/requests/kpis/", headers=self.keys["admin"])
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
                with self.serve(DATABASE_URL=url, DB_CONNECT_TIMEOUT="2") as server:
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
        tls = {"DJANGO_SECURE_SSL_REDIRECT": "1", "DJANGO_ALLOWED_HOSTS": "apm.example.com"}
        env = {**self.env, **tls}
        with self.serve(**tls) as server:
            host = {"Host": "apm.example.com"}
            status, _, body = server.request("GET", "/api/health/", headers=host)
            self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
            status, headers, _ = server.request("GET", "/api/requests/kpis/", headers={**host, **self.keys["admin"]})
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
        with self.serve(DJANGO_STATIC_ROOT="") as server:
            for path in ("apm_platform/settings.py", "docker/entrypoint.sh", ".env", ".env.example", "manage.py",
                         "db.sqlite3", "../manage.py", "%2e%2e/manage.py"):
                status, _, body = server.request("GET", f"/static/{path}")
                self.assertEqual(status, 404, path)
                self.assertNotIn(b"SECRET_KEY", body, path)


def holder_pid(server: Gunicorn, sock: socket.socket) -> int | None:
    """The gunicorn worker whose file table holds the server side of `sock` (None: none yet)."""
    port = sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == server.port and int(remote, 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
            except OSError:
                continue  # closed meanwhile
    return None


def assert_health_answers(test: SimpleTestCase, sock: socket.socket, rest: bytes | None = None) -> None:
    """Send GET /api/health/ on `sock` (or only `rest`, the end of one begun) and expect a 200."""
    sock.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" if rest is None else rest)
    test.assertIn(b" 200 ", sock.recv(65536).split(b"\r\n")[0])


def workers_serving(tmp: str, workers: int) -> Gunicorn:
    """gunicorn with `workers` processes; /api/health/ is all these tests ask (no migration)."""
    return Gunicorn({**SERVER_ENV, "APM_TIMESCALE": "auto", "DATABASE_URL": f"sqlite:///{tmp}/server.sqlite3"},
                    workers=workers)


class WorkerBalanceTests(SimpleTestCase):
    def test_a_new_connection_goes_to_an_idle_worker_not_to_one_serving_a_request(self):
        # Without the pause both workers race for it, and each wins about half of the time:
        # six rounds in a row would all go right once in 64 runs.
        with tempfile.TemporaryDirectory() as tmp, workers_serving(tmp, 2) as server:
            # gunicorn answers as soon as one worker has loaded the app: wait until both have
            # served a request, or the other may still be loading when a round needs it idle.
            served, deadline = set(), time.monotonic() + 60
            while len(served) < 2 and time.monotonic() < deadline:
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as probe:
                    assert_health_answers(self, probe)
                    served.add(holder_pid(server, probe))
            self.assertEqual(len(served), 2, "the second worker never served a request")
            for round_ in range(6):
                busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                # Headers that never end: a worker thread is now reading them, for up to 10 s.
                busy.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")
                deadline = time.monotonic() + 5
                while holder_pid(server, busy) is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.2)  # the request is in a thread, not waiting in the poller
                other = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                assert_health_answers(self, other)
                self.assertNotEqual(holder_pid(server, other), holder_pid(server, busy), f"round {round_}")
                assert_health_answers(self, busy, rest=b" 1\r\n\r\n")
                busy.close()
                other.close()

    def test_when_every_worker_is_busy_new_connections_are_still_taken_at_once(self):
        with tempfile.TemporaryDirectory() as tmp, workers_serving(tmp, 1) as server:
            busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            busy.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")
            time.sleep(0.3)
            # Five at once, while the only worker serves a request: one pause, then all of them.
            started = time.monotonic()
            others = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
            for sock in others:
                sock.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            for sock in others:
                self.assertIn(b" 200 ", sock.recv(65536).split(b"\r\n")[0])
                sock.close()
            self.assertLess(time.monotonic() - started, 1.0)  # generous: the pause is 5 ms
            assert_health_answers(self, busy, rest=b" 1\r\n\r\n")
            busy.close()


class AcceptPauseTests(SimpleTestCase):
    """The pause's states, on a worker object with only what accepting needs (no process)."""

    def setUp(self):
        import selectors

        from apm_platform.gunicorn_worker import TimeoutThreadWorker

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(self.listener.close)
        worker = object.__new__(TimeoutThreadWorker)  # gunicorn's __init__ needs a whole arbiter
        worker.sockets, worker.poller, worker._accepting = [self.listener], selectors.DefaultSelector(), False
        worker.alive, worker.nr_conns, worker.worker_connections = True, 0, 10
        worker.in_flight, worker.accept_paused_until, worker.accept_resumed = 1, 0.0, False
        self.addCleanup(worker.poller.close)
        worker.set_accept_enabled(True)
        self.worker = worker

    def test_a_busy_worker_stops_listening_and_listens_again_after_the_pause(self):
        self.worker.accept(self.listener)  # busy: pauses instead
        self.assertFalse(self.worker._accepting)
        self.worker.set_accept_enabled(True)  # what gunicorn's loop asks every turn: not yet
        self.assertFalse(self.worker._accepting)
        time.sleep(0.01)
        self.worker.wait_for_and_dispatch_events(0)
        self.assertTrue(self.worker._accepting)

    def test_a_stopping_worker_never_listens_again_when_a_pause_ends(self):
        self.worker.accept(self.listener)
        self.worker.alive = False
        self.worker.set_accept_enabled(False)  # gunicorn's graceful stop
        time.sleep(0.01)
        self.worker.wait_for_and_dispatch_events(0)  # its loop still serves what is open
        self.assertFalse(self.worker._accepting)


class UncollectedStaticTests(SimpleTestCase):
    """DEBUG off and `collectstatic` never run: the pages work (no 500), and the log says why not hashed."""

    def test_every_html_page_is_served_with_its_static_files_and_the_log_names_collectstatic(self):
        with tempfile.TemporaryDirectory() as tmp:
            env = {"DATABASE_URL": f"sqlite:///{tmp}/server.sqlite3", "APM_TIMESCALE": "auto",
                   "DJANGO_STATIC_ROOT": f"{tmp}/static", "DJANGO_SECRET_KEY": "server-test-" + "x" * 50}
            manage("migrate", "--noinput", env=env)
            # A logged-in session, made as Django's login does (the pages need one).
            session = manage("shell", "-c", (
                "from django.contrib import auth; from django.contrib.sessions.backends.db import SessionStore; "
                "u = auth.get_user_model().objects.create_user('ana', password='pw-for-tests-only'); "
                "s = SessionStore(); s[auth.SESSION_KEY] = str(u.pk); "
                "s[auth.BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
                "s[auth.HASH_SESSION_KEY] = u.get_session_auth_hash(); s.create(); print(s.session_key)"),
                env=env).split()[-1]
            log = Path(tmp) / "gunicorn.log"
            with Gunicorn({"DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "127.0.0.1", **env}, log=log) as server:
                for page, cookie in [("/accounts/login/", ""), *((page, f"sessionid={session}")
                                                                 for page in ("/", "/api/docs/", "/api/redoc/"))]:
                    status, _, body = server.request("GET", page, headers={"Cookie": cookie} if cookie else {})
                    self.assertEqual(status, 200, (page, body[:500]))
                    for src in re.findall(rb'(?:src|href)="(/static/[^"]+)"', body):
                        status, _, _ = server.request("GET", src.decode())
                        self.assertEqual(status, 200, (page, src))
            self.assertIn("collectstatic", log.read_text())
            self.assertFalse(Path(tmp, "static", "staticfiles.json").exists())
