"""The write path: parse, validate and store events, one at a time or in bulk.

DRF's serializers cost about 29 µs per event and `execute_values` manages about 27k rows/s;
a plain validator costs about 2 µs per event and COPY about 130k rows/s. Bulk ingest is the hot
path of the product, so events are checked here by plain functions (which still give DRF-style
per-field messages, and which the CRUD serializer reuses so both paths accept the same input)
and written with COPY on PostgreSQL. An ordinary batch skips even those: msgspec decodes it
into typed structs with the same types, lengths and ranges checked in C (`_Event`), and only
the times are left to check in Python (`_typed_rows`): about 1.1 µs per event, decoding
included, against 3.4 µs for dicts and the field rules.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal

import msgspec
from django.conf import settings
from django.db import connection, transaction

from observability import body, db, rollups
from observability.constants import MAX_LATENCY_MS
from observability.models import METHODS, ApiRequest

# Column order of the COPY and of the tuples the validator returns.
COLUMNS = ("time", "service", "endpoint", "method", "status_code", "latency_ms", "trace_id", "user_ref")
MAX_REPORTED_ERRORS = 100
# The model's column widths, in characters.
SERVICE_MAX, ENDPOINT_MAX, TRACE_ID_MAX, USER_REF_MAX = (
    ApiRequest._meta.get_field(name).max_length for name in ("service", "endpoint", "trace_id", "user_ref"))

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


# PostgreSQL reads UTC offsets up to 15:59 (SQLite would store anything); one rule everywhere.
MAX_UTC_OFFSET = timedelta(hours=16)
# A clock skewed by a day is a client bug; an event far in the future would sit in every
# "last N hours" window until then.
MAX_AHEAD = timedelta(hours=24)
OFFSET_TOO_LARGE = "The UTC offset must be within -15:59 and +15:59."
TOO_FAR_AHEAD = "Datetime is more than 24 hours ahead of the server's clock."


def time_horizon() -> datetime:
    """The latest event time accepted now."""
    return datetime.now(UTC) + MAX_AHEAD


def clean_time(value, horizon: datetime | None = None) -> datetime:
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
        parsed = parsed.replace(tzinfo=UTC)
    else:
        if not -MAX_UTC_OFFSET < parsed.utcoffset() < MAX_UTC_OFFSET:
            raise Invalid(OFFSET_TOO_LARGE)
        try:
            parsed = parsed.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is in year 0 in UTC
            raise Invalid("Datetime is out of range once converted to UTC.") from None
    if parsed > (horizon or time_horizon()):
        raise Invalid(TOO_FAR_AHEAD)
    return parsed


def clean_service(value) -> str:
    return _text(value, SERVICE_MAX, blank=False)


def clean_endpoint(value) -> str:
    return _text(value, ENDPOINT_MAX, blank=False)


_METHODS = frozenset(METHODS)


def clean_method(value) -> str:
    if value is None:
        raise Invalid(NOT_NULL)
    if type(value) is not str:
        raise Invalid(NOT_STRING)
    upper = value.upper()
    if upper not in _METHODS:
        raise Invalid(f'"{_echo(value)}" is not a valid choice. Use one of {", ".join(METHODS)}.')
    return upper


def _echo(value: str, limit: int = 32) -> str:
    """A client's value as it may appear in a message: short, and encodable as UTF-8 (a lone
    surrogate would make the JSON response itself fail to encode)."""
    shown = value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    return shown + "..." if len(value) > limit else shown


# ASCII digits only, and few of them: str.isdigit() is also true for "²" and for 5,000-digit
# strings, both of which int() refuses.
_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]{1,9}\s*").fullmatch


def clean_status_code(value) -> int:
    if value is None:
        raise Invalid(NOT_NULL)
    kind = type(value)
    if kind is int:
        code = value
    elif kind is float and value.is_integer():
        code = int(value)
    elif kind is str and _INTEGER_TEXT(value):
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
    if number > MAX_LATENCY_MS:
        raise Invalid(f"Ensure this value is less than or equal to {MAX_LATENCY_MS} (one day).")
    return number


def clean_trace_id(value) -> str:
    return _text(value, TRACE_ID_MAX, blank=True)


def clean_user_ref(value) -> str:
    return _text(value, USER_REF_MAX, blank=True)


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


def validate_fields(data, *, partial: bool = False, horizon: datetime | None = None) -> tuple[dict, dict]:
    """Clean one event: (cleaned values, errors by field). `partial` skips absent fields."""
    if isinstance(data, Undecodable):
        return {}, {"non_field_errors": [data.reason]}
    if not isinstance(data, dict):
        return {}, {"non_field_errors": ["Invalid data. Expected an object."]}
    horizon = horizon or time_horizon()
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
            cleaned[name] = cleaner(data[name], horizon) if name == "time" else cleaner(data[name])
        except Invalid as exc:
            errors[name] = [str(exc)]
    return cleaned, errors


# Offset minutes past 59: Python reads "+00:60" as one hour, PostgreSQL refuses it (and with
# it the whole COPY); such a time goes to COPY as Python formats it.
_PLAIN_TIME_FORM = (r"[0-9]{4}-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:\.[0-9]{1,6})?"
                    r"(?:Z|[+-][0-9][0-9]:[0-5][0-9])?")
PLAIN_TIME_MAX = 32  # 2026-01-31T13:45:00.123456+01:00
_PLAIN_TIME = re.compile(_PLAIN_TIME_FORM).fullmatch
# The same form for many times at once, one per line: one call for a batch. Possessive (`*+`):
# a plain `*` keeps backtracking state for every time, ~700 bytes each.
_PLAIN_TIMES = re.compile(rf"{_PLAIN_TIME_FORM}(?:\n{_PLAIN_TIME_FORM})*+").fullmatch
_fromisoformat = datetime.fromisoformat


def validate_event(data, *, plain: bool = False, horizon: datetime | None = None) -> tuple | dict:
    """One event as a row tuple (COLUMNS order, then the time as COPY text), or a dict of
    errors by field.

    The first branch is the hot path of bulk ingest: all checks inline for an event that is
    valid as most are. Anything it does not accept goes through `validate_fields`, which
    applies the same rules field by field and words the messages. `plain=True` says the
    body held no backslash, so no string can hold a NUL or a lone surrogate (JSON can only
    write those as escapes) and those scans are skipped. `horizon` is the latest time
    accepted (computed once per batch by the caller).
    """
    if horizon is None:
        horizon = time_horizon()
    if type(data) is dict:
        get = data.get
        time_ = get("time")
        service = get("service")
        endpoint = get("endpoint")
        trace = get("trace_id", "")
        user = get("user_ref", "")
        method = get("method")
        code = get("status_code")
        latency = get("latency_ms")
        if (
            type(time_) is str
            and type(service) is str and 0 < len(service) <= SERVICE_MAX
            and type(endpoint) is str and 0 < len(endpoint) <= ENDPOINT_MAX
            and type(trace) is str and len(trace) <= TRACE_ID_MAX
            and type(user) is str and len(user) <= USER_REF_MAX
            and type(method) is str and method in _METHODS  # a list is unhashable
            and type(code) is int and 100 <= code <= 599
            and ((type(latency) is float and 0.0 <= latency <= MAX_LATENCY_MS)  # NaN fails both
                 or (type(latency) is int and 0 <= latency <= MAX_LATENCY_MS))
            and (plain or _plain_text(service, endpoint, trace, user))
        ):
            row = _row(time_, service, endpoint, method, code, latency, trace, user, horizon)
            if row is not None:
                return row
    cleaned, errors = validate_fields(data, horizon=horizon)
    if errors:
        return errors
    return (*(cleaned[name] for name in COLUMNS), cleaned["time"].isoformat())


def _utc(time_: str, horizon: datetime) -> datetime | None:
    """The instant a time's text names, in UTC, when the field rules accept it as it is; None
    when they must word a message for it."""
    try:
        parsed = _fromisoformat(time_)
        tz = parsed.tzinfo
        if tz is None:
            parsed = parsed.replace(tzinfo=UTC)
        elif tz is not UTC:  # "Z" and "+00:00" parse to UTC itself
            if not -MAX_UTC_OFFSET < parsed.utcoffset() < MAX_UTC_OFFSET:
                return None
            parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if parsed <= horizon else None


def _row(time_: str, service: str, endpoint: str, method: str, code: int, latency, trace: str, user: str,
         horizon: datetime) -> tuple | None:
    """The row of an event whose fields other than the time are known to be valid, or None
    when its time is one the field rules must word a message for."""
    parsed = _utc(time_, horizon)
    if parsed is None:
        return None
    # PostgreSQL reads a string of this plain form exactly as Python did (naive means UTC:
    # the session's zone), so COPY can take it as sent: cheaper than formatting the datetime
    # again.
    text = time_ if _PLAIN_TIME(time_) else parsed.isoformat()
    return (parsed, service, endpoint, method, code, float(latency), trace, user, text)


def _plain_text(*values: str) -> bool:
    for value in values:
        if "\x00" in value or not value.isascii():
            return False  # let the field rules decide, with their messages
    return True


def update_event(instance: ApiRequest, changes: dict) -> ApiRequest:
    """Apply validated field changes to a stored event (PUT/PATCH), keeping its id.

    On a TimescaleDB hypertable an UPDATE can't move a row to another chunk (the chunk's
    CHECK constraint fails), so an event whose time changes is deleted and inserted again,
    in one transaction; the same on every database, so there is one code path.
    """
    moved = "time" in changes and changes["time"] != instance.time
    for name, value in changes.items():
        setattr(instance, name, value)
    with transaction.atomic():
        if moved:
            ApiRequest.objects.filter(pk=instance.pk).delete()
            instance.save(force_insert=True)
        else:
            instance.save()
    return instance


# --- Parsing a bulk request -----------------------------------------------------------------


class Undecodable:
    """An element of a batch that could not be decoded; validating it gives `reason`."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


