"""The write path: parse, validate and store events, one at a time or in bulk.

DRF's serializers cost about 29 µs per event and `execute_values` manages about 27k rows/s;
a plain validator costs about 1 µs per event and COPY about 130k rows/s. Bulk ingest is the hot
path of the product, so events are checked here by plain functions (which still give DRF-style
per-field messages, and which the CRUD serializer reuses so both paths accept the same input)
and written with COPY on PostgreSQL.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from django.conf import settings
from django.db import connection, transaction

from observability import body, db
from observability.models import METHODS, ApiRequest

# Column order of the COPY and of the tuples the validator returns.
COLUMNS = ("time", "service", "endpoint", "method", "status_code", "latency_ms", "trace_id", "user_ref")
MAX_REPORTED_ERRORS = 100

REQUIRED = "This field is required."
NOT_NULL = "This field may not be null."
NOT_BLANK = "This field may not be blank."
NOT_STRING = "Not a valid string."


class Invalid(ValueError):
    """A value that a field does not accept; the message is shown to the client."""


class BatchError(Exception):
    """The request as a whole is unacceptable (status says why)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


# --- Field rules (API.md "The event") -------------------------------------------------------


def _text(value, max_length: int, *, blank: bool) -> str:
    if value is None:
        if blank:
            return ""
        raise Invalid(NOT_NULL)
    if type(value) is not str:
        raise Invalid(NOT_STRING)
    if not value:
        if blank:
            return value
        raise Invalid(NOT_BLANK)
    if len(value) > max_length:
        raise Invalid(f"Ensure this field has no more than {max_length} characters.")
    if "\x00" in value:
        raise Invalid("Null characters are not allowed.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800") decodes from JSON but can't be stored as UTF-8.
            raise Invalid("Not valid Unicode text.") from None
    return value


def clean_time(value) -> datetime:
    if value is None:
        raise Invalid(NOT_NULL)
    if isinstance(value, datetime):
        parsed = value
    elif type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(
                "Datetime has wrong format. Use ISO 8601, e.g. 2026-01-31T13:45:00Z."
            ) from None
    else:
        raise Invalid("Datetime has wrong format. Use an ISO 8601 string.")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is in year 0 in UTC
        raise Invalid("Datetime is out of range once converted to UTC.") from None


def clean_service(value) -> str:
    return _text(value, 100, blank=False)


def clean_endpoint(value) -> str:
    return _text(value, 255, blank=False)


_METHODS = frozenset(METHODS)


def clean_method(value) -> str:
    if value is None:
        raise Invalid(NOT_NULL)
    if type(value) is not str:
        raise Invalid(NOT_STRING)
    upper = value.upper()
    if upper not in _METHODS:
        raise Invalid(f'"{value}" is not a valid choice. Use one of {", ".join(METHODS)}.')
    return upper


def clean_status_code(value) -> int:
    if value is None:
        raise Invalid(NOT_NULL)
    kind = type(value)
    if kind is int:
        code = value
    elif kind is float and value.is_integer():
        code = int(value)
    elif kind is str and value.strip().lstrip("-").isdigit():
        code = int(value)
    else:
        raise Invalid("A valid integer is required.")
    if not 100 <= code <= 599:
        raise Invalid("Ensure this value is between 100 and 599.")
    return code


def clean_latency_ms(value) -> float:
    if value is None:
        raise Invalid(NOT_NULL)
    kind = type(value)
    if kind is float or kind is int or kind is str:
        try:
            number = float(value)
        except (ValueError, OverflowError):  # "fast", or an integer too large for a float
            raise Invalid("A valid number is required.") from None
    else:
        raise Invalid("A valid number is required.")
    if not math.isfinite(number):
        raise Invalid("Must be a finite number (NaN and Infinity are not allowed).")
    if number < 0:
        raise Invalid("Ensure this value is greater than or equal to 0.")
    return number


def clean_trace_id(value) -> str:
    return _text(value, 64, blank=True)


def clean_user_ref(value) -> str:
    return _text(value, 128, blank=True)


# name -> (cleaner, required)
RULES = {
    "time": (clean_time, True),
    "service": (clean_service, True),
    "endpoint": (clean_endpoint, True),
    "method": (clean_method, True),
    "status_code": (clean_status_code, True),
    "latency_ms": (clean_latency_ms, True),
    "trace_id": (clean_trace_id, False),
    "user_ref": (clean_user_ref, False),
}
_RULES = tuple((name, cleaner, required) for name, (cleaner, required) in RULES.items())


def validate_fields(data, *, partial: bool = False) -> tuple[dict, dict]:
    """Clean one event: (cleaned values, errors by field). `partial` skips absent fields."""
    if not isinstance(data, dict):
        return {}, {"non_field_errors": ["Invalid data. Expected an object."]}
    cleaned: dict = {}
    errors: dict = {}
    for name, cleaner, required in _RULES:
        if name not in data:
            if required and not partial:
                errors[name] = [REQUIRED]
            elif not required and not partial:
                cleaned[name] = ""
            continue
        try:
            cleaned[name] = cleaner(data[name])
        except Invalid as exc:
            errors[name] = [str(exc)]
    return cleaned, errors


