"""Running the service under gunicorn on a loopback port: the harness of the tests that need a real
server, which the benchmarks and the fault suite use too."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
