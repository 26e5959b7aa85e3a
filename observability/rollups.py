"""Everything about the rollups: the catalogue, bucket arithmetic, watermarks, refresh, planning.

Adding a rollup is one edit here (plus the migration that builds it). The read path
(`analytics.py`), the write path (`ingest.py`), the management commands and the benchmarks ask
this module which relation serves a range and how fresh it is; retention and compression
policies can walk `CATALOGUE` to find every relation and its width.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.models import Case, DateTimeField, F, FloatField, Func, IntegerField, Q, Value, When
from django.db.models.functions import Cast, Floor, Least, Ln

from observability import db, metrics
from observability.constants import DAY, EPOCH, FINE_WINDOW_DAYS, HOUR, MAX_LATENCY_MS, MINUTE, TIER_SETTINGS
from observability.models import (
    ApiRequest,
    ApiRequestDaily,
    ApiRequestHourly,
    ApiRequestMinute,
    GlobalLatencyDaily,
    GlobalLatencyHourly,
    GlobalLatencyMinute,
    GlobalPercentilesHourly,
    LatencyDaily,
    LatencyHourly,
    LatencyMinute,
    ServiceLatencyDaily,
    ServiceLatencyHourly,
    ServiceLatencyMinute,
)

logger = logging.getLogger(__name__)
RAW = ApiRequest._meta.db_table


# --- Tiers and horizons: how long each kind of rollup keeps its data ---------------------------


def tier_for(width: timedelta) -> str:
    """The retention tier of a rollup with buckets of `width`."""
    if width < HOUR:
        return "fine"
    if width < DAY:
        return "hourly"
    return "daily"


def retention_days(tier: str) -> int:
    """Days `tier` keeps its data; 0 is forever."""
    return getattr(settings, TIER_SETTINGS[tier])


def raw_horizon(now: datetime | None = None) -> datetime | None:
    """The oldest time a raw event is kept for, or None when raw events are kept forever."""
    days = retention_days("raw")
    if not days:
        return None
    return (now or datetime.now(UTC)) - timedelta(days=days)


def too_old(when: datetime, horizon: datetime | None) -> str | None:
    """The per-event error for an event older than the raw retention, else None.

    Ingest calls this with `raw_horizon()` computed once per batch: an event that would be
    deleted by the next prune (or that lands in a dropped chunk's range, which a refresh would
    then erase from the rollups) is refused on every database alike, with this message.
    """
    if horizon is None or when >= horizon:
        return None
    return (f"Older than the raw retention: events before {horizon.isoformat(timespec='seconds')} "
            f"are not stored (APM_RETENTION_RAW_DAYS={retention_days('raw')}).")


def bound_refresh_start(start: datetime | None, now: datetime | None = None) -> datetime | None:
    """`start` moved up to the raw horizon: a refresh must never cover dropped raw chunks."""
    horizon = raw_horizon(now)
    if horizon is None:
        return start
    return horizon if start is None or start < horizon else start


@dataclass(frozen=True)
class Refresh:
    """A continuous aggregate's refresh policy: materialize up to now - end_offset, every schedule."""

    end_offset: timedelta
    schedule: timedelta


@dataclass(frozen=True)
class Rollup:
    """One relation of the catalogue.

    `width` is the bucket width (None for the raw table); `series` the columns it groups by
    besides the bucket; `source` the relation it is built from; `refresh` its policy where it is a
    continuous aggregate on TimescaleDB (elsewhere every rollup is a plain view).
    """

    relation: str
    kind: str  # "raw" | "counts" | "histogram" | "stats" (a histogram with counts per bin) | "percentiles"
    width: timedelta | None
    series: tuple[str, ...]
    source: str | None
    model: type | None
    refresh: Refresh | None
    # Refreshed (and kept exact for late data) only over this much of the recent past; None:
    # all history. The fine tier's: it is read only for the newest hour or so.
    window: timedelta | None = None
    # Chunks converted to columnstore this long after they end, whatever APM_COMPRESS_AFTER_DAYS
    # says (retention.apply_policies keeps the policy): the read path counts on it for speed.
    columnstore_after: timedelta | None = None