_FLOAT_MAX = sys.float_info.max
_INT_MAX = 2**63  # far beyond any latency; keeps float() from overflowing
_PLAIN_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)?").fullmatch
_fromisoformat = datetime.fromisoformat


def validate_event(data, *, plain: bool = False) -> tuple | dict:
    """One event as a row tuple (COLUMNS order, then the time as COPY text), or a dict of
    errors by field.

    The first branch is the hot path of bulk ingest: all checks inline for an event that is
    valid as most are. Anything it does not accept goes through `validate_fields`, which
    applies the same rules field by field and words the messages. `plain=True` says the
    body held no backslash, so no string can hold a NUL or a lone surrogate (JSON can only
    write those as escapes) and those scans are skipped.
    """
    if type(data) is dict:
        get = data.get
        time_ = get("time")
        service = get("service")
        endpoint = get("endpoint")
        trace = get("trace_id", "")
        user = get("user_ref", "")
        code = get("status_code")
        latency = get("latency_ms")
        if (
            type(time_) is str
            and type(service) is str and 0 < len(service) <= 100
            and type(endpoint) is str and 0 < len(endpoint) <= 255
            and type(trace) is str and len(trace) <= 64
            and type(user) is str and len(user) <= 128
            and get("method") in _METHODS
            and type(code) is int and 100 <= code <= 599
            and ((type(latency) is float and 0.0 <= latency <= _FLOAT_MAX)  # NaN fails both
                 or (type(latency) is int and 0 <= latency <= _INT_MAX))
            and (plain or _plain_text(service, endpoint, trace, user))
        ):
            try:
                parsed = _fromisoformat(time_)
                parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
            except (ValueError, OverflowError):
                pass  # the field rules word the message
            else:
                # PostgreSQL reads a string of this plain form exactly as Python did (naive
                # means UTC: the session's zone), so COPY can take it as sent: cheaper than
                # formatting the datetime again.
                text = time_ if _PLAIN_TIME(time_) else parsed.isoformat()
                return (parsed, service, endpoint, get("method"), code, float(latency), trace, user, text)
    cleaned, errors = validate_fields(data)
    if errors:
        return errors
    return (*(cleaned[name] for name in COLUMNS), cleaned["time"].isoformat())


def _plain_text(*values: str) -> bool:
    for value in values:
        if "\x00" in value or not value.isascii():
            return False  # let the field rules decide, with their messages
    return True


# --- Parsing a bulk request -----------------------------------------------------------------


