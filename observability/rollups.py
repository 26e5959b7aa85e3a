"""Everything about the rollups: the catalogue, bucket arithmetic, watermarks, refresh, planning.

Adding a rollup is one edit here (plus the migration that builds it). The read path
(`analytics.py`), the write path (`ingest.py`), the management commands and the benchmarks ask
this module which relation serves a range and how fresh it is; retention and compression
policies can walk `CATALOGUE` to find every relation and its width.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q

from observability import db
from observability.models import ApiRequest, ApiRequestDaily, ApiRequestHourly

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# One epoch for every bucket: TimescaleDB's time_bucket and PostgreSQL's date_bin with the
# origin the migrations use both align hours and days to it (2000-01-01 is a multiple of a day
# after 1970-01-01), and so does SQLite's strftime.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RAW = ApiRequest._meta.db_table


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
    kind: str  # "raw" | "counts"
    width: timedelta | None
    series: tuple[str, ...]
    source: str | None
    model: type | None
    refresh: Refresh | None


CATALOGUE: tuple[Rollup, ...] = (
    Rollup(RAW, "raw", None, ("service", "endpoint"), None, ApiRequest, None),
    # Exact per-bucket p95 (the contract's /hourly/ and /daily/ rows): both read raw events.
    Rollup("apirequest_hourly", "counts", HOUR, ("service", "endpoint"), RAW, ApiRequestHourly,
           Refresh(HOUR, timedelta(minutes=5))),
    Rollup("apirequest_daily", "counts", DAY, ("service", "endpoint"), RAW, ApiRequestDaily,
           Refresh(DAY, HOUR)),
)
BY_RELATION = {rollup.relation: rollup for rollup in CATALOGUE}


def aggregates() -> tuple[Rollup, ...]:
    """Every rollup built over the raw events (everything in the catalogue but the raw table)."""
    return tuple(rollup for rollup in CATALOGUE if rollup.kind != "raw")


# --- Bucket arithmetic (UTC, half-open) -----------------------------------------------------


def floor(value: datetime, width: timedelta) -> datetime:
    """The start of the bucket of `width` holding `value`."""
    return EPOCH + (value - EPOCH) // width * width


def ceil(value: datetime, width: timedelta) -> datetime:
    """`value` itself when it starts a bucket, else the start of the next one."""
    start = floor(value, width)
    return start if start == value else start + width


# --- Watermarks ------------------------------------------------------------------------------

NOTHING_MATERIALIZED = datetime(1, 1, 1, tzinfo=UTC)


def watermark(relation: str, using=connection) -> datetime | None:
    """The end of what a continuous aggregate has materialized, or None when nothing is."""
    with using.cursor() as cursor:
        # Before the first refresh the watermark is the start of time (4714 BC), which Python
        # can't hold: that reads as "nothing materialized".
        cursor.execute(
            "SELECT NULLIF(GREATEST(w, '0001-01-01'::timestamptz), '0001-01-01'::timestamptz)"
            " FROM (SELECT _timescaledb_functions.to_timestamp("
            "_timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS w"
            " FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = %s) AS watermark",
            [relation],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return row[0]


def cutoff(relation: str, using=connection) -> datetime | None:
    """Where reading `relation` stops being cheap: a continuous aggregate's watermark (buckets
    after it are aggregated from raw events at query time), or None for a plain view, where
    every bucket costs the same."""
    if not db.rollups_are_continuous(using):
        return None
    return watermark(relation, using) or NOTHING_MATERIALIZED


# --- Refresh ---------------------------------------------------------------------------------


def refresh(relation: str, start: datetime | None, end: datetime | None) -> bool:
    """Refresh one continuous aggregate over [start, end); False where there is none."""
    if relation not in BY_RELATION or BY_RELATION[relation].kind == "raw":
        raise ValueError(f"Unknown rollup {relation!r}.")
    if not db.is_continuous_aggregate(relation):
        return False
    with connection.cursor() as cursor:
        # Must run outside a transaction block (TimescaleDB refuses otherwise).
        cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", [relation, start, end])
    return True


def refresh_all(start: datetime | None, end: datetime | None) -> None:
    """Refresh every continuous aggregate over [start, end), sources before what is built on them."""
    for rollup in aggregates():
        refresh(rollup.relation, start, end)


def refresh_after_write(times: Iterable[datetime]) -> int:
    """Re-materialize the buckets a write touched below each aggregate's watermark.

    Real-time aggregates compute buckets above the watermark from the raw table on every
    query, so fresh data needs nothing. A late event (clients buffer and retry) lands in a
    bucket that is already materialized, where the policy would only pick it up on its next
    run; refreshing exactly those buckets now makes it visible at once. Returns how many
    refresh calls were made (0 on databases without continuous aggregates).
    """
    if not db.rollups_are_continuous():
        return 0
    times = list(times)
    if connection.in_atomic_block:
        # refresh_continuous_aggregate can't run inside a transaction: wait for the commit.
        transaction.on_commit(lambda: _refresh_buckets(times))
        return 0
    return _refresh_buckets(times)


def _refresh_buckets(times: list[datetime]) -> int:
    if not times:
        return 0
    earliest = min(times)
    calls = 0
    # Catalogue order: a hierarchical aggregate comes after its source, so it re-reads buckets
    # the source has just re-materialized.
    for rollup in aggregates():
        mark = watermark(rollup.relation)
        if mark is None or earliest >= mark:
            continue  # the common case: nothing written below what is materialized
        stale = sorted({(t - EPOCH) // rollup.width for t in times if t < mark})
        for lo, hi in _runs(stale):
            refresh(rollup.relation, EPOCH + lo * rollup.width, EPOCH + (hi + 1) * rollup.width)
            calls += 1
    return calls


def _runs(sorted_ints: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted integers as (first, last) pairs: [1,2,3,7] -> [(1,3),(7,7)]."""
    runs: list[tuple[int, int]] = []
    for value in sorted_ints:
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


# --- The range planner -----------------------------------------------------------------------

Piece = tuple[type, "datetime | None", "datetime | None"]


def plan(filters: dict) -> tuple[list[Piece], list[Q]] | None:
    """Pieces that cover [start, end) exactly: rollup ranges (model, lo, hi) and raw edges.

    Whole days come from the daily rollup, the whole hours around them from the hourly one,
    and the partial hours at the edges of an unaligned range from the raw table, so the sum
    over the pieces equals a scan of the raw table. None when not one whole hour fits.
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
    mark = cutoff("apirequest_daily")
    if mark is not None:
        # Days past the daily aggregate's watermark would be aggregated from raw events at
        # query time (real-time aggregation): read them from the hourly one instead.
        day_hi = mark if day_hi is None else min(day_hi, mark)
    use_days = (day_hi is None or day_lo is None or day_lo < day_hi) and day_hi != NOTHING_MATERIALIZED
    if not use_days:
        pieces = [(ApiRequestHourly, hour_lo, hour_hi)]
    else:
        # A month is read as 30 daily rows per series instead of 720 hourly ones.
        pieces = [(ApiRequestDaily, day_lo, day_hi)]
        if hour_lo is not None and hour_lo < day_lo:
            pieces.append((ApiRequestHourly, hour_lo, day_lo))
        if day_hi is not None and (hour_hi is None or day_hi < hour_hi):
            pieces.append((ApiRequestHourly, day_hi, hour_hi))
    edges = []
    if start is not None and start < hour_lo:
        edges.append(Q(time__gte=start, time__lt=hour_lo))
    if end is not None and hour_hi < end:
        edges.append(Q(time__gte=hour_hi, time__lt=end))
    return pieces, edges
