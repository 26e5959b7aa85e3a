"""Bounded JSON decoding of a bulk request: an ordinary batch into typed structs that msgspec
checks in C, anything else (huge, nested, odd numbers) within the same limits, never a 500."""

from __future__ import annotations

import codecs
import json
import re
from functools import lru_cache
from typing import Annotated, Literal

import msgspec
from django.conf import settings

from observability import body
from observability.constants import ENDPOINT_MAX, MAX_LATENCY_MS, SERVICE_MAX, TRACE_ID_MAX, USER_REF_MAX
from observability.ingest.rules import PLAIN_TIME_MAX, BatchError, Undecodable, _echo
from observability.models import METHODS

# --- Parsing a bulk request -----------------------------------------------------------------


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


