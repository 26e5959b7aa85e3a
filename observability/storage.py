"""What the data takes on disk, per relation: the `report_storage` command's numbers."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection as default_connection

from observability import db, retention, rollups

# (relation, time column) of the rollups where they are plain views (no TimescaleDB).
_VIEWS = (("apirequest_hourly", "bucket"), ("apirequest_daily", "bucket"))


def _one(sql: str, params=(), connection=default_connection):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _span(table_sql: str, column: str, connection) -> tuple[int, datetime | None, datetime | None]:
    # The time column's index answers min and max; count(*) is exact (a scan, seconds at 10M rows).
    column = connection.ops.quote_name(column)
    rows, oldest, newest = _one(f"SELECT count(*), min({column}), max({column}) FROM {table_sql}",
                                connection=connection)
    return rows, _aware(oldest), _aware(newest)


def _aware(value) -> datetime | None:
    # SQLite hands back its text; it is UTC, as everything stored.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _policy(relation: str, proc: str, key: str, connection) -> str | None:
    jobs = retention._jobs(relation, proc, connection)
    value = jobs[0][1].get(key) if jobs else None
    return str(value) if value is not None else None


def _timescale_row(name: str, kind: str, hypertable_sql: str, column: str, tier: str, connection) -> dict:
    rows, oldest, newest = _span(hypertable_sql, column, connection)
    total, = _one("SELECT total_bytes FROM hypertable_detailed_size(%s::regclass)", [hypertable_sql],
                  connection=connection) or (None,)
    stats = _one(
        "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes),"
        " sum(number_compressed_chunks), sum(total_chunks) FROM hypertable_columnstore_stats(%s::regclass)",
        [hypertable_sql], connection=connection,
    )
    # sum() of bigints is numeric in PostgreSQL: back to int for JSON.
    before, after, compressed_chunks, chunks = (None if v is None else int(v) for v in (stats or (None,) * 4))
    drop_after = _policy(name, "policy_retention", "drop_after", connection)
    compress_after = _policy(name, "policy_compression", "compress_after", connection)
    return {
        "relation": name, "kind": kind, "tier": tier, "rows": rows, "total_bytes": total,
        "chunks": chunks, "compressed_chunks": compressed_chunks,
        "uncompressed_bytes_of_compressed_chunks": before, "compressed_bytes": after,
        "compression_ratio": round(before / after, 2) if before and after else None,
        "oldest": oldest, "newest": newest,
        "retention": f"drop after {drop_after}" if drop_after else "forever",
        "columnstore": f"after {compress_after}" if compress_after else "off",
    }


def relations(connection=default_connection) -> list[dict]:
    """One dict per relation (raw events, each rollup): rows, sizes, compression, time span and
    the retention and columnstore settings in force."""
    raw_days = rollups.retention_days("raw")
    if db.is_hypertable(retention.RAW, connection):
        quote = connection.ops.quote_name
        result = [_timescale_row(retention.RAW, "hypertable", quote(retention.RAW), "time", "raw", connection)]
        for agg in retention.continuous_aggregates(connection):
            result.append(_timescale_row(agg.view, "continuous aggregate",
                                         f"{quote(agg.mat_schema)}.{quote(agg.mat_table)}",
                                         agg.bucket_column, agg.tier, connection))
        return result
    rows, oldest, newest = _span(connection.ops.quote_name(retention.RAW), "time", connection)
    if connection.vendor == "postgresql":
        (size,) = _one("SELECT pg_total_relation_size(%s::regclass)", [retention.RAW], connection=connection)
    else:
        size = _sqlite_size(retention.RAW, connection)
    rule = f"prune_requests: older than {raw_days} d" if raw_days else "forever"
    result = [{
        "relation": retention.RAW, "kind": "table", "tier": "raw", "rows": rows, "total_bytes": size,
        "chunks": None, "compressed_chunks": None, "uncompressed_bytes_of_compressed_chunks": None,
        "compressed_bytes": None, "compression_ratio": None, "oldest": oldest, "newest": newest,
        "retention": rule, "columnstore": "n/a",
    }]
    for name, column in _VIEWS:
        count, first, last = _span(name, column, connection)
        result.append({
            "relation": name, "kind": "view over raw", "tier": "raw", "rows": count, "total_bytes": 0,
            "chunks": None, "compressed_chunks": None, "uncompressed_bytes_of_compressed_chunks": None,
            "compressed_bytes": None, "compression_ratio": None, "oldest": first, "newest": last,
            "retention": f"follows raw ({rule})", "columnstore": "n/a",
        })
    return result


def _sqlite_size(table: str, connection) -> int | None:
    try:
        # dbstat is compiled into most SQLite builds; without it the size is unknown.
        (size,) = _one("SELECT sum(pgsize) FROM dbstat WHERE name = %s OR name IN"
                       " (SELECT name FROM sqlite_master WHERE tbl_name = %s AND type = 'index')",
                       [table, table], connection=connection)
    except Exception:  # noqa: BLE001 - "no such table: dbstat"
        return None
    return size