# Bounded decoding. A body within the byte limit must not be able to grow a worker by more than
# a few times that limit, whatever it holds. Decoding it whole would: 16 MiB of `{},` is 5.6
# million dicts (~26x the body). So the outer list is decoded first into at most
# APM_INGEST_MAX_EVENTS + 1 `msgspec.Raw` slices (an array-like Struct with that many fields;
# msgspec skips the elements past the last field without building them, and a filled last field
# means "too many"), then each event on its own. An event larger than SMALL_EVENT is decoded
# field by field, so its unknown fields (ignored by the contract) are never built either.
SMALL_EVENT = 64 * 1024
NESTED_TOO_DEEPLY = "The event is nested too deeply."


@lru_cache(maxsize=4)
def _outer_decoder(max_events: int) -> msgspec.json.Decoder:
    slots = msgspec.defstruct(
        "EventSlots", [(f"e{i}", msgspec.Raw, msgspec.Raw()) for i in range(max_events + 1)],
        array_like=True, gc=False,
    )
    return msgspec.json.Decoder(slots)


class _Wrapped(msgspec.Struct, gc=False):
    """{"events": [...]}: only `events` is kept; other keys are skipped unbuilt."""

    events: msgspec.Raw = msgspec.Raw()


class _EventFields(msgspec.Struct, gc=False):
    """The fields of a large event as raw JSON; unknown fields are skipped unbuilt."""

    time: msgspec.Raw = msgspec.Raw()
    service: msgspec.Raw = msgspec.Raw()
    endpoint: msgspec.Raw = msgspec.Raw()
    method: msgspec.Raw = msgspec.Raw()
    status_code: msgspec.Raw = msgspec.Raw()
    latency_ms: msgspec.Raw = msgspec.Raw()
    trace_id: msgspec.Raw = msgspec.Raw()
    user_ref: msgspec.Raw = msgspec.Raw()


