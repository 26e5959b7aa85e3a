"""The service's own metrics, served at /metrics in Prometheus text format.

django-prometheus counts requests, responses, latency by view and database errors (its database
backends wrap every query); this module adds what an operator of an APM backend watches: events
accepted, rejected and bytes per ingest endpoint, ingest request duration, rollup refresh
duration, and how far each continuous aggregate lags behind (now minus its watermark).

Under gunicorn every worker is a separate process: with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py
sets one per server) prometheus_client writes each worker's values to files there and the
scrape sums them, so /metrics answers for the whole server, not for the worker that took the
request.
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from datetime import UTC, datetime

import prometheus_client
from django.http import HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

from observability import db

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


class RollupLagCollector:
    """apm_rollup_lag_seconds{relation}: now minus each continuous aggregate's watermark, read
    from the database at scrape time (so every worker reports the same, current value)."""

    def collect(self):
        from observability import retention, rollups

        lag = GaugeMetricFamily("apm_rollup_lag_seconds",
                                "Now minus the continuous aggregate's watermark (buckets after it are "
                                "aggregated from raw events at query time).", labels=["relation"])
        if db.ping() is None:
            now = datetime.now(UTC)
            for agg in retention.continuous_aggregates():
                watermark = rollups.watermark(agg.view)
                if watermark is not None:
                    lag.add_metric([agg.view], (now - watermark).total_seconds())
        yield lag


def exposition() -> bytes:
    """Every metric of the server in Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prometheus_client.REGISTRY  # one process: runserver, tests
    lag = CollectorRegistry(auto_describe=False)
    lag.register(RollupLagCollector())
    return prometheus_client.generate_latest(registry) + prometheus_client.generate_latest(lag)


def metrics_view(request):
    """GET /metrics: the Prometheus scrape target."""
    from observability import access

    # /metrics needs a `read` (or `admin`) key, as every GET does: it tells how much traffic
    # which endpoints take. Prometheus sends the key with `authorization: {credentials: <key>}`.
    if (denied := access.check(request, "read")) is not None:
        return denied
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    if unknown := sorted(set(request.GET) - {"format"}):
        # API.md: a parameter an endpoint does not know is a 400 that names it.
        return JsonResponse({"detail": f"Unknown query parameter(s): {', '.join(unknown)}."}, status=400)
    return HttpResponse(exposition(), content_type=prometheus_client.CONTENT_TYPE_LATEST)
