"""schemathesis hooks: the contract's rules that OpenAPI can't state, applied to generated cases.

Loaded by scripts/test/test_schemathesis.sh (SCHEMATHESIS_HOOKS=schemathesis_hooks). They only make
schema-valid data valid for the API too, so "schema-valid request rejected" stays a real finding:

- ranges: `start` not after `end`, `status_min` not above `status_max`, `latency_min` not above
  `latency_max` (a contradictory pair is a 400 by contract); a pair that both parse is put in order;
- non-strict ingest stores the valid events and reports the others with a 200, by contract, so
  a case whose body is invalid is sent with `strict=true`, where any invalid event is a 400;
- /timeseries/ answers at most 1,000 buckets: a generated window past that is narrowed;
- event times: RFC 3339 allows offsets up to ±23:59 and any year, the contract takes offsets up
  to ±15:59 and times at most 24 hours ahead; such a time is replaced by a fixed, ordinary one.

Values a case carries as negative (unparsable, wrong type) are never touched.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import schemathesis
from schemathesis.core.parameters import ParameterLocation

RANGES = (("start", "end"), ("status_min", "status_max"), ("latency_min", "latency_max"))
RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)").fullmatch
ORDINARY_TIME = "2026-03-02T10:00:00Z"
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _aware(value):
    """The RFC 3339 time as an aware datetime (its own offset), or None."""
    if not isinstance(value, str) or not RFC3339(value):
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def _time(value):
    parsed = _aware(value)
    try:
        return parsed.astimezone(UTC) if parsed is not None else None
    except OverflowError:
        return None


def _parse(name, value):
    return _time(value) if name in ("start", "end") else _number(value)


def _ordinary_time(value):
    """A schema-valid time the contract also takes, else a fixed ordinary one."""
    aware = _aware(value)
    if aware is None:
        return value  # not a date-time at all: a negative value, left as generated
    parsed = _time(value)
    if (parsed is None or abs(aware.utcoffset()) > timedelta(hours=15, minutes=59)
            or not EARLIEST <= parsed <= datetime.now(UTC) + timedelta(hours=23)):
        return ORDINARY_TIME
    return value


def _fix_event(event):
    if isinstance(event, dict) and "time" in event:
        event["time"] = _ordinary_time(event["time"])


# /timeseries/ answers at most 1,000 buckets (a 400 past that, by contract).
MAX_BUCKETS = 1000
WIDTHS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _fit_timeseries_window(query):
    interval = query.get("interval")
    width = WIDTHS.get(interval) if isinstance(interval, str) else None
    start, end = _time(query.get("start")), _time(query.get("end"))
    if width is None or start is None:
        return
    if (end or datetime.now(UTC)) - start >= MAX_BUCKETS * width:
        query["start"] = ((end or datetime.now(UTC)) - 24 * width).isoformat().replace("+00:00", "Z")


@schemathesis.hook
def map_case(context, case):
    if isinstance(case.query, dict):
        for low, high in RANGES:
            lo, hi = _parse(low, case.query.get(low)), _parse(high, case.query.get(high))
            if lo is not None and hi is not None and lo > hi:
                case.query[low], case.query[high] = case.query[high], case.query[low]
    if isinstance(case.query, dict) and case.operation.path.rstrip("/").endswith("/timeseries"):
        _fit_timeseries_window(case.query)
    if case.operation.path.rstrip("/").endswith("/ingest") and case.meta is not None \
            and case.meta.is_negative_at(ParameterLocation.BODY):
        case.query = {**(case.query or {}), "strict": "true"}
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        body = body["events"]
    for event in body if isinstance(body, list) else [body]:
        _fix_event(event)
    return case
