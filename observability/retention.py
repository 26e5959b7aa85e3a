"""How long each tier keeps its data, and the TimescaleDB policies that enforce it.

Tiers: the raw events, and every rollup by its bucket width (under an hour: "fine"; an hour up
to a day: "hourly"; a day and more: "daily"), each with its own APM_RETENTION_*_DAYS (0 keeps
it forever). On TimescaleDB the rollups are continuous aggregates with their own storage, so
they can outlive the raw chunks; that only holds if no refresh ever covers a window whose raw
chunks are gone (TimescaleDB would rematerialize those buckets from nothing and delete them),
so every refresh start is bounded by the raw horizon here. The continuous aggregates are read
from TimescaleDB's catalogue, not from a list in code, so an aggregate added by a later
migration gets its tier's policies without an edit here.

On PostgreSQL without the extension and on SQLite the rollups are views over the raw table:
every tier follows the raw retention, enforced by `prune_requests` (batched DELETEs).
"""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db import connection as default_connection

from observability import db, rollups
from observability.constants import DAY, FINE_WINDOW_DAYS, HOUR, TIER_SETTINGS
from observability.rollups import retention_days, tier_for

RAW = rollups.RAW


class PolicyError(RuntimeError):
    """The retention/compression settings can't be applied as given (the message says why)."""


def compress_after_days() -> int:
    return settings.APM_COMPRESS_AFTER_DAYS


# --- The continuous aggregates, from TimescaleDB's catalogue ----------------------------------


@dataclass(frozen=True)
class Aggregate:
    view: str
    mat_schema: str
    mat_table: str
    width: timedelta
    bucket_column: str
    compression_enabled: bool

    @property
    def tier(self) -> str:
        return tier_for(self.width)


def continuous_aggregates(connection=default_connection) -> list[Aggregate]:
    """Every continuous aggregate in the current schema, narrowest buckets first."""
    if not db.timescale_version(connection):
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ca.view_name, ca.materialization_hypertable_schema,"
            " ca.materialization_hypertable_name, extract(epoch FROM bf.bucket_width::interval),"
            " d.column_name, ca.compression_enabled"
            " FROM timescaledb_information.continuous_aggregates ca"
            " JOIN _timescaledb_catalog.continuous_agg c"
            "   ON c.user_view_schema = ca.view_schema AND c.user_view_name = ca.view_name"
            " JOIN _timescaledb_catalog.continuous_aggs_bucket_function bf"
            "   ON bf.mat_hypertable_id = c.mat_hypertable_id"
            " JOIN timescaledb_information.dimensions d"
            "   ON d.hypertable_schema = ca.materialization_hypertable_schema"
            "  AND d.hypertable_name = ca.materialization_hypertable_name AND d.dimension_number = 1"
            " WHERE ca.view_schema = current_schema() ORDER BY 4, 1"
        )
        return [Aggregate(view, schema, table, timedelta(seconds=float(seconds)), column, bool(compressed))
                for view, schema, table, seconds, column, compressed in cursor.fetchall()]


def _jobs(relation: str, proc: str, connection) -> list[tuple[int, dict]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job_id, config FROM timescaledb_information.jobs"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = %s AND proc_name = %s"
            " ORDER BY job_id",
            [relation, proc],
        )
        # Django reads jsonb as text (it decodes JSON fields itself).
        return [(job, json.loads(config) if isinstance(config, str) else (config or {}))
                for job, config in cursor.fetchall()]


def _same_interval(value, days: int, connection) -> bool:
    if value is None:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::interval = make_interval(days => %s)", [str(value), days])
        return cursor.fetchone()[0]


# --- Applying the policies (TimescaleDB) ------------------------------------------------------


# A drop or a columnstore policy: (job proc, config key, remove/add function, add's interval
# argument, its line when set, its line when off).
_POLICIES = {
    "retention": ("policy_retention", "drop_after", "retention_policy", "drop_after", "retention {} d",
                  "kept forever"),
    "columnstore": ("policy_compression", "compress_after", "compression_policy", "compress_after",
                    "columnstore after {} d", "no columnstore"),
}


