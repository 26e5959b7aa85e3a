"""Storing a validated batch in one transaction: COPY on PostgreSQL, bulk_create on SQLite,
with the dirty ranges late rows leave (`rollups.mark_dirty`), in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from django.db import connection, transaction

from observability import db, rollups
from observability.ingest.decode import _PENDING, _Event, decode_event
from observability.ingest.rules import _PLAIN_TIMES, COLUMNS, MAX_REPORTED_ERRORS, _utc, time_horizon, validate_event
from observability.models import ApiRequest

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

    `events` are decoded events or their JSON text from `parse_batch` (decoded here one at a
    time). The list is rewritten in place (each event replaced by its row tuple) so that a
    batch is held in memory once, as rows. `escape=False` is for batches
    whose JSON had no backslash (see `needs_copy_escaping`).
    """
    result = IngestResult()
    plain = not escape
    horizon = time_horizon()
    # Events older than the raw retention would be dropped by the next policy run (and a
    # refresh over them would erase rollup buckets): each is that event's error.
    too_old_before = rollups.raw_horizon()
    # A typed batch (see parse_batch) is turned into rows in one tight loop, as far as its
    # events are plainly valid: all of them, as a rule.
    write = _typed_rows(events, plain, horizon, too_old_before)
    pending = _PENDING
    for index in range(write, len(events)):
        event = events[index]
        kind = type(event)
        if kind is _Event:
            event = msgspec.structs.asdict(event)
        elif kind in pending:
            event = decode_event(event)
        row = validate_event(event, plain=plain, horizon=horizon)
        if too_old_before is not None and type(row) is tuple and row[0] < too_old_before:
            row = {"time": [rollups.too_old(row[0], too_old_before)]}
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


def _typed_rows(events: list, plain: bool, horizon: datetime, too_old_before: datetime | None) -> int:
    """Replace a typed batch's events by their rows, in place, from the first up to one that
    the field rules must look at (a time out of range or of another form, too old for the
    retention, or in a body with escapes): how many were replaced.

    The decoder checked every other field. One regular expression checks that all the times
    have the plain form COPY takes as sent (a third of the cost of one per event); a time that
    held a newline (none can in a plain body) would make the count of lines differ.
    """
    if not (plain and events and type(events[0]) is _Event):
        return 0
    times = "\n".join([event.time for event in events])
    if times.count("\n") != len(events) - 1 or _PLAIN_TIMES(times) is None:
        return 0
    del times
    oldest = too_old_before or datetime.min.replace(tzinfo=UTC)
    utc = _utc
    for index, event in enumerate(events):
        time_ = event.time
        parsed = utc(time_, horizon)
        if parsed is None or parsed < oldest:
            return index
        events[index] = (parsed, event.service, event.endpoint, event.method, event.status_code,
                         event.latency_ms, event.trace_id, event.user_ref, time_)
    return len(events)


def store_rows(rows: list[tuple], *, escape: bool = True) -> int:
    """Insert validated rows in one transaction (all or none), with the dirty ranges of late ones.

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
        # In the same transaction: the late rows' ranges are read around the aggregates from
        # the moment the events are visible, never after.
        rollups.mark_dirty(row[0] for row in rows)
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
        db.round_trip_progressing()  # the server took the last chunk: the COPY is alive, not stuck
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
        # The raw psycopg2 cursor: wrap its errors as Django's, like every other query.
        with connection.wrap_database_errors:
            cursor.cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", _CopySource(rows, escape=escape))



