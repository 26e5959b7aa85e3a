"""The raw event table and read-only models over the hourly and daily rollups."""

from django.db import models

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ByteOrderCharField(models.CharField):
    """A CharField with PostgreSQL's "C" (byte-order) collation, and none on SQLite.

    SQLite's BINARY collation already compares UTF-8 text byte by byte, which is what "C"
    means; leaving the name out there keeps the schema readable by any sqlite3 client (a
    custom collation makes the stock shell fail on the table) and saves a Python call per
    comparison.
    """

    def db_parameters(self, connection):
        params = super().db_parameters(connection)
        if connection.vendor == "sqlite":
            params["collation"] = None
        return params


class ApiRequest(models.Model):
    """One API request seen by a client service."""

    time = models.DateTimeField()
    # Byte-order collation: sorting and grouping are the same on every database and in
    # Python (ties in /top-endpoints/ and rollup order), and comparisons are cheaper.
    service = ByteOrderCharField(max_length=100, db_collation="C")
    endpoint = ByteOrderCharField(max_length=255, db_collation="C")
    method = models.CharField(max_length=7, choices=[(m, m) for m in METHODS])
    status_code = models.SmallIntegerField()
    latency_ms = models.FloatField()
    trace_id = models.CharField(max_length=64, blank=True, default="")
    user_ref = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        ordering = ["-time"]
        indexes = [
            # The list's default order and every time-range scan.
            models.Index(fields=["-time"], name="apirequest_time_desc"),
            # Per-series reads: one service/endpoint over a window.
            models.Index(fields=["service", "endpoint", "time"], name="apirequest_series_time"),
        ]
        constraints = [
            # The validators already enforce these; the database keeps raw SQL writers honest.
            models.CheckConstraint(
                condition=models.Q(status_code__gte=100, status_code__lte=599),
                name="apirequest_status_code_range",
            ),
            models.CheckConstraint(
                condition=models.Q(latency_ms__gte=0), name="apirequest_latency_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%dT%H:%M:%S} {self.method} {self.service}{self.endpoint}"


class _Rollup(models.Model):
    """Columns shared by both rollups; the relation is a view or a continuous aggregate."""

    pk = models.CompositePrimaryKey("bucket", "service", "endpoint")
    bucket = models.DateTimeField()
    service = models.CharField(max_length=100)
    endpoint = models.CharField(max_length=255)
    hits = models.BigIntegerField()
    errors = models.BigIntegerField()
    latency_sum_ms = models.FloatField()
    avg_latency_ms = models.FloatField()
    max_latency_ms = models.FloatField()
    p95_latency_ms = models.FloatField()

    class Meta:
        abstract = True
        managed = False


class ApiRequestHourly(_Rollup):
    class Meta(_Rollup.Meta):
        managed = False
        db_table = "apirequest_hourly"


class ApiRequestDaily(_Rollup):
    class Meta(_Rollup.Meta):
        managed = False
        db_table = "apirequest_daily"


class ApiRequestMinute(models.Model):
    """Per (minute, service, endpoint): the counts of `_Rollup` that add up across buckets.

    The fine tier of the counts (TimescaleDB only, migration 0010): the read path reads it only
    past the hourly rollup's watermark. No average (the sum over the hits) and no p95: the
    /hourly/ and /daily/ rows keep their exact per-bucket p95 from the hourly and daily rollups.
    """

    pk = models.CompositePrimaryKey("bucket", "service", "endpoint")
    bucket = models.DateTimeField()
    service = models.CharField(max_length=100)
    endpoint = models.CharField(max_length=255)
    hits = models.BigIntegerField()
    errors = models.BigIntegerField()
    latency_sum_ms = models.FloatField()
    max_latency_ms = models.FloatField()

    class Meta:
        managed = False
        db_table = "apirequest_minute"


class ApiKey(models.Model):
    """A credential for machines: one scope, stored only as a SHA-256 hash of its secret.

    The full key is `apm_<prefix>_<secret>`; the prefix is public (it names the key in lists and
    in `revoke_api_key`) and finds the row, the hash proves the secret. See access.py.
    """

    SCOPES = ("ingest", "read", "admin")

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    # hex SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=10, choices=[(s, s) for s in SCOPES])
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.prefix} {self.name} ({self.scope})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
class _LatencyHistogram(models.Model):
    """Latency histogram rows: how many events of a bucket and series fell into each bin.

    Bin k holds latencies in [γ^k, γ^(k+1)) ms with γ = 1.02 (see `rollups.bin_of`); the bin
    `rollups.ZERO_BIN` holds latencies below 0.01 ms. Continuous aggregates on TimescaleDB only.
    """

    bucket = models.DateTimeField()
    service = models.CharField(max_length=100)
    bin = models.SmallIntegerField()
    n = models.BigIntegerField()

    class Meta:
        abstract = True
        managed = False


class LatencyHourly(_LatencyHistogram):
    pk = models.CompositePrimaryKey("bucket", "service", "endpoint", "bin")
    endpoint = models.CharField(max_length=255)

    class Meta(_LatencyHistogram.Meta):
        managed = False
        db_table = "apirequest_latency_hourly"


class LatencyDaily(_LatencyHistogram):
    pk = models.CompositePrimaryKey("bucket", "service", "endpoint", "bin")
    endpoint = models.CharField(max_length=255)

    class Meta(_LatencyHistogram.Meta):
        managed = False
        db_table = "apirequest_latency_daily"


class ServiceLatencyHourly(_LatencyHistogram):
    pk = models.CompositePrimaryKey("bucket", "service", "bin")

    class Meta(_LatencyHistogram.Meta):
        managed = False
        db_table = "apirequest_service_latency_hourly"


class ServiceLatencyDaily(_LatencyHistogram):
    pk = models.CompositePrimaryKey("bucket", "service", "bin")

    class Meta(_LatencyHistogram.Meta):
        managed = False
        db_table = "apirequest_service_latency_daily"


class LatencyMinute(_LatencyHistogram):
    """The fine tier of `LatencyHourly` (migration 0010)."""

    pk = models.CompositePrimaryKey("bucket", "service", "endpoint", "bin")
    endpoint = models.CharField(max_length=255)

    class Meta(_LatencyHistogram.Meta):
        managed = False
        db_table = "apirequest_latency_minute"


class ServiceLatencyMinute(_LatencyHistogram):
    """The fine tier of `ServiceLatencyHourly` (migration 0010)."""

    pk = models.CompositePrimaryKey("bucket", "service", "bin")

    class Meta(_LatencyHistogram.Meta):
        managed = False
        db_table = "apirequest_service_latency_minute"


class _GlobalLatencyStats(models.Model):
    """All traffic of a bucket by latency bin: the bin's events, errors, latency sum and max.

    Bins as in `_LatencyHistogram`. Counts add up over the bins, so one read gives the KPIs and
    the approx percentiles of all traffic. Continuous aggregates on TimescaleDB only (0006).
    """

    pk = models.CompositePrimaryKey("bucket", "bin")
    bucket = models.DateTimeField()
    bin = models.SmallIntegerField()
    n = models.BigIntegerField()
    errors = models.BigIntegerField()
    latency_sum_ms = models.FloatField()
    max_latency_ms = models.FloatField()

    class Meta:
        abstract = True
        managed = False


class GlobalLatencyMinute(_GlobalLatencyStats):
    class Meta(_GlobalLatencyStats.Meta):
        managed = False
        db_table = "apirequest_global_minute"


class GlobalLatencyHourly(_GlobalLatencyStats):
    class Meta(_GlobalLatencyStats.Meta):
        managed = False
        db_table = "apirequest_global_hourly"


class GlobalLatencyDaily(_GlobalLatencyStats):
    class Meta(_GlobalLatencyStats.Meta):
        managed = False
        db_table = "apirequest_global_daily"


class FloatArrayField(models.Field):
    """A float8[] column read as a list of floats (PostgreSQL only; no dependency on
    django.contrib.postgres for one read-only column)."""

    def db_type(self, connection):
        return "double precision[]"

    def from_db_value(self, value, expression, connection):
        return None if value is None else [float(v) for v in value]


class GlobalPercentilesHourly(models.Model):
    """Per hour of all traffic: counts and the exact p50/p90/p95/p99 (TimescaleDB only, 0006)."""

    bucket = models.DateTimeField(primary_key=True)
    hits = models.BigIntegerField()
    errors = models.BigIntegerField()
    latency_sum_ms = models.FloatField()
    max_latency_ms = models.FloatField()
    percentiles = FloatArrayField()

    class Meta:
        managed = False
        db_table = "apirequest_global_percentiles_hourly"


class DirtyRange(models.Model):
    """A range of event time [lo, hi) that a committed write touched below what a continuous
    aggregate may have materialized (TimescaleDB only).

    Written in the write's own transaction; the read planner reads such ranges from a finer
    tier or raw events until the background refresher (`manage.py refresh_rollups --follow`)
    has re-materialized them and deleted the row. A write that lands while a range is being
    refreshed adds a row of its own, which that refresh doesn't touch.

    `stage` says which tiers the refresher has re-materialized over the range so far
    (`rollups.STAGES`: 0 none, 1 the minute tiers, 2 the hourly ones too; the daily ones too and
    the row is deleted): the planner reads a row around only the tiers it has not reached.
    """

    id = models.BigAutoField(primary_key=True)
    lo = models.DateTimeField()
    hi = models.DateTimeField()
    created = models.DateTimeField(auto_now_add=True)
    stage = models.SmallIntegerField(db_default=0)

    class Meta:
        db_table = "apirequest_dirty"
