"""The read path: rollup rows, KPIs, top endpoints and the time series.

Counts come from the rollups where they are materialized (TimescaleDB), else from one scan of
the raw table (`rollups.fast_rollups`). Percentiles are exact (`percentile_cont` over the raw
events, all four fractions in one pass; on SQLite `sorted_values` (apps.py) sorts the values
once and `Percentiles` interpolates them the same way) or, with
`precision="approx"`, read from the latency histograms within `rollups.MAX_RELATIVE_ERROR`.
Every latency is capped at `rollups.CAP_MS` first, so rows stored before the ingest limit
(up to 1.8e308) can't overflow a sum.
"""

from __future__ import annotations

import bisect
import itertools
import math
from datetime import UTC, datetime

from django.db import connection
from django.db import connection as default_connection
from django.db.models import (
    Aggregate,
    CharField,
    Count,
    DateTimeField,
    F,
    Field,
    FloatField,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import Cast, Trunc

from observability import db, retention, rollups
from observability.errors import RawEventsDropped
from observability.filters import ROLLUP_FILTERS
from observability.models import ApiRequest, ApiRequestDaily, ApiRequestHourly
from observability.query import ReadQuery
from observability.sqlite_functions import percentile_cont, sorted_values_of

FRACTIONS = (0.5, 0.9, 0.95, 0.99)
PERCENTILE_KEYS = ("p50_latency_ms", "p90_latency_ms", "p95_latency_ms", "p99_latency_ms")
SORT_KEYS = ("hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms", *PERCENTILE_KEYS)
PRECISIONS = ("exact", "approx")
INTERVALS = {"minute": rollups.MINUTE, "hour": rollups.HOUR, "day": rollups.DAY}
# /timeseries/ without a start: an hour of minutes, a day of hours, a month of days.
DEFAULT_BUCKETS = {"minute": 60, "hour": 24, "day": 30}
MAX_BUCKETS = 1000
ROLLUP_COLUMNS = ("bucket", "service", "endpoint", "hits", "errors", "avg_latency_ms",
                  "max_latency_ms", "p95_latency_ms")


class _Floats(Field):
    """Percentiles from the database: a float8[] on PostgreSQL; on SQLite the packed sorted
    values of `sorted_values` (apps.py), read here at this field's fractions."""

    def __init__(self, fractions=(), **kwargs):
        self.fractions = tuple(fractions)
        super().__init__(**kwargs)

    def get_internal_type(self):
        return "TextField"

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, list):
            return value
        ordered = sorted_values_of(value)
        return [percentile_cont(ordered, f, presorted=True) for f in self.fractions]


class Percentiles(Aggregate):
    """percentile_cont(ARRAY[fractions]) WITHIN GROUP (ORDER BY expr): every fraction in one sort."""

    function = "percentile_cont"

    def __init__(self, expression, fractions=FRACTIONS, **extra):
        fractions = [float(f) for f in fractions]
        if not all(0.0 <= f <= 1.0 for f in fractions):
            raise ValueError("fractions must be within [0, 1]")
        # Floats we validated, formatted by repr: never text from a client.
        self.fractions = fractions
        # The field carries the fractions to the SQLite converter (also through a subquery).
        super().__init__(expression, output_field=_Floats(fractions), **extra)

    def as_postgresql(self, compiler, connection, **extra):
        array = ", ".join(repr(f) for f in self.fractions)
        return self.as_sql(
            compiler, connection,
            template=f"%(function)s(ARRAY[{array}]::float8[]) WITHIN GROUP (ORDER BY %(expressions)s)",
            **extra,
        )

    def as_sqlite(self, compiler, connection, **extra):
        # The values sorted once by the aggregate registered in apps.py (no Python call per
        # row); _Floats interpolates each fraction as percentile_cont does.
        return self.as_sql(compiler, connection, template="sorted_values(%(expressions)s)", **extra)


def _ratio(numerator, denominator):
    return Cast(numerator, FloatField()) / Cast(denominator, FloatField())


# --- /hourly/ and /daily/ -------------------------------------------------------------------


def rollup_rows(*, queryset: QuerySet, filters: dict, interval: str):
    """Rollup rows in contract order (bucket, service, endpoint), with error_rate added.

    From the rollup where it is materialized; elsewhere from the raw table (`RawRollupRows`).
    """
    if not rollups.fast_rollups() or _dirty_within(filters, rollups.STAGES[INTERVALS[interval]]):
        # A late write's buckets are out of date in the aggregate until the refresher has been:
        # the rows then come from raw events (seconds, usually).
        return RawRollupRows(filters=filters, width=INTERVALS[interval])
    return (
        queryset.annotate(error_rate=_ratio(F("errors"), F("hits")))
        .order_by("bucket", "service", "endpoint")
        .values(*ROLLUP_COLUMNS[:5], "error_rate", *ROLLUP_COLUMNS[5:])
    )