class _Event(msgspec.Struct, gc=False):
    """An event the typed decoder accepts: every type, length and range that `validate_event`'s
    first branch checks in Python, checked in C while decoding. Only the time's form and range
    are left to check (`_typed_rows`). Unknown fields are skipped unbuilt."""

    # No longer than the plain form: a longer time can't be COPY'd as sent anyway, and an
    # unbounded one (16 MiB of it) would be copied again when the batch's times are checked.
    time: Annotated[str, msgspec.Meta(max_length=PLAIN_TIME_MAX)]
    service: Annotated[str, msgspec.Meta(min_length=1, max_length=SERVICE_MAX)]
    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=ENDPOINT_MAX)]
    method: Literal[METHODS]
    status_code: Annotated[int, msgspec.Meta(ge=100, le=599)]  # refuses true/false and 200.0
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=MAX_LATENCY_MS)]  # an integer becomes a float
    trace_id: Annotated[str, msgspec.Meta(max_length=TRACE_ID_MAX)] = ""
    user_ref: Annotated[str, msgspec.Meta(max_length=USER_REF_MAX)] = ""


_decode_typed = msgspec.json.Decoder(list[_Event]).decode
_decode_any = msgspec.json.decode
_decode_wrapped = msgspec.json.Decoder(_Wrapped).decode
_decode_fields = msgspec.json.Decoder(_EventFields).decode
_FIRST_TOKEN = re.compile(rb"\s*").match
BAD_SHAPE = 'Expected a JSON list of events or {"events": [...]}.'