# The fine tiers' policy and window (migrations 0006, 0008, 0010): every 15 s up to 15 s ago,
# over the last FINE_WINDOW_DAYS only.
_FINE_REFRESH = Refresh(timedelta(seconds=15), timedelta(seconds=15))
_FINE_WINDOW = timedelta(days=FINE_WINDOW_DAYS)

CATALOGUE: tuple[Rollup, ...] = (
    Rollup(RAW, "raw", None, ("service", "endpoint"), None, ApiRequest, None),
    # The fine tiers of the series (TimescaleDB only, 0010): read only past their hourly
    # sibling's watermark, so a service- or endpoint-filtered read aggregates at most a minute
    # or two of raw events at any ingest rate. Each comes before its hourly sibling, as the
    # whole-traffic one does; all are built on the raw table.
    Rollup("apirequest_minute", "counts", MINUTE, ("service", "endpoint"), RAW, ApiRequestMinute,
           _FINE_REFRESH, window=_FINE_WINDOW),
    Rollup("apirequest_latency_minute", "histogram", MINUTE, ("service", "endpoint"), RAW, LatencyMinute,
           _FINE_REFRESH, window=_FINE_WINDOW),
    Rollup("apirequest_service_latency_minute", "histogram", MINUTE, ("service",), RAW, ServiceLatencyMinute,
           _FINE_REFRESH, window=_FINE_WINDOW),
    # Exact per-bucket p95 (the contract's /hourly/ and /daily/ rows): both read raw events.
    Rollup("apirequest_hourly", "counts", HOUR, ("service", "endpoint"), RAW, ApiRequestHourly,
           Refresh(HOUR, timedelta(minutes=5))),
    Rollup("apirequest_daily", "counts", DAY, ("service", "endpoint"), RAW, ApiRequestDaily,
           Refresh(DAY, HOUR)),
    # Latency histograms (TimescaleDB only: elsewhere approx percentiles are computed exactly).
    # The daily ones are built on the hourly ones, so they come after them: refreshes follow
    # catalogue order.
    Rollup("apirequest_latency_hourly", "histogram", HOUR, ("service", "endpoint"), RAW, LatencyHourly,
           Refresh(HOUR, timedelta(minutes=5))),
    Rollup("apirequest_service_latency_hourly", "histogram", HOUR, ("service",), RAW, ServiceLatencyHourly,
           Refresh(HOUR, timedelta(minutes=5))),
    # Columnstore, text series columns, read as materialized (migration 0007): ranking 1,000
    # series by a percentile over a month groups ~3M of its rows, which TimescaleDB vectorizes.
    Rollup("apirequest_latency_daily", "histogram", DAY, ("service", "endpoint"), "apirequest_latency_hourly",
           LatencyDaily, Refresh(HOUR, HOUR), columnstore_after=DAY),
    Rollup("apirequest_service_latency_daily", "histogram", DAY, ("service",),
           "apirequest_service_latency_hourly", ServiceLatencyDaily, Refresh(DAY, HOUR)),
    # All traffic by latency bin, with the bin's errors, latency sum and max (TimescaleDB only):
    # the KPIs and time series of all traffic in one small read. The minute one is the fine
    # tier: read only past the hourly one's watermark, so the raw tail stays a few minutes.
    Rollup("apirequest_global_minute", "stats", MINUTE, (), RAW, GlobalLatencyMinute,
           _FINE_REFRESH, window=_FINE_WINDOW),
    Rollup("apirequest_global_hourly", "stats", HOUR, (), RAW, GlobalLatencyHourly,
           Refresh(timedelta(0), timedelta(minutes=5))),
    Rollup("apirequest_global_daily", "stats", DAY, (), "apirequest_global_hourly", GlobalLatencyDaily,
           Refresh(HOUR, HOUR)),
    # Per hour of all traffic, counts and the exact four percentiles: a month of hourly points
    # is 720 rows, where the bins would be 720 × ~300 and a window over them.
    Rollup("apirequest_global_percentiles_hourly", "percentiles", HOUR, (), RAW, GlobalPercentilesHourly,
           Refresh(timedelta(0), timedelta(minutes=5))),
)
BY_RELATION = {rollup.relation: rollup for rollup in CATALOGUE}