def _dirty_within(filters: dict, below: int) -> bool:
    """A dirty range the refresher has not brought to stage `below` yet lies in the window."""
    start, end = filters.get("start"), filters.get("end")
    return any((start is None or hi > start) and (end is None or lo < end)
               for lo, hi in rollups.dirty_ranges(below=below))


class RawRollupRows:
    """/hourly/ or /daily/ rows computed from the raw table, for the paginator.

    The paginator needs every row's key (to count the rows and slice a page), the figures of
    one page only. Counts for every row come from one grouped scan and the exact p95 (the
    expensive part) only for the rows a page slices out. Where GROUP BY sorts every event
    (`db.groups_by_sorting`: SQLite), that scan keeps to the hits, which the (service,
    endpoint, time) index holds, and the page's query computes the other figures too.
    """

    def __init__(self, *, filters: dict, width):
        self.width = width
        self.raw = ApiRequest.objects.filter(**_series_filter(filters)).order_by()
        try:
            if filters.get("start") is not None:
                self.raw = self.raw.filter(time__gte=rollups.ceil(filters["start"], width))
            if filters.get("end") is not None:
                self.raw = self.raw.filter(time__lt=rollups.ceil(filters["end"], width))
        except OverflowError:
            self.raw = self.raw.none()  # a bucket bound past the end of the calendar holds nothing
        self.narrow = db.groups_by_sorting()
        counts = {"hits": Count("id")} if self.narrow else _raw_counts()
        self.groups = list(
            self.raw.annotate(bucket=rollups.BucketStart("time", width))
            .values("bucket", "service", "endpoint").annotate(**counts)
            .order_by("bucket", "service", "endpoint")
        )

    def __len__(self) -> int:
        return len(self.groups)

    def _page_events(self, groups: list[dict]) -> QuerySet:
        """The events of the page's series and buckets (a superset: every series named, over
        every bucket of the page; the page's rows are picked by key)."""
        lo, hi = min(g["bucket"] for g in groups), max(g["bucket"] for g in groups) + self.width
        services, endpoints = {g["service"] for g in groups}, {g["endpoint"] for g in groups}
        if not self.narrow:
            # Served by the (service, endpoint, time) index.
            return self.raw.filter(time__gte=lo, time__lt=hi, service__in=services, endpoint__in=endpoints)
        # The page's bounds go through unary + (see _top_series_by_hits): SQLite plans this
        # query as it would the grouping of every row with every figure, so each row's sum
        # adds up its events in the same order; the bounds are checked on index entries.
        return self.raw.alias(_t=_unindexed("time", DateTimeField()), _s=_unindexed("service"),
                              _e=_unindexed("endpoint")).filter(
            _t__gte=lo, _t__lt=hi, _s__in=services, _e__in=endpoints)

    def __getitem__(self, index):
        groups = self.groups[index] if isinstance(index, slice) else [self.groups[index]]
        page = {}
        if groups:
            aggregates = {**(_raw_counts() if self.narrow else {}), "p": Percentiles(rollups.capped_latency(), (0.95,))}
            events = self._page_events(groups).annotate(bucket=rollups.BucketStart("time", self.width))
            for row in events.values("bucket", "service", "endpoint").annotate(**aggregates):
                page[(row["bucket"], row["service"], row["endpoint"])] = row
        rows = []
        for g in groups:
            # A row pruned between the two queries keeps its hits and nothing else.
            figures = {"errors": 0, "latency_sum": None, "max_latency": None, "p": None, **g,
                       **page.get((g["bucket"], g["service"], g["endpoint"]), {})}
            shaped = _shape(_combine([figures]))
            rows.append({"bucket": g["bucket"], "service": g["service"], "endpoint": g["endpoint"],
                         "hits": figures["hits"], "errors": figures["errors"], "error_rate": shaped["error_rate"],
                         "avg_latency_ms": shaped["avg_latency_ms"], "max_latency_ms": shaped["max_latency_ms"],
                         "p95_latency_ms": figures["p"][0] if figures["p"] else None})
        return rows if isinstance(index, slice) else rows[0]


def hourly_queryset() -> QuerySet:
    return ApiRequestHourly.objects.all()


def daily_queryset() -> QuerySet:
    return ApiRequestDaily.objects.all()


# --- Pieces of a range: rollup ranges and raw edges ------------------------------------------


def _series_filter(filters: dict) -> dict:
    return {name: filters[name] for name in ("service", "endpoint") if filters.get(name)}


def _rollup_part(filters: dict, model, lo, hi) -> QuerySet:
    # Served by the rollups' (series, bucket) indexes (continuous aggregates on TimescaleDB).
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


def _raw_counts():
    latency = rollups.capped_latency()
    return {
        "hits": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=500)),
        "latency_sum": Sum(latency),
        "max_latency": Max(latency),
    }