def check_utf8(raw: bytes) -> None:
    """RFC 8259: UTF-8 only. Checked in 64 KiB steps, so a mostly-ASCII body with one
    4-byte character never becomes a 4-bytes-per-character str."""
    if raw.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    try:
        for offset in range(0, len(raw), 65536):
            decoder.decode(view[offset:offset + 65536])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise BatchError(400, "The request body is not valid UTF-8 (RFC 8259: JSON is UTF-8).") from None


def _huge_int(text: str):
    # Python refuses int() past 4,300 digits; as a float it is an infinity the rules reject
    # with a message, in any field.
    return int(text) if len(text) <= 4000 else float(text)


def _stdlib_loads(text: str):
    return json.loads(text, parse_int=_huge_int)


def decode_event(raw) -> object:
    """One event's JSON to Python: a dict (or whatever JSON it is), or an `Undecodable`.

    msgspec first; the standard library for what msgspec refuses but an event may hold and the
    field rules then reject with a message: NaN/Infinity literals, numbers past a float, lone
    surrogates.
    """
    if len(raw) > SMALL_EVENT:
        return _decode_large_event(raw)
    try:
        return _decode_any(raw)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        return _stdlib_loads(bytes(raw).decode("utf-8"))
    except RecursionError:
        return Undecodable(NESTED_TOO_DEEPLY)
    except (ValueError, UnicodeDecodeError):
        return Undecodable("The event is not valid JSON.")


def _decode_large_event(raw) -> object:
    try:
        fields = _decode_fields(raw)
    except msgspec.ValidationError:
        return _decode_scalar(raw)  # not an object: a scalar is rejected as such, a list too
    except RecursionError:
        return Undecodable(NESTED_TOO_DEEPLY)
    except msgspec.DecodeError:
        return Undecodable("The event is not valid JSON (or holds NaN, Infinity or a lone surrogate, "
                           "which only a smaller event may).")
    event = {}
    for name in _EventFields.__struct_fields__:
        value = getattr(fields, name)
        if value:
            event[name] = _decode_scalar(value)
    return event


