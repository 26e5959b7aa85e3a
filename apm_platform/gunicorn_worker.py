"""gunicorn's threaded (gthread) worker with two changes for clients that misbehave, and one
for clients that hold few connections.

- A read and write timeout on every client socket (GUNICORN_READ_TIMEOUT). gthread hands a
  connection to a thread once its first bytes arrive, then reads the request blocking: a
  client that sends half its headers, or a body shorter than its Content-Length, and then
  stalls would hold that thread for as long as it keeps the connection open. With the timeout
  the read fails after that many seconds of silence and the thread is free again (Django
  turns a body read that fails into UnreadablePostError: a 400).
- gunicorn's own error responses (request line or headers too long, bad framing) are JSON
  `{"detail": ...}` like every other error of the API, not HTML pages.
- A worker serving a request lets an idle sibling take a new connection. Every worker watches
  the listening socket and the first to call accept() wins, so a busy one often won: two
  keep-alive connections (an OpenTelemetry collector, a shipper with two senders) then shared
  one process and its GIL while another worker sat idle, and ingest ran at about two thirds
  of its speed (measured with `make bench-ingest`: 65% of raw COPY in such a round, 75-90%
  in rounds where the connections landed apart). Now a busy worker stops listening for
  ACCEPT_PAUSE and then takes whatever no idle sibling took, all of it at once.
"""

import json
import os
import socket
import struct
import time

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker


def _seconds(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


READ_TIMEOUT = _seconds("GUNICORN_READ_TIMEOUT", 10)
_TIMEVAL = struct.pack("ll", READ_TIMEOUT, 0)


# How long a worker serving a request leaves a new connection to an idle sibling. An idle
# worker wakes for it at once (every worker's poller watches the socket); this is the wait a
# new connection pays only when every worker is busy.
ACCEPT_PAUSE = 0.005


class TimeoutThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight = 0  # connections handed to a thread and not yet back (main thread only)
        self.accept_paused_until = 0.0
        self.accept_resumed = False  # the pause just ended: take what still waits

    def enqueue_req(self, conn):
        if READ_TIMEOUT:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL)
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL)
            except OSError:
                pass  # a socket already gone: gunicorn handles it as before
        self.in_flight += 1
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.in_flight -= 1
        super().finish_request(conn, fs)

    def accept(self, listener):
        if self.accept_resumed:
            # No idle sibling took these during the pause: every worker is busy. Take them all
            # now, so the pause is paid once per wake-up, not once per connection.
            while self.alive and self.nr_conns < self.worker_connections:
                before = self.nr_conns
                super().accept(listener)
                if self.nr_conns == before:  # nothing left to accept
                    break
        elif self.in_flight:
            self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
            super().set_accept_enabled(False)
        else:
            super().accept(listener)  # one, then look again (the next may be a sibling's)

    def set_accept_enabled(self, enabled):
        # gunicorn's loop enables accepting whenever it is off and allowed: not during a pause.
        if enabled and self.accept_paused_until:
            return
        if not enabled:
            # gunicorn stops accepting (too many connections, or the worker is stopping): a
            # pause under way must not turn accepting back on when it ends.
            self.accept_paused_until = 0.0
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout):
        if self.accept_paused_until:
            left = self.accept_paused_until - time.monotonic()
            if left > 0:
                timeout = min(timeout, left)
            else:
                # Look once, without waiting, for what still waits: a connection arriving
                # later is a new one, which the next turn treats like any other.
                self.accept_paused_until = 0.0
                if self.alive:
                    self.accept_resumed = True
                    super().set_accept_enabled(True)
                    timeout = 0
        try:
            super().wait_for_and_dispatch_events(timeout)
        finally:
            self.accept_resumed = False


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn.util.write_error, answering JSON instead of an HTML page."""
    detail = f"{reason}: {mesg}" if mesg else f"{reason}."
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error