def _decode(raw: bytes):
    """JSON to Python objects: msgspec (about twice as fast as the standard library here),
    and the standard library for what msgspec refuses but events may hold, such as a NaN
    literal, which must be rejected per event with a message rather than as a broken body."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def parse_batch(raw: bytes) -> list:
    """Decode a bulk body (a JSON list, or {"events": [...]}) into its list of events."""
    max_events = settings.APM_INGEST_MAX_EVENTS
    if not raw.strip():
        raise BatchError(400, "The request body is empty; send a JSON list of events.")
    try:
        payload = _decode(raw)
    except UnicodeDecodeError:
        raise BatchError(400, "The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise BatchError(400, f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise BatchError(400, "The request body is nested too deeply.") from None
    if isinstance(payload, dict):
        if "events" not in payload:
            raise BatchError(400, 'Expected a JSON list of events or {"events": [...]}.')
        payload = payload["events"]
    if not isinstance(payload, list):
        raise BatchError(400, 'Expected a JSON list of events or {"events": [...]}; '
                              "`events` must be a list.")
    if len(payload) > max_events:
        raise BatchError(
            413, f"Too many events: {len(payload)} in one request; the limit is {max_events} "
                 "(APM_INGEST_MAX_EVENTS)."
        )
    return payload


def needs_copy_escaping(raw: bytes) -> bool:
    """Whether any string decoded from this JSON can hold a character COPY must escape.

    JSON writes a backslash, tab, newline and carriage return inside a string only as escapes
    that start with a backslash, so a body without one can't produce any of them.
    """
    return b"\\" in raw


def read_body(request) -> bytes:
    """The body of a Django request, gzip inflated, chunked or not, refusing more than
    APM_INGEST_MAX_BYTES once decompressed (413); see `observability.body`."""
    try:
        # The stream is read directly, not request.body, so Django does not keep a second copy.
        return body.read_capped(request, settings.APM_INGEST_MAX_BYTES)
    except body.BodyError as exc:
        raise BatchError(exc.status, exc.detail) from None


# --- Ingest ---------------------------------------------------------------------------------


@dataclass
class IngestResult:
    inserted: int = 0
    rejected: int = 0
    errors: list = field(default_factory=list)
    errors_truncated: bool = False

    def as_dict(self) -> dict:
        body = {"inserted": self.inserted, "rejected": self.rejected, "errors": self.errors}
        if self.errors_truncated:
            body["errors_truncated"] = True
        return body


def ingest_events(events: list, *, strict: bool, escape: bool = True) -> IngestResult:
    """Validate and store a batch; in strict mode store nothing unless every event is valid.

    The list is rewritten in place (each event replaced by its row tuple) so that a batch is
    held in memory once, not once as dicts and again as rows. `escape=False` is for batches
    whose JSON had no backslash (see `needs_copy_escaping`).
    """
    result = IngestResult()
    write = 0
    plain = not escape
    for index, event in enumerate(events):
        row = validate_event(event, plain=plain)
        if type(row) is tuple:
            events[write] = row
            write += 1
        else:
            result.rejected += 1
            if len(result.errors) < MAX_REPORTED_ERRORS:
                result.errors.append({"index": index, "errors": row})
            else:
                result.errors_truncated = True
    del events[write:]
    if strict and result.rejected:
        return result
    result.inserted = store_rows(events, escape=escape)
    return result


def store_rows(rows: list[tuple], *, escape: bool = True) -> int:
    """Insert validated rows in one transaction (all or none), then refresh stale rollups.

    `escape=False` promises that no string holds a character COPY must escape.
    """
    if not rows:
        return 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            _copy_rows(rows, escape=escape)
        else:
            # bulk_create lists whatever it is given: hand it 500 model instances at a time.
            for start in range(0, len(rows), 500):
                ApiRequest.objects.bulk_create(
                    [ApiRequest(**dict(zip(COLUMNS, row[:8], strict=True))) for row in rows[start:start + 500]]
                )
    refresh_after_write(row[0] for row in rows)
    return len(rows)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class _CopySource:
    """A file-like object that renders rows as COPY text a chunk at a time.

    psycopg2's copy_expert reads it in pieces, so the COPY text never exists whole in memory.
    `escape=False` skips escaping when the caller knows no string holds a backslash, tab,
    newline or carriage return (escaping is most of the cost of rendering a row).
    """

    CHUNK_ROWS = 2000

    def __init__(self, rows: list[tuple], *, escape: bool = True):
        self._rows = rows
        self._next = 0
        self._escape = escape

    def read(self, size: int = -1) -> str:
        start = self._next
        if start >= len(self._rows):
            return ""
        end = min(start + self.CHUNK_ROWS, len(self._rows))
        self._next = end
        chunk = self._rows[start:end]
        if not self._escape:
            return "".join([
                f"{t}\t{s}\t{e}\t{m}\t{c}\t{lat!r}\t{tr}\t{u}\n"
                for _, s, e, m, c, lat, tr, u, t in chunk
            ])
        esc = _COPY_ESCAPES
        return "".join([
            f"{t}\t{s.translate(esc)}\t{e.translate(esc)}\t{m}\t{c}\t{lat!r}\t"
            f"{tr.translate(esc)}\t{u.translate(esc)}\n"
            for _, s, e, m, c, lat, tr, u, t in chunk
        ])

    readline = read

    def read_all(self) -> str:
        """The whole COPY text at once (benchmarks use it to time COPY alone)."""
        return "".join(iter(self.read, ""))


def _copy_rows(rows: list[tuple], *, escape: bool) -> None:
    table = connection.ops.quote_name(ApiRequest._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
    with connection.cursor() as cursor:
        # Relies on: the hypertable's indexes only (no triggers); COPY is the fastest insert.
        cursor.cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", _CopySource(rows, escape=escape))


# --- Keeping continuous aggregates true after late writes ------------------------------------

# (relation, bucket width) of each rollup; on TimescaleDB both are continuous aggregates.
ROLLUPS = (("apirequest_hourly", timedelta(hours=1)), ("apirequest_daily", timedelta(days=1)))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    for relation, width in ROLLUPS:
        watermark = db.cagg_watermark(relation)
        if watermark is None or earliest >= watermark:
            continue  # the common case: nothing written below what is materialized
        step = int(width.total_seconds())
        stale = sorted({int((t - _EPOCH).total_seconds()) // step for t in times if t < watermark})
        for lo, hi in _runs(stale):
            refresh_rollup(relation, _EPOCH + timedelta(seconds=lo * step),
                           _EPOCH + timedelta(seconds=(hi + 1) * step))
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


def refresh_rollup(relation: str, start: datetime | None, end: datetime | None) -> bool:
    """Refresh one continuous aggregate over [start, end); False where there is none."""
    if relation not in dict(ROLLUPS):
        raise ValueError(f"Unknown rollup {relation!r}.")
    if not db.is_continuous_aggregate(relation):
        return False
    with connection.cursor() as cursor:
        # Must run outside a transaction block (TimescaleDB refuses otherwise).
        cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", [relation, start, end])
    return True
