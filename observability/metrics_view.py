"""GET /metrics: the Prometheus scrape target, and the collectors that read the database at
scrape time (so every worker reports the same, current value).

The instruments that requests record into live in `metrics.py`; under gunicorn every worker
writes them to PROMETHEUS_MULTIPROC_DIR and the scrape here sums them for the whole server.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import prometheus_client
from django.http import HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily

from observability import (
    access,
    db,
    metrics,  # noqa: F401  (registers the instruments before the first scrape)
    retention,
    rollups,
)


class RollupLagCollector:
    """apm_rollup_lag_seconds{relation}: now minus each continuous aggregate's watermark."""

    def collect(self):
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
        # The background refresher's lag: late writes' ranges not yet re-materialized (read
        # around the aggregates meanwhile, so answers stay exact, only a little slower).
        backlog = GaugeMetricFamily("apm_rollup_dirty_ranges",
                                    "Dirty ranges late writes recorded that the refresher has not covered yet.")
        oldest = GaugeMetricFamily("apm_rollup_dirty_oldest_seconds",
                                   "Age of the oldest dirty range waiting for the refresher (0: none).")
        if db.ping() is None and db.rollups_are_continuous():
            count, age = rollups.dirty_backlog()
            backlog.add_metric([], count)
            oldest.add_metric([], age)
        yield backlog
        yield oldest


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