def aggregates() -> tuple[Rollup, ...]:
    """Every rollup built over the raw events (everything in the catalogue but the raw table)."""
    return tuple(rollup for rollup in CATALOGUE if rollup.kind != "raw")


@dataclass(frozen=True)
class Family:
    """An hourly rollup, the daily one that serves whole days of the same series, and maybe a
    fine one that serves what the hourly one has not materialized yet."""

    hourly: Rollup
    daily: Rollup
    fine: Rollup | None = None


COUNTS = Family(BY_RELATION["apirequest_hourly"], BY_RELATION["apirequest_daily"],
                BY_RELATION["apirequest_minute"])
LATENCY = Family(BY_RELATION["apirequest_latency_hourly"], BY_RELATION["apirequest_latency_daily"],
                 BY_RELATION["apirequest_latency_minute"])
SERVICE_LATENCY = Family(BY_RELATION["apirequest_service_latency_hourly"],
                         BY_RELATION["apirequest_service_latency_daily"],
                         BY_RELATION["apirequest_service_latency_minute"])
GLOBAL = Family(BY_RELATION["apirequest_global_hourly"], BY_RELATION["apirequest_global_daily"],
                BY_RELATION["apirequest_global_minute"])
GLOBAL_PERCENTILES = BY_RELATION["apirequest_global_percentiles_hourly"]


def fast_rollups() -> bool:
    """Whether reading the rollups beats reading raw: only where they are materialized.

    Elsewhere (PostgreSQL without TimescaleDB, SQLite) they are plain views over the raw
    table, and a view that groups by hour costs more than the raw scan it hides.
    """
    return db.rollups_are_continuous()


def has_histograms() -> bool:
    """Whether this database keeps the latency histograms (TimescaleDB continuous aggregates)."""
    return db.rollups_are_continuous()


# --- Latency histograms: bins of relative width γ ---------------------------------------------

GAMMA = 1.02
# Reporting the midpoint 2γ^(k+1)/(γ+1) of bin [γ^k, γ^(k+1)) is off by at most (γ-1)/(γ+1)
# of the true value, and so is any interpolation between two such values.
MAX_RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
CAP_MS = float(MAX_LATENCY_MS)  # latencies stored above the ingest limit count as this much
ZERO_BIN = -32768  # latencies below 0.01 ms, reported as 0
ZERO_BELOW_MS = 0.01


def capped_latency():
    """latency_ms, with anything above CAP_MS (rows stored before the cap) counted as CAP_MS."""
    return Least(F("latency_ms"), Value(CAP_MS))


def bin_expression():
    """The histogram bin of a raw row, as migration 0005 computes it (PostgreSQL)."""
    ln_gamma = Ln(Cast(Value(GAMMA), FloatField()))
    return Case(
        When(latency_ms__lt=ZERO_BELOW_MS, then=Value(ZERO_BIN)),
        default=Floor(Ln(capped_latency()) / ln_gamma),
        output_field=IntegerField(),
    )


def bin_of(latency_ms: float) -> int:
    if latency_ms < ZERO_BELOW_MS:
        return ZERO_BIN
    return math.floor(math.log(min(latency_ms, CAP_MS)) / math.log(GAMMA))


def bin_value(index: int) -> float:
    """The value a bin stands for: its midpoint, or 0 for the zero bin."""
    if index == ZERO_BIN:
        return 0.0
    return 2 * GAMMA ** (index + 1) / (GAMMA + 1)


# --- Bucket arithmetic (UTC, half-open) -----------------------------------------------------


def floor(value: datetime, width: timedelta) -> datetime:
    """The start of the bucket of `width` holding `value`."""
    return EPOCH + (value - EPOCH) // width * width


