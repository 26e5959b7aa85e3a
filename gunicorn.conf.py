"""Gunicorn settings, every one overridable from the environment (see .env.example)."""

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


# Empty means unset (as in .env.example), except GUNICORN_ACCESSLOG, where empty is "off".
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{_int('PORT', 8000)}"
workers = _int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
# Threads, not only processes: a few stalled or slow clients hold a thread each and the rest
# keep serving. Read/write timeouts on client sockets (GUNICORN_READ_TIMEOUT, default 10 s) and
# JSON error pages: apm_platform/gunicorn_worker.py. Each thread keeps its own database
# connection: workers x threads connections at most.
worker_class = "apm_platform.gunicorn_worker.TimeoutThreadWorker"
threads = _int("GUNICORN_THREADS", 8)
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then so a slow leak can never take a node down.
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 200)
# As long as gunicorn allows: a request line or header past these is answered by gunicorn itself
# (400, JSON) before the app sees it. 8190 is the largest request line gunicorn accepts.
limit_request_line = _int("GUNICORN_LIMIT_REQUEST_LINE", 8190)
limit_request_fields = _int("GUNICORN_LIMIT_REQUEST_FIELDS", 200)
limit_request_field_size = _int("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", 16380)
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # empty: no access log
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL") or "info"
# /dev/shm keeps the worker heartbeat off a possibly slow container disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# --- Prometheus multiprocess mode (/metrics counts every worker; observability/metrics.py) -----
# Each worker writes its metrics to files in this directory and a scrape sums them. It must be
# set before a worker imports prometheus_client, hence here. Unset: a fresh directory per server
# (so two servers on one machine never mix their counts), removed when the server stops.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="apm-prometheus-", dir=worker_tmp_dir)
    os.environ["APM_PROMETHEUS_DIR_OWNED"] = "1"  # survives a config reload (HUP)


def on_starting(server):
    """Start from zero: files left by a previous run would be summed into this one's counts."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (its counters stay, so totals never go down)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("APM_PROMETHEUS_DIR_OWNED") == "1":
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
