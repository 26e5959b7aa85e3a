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
