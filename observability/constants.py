"""One home for the facts several layers share: the latency cap, field widths, bucket widths,
tiers, sources.

Only the models are imported (for the field widths, read from their `_meta` so a migration
that widens a column changes them too), so every module may import this one.
"""

from datetime import UTC, datetime, timedelta

from observability.models import ApiRequest

# API.md: an event's latency is at most one day. Ingest refuses more; the rollups count a row
# stored above it (before the cap existed) as this much.
MAX_LATENCY_MS = 86_400_000
# The raw table's column widths, in characters.
SERVICE_MAX, ENDPOINT_MAX, TRACE_ID_MAX, USER_REF_MAX = (
    ApiRequest._meta.get_field(name).max_length for name in ("service", "endpoint", "trace_id", "user_ref"))

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# One epoch for every bucket: TimescaleDB's time_bucket and PostgreSQL's date_bin with the
# origin the migrations use both align hours and days to it (2000-01-01 is a multiple of a day
# after 1970-01-01), and so does SQLite's strftime.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Retention tiers, by bucket width (rollups.tier_for), and the setting that keeps each.
TIER_SETTINGS = {
    "raw": "APM_RETENTION_RAW_DAYS",
    "fine": "APM_RETENTION_FINE_DAYS",
    "hourly": "APM_RETENTION_HOURLY_DAYS",
    "daily": "APM_RETENTION_DAILY_DAYS",
}
# The fine tier (buckets under an hour) serves only the last hour or so of a query: it is
# refreshed, and kept exact for late data, over its last FINE_WINDOW_DAYS only.
FINE_WINDOW_DAYS = 2

# What an answer's `source` says: "hourly" when rollups answered (some of) it, "raw" when the
# raw table did all of it.
SOURCE_ROLLUP = "hourly"
SOURCE_RAW = "raw"
SOURCES = (SOURCE_ROLLUP, SOURCE_RAW)