def _policy(kind: str, relation: str, days: int, connection, schedule: timedelta | None = None) -> str:
    """Make `relation`'s `kind` policy act after `days` (0: none); idempotent. Its summary line."""
    proc, key, function, argument, on, off = _POLICIES[kind]
    jobs = _jobs(relation, proc, connection)
    if jobs and days and _same_interval(jobs[0][1].get(key), days, connection):
        return on.format(days)
    with connection.cursor() as cursor:
        # Names from the table above, never from input.
        cursor.execute(f"SELECT remove_{function}(%s, if_exists => true)", [relation])
        if days:
            # Without a schedule, TimescaleDB's default (12 h for day-sized chunks).
            scheduled = ", schedule_interval => %s" if schedule else ""
            cursor.execute(f"SELECT add_{function}(%s, {argument} => make_interval(days => %s){scheduled})",
                           [relation, days, *([schedule] if schedule else [])])
    return on.format(days) if days else off


def _retention(relation: str, days: int, connection) -> str:
    return _policy("retention", relation, days, connection)


def _columnstore(relation: str, days: int, connection, schedule: timedelta | None = None) -> str:
    return _policy("columnstore", relation, days, connection, schedule)


def _raw_compression_enabled(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT compression_enabled FROM timescaledb_information.hypertables"
                       " WHERE hypertable_schema = current_schema() AND hypertable_name = %s", [RAW])
        row = cursor.fetchone()
    return bool(row and row[0])


def _refresh_days(agg: Aggregate, raw_days: int) -> int:
    """How far back an aggregate's refresh policy reaches, in days (0: all history)."""
    if agg.tier == "fine":
        return min(FINE_WINDOW_DAYS, raw_days) if raw_days else FINE_WINDOW_DAYS
    return raw_days


def _refresh_policy(agg: Aggregate, raw_days: int, connection) -> str:
    """Give the aggregate's refresh policy a start bounded by the raw horizon (or none when raw
    events are kept forever), keeping its end offset and schedule as its migration set them."""
    jobs = _jobs(agg.view, "policy_refresh_continuous_aggregate", connection)
    if not jobs:
        return "no refresh policy"
    job, config = jobs[0]
    start = config.get("start_offset")
    if raw_days:
        if _same_interval(start, raw_days, connection):
            return f"refresh from -{raw_days} d"
    elif start is None:
        return "refresh all history"
    with connection.cursor() as cursor:
        cursor.execute("SELECT schedule_interval FROM timescaledb_information.jobs WHERE job_id = %s", [job])
        (schedule,) = cursor.fetchone()
        end_offset = config.get("end_offset")
        cursor.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", [agg.view])
        cursor.execute(
            "SELECT add_continuous_aggregate_policy(%s,"
            " start_offset => CASE WHEN %s > 0 THEN make_interval(days => %s) END,"
            " end_offset => %s::interval, schedule_interval => %s)",
            [agg.view, raw_days, raw_days, end_offset, schedule],
        )
    return f"refresh from -{raw_days} d" if raw_days else "refresh all history"


def _check_refresh_window(agg: Aggregate, raw_days: int, connection) -> None:
    # TimescaleDB wants a policy's window to span at least two buckets.
    jobs = _jobs(agg.view, "policy_refresh_continuous_aggregate", connection)
    if not raw_days or not jobs:
        return
    end_offset = jobs[0][1].get("end_offset")
    with connection.cursor() as cursor:
        cursor.execute("SELECT make_interval(days => %s) - %s::interval >= 2 * %s::interval",
                       [raw_days, end_offset, agg.width])
        if not cursor.fetchone()[0]:
            raise PolicyError(
                f"APM_RETENTION_RAW_DAYS={raw_days} is too short for {agg.view}: its refresh window "
                f"must span two buckets after its end offset ({end_offset})."
            )


