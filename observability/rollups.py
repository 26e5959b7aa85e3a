"""Everything about the rollups: the catalogue, bucket arithmetic, watermarks, refresh, planning.

Adding a rollup is one edit here (plus the migration that builds it). The read path
(`analytics.py`), the write path (`ingest.py`), the management commands and the benchmarks ask
this module which relation serves a range and how fresh it is; retention and compression
policies can walk `CATALOGUE` to find every relation and its width.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.signals import request_finished, request_started
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
    DirtyRange,
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
    _WIDTHS = {MINUTE: ("1 minute", 16, ":00"), HOUR: ("1 hour", 13, ":00:00"), DAY: ("1 day", 10, " 00:00:00")}

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
    """Refresh every continuous aggregate over [start, end), sources before what is built on them.

    The dirty ranges inside [start, end) recorded before it began are covered: deleted.
    """
    tracked = _tracks_dirt()
    if tracked:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT max(id) FROM {DIRTY}")
            last = cursor.fetchone()[0]
    for rollup in aggregates():
        refresh(rollup.relation, start, end)
    if tracked and last is not None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {DIRTY} WHERE id <= %s AND (%s::timestamptz IS NULL OR lo >= %s)"
                           " AND (%s::timestamptz IS NULL OR hi <= %s)", [last, start, start, end, end])
        _forget_dirty()


# --- Dirty ranges: what late writes touched, refreshed in the background ---------------------
#
# A write never refreshes an aggregate: refresh_continuous_aggregate can't run in the write's
# transaction, takes the aggregate's lock (waiting out policy runs), and re-reads whole buckets.
# A write that lands below what an aggregate may have materialized records the minutes it
# touched in `apirequest_dirty`, in its own transaction; the read planner reads those buckets
# from a finer tier or raw events (so late events are visible, exact, once the write commits),
# and `refresh_dirty` (the worker `manage.py refresh_rollups --follow`) re-materializes them and
# deletes the rows it has covered.

DIRTY = DirtyRange._meta.db_table
# A write compares its rows with what a policy run may have materialized by the time it commits:
# this much past its clock covers the COPY, the commit and a clock that differs from the server's.
DIRTY_SLACK = timedelta(seconds=30)
# Minutes closer than this are recorded as one range. Adjacent ones only: under live traffic a
# minute holds tens of thousands of events, and every minute a range spans needlessly is read
# from a finer tier or raw events until the refresher has been (it was 10 minutes: the raw reads
# around late writes then covered five times the minutes the writes touched).
DIRTY_GAP = MINUTE
# More ranges than this in one write (a batch spread over a day) are recorded by the hour.
DIRTY_MAX_RANGES = 64
# A row's stage: how far the refresher has brought its range. Refreshing a minute bucket re-reads
# a minute of events; an hourly one an hour of them; a daily one (columnstore, built on the hourly
# tier) a day of hourly rows, a second or more. So the refresher refreshes the minute tiers every
# pass and the coarser ones less often, each over the rows that have reached the tier below, and
# the planner reads a row around only the tiers it has not reached. A row that reached DONE is
# deleted.
STAGES = {MINUTE: 1, HOUR: 2, DAY: 3}  # the stage a row reaches once the tiers of that width are refreshed
DONE = 3


def stage_of(rollup: Rollup) -> int:
    """The stage from which a dirty row no longer concerns `rollup`."""
    return STAGES[rollup.width]


def dirty_runs(times: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """The minutes of `times` as sorted, half-open ranges, neighbours closer than DIRTY_GAP merged."""
    minutes = sorted({floor(t, MINUTE) for t in times})
    for width, gap in ((MINUTE, DIRTY_GAP), (HOUR, HOUR)):
        runs: list[list[datetime]] = []
        for minute in minutes:
            lo = floor(minute, width)
            if runs and lo - runs[-1][1] < gap:
                runs[-1][1] = max(runs[-1][1], lo + width)
            else:
                runs.append([lo, lo + width])
        if len(runs) <= DIRTY_MAX_RANGES:
            break
    return [(lo, hi) for lo, hi in runs]


def _policy_reach(now: datetime) -> datetime:
    """The latest time any aggregate's refresh policy may have materialized by `now`."""
    reach = [floor(now + DIRTY_SLACK - rollup.refresh.end_offset, rollup.width)
             for rollup in aggregates() if rollup.refresh is not None]
    return max(reach)