_ROLLUP_COUNTS = {
    "hits": Sum("hits"),
    "errors": Sum("errors"),
    "latency_sum": Sum("latency_sum_ms"),
    "max_latency": Max("max_latency_ms"),
}


def can_use_rollup(used_filters: set[str]) -> bool:
    """True when every filter the client gave is one the rollups can answer."""
    return used_filters <= ROLLUP_FILTERS


def require_raw_events(query: ReadQuery, *, with_p95: bool, connection=default_connection) -> None:
    """Raise RawEventsDropped when a KPI or top-endpoints query would read raw events from a
    window whose raw events are gone (exact percentiles, raw-only filters, or an edge that is
    not a whole hour), naming the earliest `start` that can be answered."""
    start = query.start
    try:
        unaligned = start is not None and start != rollups.floor(start, rollups.HOUR)
    except OverflowError:
        unaligned = True
    needs_raw = (with_p95 and query.precision == "exact") or not query.on_rollups or unaligned
    if not needs_raw:
        return
    kept = retention.raw_missing_before(start, connection)
    if kept is None:
        return
    since = kept.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise RawEventsDropped(
        f"Raw events before {since} have been dropped (APM_RETENTION_RAW_DAYS), and this query needs "
        f"them: exact percentiles, a filter the rollups don't have, or a start that is not a whole hour. "
        f"Set start={since} or later, or use with_p95=false with whole-hour bounds and only the "
        "service/endpoint/start/end filters, which the rollups answer for their whole history."
    )


def _plan(filters: dict, used_filters: set[str], family=rollups.COUNTS):
    """The rollup plan for these filters, or None where the raw table answers faster or alone."""
    if not (rollups.fast_rollups() and can_use_rollup(used_filters)):
        return None
    return rollups.plan(filters, family)