def ceil(value: datetime, width: timedelta) -> datetime:
    """`value` itself when it starts a bucket, else the start of the next one."""
    start = floor(value, width)
    return start if start == value else start + width


class BucketStart(Func):
    """The start of the UTC bucket of `width` holding a timestamp, in SQL.

    SQLite: a prefix of the stored text, which Django writes as "YYYY-MM-DD HH:MM:SS[.ffffff]"
    in UTC (Django's Trunc calls a Python function per row there; strftime's format would
    need "%" escaped through two layers of formatting).
    PostgreSQL: the date_bin expression the plain-view migrations index.
    """

    output_field = DateTimeField()
    _WIDTHS = {HOUR: ("1 hour", 13, ":00:00"), DAY: ("1 day", 10, " 00:00:00")}

    def __init__(self, expression, width: timedelta):
        # Whitelisted constants, never client text.
        self.interval, self.prefix, self.suffix = self._WIDTHS[width]
        super().__init__(expression)

    def as_sqlite(self, compiler, connection, **extra):
        template = f"(substr(%(expressions)s, 1, {self.prefix}) || '{self.suffix}')"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection,
            template=f"date_bin(INTERVAL '{self.interval}', %(expressions)s, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
            **extra,
        )


# --- Watermarks ------------------------------------------------------------------------------

NOTHING_MATERIALIZED = datetime(1, 1, 1, tzinfo=UTC)


def watermarks(relations: Iterable[str], using=connection) -> dict[str, datetime | None]:
    """The end of what each continuous aggregate has materialized (None: nothing), in one query."""
    relations = list(relations)
    with using.cursor() as cursor:
        # Before the first refresh the watermark is the start of time (4714 BC), which Python
        # can't hold: that reads as "nothing materialized".
        cursor.execute(
            "SELECT user_view_name, NULLIF(GREATEST(w, '0001-01-01'::timestamptz), '0001-01-01'::timestamptz)"
            " FROM (SELECT user_view_name, _timescaledb_functions.to_timestamp("
            "_timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS w"
            " FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = ANY(%s)) AS marks",
            [relations],
        )
        found = dict(cursor.fetchall())
    return {relation: found.get(relation) for relation in relations}


def watermark(relation: str, using=connection) -> datetime | None:
    """The end of what a continuous aggregate has materialized, or None when nothing is."""
    return watermarks([relation], using)[relation]


# Every aggregate's watermark, read in one query and kept this long: a request plans with
# three to five of them. An older watermark is never wrong, only slower: the planner then reads
# a little more from finer tiers or raw events (watermarks only move forward), and this
# process's own refreshes clear it.
WATERMARK_TTL = 1.0
_marks_cache: dict[str, tuple[float, dict]] = {}


def cutoff(relation: str, using=connection) -> datetime | None:
    """Where reading `relation` stops being cheap: a continuous aggregate's watermark (buckets
    after it are aggregated from raw events at query time), or None for a plain view, where
    every bucket costs the same."""
    if not db.rollups_are_continuous(using):
        return None
    cached = _marks_cache.get(using.alias)
    if cached is None or time.monotonic() - cached[0] > WATERMARK_TTL or relation not in cached[1]:
        cached = (time.monotonic(), watermarks((rollup.relation for rollup in aggregates()), using))
        _marks_cache[using.alias] = cached
    return cached[1].get(relation) or NOTHING_MATERIALIZED


# --- Refresh ---------------------------------------------------------------------------------