def apply_policies(connection=default_connection) -> list[str]:
    """Make the TimescaleDB policies match the settings; idempotent. One line per relation.

    Settings are checked before anything changes, so a refused setting leaves the policies as
    they were. Nothing to do (an empty list) where the raw table is not a hypertable.
    """
    if not db.is_hypertable(RAW, connection):
        return []
    raw_days = retention_days("raw")
    compress_days = compress_after_days()
    aggregates = continuous_aggregates(connection)
    for agg in aggregates:
        days = retention_days(agg.tier)
        if agg.tier == "fine":
            # Refreshed over its own short window, not the raw horizon: it only has to be at
            # least as long as that window.
            if days and days < FINE_WINDOW_DAYS:
                raise PolicyError(f"{TIER_SETTINGS['fine']}={days} is shorter than the {FINE_WINDOW_DAYS} days "
                                  f"{agg.view} is refreshed over: keep it at least {FINE_WINDOW_DAYS} (or 0).")
            continue
        if raw_days and days and days < raw_days:
            raise PolicyError(
                f"{TIER_SETTINGS[agg.tier]}={days} is shorter than APM_RETENTION_RAW_DAYS={raw_days}: "
                f"{agg.view} would be rebuilt from raw events it has already dropped. Keep a rollup tier "
                "at least as long as the raw events (or 0 for forever)."
            )
        _check_refresh_window(agg, raw_days, connection)
    lines = []
    parts = [_retention(RAW, raw_days, connection)]
    if compress_days and not _raw_compression_enabled(connection):
        with connection.cursor() as cursor:
            # Segments per service keep a service's events together (the filters every query
            # has); time order inside a segment lets range scans skip whole batches.
            cursor.execute(f"ALTER TABLE {RAW} SET (timescaledb.compress,"
                           " timescaledb.compress_segmentby = 'service',"
                           " timescaledb.compress_orderby = 'time DESC')")
    parts.append(_columnstore(RAW, compress_days, connection))
    lines.append(f"{RAW}: " + ", ".join(parts))
    for agg in aggregates:
        days = retention_days(agg.tier)
        parts = [f"tier {agg.tier}", _refresh_policy(agg, _refresh_days(agg, raw_days), connection),
                 _retention(agg.view, days, connection)]
        # A late event in a compressed bucket costs its refresh a rewrite of the chunk's
        # batches: so only when raw retention bounds the refresh, and only past that bound.
        agg_compress = raw_days + max(1, compress_days) if (compress_days and raw_days) else 0
        built_in = _built_in_columnstore_days(agg.view)
        schedule = None
        if built_in:
            # Its migration made it columnar for the read path's sake (see rollups.CATALOGUE):
            # the settings don't turn that off, and late events that decompress a chunk have it
            # converted again within the hour.
            agg_compress, schedule = built_in, HOUR
        elif agg_compress and not agg.compression_enabled:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER MATERIALIZED VIEW {connection.ops.quote_name(agg.view)}"
                               " SET (timescaledb.compress = true)")
        parts.append(_columnstore(agg.view, agg_compress, connection, schedule))
        lines.append(f"{agg.view}: " + ", ".join(parts))
    return lines


def _built_in_columnstore_days(view: str) -> int:
    rollup = rollups.BY_RELATION.get(view)
    after = rollup and rollup.columnstore_after
    return math.ceil(after / DAY) if after else 0


def schedule_refresh_policies(scheduled: bool, connection=default_connection) -> None:
    """Pause (False) or resume every continuous aggregate's refresh policy: for benchmarks and
    tests that set watermarks themselves (a policy run would move them on)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT alter_job(job_id, scheduled => %s) FROM timescaledb_information.jobs"
                       " WHERE proc_name = 'policy_refresh_continuous_aggregate'", [scheduled])


def _run_job(job: int, connection, attempts: int = 4) -> None:
    """CALL run_job, retried while TimescaleDB's scheduler runs the same job: both would work
    on the same chunks, and the one that loses fails ("Failed to convert N chunks")."""
    for attempt in range(attempts):
        try:
            with connection.cursor() as cursor:
                cursor.execute("CALL run_job(%s)", [job])
            return
        except DatabaseError:
            if attempt == attempts - 1:
                raise
            deadline = _time.monotonic() + 60
            while _time.monotonic() < deadline:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT job_status FROM timescaledb_information.job_stats WHERE job_id = %s",
                                   [job])
                    row = cursor.fetchone()
                if not row or row[0] != "Running":
                    break
                _time.sleep(0.5)
            _time.sleep(0.5 * (attempt + 1))


def run_policies_now(connection=default_connection, *, relations: list[str] | None = None,
                     procs: tuple[str, ...] = ("policy_retention", "policy_compression")) -> list[str]:
    """Run the retention and compression jobs (`procs`) of our relations (or of `relations`)
    now (TimescaleDB)."""
    names = relations if relations is not None else [RAW, *(agg.view for agg in continuous_aggregates(connection))]
    done = []
    for relation in names:
        for proc in procs:
            for job, _ in _jobs(relation, proc, connection):
                began = _time.monotonic()
                _run_job(job, connection)
                done.append(f"{relation}: {proc} (job {job}) in {_time.monotonic() - began:.2f}s")
    return done


def convert_columnar_now(connection=default_connection) -> list[str]:
    """What the columnstore policies of the aggregates the read path wants columnar
    (`rollups.Rollup.columnstore_after`) would do on their next run, now, and planner
    statistics over the new batches (which have none until autovacuum gets to them). The
    relations done; nothing without TimescaleDB."""
    columnar = [r.relation for r in rollups.aggregates() if r.columnstore_after]
    if not db.rollups_are_continuous(connection):
        return []
    run_policies_now(connection, relations=columnar, procs=("policy_compression",))
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for agg in continuous_aggregates(connection):
            if agg.view in columnar:
                cursor.execute(f"ANALYZE {quote(agg.mat_schema)}.{quote(agg.mat_table)}")
    return columnar


# --- Pruning without TimescaleDB ---------------------------------------------------------------


def count_older_than(cutoff: datetime, connection=default_connection) -> int:
    """How many raw events are older than `cutoff` (what prune_raw would delete now)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(RAW)} WHERE time < %s", [cutoff])
        return cursor.fetchone()[0]