def _tracks_dirt(using=connection) -> bool:
    """Dirty ranges exist where aggregates materialize, from migration 0009 on."""
    return db.rollups_are_continuous(using) and db.has_table(DIRTY, using)


def mark_dirty(times: Iterable[datetime]) -> int:
    """Record the minutes of a write that an aggregate may have materialized already.

    Call inside the write's transaction (it is what makes the write's events visible in the
    answers the moment it commits). One statement, on TimescaleDB only: it compares the write's
    ranges with each aggregate's watermark (read in the same statement, so a refresh that
    finished a moment ago counts) and with what a policy run may have materialized by the
    commit, and inserts the ranges below. Returns how many ranges were recorded.
    """
    if not _tracks_dirt():
        return 0
    runs = dirty_runs(times)
    if not runs:
        return 0
    reach = _policy_reach(datetime.now(UTC))
    _forget_dirty()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DIRTY} (lo, hi, created)"
            " SELECT r.lo, r.hi, now() FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS r(lo, hi),"
            " (SELECT GREATEST(%s::timestamptz, max(_timescaledb_functions.to_timestamp("
            "_timescaledb_functions.cagg_watermark(mat_hypertable_id)))) AS mark"
            " FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = ANY(%s)) AS e"
            " WHERE r.lo < e.mark",
            [[lo for lo, _ in runs], [hi for _, hi in runs], reach,
             [rollup.relation for rollup in aggregates()]],
        )
        return cursor.rowcount


# The dirty ranges a request plans with: read once per request (a page plans four to six
# times), never across requests, so a write acknowledged before a request began is in it.
# Per thread: gunicorn's workers serve several requests at once, one a thread.
_request = threading.local()


def _request_started(**kwargs) -> None:
    _request.dirty = {}


def _request_finished(**kwargs) -> None:
    _request.dirty = None


request_started.connect(_request_started, dispatch_uid="rollups.dirty")
request_finished.connect(_request_finished, dispatch_uid="rollups.dirty")


def _forget_dirty() -> None:
    cache = getattr(_request, "dirty", None)
    if cache:
        cache.clear()


