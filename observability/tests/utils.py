"""Helpers that build events and post them, shared by every test module."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

from django.test import TestCase, TransactionTestCase

from observability import db

BASE_TIME = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
INGEST_URL = "/api/requests/ingest/"
LIST_URL = "/api/requests/"


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def make_event(**overrides) -> dict:
    """One valid event as a client would send it (JSON-ready)."""
    event = {
        "time": iso(BASE_TIME),
        "service": "checkout",
        "endpoint": "/orders/{id}",
        "method": "GET",
        "status_code": 200,
        "latency_ms": 12.5,
        "trace_id": "trace-0001",
        "user_ref": "user-1",
    }
    event.update(overrides)
    if isinstance(event["time"], datetime):
        event["time"] = iso(event["time"])
    return event


def make_events(n: int, *, seed: int = 7, start: datetime = BASE_TIME,
                span: timedelta = timedelta(hours=6), **overrides) -> list[dict]:
    """`n` valid, varied events spread over [start, start + span), reproducible by `seed`."""
    rng = random.Random(seed)
    services = ["checkout", "search", "auth"]
    endpoints = ["/orders/{id}", "/cart", "/login", "/items"]
    methods = ["GET", "POST", "PUT", "DELETE"]
    statuses = [200, 200, 200, 201, 204, 404, 500, 503]
    seconds = int(span.total_seconds())
    events = []
    for i in range(n):
        fields = {
            "time": start + timedelta(seconds=rng.randrange(seconds), microseconds=rng.randrange(10**6)),
            "service": rng.choice(services),
            "endpoint": rng.choice(endpoints),
            "method": rng.choice(methods),
            "status_code": rng.choice(statuses),
            "latency_ms": round(rng.lognormvariate(3, 0.8), 3),
            "trace_id": f"trace-{i:05d}",
            "user_ref": f"user-{rng.randrange(50)}",
        }
        events.append(make_event(**{**fields, **overrides}))
    return events


def post_ingest(client, payload, *, strict: bool | None = None, wrap: bool = False, **extra):
    """POST a batch to the ingest endpoint; `wrap` sends {"events": [...]}."""
    body = {"events": payload} if wrap else payload
    url = INGEST_URL if strict is None else f"{INGEST_URL}?strict={'true' if strict else 'false'}"
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, content_type=extra.pop("content_type", "application/json"),
                       **extra)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- Independent reference computations (not the code under test) ---------------------------


def p95(values: list[float]) -> float | None:
    """PostgreSQL's percentile_cont(0.95): linear interpolation between closest ranks."""
    return percentile(values, 0.95)


def percentile(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont(fraction): linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    lower = math.floor(rank)
    upper = math.ceil(rank)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (rank - lower)


def summarize(events: list[dict]) -> dict:
    """hits, errors, error_rate, avg/max/p95 latency of client-side events."""
    latencies = [float(e["latency_ms"]) for e in events]
    hits = len(events)
    errors = sum(1 for e in events if int(e["status_code"]) >= 500)
    return {
        "hits": hits,
        "errors": errors,
        "error_rate": errors / hits if hits else 0.0,
        "avg_latency_ms": sum(latencies) / hits if hits else None,
        "max_latency_ms": max(latencies) if hits else None,
        "p95_latency_ms": p95(latencies),
    }


PERCENTILES = {"p50_latency_ms": 0.5, "p90_latency_ms": 0.9, "p95_latency_ms": 0.95, "p99_latency_ms": 0.99}


def summarize_all(events: list[dict]) -> dict:
    """`summarize` plus p50, p90 and p99, all exact as percentile_cont computes them."""
    latencies = [float(e["latency_ms"]) for e in events]
    return {**summarize(events), **{key: percentile(latencies, f) for key, f in PERCENTILES.items()}}


def fast_source() -> str:
    """The `source` of an answer the rollups can serve: "hourly" where they are materialized."""
    return "hourly" if db.rollups_are_continuous() else "raw"


def floor_to(value: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    step = int(width.total_seconds())
    return epoch + timedelta(seconds=int((value - epoch).total_seconds()) // step * step)


# --- Database capabilities for skips --------------------------------------------------------


def skip_unless_timescale(testcase, reason: str) -> None:
    """Skip the running test unless the rollups are TimescaleDB continuous aggregates."""
    if not db.rollups_are_continuous():
        testcase.skipTest(f"needs TimescaleDB continuous aggregates ({db.describe()} has none): {reason}")


# --- HTTP tests and credentials -------------------------------------------------------------
# Every HTTP test derives from these so that, once access control is enforced, one place gives
# the test client a credential (an admin key by default) instead of every test module.


class ApiTestCase(TestCase):
    """A TestCase whose client speaks to the API as an admin."""


class ApiTransactionTestCase(TransactionTestCase):
    """A TransactionTestCase whose client speaks to the API as an admin."""


def api_key_headers(scope: str = "admin") -> dict:
    """Headers that carry a valid credential of `scope` for a live server (requests/urllib).

    Empty until API keys exist; then it creates a key in the default database and returns
    {"Authorization": "Bearer <key>"}.
    """
    return {}