def prune_raw(*, cutoff: datetime, batch_size: int = 10_000, pause: float = 0.0,
              on_batch: Callable[[int, int], None] | None = None, connection=default_connection) -> tuple[int, int]:
    """Delete raw events older than `cutoff`, `batch_size` at a time, each batch its own short
    transaction (so ingest never waits behind one long lock). Returns (deleted, batches)."""
    table = connection.ops.quote_name(RAW)
    total = batches = 0
    while True:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            # Relies on the (time) index: each batch finds its oldest rows without a scan.
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN"
                f" (SELECT id FROM {table} WHERE time < %s ORDER BY time LIMIT %s)",
                [cutoff, batch_size],
            )
            deleted = cursor.rowcount
        if deleted <= 0:
            return total, batches
        total += deleted
        batches += 1
        if on_batch:
            on_batch(deleted, total)
        if deleted < batch_size:
            return total, batches
        if pause:
            _time.sleep(pause)


# --- What reads may rely on --------------------------------------------------------------------


def raw_kept_since(connection=default_connection, *, hypertable: bool | None = None) -> datetime | None:
    """TimescaleDB: the start of the oldest raw chunk still kept (chunks are dropped whole, so
    raw events from here on are complete). None where rows are deleted instead."""
    if not (db.is_hypertable(RAW, connection) if hypertable is None else hypertable):
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(range_start) FROM timescaledb_information.chunks"
                       " WHERE hypertable_schema = current_schema() AND hypertable_name = %s", [RAW])
        (oldest,) = cursor.fetchone()
    return oldest or datetime.now(UTC)


def raw_missing_before(start: datetime | None, connection=default_connection) -> datetime | None:
    """Where the raw events a query over [start, ...) needs are gone though the rollups still
    count them: the start of the raw events kept, when some rollup holds a bucket in
    [start, that time). None when raw events cover everything the rollups know of.

    On PostgreSQL and SQLite the rollups are views over the raw table, so this is always None.
    """
    if not db.rollups_are_continuous(connection):
        return None
    kept = raw_kept_since(connection, hypertable=True)  # continuous aggregates sit on a hypertable
    if kept is None or (start is not None and start >= kept):
        return None
    for agg in continuous_aggregates(connection):
        table = f"{connection.ops.quote_name(agg.mat_schema)}.{connection.ops.quote_name(agg.mat_table)}"
        column = connection.ops.quote_name(agg.bucket_column)
        with connection.cursor() as cursor:
            # Names from TimescaleDB's catalogue, quoted; the bucket index serves the range.
            # A bucket counts when it ends after `start`.
            try:
                after = None if start is None else start - agg.width
            except OverflowError:  # a start at the very beginning of the calendar
                after = None
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} < %s"
                f" AND (%s::timestamptz IS NULL OR {column} > %s))",
                [kept, after, after],
            )
            if cursor.fetchone()[0]:
                return kept
    return None