def _merge(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Half-open ranges, sorted, overlapping and touching ones made one."""
    merged: list[list[datetime]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def dirty_ranges(using=connection, *, below: int = DONE) -> list[tuple[datetime, datetime]]:
    """The recorded dirty ranges of the rows whose stage is under `below` (the default: every row),
    merged and sorted ([] where the rollups are plain views). `below=stage_of(rollup)`: the ranges
    that rollup is out of date over."""
    if not _tracks_dirt(using):
        return []
    cache = getattr(_request, "dirty", None)  # None outside a request: read every time
    if cache is not None and (using.alias, below) in cache:
        return cache[using.alias, below]  # a page plans many pieces, each asking for its tier's ranges
    if cache is not None and using.alias in cache:
        rows = cache[using.alias]
    else:
        # Before the raw horizon the raw events may be gone: what an aggregate holds is all there
        # is (ingest refuses events that old, so only a refresher down for weeks leaves such rows).
        horizon = raw_horizon()
        with using.cursor() as cursor:
            # Merged per stage in the database: thousands of rows under a burst of late writes,
            # far fewer ranges.
            cursor.execute(f"SELECT lower(r), upper(r), stage FROM (SELECT stage, unnest(range_agg("
                           f"tstzrange(GREATEST(lo, %s), hi, '[)'))) AS r FROM {DIRTY}"
                           " WHERE (%s::timestamptz IS NULL OR hi > %s) AND lo < hi GROUP BY stage) AS merged",
                           [horizon or NOTHING_MATERIALIZED, horizon, horizon])
            rows = cursor.fetchall()
        if cache is not None:
            cache[using.alias] = rows
    ranges = _merge((lo, hi) for lo, hi, stage in rows if stage < below)
    if cache is not None:
        cache[using.alias, below] = ranges
    return ranges


@dataclass
class DirtyPass:
    """What one pass of the refresher did."""

    ranges: int = 0  # dirty rows done with (every tier refreshed over them) and deleted
    calls: int = 0  # refresh calls made
    failed: list[str] | None = None  # aggregates whose refresh failed: their rows stay where they were
    oldest_seconds: float = 0.0  # the age of the oldest row read
    advanced: int = 0  # rows brought to a later stage, not done yet (the coarser tiers' turn comes later)
    reached: int = DONE  # the stage every refresh of the pass reached (the rows read are there now)


def refresh_dirty(*, through: int = DONE, limit: int = 10_000) -> DirtyPass:
    """Re-materialize what the recorded dirty ranges cover, up to the tiers of stage `through`,
    then advance the rows read to that stage (delete them at DONE).

    Each aggregate of a stage up to `through` is refreshed over the merged ranges of the rows
    that have not reached its stage, clipped to its watermark (above it the aggregate is computed
    from raw events at query time; refreshing there would move the watermark past buckets still
    filling), finer stages first and in catalogue order within one, so a hierarchical aggregate
    re-reads what its source has just re-materialized. Rows are advanced by id, only those read
    before the refreshes began, and only as far as every refresh of every stage up to there
    succeeded: a write that commits while a refresh runs adds a row of its own, covered by the
    next pass; a failed refresh (a policy holding the aggregate, the database going away) leaves
    its stage to the next pass, and the planner keeps reading those ranges around it meanwhile.
    """
    result = DirtyPass(reached=through)
    if not _tracks_dirt():
        return result
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, lo, hi, stage, created, now() FROM {DIRTY} WHERE stage < %s"
                       " ORDER BY id LIMIT %s", [through, limit])
        rows = cursor.fetchall()
    if not rows:
        return result
    result.oldest_seconds = max(0.0, max((row[5] - row[4]).total_seconds() for row in rows))
    marks = watermarks(rollup.relation for rollup in aggregates())
    reached = through
    failed = []
    for rollup in sorted(aggregates(), key=stage_of):  # stable: catalogue order within a stage
        stage = stage_of(rollup)
        mark = marks[rollup.relation]
        if stage > reached or mark is None:
            continue  # past a failed stage; or nothing materialized: all of it computed at query time
        # One call over the span of the ranges below the watermark: a refresh re-materializes
        # only the buckets the invalidation log marks inside its window, and each call takes the
        # aggregate's lock and reads the log once (a call per range cost a pass ten times more).
        below = [(floor(lo, rollup.width), min(ceil(hi, rollup.width), floor(mark, rollup.width)))
                 for lo, hi in _merge((lo, hi) for _, lo, hi, at, _, _ in rows if at < stage)]
        below = [(lo, hi) for lo, hi in below if lo < hi]
        if not below:
            continue
        lo, hi = below[0][0], max(hi for _, hi in below)
        try:
            refresh(rollup.relation, lo, hi, attempts=3)
            result.calls += 1
        except DatabaseError as exc:
            logger.warning("Refreshing %s over [%s, %s) failed; the next pass retries it: %s",
                           rollup.relation, lo, hi, exc)
            failed.append(rollup.relation)
            reached = stage - 1
    result.failed, result.reached = failed or None, reached
    ids = [row[0] for row in rows if row[3] < reached]
    if not ids:
        return result
    with transaction.atomic(), connection.cursor() as cursor:
        if reached >= DONE:
            cursor.execute(f"DELETE FROM {DIRTY} WHERE id = ANY(%s)", [ids])
            result.ranges = len(ids)
        else:
            cursor.execute(f"UPDATE {DIRTY} SET stage = %s WHERE id = ANY(%s) AND stage < %s", [reached, ids, reached])
            result.advanced = len(ids)
    _forget_dirty()
    return result


def dirty_backlog(using=connection) -> tuple[int, float]:
    """(rows waiting, age in seconds of the oldest): the refresher's lag, for /metrics."""
    if not _tracks_dirt(using):
        return 0, 0.0
    with using.cursor() as cursor:
        cursor.execute(f"SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created)), 0) FROM {DIRTY}")
        count, age = cursor.fetchone()
    return int(count), float(age)


LOCK_NOT_AVAILABLE = "55P03"


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
    elif end is None and tail_lo is not None and family.fine is not None:
        edges.append(Q(time__gte=tail_lo))  # past the fine tier's watermark, open-ended
    dirty = _dirty_for(piece[0] for piece in pieces)
    if dirty:
        clean: list[Piece] = []
        for model, lo, hi in pieces:
            for piece_model, plo, phi, _ in _around_dirty(family, model, lo, hi):
                if piece_model is ApiRequest:
                    edges.append(Q(time__gte=plo, time__lt=phi))
                else:
                    clean.append((piece_model, plo, phi))
        pieces = clean
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
    minute or two; past its own watermark the raw events (a minute or so of them) answer,
    grouped as the query groups them (the fine tiers are materialized only, migration 0012).
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
    # Materialized only (0012): past its own watermark the raw events answer, grouped as the query groups.
    fine_mark = _fine_materialized(family)
    fine_hi = fine_mark if fine_hi is None else min(fine_hi, fine_mark)
    if fine_lo < fine_hi:
        cut.append((fine, fine_lo, fine_hi))
        return cut, fine_hi
    return cut, fine_lo


def _fine_materialized(family: Family) -> datetime:
    """How far the fine tier of `family` holds materialized minutes: its watermark (the minute
    tiers are read as materialized only, migration 0012; past this the raw events answer)."""
    mark = cutoff(family.fine.relation)
    return NOTHING_MATERIALIZED if mark is None else mark


def _fine_pieces(family: Family, lo: datetime, hi: datetime,
                 regroup: bool) -> list[tuple[type, datetime, datetime, bool]]:
    """[lo, hi) from the fine tier up to its watermark, and from raw events past it."""
    mid = min(max(lo, _fine_materialized(family)), hi)
    pieces = [(family.fine.model, lo, mid, regroup)] if lo < mid else []
    if mid < hi:
        pieces.append((ApiRequest, mid, hi, True))
    return pieces


def bucket_plan(
    width: timedelta, start: datetime, end: datetime, family: Family = COUNTS,
) -> list[tuple[type, datetime, datetime, bool]]:
    """Pieces (model, lo, hi, regroup) that give every bucket of `width` in [start, end).

    `start` and `end` are bucket starts. Hours come from the hourly rollup; days from the daily
    one up to its watermark and from the hourly one, regrouped by day (`regroup`), past it. In
    a family with a fine tier, time past the hourly watermark comes from the fine one, regrouped.
    Minutes come from the fine tier over what it keeps exact (`fine_since`), and from the raw
    table (model `ApiRequest`, grouped by minute) before that or where the family has none.
    """
    if width == MINUTE:
        since = fine_since(family)
        if since is None or since >= end:
            return [(ApiRequest, start, end, True)]
        since = max(since, start)
        pieces = [(ApiRequest, start, since, True)] if start < since else []
        pieces += _fine_pieces(family, since, end, False)
    elif width == HOUR:
        pieces = [(family.hourly.model, start, end, False)]
    else:
        mark = _daily_mark(family)
        if mark is None or mark >= end:
            pieces = [(family.daily.model, start, end, False)]
        else:
            mark = max(floor(mark, DAY), start)
            pieces = [(family.daily.model, start, mark, False)] if start < mark else []
            pieces.append((family.hourly.model, mark, end, True))
    if family.fine is not None and width != MINUTE and pieces[-1][0] is not family.daily.model:
        fine_mark = _fine_mark(family)
        if fine_mark is not None and fine_mark < end:
            model, lo, hi, regroup = pieces.pop()
            if lo < fine_mark:
                pieces.append((model, lo, fine_mark, regroup))
            pieces += _fine_pieces(family, max(lo, fine_mark), end, True)
    dirty = _dirty_for(piece[0] for piece in pieces)
    if not dirty:
        return pieces
    # Around the dirty ranges: a bucket of the answer may then come from several pieces.
    return [(model, lo, hi, regroup or regrouped)
            for piece_model, piece_lo, piece_hi, regroup in pieces
            for model, lo, hi, regrouped in _around_dirty(family, piece_model, piece_lo, piece_hi)]


BY_MODEL = {rollup.model: rollup for rollup in CATALOGUE}


def _dirty_for(models: Iterable[type]) -> list[tuple[datetime, datetime]]:
    """The dirty ranges (of any stage), where one of `models` is a materialized aggregate (else
    nothing to cut): empty when no piece can need cutting."""
    for model in models:
        rollup = BY_MODEL.get(model)
        if rollup is not None and rollup.kind != "raw" and cutoff(rollup.relation) not in (None, NOTHING_MATERIALIZED):
            return dirty_ranges()
    return []


def _finer(family: Family, rollup: Rollup, lo: datetime, hi: datetime) -> Rollup | None:
    """The tier of `family` below `rollup` that can serve [lo, hi) exactly, or None (raw events)."""
    tiers = [family.daily, family.hourly, family.fine]
    for tier in tiers[tiers.index(rollup) + 1:]:
        if tier is None:
            return None
        if tier is family.fine:
            mark = _fine_mark(family)
            # Within the fine tier's refresh window only: older minutes are not re-materialized.
            if mark is None or (family.fine.window is not None
                                and lo < datetime.now(UTC) - family.fine.window + HOUR):
                return None
        kept = retention_days(tier_for(tier.width))
        if kept and lo < datetime.now(UTC) - timedelta(days=kept) + DAY:
            continue
        return tier
    return None


def _around_dirty(family: Family, model, lo: datetime | None,
                  hi: datetime | None) -> list[tuple[type, datetime | None, datetime | None, bool]]:
    """A rollup piece [lo, hi) with the buckets that dirty ranges not yet refreshed in it touch
    below its watermark handed down to the next finer tier (or raw events, model ApiRequest):
    (model, lo, hi, regroup) pieces.

    Those buckets were materialized before a late write committed; the finer tier (or raw) holds
    the write's events, and the rest of the piece is as good as ever. A range the refresher has
    brought past this tier's stage is in it already: the hourly tier serves a range whose minute
    buckets alone are still out of date.
    """
    rollup = BY_MODEL.get(model)
    if rollup is None or rollup.kind == "raw":
        return [(model, lo, hi, False)]
    mark = cutoff(rollup.relation)
    if mark is None or mark == NOTHING_MATERIALIZED:
        return [(model, lo, hi, False)]
    width = rollup.width
    holes: list[list[datetime]] = []
    for dirty_lo, dirty_hi in dirty_ranges(below=stage_of(rollup)):
        a, b = floor(dirty_lo, width), min(ceil(dirty_hi, width), mark)
        if lo is not None:
            a = max(a, lo)
        if hi is not None:
            b = min(b, hi)
        if a >= b:
            continue
        if holes and a <= holes[-1][1]:
            holes[-1][1] = max(holes[-1][1], b)
        else:
            holes.append([a, b])
    if not holes:
        return [(model, lo, hi, False)]
    pieces = []
    at = lo
    for a, b in holes:
        if at is None or at < a:
            pieces.append((model, at, a, False))
        finer = _finer(family, rollup, a, b)
        # The fine tier is read as materialized only (0012): past its watermark, raw events.
        split = b if finer is None or finer is not family.fine else min(b, max(a, _fine_materialized(family)))
        if finer is not None and a < split:
            pieces.extend((m, p_lo, p_hi, True) for m, p_lo, p_hi, _ in _around_dirty(family, finer.model, a, split))
        else:
            split = a
        if split < b:
            pieces.append((ApiRequest, split, b, True))
        at = b
    if hi is None or at < hi:
        pieces.append((model, at, hi, False))
    return pieces


def fine_since(family: Family, now: datetime | None = None) -> datetime | None:
    """The first minute from which the family's fine tier holds every event, or None where it
    has none to read (no fine tier, or no continuous aggregates).

    Its refresh policy and the background refresher keep only its window exact, and retention drops
    what is older than APM_RETENTION_FINE_DAYS; before its first refresh nothing older than the
    window was materialized at all. The hour of margin, as in `_fine_mark`, covers a policy run
    that starts late. Past its watermark `bucket_plan` reads raw events (`_fine_pieces`), so the
    newest minutes are exact too.
    """
    if family.fine is None or cutoff(family.fine.relation) is None:
        return None
    kept = [span for span in (family.fine.window, timedelta(days=retention_days(
        tier_for(family.fine.width)))) if span]
    if not kept:
        return NOTHING_MATERIALIZED  # kept forever and refreshed over all history
    return ceil((now or datetime.now(UTC)) - min(kept) + HOUR, MINUTE)