def refresh(relation: str, start: datetime | None, end: datetime | None, *, attempts: int = 6,
            deadline: float | None = None) -> bool:
    """Refresh one continuous aggregate over [start, end); False where there is none.

    TimescaleDB refuses a second concurrent refresh of one aggregate ("could not refresh ...
    due to a concurrent refresh", LockNotAvailable) while a policy job runs: wait that out for
    about 1.5 s (or until `deadline`, a time.monotonic() value), then let the error through
    (the caller decides whether that matters).
    """
    if relation not in BY_RELATION or BY_RELATION[relation].kind == "raw":
        raise ValueError(f"Unknown rollup {relation!r}.")
    if not db.is_continuous_aggregate(relation):
        return False
    # Never over dropped raw chunks: that would erase the buckets the rollup still keeps.
    start = bound_refresh_start(start)
    rollup = BY_RELATION[relation]
    if rollup.window is not None:
        # On a bucket boundary: TimescaleDB rounds a window inward and refuses one that holds
        # no whole bucket ("refresh window too small").
        recent = ceil(datetime.now(UTC) - rollup.window, rollup.width)
        start = recent if start is None else max(start, recent)
    if end is not None and start is not None and ceil(start, rollup.width) >= floor(end, rollup.width):
        return True  # no whole bucket inside: nothing to materialize (TimescaleDB would refuse it)
    for attempt in range(attempts):
        try:
            with metrics.refresh_timer(relation):
                _call_refresh(relation, start, end)
            return True
        except OperationalError as exc:
            pause = 0.05 * 2 ** attempt
            if (getattr(exc.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE or attempt == attempts - 1
                    or (deadline is not None and time.monotonic() + pause > deadline)):
                raise
            time.sleep(pause)
    return True


def _call_refresh(relation: str, start: datetime | None, end: datetime | None) -> None:
    _marks_cache.clear()
    with connection.cursor() as cursor:
        # Must run outside a transaction block (TimescaleDB refuses otherwise).
        cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", [relation, start, end])


def refresh_all(start: datetime | None, end: datetime | None) -> None:
    """Refresh every continuous aggregate over [start, end), sources before what is built on them."""
    for rollup in aggregates():
        refresh(rollup.relation, start, end)


# Refreshes that failed after a committed write, since the process started (the events are
# stored; the refresh policy materializes them on its next run).
refresh_failures = 0


def _refresh_failed(exc: Exception) -> int:
    global refresh_failures
    refresh_failures += 1
    logger.warning("Refreshing the rollups after a write failed (%s failures so far; the refresh "
                   "policy will catch up): %s", refresh_failures, exc)
    return 0


def refresh_after_write(times: Iterable[datetime]) -> int:
    """Re-materialize the buckets a write touched below each aggregate's watermark.

    Real-time aggregates compute buckets above the watermark from the raw table on every
    query, so fresh data needs nothing. A late event (clients buffer and retry) lands in a
    bucket that is already materialized, where the policy would only pick it up on its next
    run; refreshing exactly those buckets now makes it visible at once. Returns how many
    refresh calls were made (0 on databases without continuous aggregates).

    A failure here (the database went away after the commit) never fails the write that
    was committed: it is logged and counted in `refresh_failures`.
    """
    try:
        if not db.rollups_are_continuous():
            return 0
        times = list(times)
        if connection.in_atomic_block:
            # refresh_continuous_aggregate can't run inside a transaction: wait for the commit.
            transaction.on_commit(lambda: _refresh_buckets_safely(times))
            return 0
        return _refresh_buckets(times)
    except DatabaseError as exc:
        return _refresh_failed(exc)


def _refresh_buckets_safely(times: list[datetime]) -> int:
    try:
        return _refresh_buckets(times)
    except DatabaseError as exc:
        return _refresh_failed(exc)


def _refresh_buckets(times: list[datetime]) -> int:
    if not times:
        return 0
    earliest = min(times)
    calls = 0
    # One round trip for every watermark: this runs after every ingest batch.
    marks = watermarks(rollup.relation for rollup in aggregates())
    now = datetime.now(UTC)
    # However many aggregates wait on policy runs, the write's answer waits at most this long.
    deadline = time.monotonic() + REFRESH_WAIT_SECONDS
    # Catalogue order: a hierarchical aggregate comes after its source, so it re-reads buckets
    # the source has just re-materialized.
    for rollup in aggregates():
        mark = marks[rollup.relation]
        if mark is None or earliest >= mark:
            continue  # the common case: nothing written below what is materialized
        stale = [t for t in times if t < mark and (rollup.window is None or t >= now - rollup.window)]
        if not stale:
            continue
        # One call over the span of the stale buckets: a refresh re-materializes only what the
        # invalidation log marks inside its window, and TimescaleDB logs a write's whole time
        # range anyway; one call per run of buckets made hundreds of calls (each taking the
        # aggregate's lock) for a batch of late events spread over days.
        try:
            _refresh_waiting(rollup.relation, floor(min(stale), rollup.width),
                             floor(max(stale), rollup.width) + rollup.width, deadline)
        except DatabaseError as exc:
            # One aggregate's failure must not leave the others (after it in the catalogue) stale.
            _refresh_failed(exc)
        calls += 1
    return calls


LOCK_NOT_AVAILABLE = "55P03"


# Seconds an after-write refresh may spend waiting for policy runs, over every aggregate.
REFRESH_WAIT_SECONDS = 5.0


def _refresh_waiting(relation: str, start: datetime, end: datetime, deadline: float | None = None) -> None:
    """refresh() after a write: the events are stored by then, so a refresh policy that keeps
    the aggregate busy past refresh()'s wait must never fail the write: leave the buckets to
    the next policy run (the invalidation log keeps them)."""
    try:
        # A policy run holds the aggregate while it works (the fine tier's runs every minute):
        # wait for it, within the write's budget, before leaving the buckets to the next run.
        refresh(relation, start, end, attempts=8, deadline=deadline)
    except OperationalError as exc:
        if getattr(exc.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
            raise
        logger.warning("%s: a concurrent refresh held the aggregate; [%s, %s) waits for the policy.",
                       relation, start, end)


# --- The range planner -----------------------------------------------------------------------

Piece = tuple[type, "datetime | None", "datetime | None"]


def plan(filters: dict, family: Family = COUNTS) -> tuple[list[Piece], list[Q]] | None:
    """Pieces that cover [start, end) exactly: rollup ranges (model, lo, hi) and raw edges.

    Whole days come from the daily rollup, the whole hours around them from the hourly one,
    and the partial hours at the edges of an unaligned range from the raw table, so the sum
    over the pieces equals a scan of the raw table. In a family with a fine tier, the hours past
    the hourly rollup's watermark come from the fine one instead (see `_fine_tail`). None when
    not one whole hour fits.
    """
    start, end = filters.get("start"), filters.get("end")
    try:
        hour_lo = ceil(start, HOUR) if start is not None else None
        hour_hi = floor(end, HOUR) if end is not None else None
        day_lo = ceil(start, DAY) if start is not None else None
        day_hi = floor(end, DAY) if end is not None else None
    except OverflowError:
        return None  # a range at the very end of the calendar: the raw table answers it
    if hour_lo is not None and hour_hi is not None and hour_lo >= hour_hi:
        return None
    hourly, daily = family.hourly.model, family.daily.model
    mark = _daily_mark(family)
    if mark is not None:
        # Days past the daily aggregate's watermark would be aggregated from raw events at
        # query time (real-time aggregation): read them from the hourly one instead.
        day_hi = mark if day_hi is None else min(day_hi, mark)
    use_days = (day_hi is None or day_lo is None or day_lo < day_hi) and day_hi != NOTHING_MATERIALIZED
    if not use_days:
        pieces = [(hourly, hour_lo, hour_hi)]
    else:
        # A month is read as 30 daily rows per series instead of 720 hourly ones.
        pieces = [(daily, day_lo, day_hi)]
        if hour_lo is not None and hour_lo < day_lo:
            pieces.append((hourly, hour_lo, day_lo))
        if day_hi is not None and (hour_hi is None or day_hi < hour_hi):
            pieces.append((hourly, day_hi, hour_hi))
    edges = []
    if start is not None and start < hour_lo:
        edges.append(Q(time__gte=start, time__lt=hour_lo))
    tail_lo = hour_hi
    if family.fine is not None:
        pieces, tail_lo = _fine_tail(family, pieces, hour_hi, end)
    if end is not None and tail_lo < end:
        edges.append(Q(time__gte=tail_lo, time__lt=end))
    return pieces, edges


def _daily_mark(family: Family) -> datetime | None:
    """Where the daily rollup stops being read: its watermark, and for one built on the hourly
    rollup never past the hourly one's. A daily bucket materialized while its hours were still
    real-time holds what the hours held then; the hours materialized since may hold more (a
    policy run racing a write), and only the hourly rollup is sure to have it."""
    mark = cutoff(family.daily.relation)
    if mark is not None and family.daily.source == family.hourly.relation:
        hourly = cutoff(family.hourly.relation)
        if hourly is not None:
            mark = min(mark, floor(hourly, DAY))
    return mark


def _fine_mark(family: Family) -> datetime | None:
    """Where the fine tier takes over from the hourly one: the hourly watermark, or None when
    the fine tier can't serve (no continuous aggregates, nothing materialized yet, or a watermark
    so old that the fine tier's retention may have dropped minutes after it)."""
    mark = cutoff(family.hourly.relation)
    if mark is None or mark == NOTHING_MATERIALIZED:
        return None
    # How far back the fine tier holds exact minutes: its refresh window, or its retention.
    kept = [span for span in (family.fine.window, timedelta(days=retention_days(
        tier_for(family.fine.width)))) if span]
    if kept and mark < datetime.now(UTC) - min(kept) + HOUR:
        return None
    return mark


def _fine_tail(family: Family, pieces: list[Piece], hour_hi, end) -> tuple[list[Piece], datetime | None]:
    """Hand the hours past the hourly watermark, and the whole minutes of a partial last hour
    there, to the fine tier; returns the pieces and where the raw end edge starts.

    Under sustained ingest the hourly aggregate lags by up to an hour and its refresh period;
    read in real time, that lag is millions of raw events per query. The fine tier lags by a
    minute or two, and is read in real time past its own watermark (a few minutes of events).
    """
    mark = _fine_mark(family)
    if mark is None:
        return pieces, hour_hi
    hourly, fine = family.hourly.model, family.fine.model
    cut: list[Piece] = []
    fine_lo = None
    for model, lo, hi in pieces:
        if model is hourly and (hi is None or hi > mark):
            if lo is None or lo < mark:
                cut.append((model, lo, mark))
            fine_lo = mark if lo is None else max(lo, mark)
        else:
            cut.append((model, lo, hi))
    if hour_hi is not None and hour_hi < mark:
        return cut, hour_hi  # the range ends before the watermark: nothing past it to hand over
    if fine_lo is None:
        fine_lo = hour_hi  # the last hour is partial and past the watermark
    fine_hi = floor(end, family.fine.width) if end is not None else None
    if fine_hi is None or fine_lo < fine_hi:
        cut.append((fine, fine_lo, fine_hi))
        return cut, fine_hi
    return cut, fine_lo


def bucket_plan(
    width: timedelta, start: datetime, end: datetime, family: Family = COUNTS,
) -> list[tuple[type, datetime, datetime, bool]]:
    """Pieces (model, lo, hi, regroup) that give every bucket of `width` in [start, end).

    `start` and `end` are bucket starts. Hours come from the hourly rollup; days from the daily
    one up to its watermark and from the hourly one, regrouped by day (`regroup`), past it. In
    a family with a fine tier, time past the hourly watermark comes from the fine one, regrouped.
    """
    if width == HOUR:
        pieces = [(family.hourly.model, start, end, False)]
    else:
        mark = _daily_mark(family)
        if mark is None or mark >= end:
            return [(family.daily.model, start, end, False)]
        mark = max(floor(mark, DAY), start)
        pieces = [(family.daily.model, start, mark, False)] if start < mark else []
        pieces.append((family.hourly.model, mark, end, True))
    if family.fine is None:
        return pieces
    fine_mark = _fine_mark(family)
    if fine_mark is None or fine_mark >= end:
        return pieces
    model, lo, hi, regroup = pieces.pop()
    if lo < fine_mark:
        pieces.append((model, lo, fine_mark, regroup))
    return pieces + [(family.fine.model, max(lo, fine_mark), end, True)]