def _decode_scalar(raw) -> object:
    """A value of a large event: containers stay unbuilt (any list or dict is the wrong type)."""
    first = memoryview(raw)[:1].tobytes()
    if first == b"[":
        return []
    if first == b"{":
        return {}
    try:
        return _decode_any(raw)
    except msgspec.DecodeError:
        try:
            return _stdlib_loads(bytes(raw).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return Undecodable("The event is not valid JSON.")


def parse_batch(raw: bytes) -> list:
    """Decode a bulk body (a JSON list, or {"events": [...]}) into its events.

    A body of ordinary events is decoded in one call. Any other is split into its events still
    as JSON text (`ingest_events` decodes each when it validates it, so only one decoded event
    exists at a time), or an `Undecodable` for an event that can't be decoded. Raises
    BatchError for a body that is not UTF-8 JSON of that shape (400) or holds too many events
    (413).
    """
    max_events = settings.APM_INGEST_MAX_EVENTS
    if not raw.strip():
        raise BatchError(400, "The request body is empty; send a JSON list of events.")
    check_utf8(raw)
    typed = _decode_typed_batch(raw, max_events)
    if typed is not None:
        return typed
    whole = _decode_whole(raw, max_events)
    if whole is not None:
        return whole
    first = raw[_FIRST_TOKEN(raw).end():][:1]
    body = raw
    if first == b"{":
        try:
            body = _decode_wrapped(raw).events
        except msgspec.ValidationError:
            raise BatchError(400, BAD_SHAPE) from None
        except (msgspec.DecodeError, RecursionError):
            body = _sanitized_events(raw)
        if not body:
            raise BatchError(400, BAD_SHAPE)
        first = memoryview(body)[:1].tobytes()
        if first != b"[":
            raise BatchError(400, BAD_SHAPE + " `events` must be a list.")
    elif first != b"[":
        _raise_for_non_list(raw)
    try:
        slots = msgspec.structs.astuple(_outer_decoder(max_events).decode(body))
    except (msgspec.DecodeError, RecursionError):
        return _parse_refused(bytes(body), max_events)
    if slots[-1]:
        raise BatchError(413, _too_many(max_events))
    events = []
    for item in slots:
        if not item:
            break
        events.append(item)
    return events


def _decode_typed_batch(raw: bytes, max_events: int) -> list | None:
    """The events as `_Event`s (the fast path of an ordinary batch), or None for any other body.

    Only a plain JSON list (no backslash, so no string can hold NUL, a lone surrogate or a
    character COPY escapes) in which every event has valid types, lengths and ranges; msgspec
    stops at the first that does not, and the body then goes the way that words each error.
    Each '{' builds at most one event (about 300 bytes beyond its strings' own), and at most
    four per allowed event are let through (a route's `{org}` and `{id}` count too): memory
    stays within a few times the body even for a body of too many tiny events.
    """
    start = _FIRST_TOKEN(raw).end()
    if raw[start:start + 1] != b"[" or needs_copy_escaping(raw) or raw.count(b"{") > 4 * max_events + 2:
        return None
    try:
        events = _decode_typed(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    if len(events) > max_events:
        raise BatchError(413, _too_many(max_events))
    return events


def _decode_whole(raw: bytes, max_events: int) -> list | None:
    """The events decoded in one call (the fast path), when that is safe: when the body holds
    few enough JSON values that building them all stays within a few times the byte limit.
    Every value but the first follows a comma or a colon: at most APM_INGEST_MAX_BYTES / 64 of
    them (scalars, ~60 bytes each built), and at most two containers per allowed event (an
    object costs ~250 bytes; brackets inside strings only make the count safer). An ordinary
    event is ~18 values and one object (two with a `{id}` route): 10,000 of them pass. None
    when the body must go the bounded way (or msgspec refuses it)."""
    if (raw.count(b",") + raw.count(b":") > settings.APM_INGEST_MAX_BYTES // 64
            or raw.count(b"{") + raw.count(b"[") > 2 * max_events + 2):
        return None
    try:
        payload = _decode_any(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if type(payload) is dict:
        if "events" not in payload:
            raise BatchError(400, BAD_SHAPE)
        payload = payload["events"]
        if type(payload) is not list:
            raise BatchError(400, BAD_SHAPE + " `events` must be a list.")
    elif type(payload) is not list:
        raise BatchError(400, BAD_SHAPE)
    if len(payload) > max_events:
        raise BatchError(413, _too_many(max_events))
    return payload


def _too_many(max_events: int) -> str:
    return f"Too many events: more than {max_events} in one request; the limit is {max_events} (APM_INGEST_MAX_EVENTS)."


def _raise_for_non_list(raw: bytes):
    """400 for a body that is not a list or a wrapped list: invalid JSON, or another shape.
    Checked without building anything (a Raw), so even a huge invalid body costs no memory."""
    try:
        _decode_raw(raw)
    except RecursionError:
        raise BatchError(400, "The request body is nested too deeply.") from None
    except msgspec.DecodeError as exc:
        raise BatchError(400, f"The request body is not valid JSON: {exc}.") from None
    raise BatchError(400, BAD_SHAPE)


_decode_raw = msgspec.json.Decoder(msgspec.Raw).decode


# What msgspec refuses in a body that the standard library reads (and the field rules then
# reject per event), replaced by text of the same length that msgspec reads, only to find where
# each event starts and ends; every event is then decoded from the body as sent.
_SAME_LENGTH = ((b"-Infinity", b"-1.000000"), (b"Infinity", b"1.000000"), (b"NaN", b"0.0"),
                (b"\\ud", b"\\u0"), (b"\\uD", b"\\u0"))


def _same_length_substitute(body: bytes) -> bytes:
    for old, new in _SAME_LENGTH:
        if old in body:
            body = body.replace(old, new)
    return body


def _sanitized_events(raw: bytes) -> bytes:
    """The `events` list of a wrapped body msgspec refused, as sent."""
    try:
        events = _decode_wrapped(_same_length_substitute(raw)).events
    except msgspec.ValidationError:
        raise BatchError(400, BAD_SHAPE) from None
    except RecursionError:
        return _wrapped_events_by_hand(raw)
    except msgspec.DecodeError:
        _raise_for_non_list(raw)
    if not events:
        return b""
    start = _same_length_substitute(raw).find(bytes(events))
    return raw[start:start + len(events)]


def _parse_refused(body: bytes, max_events: int) -> list:
    """The events of a list msgspec refused: invalid JSON (400), or one of the values above,
    or an event nested past the recursion limit (that event's error)."""
    substitute = _same_length_substitute(body)
    try:
        slots = msgspec.structs.astuple(_outer_decoder(max_events).decode(substitute))
    except msgspec.DecodeError:
        _raise_for_non_list(body)
    except RecursionError:
        return _parse_deep(body, max_events)
    if slots[-1]:
        raise BatchError(413, _too_many(max_events))
    events = []
    view = memoryview(body)
    position = 1  # after the list's own bracket
    for item in slots:
        if not item:
            break
        text = bytes(item)
        # Elements follow each other separated by commas and spaces, which no element starts
        # with: the first match from the end of the previous one is this element.
        start = substitute.find(text, position)
        position = start + len(text)
        events.append(view[start:position])
    return events


# Strings, runs of opening or closing brackets, commas, and other scalars.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]+|[\]}]+|,|[^\s\[\]{},"]+')


def _wrapped_events_by_hand(raw: bytes) -> bytes:
    """The `events` list of a wrapped body nested past the decoder's limit (in some event)."""
    depth = 0
    key = None  # the last string seen at depth 1 and whether a colon followed it
    for token in _TOKENS.finditer(raw):
        text = token.group()
        kind = text[:1]
        if kind == b"[" or kind == b"{":
            if depth == 1 and key == (b'"events"', True) and kind == b"[":
                start, depth_inside = token.start(), 1
                for inner in _TOKENS.finditer(raw, token.start() + 1):
                    more = inner.group()
                    if more[:1] in (b"[", b"{"):
                        depth_inside += len(more)
                    elif more[:1] in (b"]", b"}"):
                        if depth_inside - len(more) <= 0:
                            return raw[start:inner.start() + depth_inside]
                        depth_inside -= len(more)
                break
            depth += len(text)
        elif kind == b"]" or kind == b"}":
            depth -= len(text)
        elif depth == 1:
            key = (text, False) if kind == b'"' else (key[0], True) if text == b":" and key else None
    raise BatchError(400, BAD_SHAPE)


def _parse_deep(body: bytes, max_events: int) -> list:
    """Split a list by hand when an event nests past the decoder's recursion limit, so only
    that event is rejected. Rare, and linear in the body's tokens: a run of brackets is one
    token, so even 16 MiB of `[[[[...` is a handful of steps. Tokens are measured, not copied,
    and the events are views of the body: a 16 MiB event would otherwise be held twice more
    (as its bracket runs and as its slice) while the body is."""
    depth = 0
    start = None
    spans = []
    view = memoryview(body)
    for token in _TOKENS.finditer(body):
        at, end = token.span()
        kind = body[at:at + 1]
        size = end - at
        if kind == b"[" or kind == b"{":
            if depth == 0:  # the list itself, and maybe the first event's own brackets
                depth = size
                if depth > 1:
                    start = at + 1
                continue
            if depth == 1 and start is None:
                start = at
            depth += size
        elif kind == b"]" or kind == b"}":
            if start is not None and depth - size <= 1:
                spans.append((start, at + max(depth - 1, 0)))
                start = None
            depth -= size
            if depth <= 0:
                break
        elif kind == b",":
            if depth == 1 and start is not None:
                spans.append((start, at))
                start = None
        elif depth == 1 and start is None:  # a string or another scalar
            start = at
        if len(spans) > max_events:
            raise BatchError(413, _too_many(max_events))
    if depth != 0:
        raise BatchError(400, "The request body is not valid JSON: unbalanced brackets.")
    return [view[lo:hi] for lo, hi in (_stripped(body, lo, hi) for lo, hi in spans)]


def _stripped(body: bytes, lo: int, hi: int) -> tuple[int, int]:
    """The span without JSON whitespace at its ends."""
    while lo < hi and body[lo] in b" \t\r\n":
        lo += 1
    while hi > lo and body[hi - 1] in b" \t\r\n":
        hi -= 1
    return lo, hi


def check_json_content_type(header: str) -> None:
    """415 unless the media type is exactly application/json (not application/jsonp), 400 for
    a charset other than UTF-8 (RFC 8259)."""
    media_type, _, params = header.partition(";")
    if media_type.strip().lower() != "application/json":
        raise BatchError(415, f'Unsupported media type "{_echo(media_type.strip(), 100)}"; '
                              "send application/json.")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise BatchError(400, "JSON bodies must be UTF-8 (RFC 8259); "
                                  f'charset "{_echo(value.strip(), 40)}" is not accepted.')


# The types `parse_batch` gives an event's JSON text as (never what JSON decodes to).
_PENDING = frozenset((msgspec.Raw, memoryview, bytes))


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
    rollups.refresh_after_write(row[0] for row in rows)
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


