"""The read path: rollup rows, KPIs and top endpoints.

One code path for every database: the rollups are read through the same relation names and
columns (a continuous aggregate on TimescaleDB, a plain view elsewhere), and the exact p95 is
`percentile_cont(0.95)` on PostgreSQL and the same function registered on SQLite connections
(see `apps.py`).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Aggregate, Count, F, FloatField, Max, Q, QuerySet, Sum
from django.db.models.functions import Cast

from observability import rollups
from observability.filters import ROLLUP_FILTERS
from observability.models import ApiRequest, ApiRequestDaily, ApiRequestHourly

SORT_KEYS = ("hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms", "p95_latency_ms")
ROLLUP_COLUMNS = ("bucket", "service", "endpoint", "hits", "errors", "avg_latency_ms",
                  "max_latency_ms", "p95_latency_ms")


class PercentileCont(Aggregate):
    """percentile_cont(fraction) WITHIN GROUP (ORDER BY expr): continuous, interpolated."""

    function = "percentile_cont"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        # A float we validated, formatted by repr: never text from a client.
        self.fraction = repr(fraction)
        super().__init__(expression, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection,
            template=f"%(function)s({self.fraction}) WITHIN GROUP (ORDER BY %(expressions)s)",
            **extra,
        )

    def as_sqlite(self, compiler, connection, **extra):
        # The two-argument aggregate registered in apps.py.
        return self.as_sql(
            compiler, connection, template=f"%(function)s(%(expressions)s, {self.fraction})", **extra
        )


def _ratio(numerator, denominator):
    return Cast(numerator, FloatField()) / Cast(denominator, FloatField())


# --- /hourly/ and /daily/ -------------------------------------------------------------------


def rollup_rows(*, queryset: QuerySet) -> QuerySet:
    """Rollup rows in contract order (bucket, service, endpoint), with error_rate added."""
    return (
        queryset.annotate(error_rate=_ratio(F("errors"), F("hits")))
        .order_by("bucket", "service", "endpoint")
        .values(*ROLLUP_COLUMNS[:5], "error_rate", *ROLLUP_COLUMNS[5:])
    )


def hourly_queryset() -> QuerySet:
    return ApiRequestHourly.objects.all()


def daily_queryset() -> QuerySet:
    return ApiRequestDaily.objects.all()


# --- Counts: from the hourly rollup where the filters allow, else from the raw table -------


def _series_filter(filters: dict) -> dict:
    return {name: filters[name] for name in ("service", "endpoint") if filters.get(name)}


def _rollup_part(filters: dict, model, lo, hi) -> QuerySet:
    # Served by apirequest_hourly / apirequest_daily (continuous aggregates on TimescaleDB).
    qs = model.objects.filter(**_series_filter(filters))
    if lo is not None:
        qs = qs.filter(bucket__gte=lo)
    if hi is not None:
        qs = qs.filter(bucket__lt=hi)
    return qs


def _raw_edges(filters: dict, edges: list[Q]) -> QuerySet:
    # Served by the (service, endpoint, time) and (time) indexes of the raw table.
    qs = ApiRequest.objects.filter(**_series_filter(filters))
    condition = Q()
    for edge in edges:
        condition |= edge
    return qs.filter(condition) if edges else qs.none()


_RAW_COUNTS = {
    "hits": Count("id"),
    "errors": Count("id", filter=Q(status_code__gte=500)),
    "latency_sum": Sum("latency_ms"),
    "max_latency": Max("latency_ms"),
}
_ROLLUP_COUNTS = {
    "hits": Sum("hits"),
    "errors": Sum("errors"),
    "latency_sum": Sum("latency_sum_ms"),
    "max_latency": Max("max_latency_ms"),
}


def can_use_rollup(used_filters: set[str]) -> bool:
    """True when every filter the client gave is one the hourly rollup can answer."""
    return used_filters <= ROLLUP_FILTERS


def _combine(parts: list[dict]) -> dict:
    hits = sum(p["hits"] or 0 for p in parts)
    maxima = [p["max_latency"] for p in parts if p["max_latency"] is not None]
    return {
        "hits": hits,
        "errors": sum(p["errors"] or 0 for p in parts),
        "latency_sum": sum(p["latency_sum"] or 0.0 for p in parts),
        "max_latency": max(maxima) if maxima else None,
    }


def _shape(counts: dict) -> dict:
    hits = counts["hits"]
    return {
        "hits": hits,
        "errors": counts["errors"],
        "error_rate": counts["errors"] / hits if hits else 0.0,
        "avg_latency_ms": counts["latency_sum"] / hits if hits else None,
        "max_latency_ms": counts["max_latency"] if hits else None,
    }


# --- /kpis/ ---------------------------------------------------------------------------------


def kpis(*, queryset: QuerySet, filters: dict, used_filters: set[str], with_p95: bool) -> dict:
    """hits, errors, error_rate, avg/max/p95 latency and the source of the counts."""
    plan = rollups.plan(filters) if can_use_rollup(used_filters) else None
    if plan is not None:
        pieces, edges = plan
        parts = [_rollup_part(filters, *piece).aggregate(**_ROLLUP_COUNTS) for piece in pieces]
        if edges:
            parts.append(_raw_edges(filters, edges).aggregate(**_RAW_COUNTS))
        counts = _combine(parts)
        source = "hourly"
    else:
        counts = _combine([queryset.order_by().aggregate(**_RAW_COUNTS)])
        source = "raw"
    result = _shape(counts)
    result["p95_latency_ms"] = None
    if with_p95 and result["hits"]:
        # Exact: a percentile can't be rebuilt from hourly percentiles.
        result["p95_latency_ms"] = queryset.order_by().aggregate(
            p95=PercentileCont("latency_ms", 0.95)
        )["p95"]
    result["source"] = source
    return result


# --- /top-endpoints/ ------------------------------------------------------------------------


def _per_series(qs: QuerySet, aggregates: dict) -> dict[tuple[str, str], dict]:
    rows = qs.order_by().values("service", "endpoint").annotate(**aggregates)
    return {(row["service"], row["endpoint"]): row for row in rows}


def top_endpoints(
    *, queryset: QuerySet, filters: dict, used_filters: set[str], sort: str = "hits",
    order: str = "desc", limit: int = 10, with_p95: bool = False,
) -> dict:
    """Series (service, endpoint) ranked by `sort`, ties broken by service then endpoint."""
    if sort not in SORT_KEYS:
        raise ValueError(f"Unknown sort key {sort!r}.")
    with_p95 = with_p95 or sort == "p95_latency_ms"
    plan = rollups.plan(filters) if can_use_rollup(used_filters) else None
    if plan is not None:
        pieces, edges = plan
        parts = [_per_series(_rollup_part(filters, *piece), _ROLLUP_COUNTS) for piece in pieces]
        if edges:
            parts.append(_per_series(_raw_edges(filters, edges), _RAW_COUNTS))
        keys = set().union(*parts)
        series = {key: _combine([p[key] for p in parts if key in p]) for key in keys}
        source = "hourly"
    else:
        series = {key: _combine([row]) for key, row in _per_series(queryset, _RAW_COUNTS).items()}
        source = "raw"
    p95s = {}
    if with_p95:
        p95s = _per_series(queryset, {"p95": PercentileCont("latency_ms", 0.95)})
    results = []
    for (service, endpoint), counts in series.items():
        if not counts["hits"]:
            continue
        row = {"service": service, "endpoint": endpoint, **_shape(counts)}
        if with_p95:
            row["p95_latency_ms"] = p95s.get((service, endpoint), {}).get("p95")
        results.append(row)
    # Python sorts strings by code point on every database, so ties order the same everywhere.
    results.sort(key=lambda r: (r["service"], r["endpoint"]))
    # Stable sorts: the second keeps the tie order of the first, also when reversed.
    results.sort(key=lambda r: (r[sort] is None, r[sort] or 0), reverse=(order == "desc"))
    return {"results": results[:limit], "source": source}


# --- /series/ -------------------------------------------------------------------------------

SERIES_MAX_ROWS = 10_000


def series(*, start: datetime, end: datetime, service: str | None = None,
           max_rows: int = SERIES_MAX_ROWS) -> dict:
    """The (service, endpoint) pairs with events in [start, end), with their hits, for pickers."""
    filters = {"start": start, "end": end, "service": service}
    plan = rollups.plan(filters)
    if plan is not None:
        pieces, edges = plan
        parts = [_per_series(_rollup_part(filters, *piece), {"hits": Sum("hits")}) for piece in pieces]
        if edges:
            parts.append(_per_series(_raw_edges(filters, edges), {"hits": Count("id")}))
        source = "hourly"
    else:
        # Less than one whole hour: the raw events of the window, by the (time) index.
        raw = ApiRequest.objects.filter(time__gte=start, time__lt=end, **_series_filter(filters))
        parts = [_per_series(raw, {"hits": Count("id")})]
        source = "raw"
    hits: dict[tuple[str, str], int] = {}
    for part in parts:
        for key, row in part.items():
            hits[key] = hits.get(key, 0) + (row["hits"] or 0)
    # Code-point order, the same on every database (as for the ties of /top-endpoints/).
    keys = sorted(key for key, count in hits.items() if count)
    results = [{"service": s, "endpoint": e, "hits": hits[(s, e)]} for s, e in keys[:max_rows]]
    return {"results": results, "truncated": len(keys) > max_rows, "source": source}