def _combine(parts: list[dict]) -> dict:
    hits = sum(p["hits"] or 0 for p in parts)
    maxima = [p["max_latency"] for p in parts if p["max_latency"] is not None]
    return {
        "hits": hits,
        "errors": sum(p["errors"] or 0 for p in parts),
        # fsum: exactly rounded, so the same events give the same average whatever the order
        # of the pieces (a union's rows come in no set order).
        "latency_sum": math.fsum(p["latency_sum"] or 0.0 for p in parts),
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


# --- Percentiles -----------------------------------------------------------------------------


def _exact(values: list[float] | None) -> dict:
    values = values or [None] * len(FRACTIONS)
    return dict(zip(PERCENTILE_KEYS, values, strict=True))


def _bin_count():
    # float8, not sum()'s numeric: exact below 2^53 events and several times cheaper to add up
    # over millions of histogram rows.
    return Sum(Cast("n", FloatField()))


def percentiles_from_bins(parts: list[QuerySet], group: tuple[str, ...], *, with_counts: bool = False
                          ) -> dict[tuple, dict]:
    """percentile_cont's interpolation over the events histograms hold, each at its bin's value.

    `parts` are querysets of (*group, bin, count) rows (histogram pieces and binned raw edges).
    The database adds them up per group and bin and hands each group's bins over as two
    arrays, one row per group; `_percentiles_of_ordered` ranks them here. Ranking in the database
    (running sums in window functions, then the first bin past each rank) cost more than the
    bins' transfer: sorting all 1,000 series of 10M events over 30 days by p95 took 0.70 s
    that way against 0.58 s this way (measured side by side, same bins chosen for every
    series). `with_counts`: the parts also carry errors, latency_sum and max_latency per bin
    (the whole-traffic tiers), and each group's answer gets its counts under "counts".
    """
    if not parts:
        return {}
    # `group` holds column names chosen by this module ("service", "endpoint", "b"), never input.
    extra = ("errors", "latency_sum", "max_latency") if with_counts else ()
    columns = ", ".join(f'"{name}"' for name in (*group, "bin", "count", *extra))
    keys = ", ".join(f'"{name}"' for name in group)
    sqls, params = [], []
    for i, qs in enumerate(parts):
        sql, part_params = qs.order_by().query.sql_with_params()
        sqls.append(f"SELECT {columns} FROM ({sql}) AS part_{i}")
        params.extend(part_params)
    prefix = keys + ", " if group else ""
    sums = (", sum(errors) AS errors, sum(latency_sum) AS latency_sum, max(max_latency) AS max_latency"
            if with_counts else "")
    # The latency sums are floats: added up in bin order, so the answer doesn't hang on a plan.
    totals = ", sum(errors), sum(latency_sum ORDER BY bin), max(max_latency)" if with_counts else ""
    # Counts as float8 (exact below 2^53 events): sum() of a bigint is numeric, several times
    # slower to add up over millions of histogram rows.
    if len(parts) == 1 and not with_counts:
        bins = f"SELECT {prefix}bin, count::float8 AS n FROM parts"  # the one part is grouped already
    else:
        bins = f"SELECT {prefix}bin, sum(count)::float8 AS n{sums} FROM parts GROUP BY {prefix}bin"
    # Both arrays aggregate the same rows in the same order, so they pair up bin for count. The
    # counts travel as int8: psycopg2 reads an int8 array twice as fast as a float8 one.
    query = (f"WITH parts AS ({' UNION ALL '.join(sqls)}), bins AS ({bins})"
             f" SELECT {prefix}array_agg(bin), array_agg(n::int8){totals} FROM bins"
             f"{' GROUP BY ' + keys if group else ''}")
    result = {}
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        # A few hundred groups at a time: each carries all its bins (about 240 per series over
        # a month), which wait as text in libpq's buffer (about 2 KB a series) and become
        # Python lists only here; an answer keeps 4 floats a group.
        while rows := cursor.fetchmany(500):
            for row in rows:
                _rank_group(row, len(group), with_counts, result)
    return result


def _rank_group(row: tuple, width: int, with_counts: bool, result: dict) -> None:
    """One group's row of `percentiles_from_bins`: its percentiles (and counts) into `result`."""
    key, (bins_, counts) = tuple(row[:width]), row[width:width + 2]
    if not bins_:
        return  # no group and no rows: aggregates over nothing give one row of NULLs
    if sorted(bins_) != bins_:  # in the order they were added up: usually ascending already
        bins_, counts = map(list, zip(*sorted(zip(bins_, counts, strict=True)), strict=True))
    result[key] = _percentiles_of_ordered(bins_, counts)
    if with_counts:
        errors, latency_sum, max_latency = row[width + 2:]
        result[key]["counts"] = {"hits": sum(counts), "errors": int(errors),
                                 "latency_sum": latency_sum, "max_latency": max_latency}


def percentiles_of_bins(bins: dict[int, int]) -> dict:
    """percentile_cont's interpolation over {bin: count}, each event at its bin's value."""
    order = sorted(bin_ for bin_, count in bins.items() if count)
    return _percentiles_of_ordered(order, [bins[bin_] for bin_ in order])


def _percentiles_of_ordered(order: list[int], counts: list[int]) -> dict:
    """The same over bins in ascending order and their counts (zero counts are never chosen)."""
    running = list(itertools.accumulate(counts))
    if not running or not running[-1]:
        return _exact(None)
    total = running[-1]
    values = []
    for fraction in FRACTIONS:
        position = fraction * (total - 1)
        below = math.floor(position)
        # The rank r (0-based) lies in the first bin whose running count exceeds r.
        low = order[bisect.bisect_right(running, below)]
        high = order[bisect.bisect_right(running, min(below + 1, total - 1))]
        low, high = rollups.bin_value(low), rollups.bin_value(high)
        values.append(low + (high - low) * (position - below))
    return _exact(values)


PAIRS_MAX = 100


def _pairs(series) -> Q:
    """Rows of exactly these (service, endpoint) pairs, or, past PAIRS_MAX pairs (a condition the
    planner would cost badly), of every service with every endpoint named: a superset, from which
    the caller picks its rows."""
    if len(series) > PAIRS_MAX:
        return Q(service__in={s for s, _ in series}, endpoint__in={e for _, e in series})
    condition = Q()
    for service, endpoint in sorted(series):
        condition |= Q(service=service, endpoint=endpoint)
    return condition


def _histogram_family(filters: dict):
    # Without an endpoint, the per-service histograms hold the same counts in fewer rows.
    return rollups.LATENCY if filters.get("endpoint") else rollups.SERVICE_LATENCY


def _histogram(filters: dict, used_filters: set[str], group: tuple[str, ...] = (), series=None) -> dict:
    """{group values: percentiles} from the histograms over the filtered events.

    `series`, when given, limits the rows to those (service, endpoint) pairs (a superset is
    read: every service with every endpoint named; the caller picks its rows).
    """
    family = _histogram_family(filters) if not group else rollups.LATENCY
    pieces, edges = _plan(filters, used_filters, family)
    parts = [_rollup_part(filters, *piece).values(*group, "bin").annotate(count=_bin_count()) for piece in pieces]
    if edges:
        parts.append(_raw_edges(filters, edges).annotate(bin=rollups.bin_expression())
                     .values(*group, "bin").annotate(count=Count("id")))
    if series is not None:
        if not series:
            return {}
        parts = [qs.filter(_pairs(series)) for qs in parts]
    return percentiles_from_bins(parts, group)


def _answer_precision(precision: str) -> dict:
    return {"precision": precision,
            "max_relative_error": rollups.MAX_RELATIVE_ERROR if precision == "approx" else 0.0}


# --- /kpis/ ---------------------------------------------------------------------------------


# A whole-traffic tier's bins, under the names _raw_counts() gives raw events, so the two unite.
_STATS = {"hits": Sum("n"), "errors": Sum("errors"), "latency_sum": Sum("latency_sum_ms"),
          "max_latency": Max("max_latency_ms")}


def _global_bins(filters: dict, pieces, edges) -> tuple[dict, dict]:
    """(counts, {bin: events}) of all traffic over a plan of the whole-traffic tiers, in one
    query: a few hundred rows per piece travel, each bin's count, errors, latency sum and max."""
    parts = [_rollup_part(filters, *piece).order_by().values("bin").annotate(**_STATS) for piece in pieces]
    if edges:
        parts.append(_raw_edges(filters, edges).order_by().annotate(bin=rollups.bin_expression())
                     .values("bin").annotate(**_raw_counts()))
    rows = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
    rows = list(rows)
    bins: dict[int, int] = {}
    for row in rows:
        bins[row["bin"]] = bins.get(row["bin"], 0) + row["hits"]
    return _combine(rows), bins


def kpis(*, query: ReadQuery, with_p95: bool = True) -> dict:
    """hits, errors, error_rate, avg/max latency, four percentiles and where they came from."""
    require_raw_events(query, with_p95=with_p95)
    queryset, filters, used_filters = query.queryset, query.filters, query.used
    bins = None
    plan = query.global_plan
    if plan is not None:
        # All traffic: counts and bins from the whole-traffic tiers in one small read.
        counts, bins = _global_bins(filters, *plan)
        source = "hourly"
        exact = None
    elif (plan := query.plan) is not None:
        pieces, edges = plan
        parts = [_rollup_part(filters, *piece).aggregate(**_ROLLUP_COUNTS) for piece in pieces]
        if edges:
            parts.append(_raw_edges(filters, edges).aggregate(**_raw_counts()))
        counts = _combine(parts)
        source = "hourly"
        exact = None
    else:
        # One scan of the raw table for the counts and, when wanted, the exact percentiles.
        aggregates = {**_raw_counts(), **({"p": Percentiles(rollups.capped_latency())} if with_p95 else {})}
        counts = queryset.order_by().aggregate(**aggregates)
        exact = counts.pop("p", None)
        counts = _combine([counts])
        source = "raw"
    result = _shape(counts)
    precision = query.answered_precision
    result.update(_exact(None))
    if with_p95 and result["hits"]:
        if precision == "approx" and bins is not None:
            result.update(percentiles_of_bins(bins))
        elif precision == "approx":
            result.update(_histogram(filters, used_filters).get((), _exact(None)))
        elif exact is not None:
            result.update(_exact(exact))
        else:
            # Exact: a percentile can't be rebuilt from hourly percentiles.
            result.update(_exact(queryset.order_by().aggregate(p=Percentiles(rollups.capped_latency()))["p"]))
    result.update(_answer_precision(precision))
    result["source"] = source
    return result


# --- /top-endpoints/ ------------------------------------------------------------------------


def _per_series(qs: QuerySet, aggregates: dict) -> dict[tuple[str, str], dict]:
    rows = qs.order_by().values("service", "endpoint").annotate(**aggregates)
    return {(row["service"], row["endpoint"]): row for row in rows}


def _exact_per_series(queryset: QuerySet, series) -> dict[tuple[str, str], dict]:
    if series is not None:
        if not series:
            return {}
        queryset = queryset.filter(_pairs(series))
    rows = _per_series(queryset, {"p": Percentiles(rollups.capped_latency())})
    return {key: _exact(row["p"]) for key, row in rows.items()}


def _unindexed(column: str, output_field: Field | None = None) -> Func:
    """The column through SQLite's unary +: the same value, but no index is chosen for it."""
    return Func(F(column), template="(+%(expressions)s)", output_field=output_field or CharField())


def _top_series_by_hits(queryset: QuerySet, *, order: str, limit: int, with_p95: bool) -> tuple[dict, dict | None]:
    """The counts (and exact percentiles) of the `limit` series with the most (or fewest) hits.

    For databases that group by sorting (`db.groups_by_sorting`): grouping every event with
    its status and latency sorts them all (about 200 ms for 200,000 on SQLite), while the
    hits alone come from the (service, endpoint, time) index without reading the table, and
    the other columns are then read for the chosen series only, in one query with their
    percentiles. Ties rank as in top_endpoints: by service, then endpoint, in code points.
    """
    hits = {key: row["hits"] for key, row in _per_series(queryset, {"hits": Count("id")}).items() if row["hits"]}
    keys = sorted(hits)
    keys.sort(key=hits.__getitem__, reverse=(order == "desc"))  # stable: ties keep (service, endpoint)
    chosen = set(keys[:limit])
    if not chosen:
        return {}, {}
    aggregates = {**_raw_counts(), **({"p": Percentiles(rollups.capped_latency())} if with_p95 else {})}
    # The series test goes through `_unindexed`, so SQLite plans this query as the one grouping
    # every series would be planned: the same index visits each series' events in the same
    # order, and the float sums (avg_latency_ms) come out the same to the last bit. It checks
    # the series on the index entries and reads the table for the chosen ones only. A superset
    # (every service with every endpoint named) is read; only the chosen series are kept.
    narrowed = queryset.alias(_s=_unindexed("service"), _e=_unindexed("endpoint")).filter(
        _s__in={s for s, _ in chosen}, _e__in={e for _, e in chosen})
    rows = _per_series(narrowed, aggregates)
    chosen &= rows.keys()  # a series pruned between the two queries is left out
    series = {key: _combine([rows[key]]) for key in chosen}
    return series, ({key: _exact(rows[key]["p"]) for key in chosen} if with_p95 else None)


def top_endpoints(*, query: ReadQuery, sort: str = "hits", order: str = "desc", limit: int = 10,
                  with_p95: bool = False) -> dict:
    """Series (service, endpoint) ranked by `sort`, ties broken by service then endpoint."""
    if sort not in SORT_KEYS:
        raise ValueError(f"Unknown sort key {sort!r}.")
    # The guard as the API has always applied it: percentiles wanted, or sorted by p95.
    require_raw_events(query, with_p95=with_p95 or sort == "p95_latency_ms")
    queryset, filters, used_filters = query.queryset, query.filters, query.used
    by_percentile = sort in PERCENTILE_KEYS
    with_p95 = with_p95 or by_percentile
    exact = None  # {series: percentiles} where the counts' query computed them too
    plan = query.plan
    if plan is not None:
        pieces, edges = plan
        parts = [_per_series(_rollup_part(filters, *piece), _ROLLUP_COUNTS) for piece in pieces]
        if edges:
            parts.append(_per_series(_raw_edges(filters, edges), _raw_counts()))
        keys = set().union(*parts)
        series = {key: _combine([p[key] for p in parts if key in p]) for key in keys}
        source = "hourly"
    elif sort == "hits" and db.groups_by_sorting():
        series, exact = _top_series_by_hits(queryset, order=order, limit=limit, with_p95=with_p95)
        source = "raw"
    else:
        series = {key: _combine([row]) for key, row in _per_series(queryset, _raw_counts()).items()}
        source = "raw"
    precision = query.answered_precision
    if precision == "approx" and by_percentile and not any(
            piece[0] is rollups.COUNTS.daily.model for piece in plan[0]):
        # Every series' percentiles from hours only: the hourly histograms of 1,000 series
        # hold about as many rows as there are events, and ranking bins costs more than
        # percentile_cont over the events (24 h of 10M/30 d: 0.8 s against 0.24 s). Exact
        # is then both faster and better, and the answer says so.
        precision = "exact"
    results = [{"service": s, "endpoint": e, **_shape(counts)}
               for (s, e), counts in series.items() if counts["hits"]]

    def rank(rows):
        # Python sorts strings by code point on every database, so ties order the same everywhere.
        rows.sort(key=lambda r: (r["service"], r["endpoint"]))
        # Stable sorts: the second keeps the tie order of the first, also when reversed.
        rows.sort(key=lambda r: (r[sort] is None, r[sort] or 0), reverse=(order == "desc"))
        return rows[:limit]

    if not by_percentile:
        results = rank(results)  # percentiles are needed only for the rows returned
    if with_p95:
        wanted = None if by_percentile else {(r["service"], r["endpoint"]) for r in results}
        if precision == "approx":
            values = _histogram(filters, used_filters, ("service", "endpoint"), wanted)
        elif exact is not None:
            values = exact
        else:
            values = _exact_per_series(queryset, wanted)
        for row in results:
            row.update(values.get((row["service"], row["endpoint"])) or _exact(None))
    if by_percentile:
        results = rank(results)
    return {"results": results, **_answer_precision(precision), "source": source}


# --- /timeseries/ ---------------------------------------------------------------------------


def current_time() -> datetime:
    """Now, read once per /timeseries/ request: its default window and its `partial` bucket."""
    return datetime.now(UTC)


def timeseries_window(interval: str, start: datetime | None, end: datetime | None,
                      now: datetime | None = None) -> tuple[datetime, datetime]:
    """The first and the end bucket of a request: defaults, alignment and the size limit.

    Raises ValueError with a message naming the parameter at fault.
    """
    width = INTERVALS[interval]
    try:
        if end is None:
            end = rollups.floor(now or current_time(), width) + width
        else:
            end = rollups.ceil(end, width)
        if start is None:
            start = end - DEFAULT_BUCKETS[interval] * width
        else:
            start = rollups.ceil(start, width)
    except OverflowError:
        raise ValueError("start/end: out of the supported range of dates.") from None
    if start > end:
        raise ValueError("start: must not be after end.")
    if (end - start) // width > MAX_BUCKETS:
        raise ValueError(f"start: at most {MAX_BUCKETS} {interval}s per request; narrow the window.")
    return start, end


def _bucketed(filters: dict, piece: tuple, interval: str) -> tuple[QuerySet, bool]:
    """One piece (model, lo, hi, regroup) of `rollups.bucket_plan` with each row's bucket as
    `b`, and whether it is raw events (grouped by `BucketStart`) rather than rollup rows."""
    model, lo, hi, regroup = piece
    if model is ApiRequest:
        # Served by the (service, endpoint, time) and (time) indexes of the raw table.
        raw = ApiRequest.objects.filter(**_series_filter(filters), time__gte=lo, time__lt=hi).order_by()
        return raw.annotate(b=rollups.BucketStart("time", INTERVALS[interval])), True
    qs = _rollup_part(filters, model, lo, hi)
    return (qs.annotate(b=Trunc("bucket", interval, tzinfo=UTC)) if regroup else qs.annotate(b=F("bucket"))), False


def _timeseries_rows(rows: dict, percentiles: dict, width, now: datetime, with_p95: bool = True) -> list[dict]:
    """The result rows, by bucket: buckets without events left out, and `partial` on the one
    that holds `now` (still filling)."""
    results = []
    for bucket in sorted(rows, key=_utc):
        counts = _combine([rows[bucket]])
        if not counts["hits"]:
            continue
        start = _utc(bucket)
        results.append({"bucket": start, **_shape(counts),
                        **((with_p95 and percentiles.get(bucket)) or _exact(None)),
                        "partial": start <= now < start + width})
    return results


def timeseries(*, interval: str, start: datetime | None = None, end: datetime | None = None,
               service: str = "", endpoint: str = "", with_p95: bool = True,
               precision: str = "exact", now: datetime | None = None) -> dict:
    """One row per bucket with events: counts, avg/max, four percentiles and `partial`.

    `now` is the request's time (`current_time`), for the default window and `partial`.
    """
    width = INTERVALS[interval]
    now = now or current_time()
    start, end = timeseries_window(interval, start, end, now)
    query = ReadQuery.of_series(start=start, end=end, service=service, endpoint=endpoint, precision=precision)
    filters, raw = query.filters, query.queryset.order_by()
    truncated = rollups.BucketStart("time", width)
    if query.is_global:
        # Minutes: approx wherever asked, as the whole-traffic minute tier keeps bins (the
        # counts family's plan, which `answered_precision` consults, needs a whole hour).
        answered = precision if width == rollups.MINUTE else query.answered_precision
        return _global_timeseries(interval, start, end, with_p95, answered, now)
    # Minutes: as asked where the minute tiers answer (checked below), as for all traffic.
    asked = precision
    precision = query.answered_precision
    if query.rollups_answer:
        rows: dict[datetime, dict] = {}
        read_rollups = False
        for piece in rollups.bucket_plan(width, start, end):
            qs, is_raw = _bucketed(filters, piece, interval)
            read_rollups |= not is_raw
            for row in qs.values("b").annotate(**(_raw_counts() if is_raw else _ROLLUP_COUNTS)):
                # Around a dirty range one bucket comes from several pieces.
                bucket = _utc(row.pop("b"))
                rows[bucket] = _combine([rows[bucket], row]) if bucket in rows else row
        source = "hourly" if read_rollups else "raw"
        if width == rollups.MINUTE:
            # Approx where a histogram family keeps the minutes (the series' minute tiers, 0010);
            # elsewhere the minutes' percentiles come from the raw events they count, exactly.
            histograms = rollups.bucket_plan(width, start, end, _histogram_family(filters))
            precision = asked if rollups.has_histograms() else "exact"
            if precision == "approx" and all(piece[0] is ApiRequest for piece in histograms):
                precision = "exact"
    else:
        rows = {row.pop("b"): row for row in
                raw.annotate(b=truncated).values("b").annotate(**_raw_counts())}
        source = "raw"
    percentiles: dict[datetime, dict] = {}
    if with_p95 and rows:
        if precision == "approx":
            parts = []
            for piece in rollups.bucket_plan(width, start, end, _histogram_family(filters)):
                qs, is_raw = _bucketed(filters, piece, interval)
                if is_raw:
                    qs = (qs.annotate(bin=rollups.bin_expression()).values("b", "bin")
                          .annotate(count=Count("id")))
                else:
                    qs = qs.values("b", "bin").annotate(count=_bin_count())
                parts.append(qs)
            # Raw rows: a day regrouped from hours comes back as a naive (UTC) timestamp.
            percentiles = {_utc(key[0]): value for key, value in percentiles_from_bins(parts, ("b",)).items()}
        else:
            percentiles = {row["b"]: _exact(row["p"]) for row in
                           raw.annotate(b=truncated).values("b").annotate(p=Percentiles(rollups.capped_latency()))}
    return {"interval": interval, **_answer_precision(precision), "source": source,
            "results": _timeseries_rows(rows, percentiles, width, now)}


def _global_timeseries(interval: str, start: datetime, end: datetime, with_p95: bool, precision: str,
                       now: datetime) -> dict:
    """/timeseries/ of all traffic from the whole-traffic tiers.

    Hours the per-hour aggregate has materialized come with their counts and exact percentiles
    (720 rows for a month); the rest, and days, from the bins of the whole-traffic tiers (the
    fine tier past the hourly watermark), approx, or exact from raw events with `exact`.
    Minutes come from the bins of the minute tier over the days it keeps, from raw events
    (binned alike) before them.
    """
    width = INTERVALS[interval]
    rows: dict[datetime, dict] = {}
    percentiles: dict[datetime, dict] = {}
    lo = start
    read_rollups = False
    if width == rollups.HOUR:
        mark = rollups.cutoff(rollups.GLOBAL_PERCENTILES.relation)
        hi = min(end, mark) if mark is not None else start
        # Hours a late write touched are out of date there: from the first of them on, the bins.
        for dirty_lo, dirty_hi in rollups.dirty_ranges(below=rollups.stage_of(rollups.GLOBAL_PERCENTILES)):
            if dirty_hi > start and dirty_lo < hi:
                hi = max(start, rollups.floor(dirty_lo, rollups.HOUR))
                break
        if start < hi:
            for row in (rollups.GLOBAL_PERCENTILES.model.objects.filter(bucket__gte=start, bucket__lt=hi)
                        .values("bucket", "hits", "errors", "latency_sum_ms", "max_latency_ms", "percentiles")):
                bucket = row["bucket"]
                rows[bucket] = {"hits": row["hits"], "errors": row["errors"],
                                "latency_sum": row["latency_sum_ms"], "max_latency": row["max_latency_ms"]}
                percentiles[bucket] = _exact(row["percentiles"])
            lo = hi
        read_rollups = True
    if lo < end:
        parts = []
        for piece in rollups.bucket_plan(width, lo, end, rollups.GLOBAL):
            qs, is_raw = _bucketed({}, piece, interval)
            read_rollups |= not is_raw
            if is_raw:
                counts = {"count": Count("id"), **_raw_counts()}
                del counts["hits"]
                qs = qs.annotate(bin=rollups.bin_expression()).values("b", "bin").annotate(**counts)
            else:
                qs = qs.values("b", "bin").annotate(count=Sum("n"), errors=Sum("errors"),
                                                    latency_sum=Sum("latency_sum_ms"),
                                                    max_latency=Max("max_latency_ms"))
            parts.append(qs)
        for key, value in percentiles_from_bins(parts, ("b",), with_counts=True).items():
            bucket = _utc(key[0])
            rows[bucket] = value.pop("counts")
            percentiles[bucket] = value
        if with_p95 and precision == "exact":
            raw = ApiRequest.objects.filter(time__gte=lo, time__lt=end).order_by()
            for row in (raw.annotate(b=rollups.BucketStart("time", width)).values("b")
                        .annotate(p=Percentiles(rollups.capped_latency()))):
                percentiles[_utc(row["b"])] = _exact(row["p"])
    return {"interval": interval, **_answer_precision(precision), "source": "hourly" if read_rollups else "raw",
            "results": _timeseries_rows(rows, percentiles, width, now, with_p95)}


def _utc(value) -> datetime:
    # SQLite hands back naive datetimes from Trunc; every bucket is UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- /series/ -------------------------------------------------------------------------------

SERIES_MAX_ROWS = 10_000


def series(*, start: datetime, end: datetime, service: str | None = None,
           max_rows: int = SERIES_MAX_ROWS) -> dict:
    """The (service, endpoint) pairs with events in [start, end), with their hits, for pickers."""
    query = ReadQuery.of_series(start=start, end=end, service=service)
    filters = query.filters
    plan = query.plan
    if plan is not None:
        pieces, edges = plan
        parts = [_per_series(_rollup_part(filters, *piece), {"hits": Sum("hits")}) for piece in pieces]
        if edges:
            parts.append(_per_series(_raw_edges(filters, edges), {"hits": Count("id")}))
        source = "hourly"
    else:
        # Less than one whole hour, or rollups that are plain views: the raw events of the
        # window, by the (time) index.
        parts = [_per_series(query.queryset, {"hits": Count("id")})]
        source = "raw"
    hits: dict[tuple[str, str], int] = {}
    for part in parts:
        for key, row in part.items():
            hits[key] = hits.get(key, 0) + (row["hits"] or 0)
    # Code-point order, the same on every database (as for the ties of /top-endpoints/).
    keys = sorted(key for key, count in hits.items() if count)
    results = [{"service": s, "endpoint": e, "hits": hits[(s, e)]} for s, e in keys[:max_rows]]
    return {"results": results, "truncated": len(keys) > max_rows, "source": source}
