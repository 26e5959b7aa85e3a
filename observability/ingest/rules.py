"""Field rules (API.md "The event"): plain functions that check one event's fields and give
DRF-style per-field messages; the CRUD serializer reuses them, so both paths accept the same input."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from observability.constants import ENDPOINT_MAX, MAX_LATENCY_MS, SERVICE_MAX, TRACE_ID_MAX, USER_REF_MAX
from observability.models import METHODS

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


class Undecodable:
    """An element of a batch that could not be decoded; validating it gives `reason`."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


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


