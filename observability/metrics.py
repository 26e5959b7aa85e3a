"""The service's own metrics, served at /metrics in Prometheus text format.

django-prometheus counts requests, responses, latency by view and database errors (its database
backends wrap every query); this module holds the instruments the write path and the rollups record into: events
accepted, rejected and bytes per ingest endpoint, ingest request duration, rollup refresh
duration. The scrape-time collectors (rollup lag) and the /metrics view itself sit in
`metrics_view.py`, beside what they read, so nothing low in the stack imports them back.

Under gunicorn every worker is a separate process: with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py
sets one per server) prometheus_client writes each worker's values to files there and the
scrape sums them, so /metrics answers for the whole server, not for the worker that took the
request.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

INGEST_EVENTS = Counter(
    "apm_ingest_events_total", "Events received by an ingest endpoint, by outcome (accepted = stored).",
    ["endpoint", "outcome"],
)
INGEST_BYTES = Counter(
    "apm_ingest_bytes_total", "Request body bytes received by an ingest endpoint (after decompression).",
    ["endpoint"],
)
INGEST_REQUESTS = Counter(
    "apm_ingest_requests_total", "Requests to an ingest endpoint, by HTTP status.", ["endpoint", "status"],
)
INGEST_DURATION = Histogram(
    "apm_ingest_request_duration_seconds", "Time to handle one ingest request (parse, validate, store).",
    ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REFRESH_DURATION = Histogram(
    "apm_rollup_refresh_duration_seconds", "Time of one refresh of a continuous aggregate by the service.",
    ["relation"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def record_ingest(*, endpoint: str, accepted: int, rejected: int, nbytes: int) -> None:
    """Count one ingest request's events and bytes (`endpoint`: "/ingest/", "/v1/traces", ...)."""
    if accepted:
        INGEST_EVENTS.labels(endpoint, "accepted").inc(accepted)
    if rejected:
        INGEST_EVENTS.labels(endpoint, "rejected").inc(rejected)
    if nbytes:
        INGEST_BYTES.labels(endpoint).inc(nbytes)


@contextmanager
def ingest_request(endpoint: str):
    """Time an ingest request; the caller sets `outcome["status"]` to the status it answers."""
    outcome = {"status": 500}  # an exception escaping the block is a 500
    began = time.perf_counter()
    try:
        yield outcome
    finally:
        INGEST_DURATION.labels(endpoint).observe(time.perf_counter() - began)
        INGEST_REQUESTS.labels(endpoint, str(outcome["status"])).inc()


def timed_ingest(endpoint: str):
    """Decorate an ingest view: its duration and its answer's status are recorded."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            with ingest_request(endpoint) as outcome:
                response = view(*args, **kwargs)
                outcome["status"] = response.status_code
                return response

        return wrapper

    return decorate


@contextmanager
def refresh_timer(relation: str):
    began = time.perf_counter()
    try:
        yield
    finally:
        REFRESH_DURATION.labels(relation).observe(time.perf_counter() - began)
