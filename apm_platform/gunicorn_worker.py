"""gunicorn's threaded (gthread) worker with two changes for clients that misbehave.

- A read and write timeout on every client socket (GUNICORN_READ_TIMEOUT). gthread hands a
  connection to a thread once its first bytes arrive, then reads the request blocking: a
  client that sends half its headers, or a body shorter than its Content-Length, and then
  stalls would hold that thread for as long as it keeps the connection open. With the timeout
  the read fails after that many seconds of silence and the thread is free again (Django
  turns a body read that fails into UnreadablePostError: a 400).
- gunicorn's own error responses (request line or headers too long, bad framing) are JSON
  `{"detail": ...}` like every other error of the API, not HTML pages.
"""

import json
import os
import socket
import struct

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


class TimeoutThreadWorker(ThreadWorker):
    def enqueue_req(self, conn):
        if READ_TIMEOUT:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL)
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL)
            except OSError:
                pass  # a socket already gone: gunicorn handles it as before
        super().enqueue_req(conn)


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn.util.write_error, answering JSON instead of an HTML page."""
    detail = f"{reason}: {mesg}" if mesg else f"{reason}."
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error
