"""Running the service under gunicorn on a loopback port: the harness (`Gunicorn`, which the
benchmarks and the fault suite use too) and `LiveGunicornTestCase`, the base of the tests that
need a real server."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
# What a test server runs with unless a test says otherwise: DEBUG off, answering to 127.0.0.1 only.
SERVER_ENV = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "live-test-" + "x" * 50, "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """gunicorn serving the project on 127.0.0.1, started and stopped as a context manager."""

    def __init__(self, env: dict | None = None, *, workers: int = 1, settings: str | None = None,
                 log: Path | None = None):
        self.port = free_port()
        self.env = {
            **os.environ, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(workers),
            "GUNICORN_ACCESSLOG": "", "GUNICORN_LOGLEVEL": "warning", "GUNICORN_MAX_REQUESTS": "0",
            "GUNICORN_TIMEOUT": "600", **(env or {}),
        }
        if settings:
            self.env["DJANGO_SETTINGS_MODULE"] = settings
        self.process: subprocess.Popen | None = None
        self.log = log  # where gunicorn's stderr goes (default: a pipe read only if it fails to start)

    def __enter__(self) -> Gunicorn:
        # A SIGTERM to the script must unwind through __exit__, or gunicorn outlives it.
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "apm_platform.wsgi:application"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab") if self.log else subprocess.PIPE,  # noqa: SIM115 - closed in __exit__
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/api/health/")
                return self
            except OSError:
                if self.process.poll() is not None:
                    output = self.process.stderr.read().decode() if self.process.stderr else f"see {self.log}"
                    raise RuntimeError(f"gunicorn exited: {output}") from None
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("gunicorn did not answer within 60 s")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            if self.process.stderr:
                self.process.stderr.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def connection(self, timeout: float = 600) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        conn = self.connection(timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


def manage(*args, env) -> str:
    """manage.py `args` in a process of its own with `env` (DEBUG off); its stdout."""
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True, capture_output=True, text=True,
                          env={**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 60, **env}).stdout


def server_key_headers(env: dict, scope: str = "admin") -> dict:
    """A new key of `scope` in the database of a server started with `env`, as headers.

    A live server on its own database can't see keys made in the test database
    (`api_key_headers`): its key comes from the command, as an operator's would.
    """
    key = manage("create_api_key", f"server-test {scope}", "--scope", scope, env=env).splitlines()[-1]
    return {"Authorization": f"Bearer {key}"}


class LiveGunicornTestCase(SimpleTestCase):
    """Tests against a real gunicorn (SERVER_ENV) on a SQLite file of the class's own.

    setUpClass makes `tmp`, `env` (the database, a static root in `tmp`, `server_env()`), migrates
    the database, collects static files if `collectstatic`, and makes `keys[scope]` (headers) for
    each of `key_scopes`. `serve(**env)` is a gunicorn of `workers` workers for a `with` block;
    with `serve_class` one serves the whole class as `server`. A class whose server shares the
    suite's database puts TransactionTestCase after this class in its bases and overrides
    `shared_database()`; that database is migrated already and holds no keys.
    """

    workers = 1
    key_scopes: tuple[str, ...] = ()
    collectstatic = False
    serve_class = False

    @classmethod
    def server_env(cls) -> dict:
        """What this class's server and manage.py run with besides the database (`tmp` exists)."""
        return {}

    @classmethod
    def shared_database(cls) -> dict | None:
        """DATABASE_URL and APM_TIMESCALE of the suite's database, to serve it; None: a file of our own."""
        return None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        shared = cls.shared_database()
        # Its own SQLite database, whatever the suite runs on (APM_TIMESCALE=require would refuse it).
        database = shared or {"DATABASE_URL": f"sqlite:///{cls.tmp.name}/live.sqlite3", "APM_TIMESCALE": "auto"}
        cls.env = {**database, "DJANGO_STATIC_ROOT": f"{cls.tmp.name}/static", **cls.server_env()}
        cls.keys = {}
        if shared is None:
            manage("migrate", "--noinput", env=cls.env)
            if cls.collectstatic:
                manage("collectstatic", "--noinput", env=cls.env)
            cls.keys = {scope: server_key_headers(cls.env, scope) for scope in cls.key_scopes}
        if cls.serve_class:
            cls.server = cls.enterClassContext(cls.serve())

    @classmethod
    def serve(cls, **env: str) -> Gunicorn:
        """gunicorn on the class's database and settings, `env` on top."""
        return Gunicorn({**SERVER_ENV, **cls.env, **env}, workers=cls.workers)
