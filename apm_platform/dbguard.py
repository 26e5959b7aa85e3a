"""A client-side deadline on every PostgreSQL round trip.

A database that stops answering (a network partition, a frozen host: the kernel still accepts
and acknowledges, nobody replies) can't be caught by the server's `statement_timeout`, TCP
keepalives or `tcp_user_timeout`, and libpq's `connect_timeout` covers only new connections: a
request would wait in recv() until gunicorn kills the worker. psycopg2's wait callbacks would
bound each wait, but they switch the connection to asynchronous mode, where COPY (the bulk
ingest path) is refused. So a watchdog thread does it instead: each round trip (execute,
COPY, commit, rollback) is armed with a deadline, and when one passes the watchdog shuts the
connection's socket down. libpq then fails at once ("server closed the connection"), the
request answers 503, and Django drops the broken connection; the next request connects anew.

Installed through OPTIONS (`connection_factory`, `cursor_factory`) in settings; no Django
import here, so settings can import it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

# Seconds a single round trip may wait for the server (DB_QUERY_TIMEOUT); settings set it.
DEFAULT_TIMEOUT = 10.0
# A process-wide limit that replaces DEFAULT_TIMEOUT for long batch work (manage.py migrate,
# seed_requests, refreshes): a continuous-aggregate backfill may take minutes, so the limit
# is long and the watchdog's liveness probe (every DEFAULT_TIMEOUT) tells a frozen server
# from a busy one instead. None: requests, where DEFAULT_TIMEOUT applies.
PROCESS_TIMEOUT: float | None = None
BATCH_TIMEOUT = 7 * 24 * 3600.0
_local = threading.local()


class DeadlineExceeded(psycopg2.OperationalError):
    """The database did not answer in time; the connection was cut."""


class CommitOutcomeUnknown(psycopg2.OperationalError):
    """The connection failed while a COMMIT was under way: the server may have committed (it
    reads what was sent before the connection broke) or not. A retry may store twice."""


class _Watchdog:
    def __init__(self):
        self._lock = threading.Lock()
        self._armed: dict[int, list] = {}  # token -> [deadline, fd, fired]
        self._next = 0
        self._thread: threading.Thread | None = None
        self._pid = None

    def arm(self, fd: int, seconds: float, probe=None) -> int:
        """Cut `fd` after `seconds`; with `probe` (a callable that returns when the server
        answers and raises when it doesn't), check every DEFAULT_TIMEOUT meanwhile whether the
        server is alive at all, and cut at once when it is not."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # not yet, or forked since
                self._armed.clear()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()
            self._next += 1
            now = time.monotonic()
            next_probe = now + DEFAULT_TIMEOUT if probe is not None and seconds > DEFAULT_TIMEOUT else None
            self._armed[self._next] = [now + seconds, fd, False, probe, next_probe, False]
            return self._next

    def extend(self, token: int, seconds: float) -> None:
        with self._lock:
            entry = self._armed.get(token)
            if entry and not entry[2]:
                entry[0] = time.monotonic() + seconds

    def disarm(self, token: int) -> bool:
        """Forget the token; True when its deadline had passed (the socket was shut down)."""
        with self._lock:
            entry = self._armed.pop(token, None)
        return bool(entry and entry[2])

    def _run(self):
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self._lock:  # disarm takes the lock too, so a fd is never cut after its owner let go
                for token, entry in self._armed.items():
                    if not entry[2] and (now >= entry[0] or entry[5]):
                        entry[2] = True
                        _shutdown(entry[1])
                    elif entry[4] is not None and now >= entry[4]:
                        entry[4] = None  # one probe at a time
                        threading.Thread(target=self._probe, args=(token, entry[3]), daemon=True).start()

    def _probe(self, token: int, probe) -> None:
        try:
            probe()
        except Exception:  # noqa: BLE001 - any failure means: nobody is answering
            alive = False
        else:
            alive = True
        with self._lock:
            entry = self._armed.get(token)
            if entry is None:
                return
            if alive:
                entry[4] = time.monotonic() + DEFAULT_TIMEOUT
            else:
                entry[5] = True  # cut on the next tick


def _shutdown(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # acts on the socket every copy of the fd shares
    except OSError:
        pass
    finally:
        sock.close()  # closes only the duplicate


_watchdog = _Watchdog()


def current_timeout() -> float:
    """Seconds the next round trip may take: the thread's limit, within its absolute deadline."""
    timeout = getattr(_local, "timeout", None) or PROCESS_TIMEOUT or DEFAULT_TIMEOUT
    deadline = getattr(_local, "deadline", None)
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
    return timeout


@contextmanager
def round_trip_timeout(seconds: float):
    """Let each round trip inside take up to `seconds` (e.g. an analytics query whose server
    statement_timeout is a little shorter)."""
    before = getattr(_local, "timeout", None)
    _local.timeout = seconds
    try:
        yield
    finally:
        _local.timeout = before


@contextmanager
def deadline(seconds: float):
    """Everything inside, taken together, waits for the database at most `seconds`."""
    before = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = before


@contextmanager
def guard(conn):
    """Arm the watchdog for one round trip on `conn`."""
    timeout = current_timeout()
    if timeout <= 0:
        raise DeadlineExceeded("The database did not answer in time.")
    try:
        fd = conn.fileno()
    except (psycopg2.InterfaceError, ValueError):
        yield  # closed: psycopg2 raises its own error
        return
    token = _watchdog.arm(fd, timeout, getattr(conn, "probe", None))
    _local.token = token
    try:
        yield
    except psycopg2.Error as exc:
        if _watchdog.disarm(token):
            raise DeadlineExceeded(f"The database did not answer within {timeout:.0f} s.") from exc
        raise
    finally:
        _local.token = None
        _watchdog.disarm(token)


def still_working() -> None:
    """The current round trip is making progress (COPY sends another chunk): restart its clock."""
    token = getattr(_local, "token", None)
    if token is not None:
        _watchdog.extend(token, current_timeout())


class GuardedCursor(psycopg2.extensions.cursor):
    def execute(self, query, vars=None):
        with guard(self.connection):
            return super().execute(query, vars)

    def executemany(self, query, vars_list):
        with guard(self.connection):
            return super().executemany(query, vars_list)

    def callproc(self, procname, parameters=None):
        with guard(self.connection):
            return super().callproc(procname, parameters)

    def copy_expert(self, sql, file, size=8192):
        with guard(self.connection):
            return super().copy_expert(sql, file, size)


class GuardedConnection(psycopg2.extensions.connection):
    def __init__(self, dsn, *args, **kwargs):
        super().__init__(dsn, *args, **kwargs)
        self._dsn = dsn  # with its password: probe() opens a second connection like this one

    def probe(self) -> None:
        """Return when the server answers SELECT 1 on a new connection within DEFAULT_TIMEOUT;
        raise otherwise. A long query (analytics) can't tell "slow" from "frozen" on its own
        connection; a frozen server answers nobody, a busy one answers this."""
        with deadline(DEFAULT_TIMEOUT):
            conn = psycopg2.connect(self._dsn, connection_factory=GuardedConnection,
                                    cursor_factory=GuardedCursor)
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
            finally:
                conn.close()

    def commit(self):
        try:
            with guard(self):
                return super().commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise CommitOutcomeUnknown(f"The connection failed during COMMIT: {exc}".strip()) from exc

    def rollback(self):
        with guard(self):
            return super().rollback()
