"""OTLP/HTTP traces -> events: decode, map SERVER spans, then the bulk ingest write path.

The receiver answers as the OTLP specification asks (opentelemetry-proto
docs/specification.md, "OTLP/HTTP"), not with the JSON error shape of the rest of the API:
success is an empty `ExportTraceServiceResponse`, spans that can't be stored are a `200` with
`partialSuccess` (exporters must not retry those), and failures carry a `google.rpc.Status`,
each in the request's own encoding (binary protobuf or OTLP/JSON).

OTLP/JSON is not protobuf's JSON mapping (ids are hex, not base64; enums are integers;
int64 may be a string or a number), so JSON bodies are walked by hand after msgspec decodes
them, rather than given to `json_format`, which would read a hex trace id as base64.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import msgspec
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, json_format, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from observability import access, ingest

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# The content types each encoding is read from; the answer is always sent as the first.
_CONTENT_TYPES = {PROTOBUF: "protobuf", "application/protobuf": "protobuf", JSON: "json"}

SPAN_KIND_SERVER = 2
# Seconds an exporter should wait before retrying after a 503 (database unavailable).
RETRY_AFTER_SECONDS = 5
# How many rejected spans the partialSuccess message describes one by one.
MAX_DESCRIBED = 5

# The google.rpc.Code closest to each HTTP status we answer (google/rpc/code.proto maps
# 400, 401, 403, 404, 429, 500, 501, 503 this way; 413 and 415 have no exact code).
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}

# Attributes read from a span (current HTTP semantic conventions first, then the older names).
METHOD_KEYS = ("http.request.method", "http.method")
STATUS_KEYS = ("http.response.status_code", "http.status_code")
ROUTE_KEY = "http.route"
PATH_KEYS = ("url.path", "http.target")
URL_KEYS = ("url.full", "http.url")
USER_KEY = "enduser.id"
_SPAN_KEYS = frozenset((*METHOD_KEYS, *STATUS_KEYS, ROUTE_KEY, *PATH_KEYS, *URL_KEYS, USER_KEY))
DEFAULT_SERVICE = "unknown_service"  # what the SDKs report when service.name is not set

# A path segment that is an id, not part of the route: a number, a UUID, or long hex.
_ID_SEGMENT = re.compile(
    r"\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}"
).fullmatch
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OtlpError(Exception):
    """The request as a whole is refused: HTTP status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class ExportOutcome:
    """What became of one export request's spans (counts for metrics and the answer)."""

    spans: int = 0  # every span in the request
    accepted: int = 0  # stored as events
    rejected: int = 0  # SERVER HTTP spans that could not be stored (partial success)
    skipped: int = 0  # other kinds, and SERVER spans without HTTP attributes: not ours
    nbytes: int = 0  # the body's size after decompression
    problems: list[str] = field(default_factory=list)

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        shown = "; ".join(problem.rstrip(".") for problem in self.problems[:MAX_DESCRIBED])
        more = f" (and {self.rejected - MAX_DESCRIBED} more)" if self.rejected > MAX_DESCRIBED else ""
        return f"{self.rejected} span(s) not stored: {shown}{more}."


# --- Mapping one span to one event ----------------------------------------------------------


def collapse_ids(path: str) -> str:
    """/users/42/orders/9f1c...e2 -> /users/{id}/orders/{id}: one endpoint per route."""
    path = path.split("?", 1)[0].split("#", 1)[0]  # never store query strings
    return "/".join("{id}" if segment and _ID_SEGMENT(segment) else segment for segment in path.split("/"))


def derive_endpoint(get, name: str, method) -> str | None:
    """http.route as sent; else the span name's path (`GET /users/42`) or the request path,
    with ids collapsed; None when the span names no route or path at all. `get(key)` reads
    a span attribute (dict.get will do)."""
    route = get(ROUTE_KEY)
    if type(route) is str and route:
        return route.split("?", 1)[0]
    if type(name) is str and type(method) is str and name.startswith(method + " /"):
        return collapse_ids(name[len(method) + 1:])
    for key in PATH_KEYS:
        path = get(key)
        if type(path) is str and path:
            return collapse_ids(path)
    for key in URL_KEYS:
        url = get(key)
        if type(url) is str and url:
            try:
                path = urlsplit(url).path
            except ValueError:
                continue
            if path:
                return collapse_ids(path)
    return None


def span_event(*, service, name, trace_id: str, start, end, get):
    """The event dict of one SERVER span, a string saying why it can't be one, or None when
    it is not an HTTP span (gRPC, messaging: not ours to store). `get(key)` reads one of the
    span's attributes (None when absent), so only the attributes needed are decoded."""
    method = get("http.request.method")
    if method is None:
        method = get("http.method")
        if method is None:
            return None
    status = get("http.response.status_code")
    if status is None:
        status = get("http.status_code")
        if status is None:
            return "status_code: the span has no http.response.status_code (or http.status_code)"
    endpoint = derive_endpoint(get, name, method)
    if endpoint is None:
        return "endpoint: the span has no http.route, route in its name, url.path or http.target"
    if type(start) is not int or type(end) is not int or start <= 0 or end <= 0:
        return "time: startTimeUnixNano and endTimeUnixNano must be positive integers"
    time_ = _iso_time(start)
    if time_ is None:
        return "time: startTimeUnixNano is out of range"
    user = get(USER_KEY)
    return {
        "time": time_,
        "service": service,
        "endpoint": endpoint,
        "method": method,
        "status_code": status,
        "latency_ms": (end - start) / 1e6,
        "trace_id": trace_id,
        "user_ref": "" if user is None else user if type(user) is str else str(user),
    }


@functools.lru_cache(maxsize=4096)
def _iso_minute(minute: int) -> str | None:
    """'2026-03-02T10:15:' for minutes since the epoch; None past year 9999."""
    try:
        return (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
    except OverflowError:
        return None


def _iso_time(unix_nano: int) -> str | None:
    """ISO 8601 UTC text of a span timestamp, to the microsecond (what the column holds).

    The minute comes from a small cache and the rest is %-formatted: a datetime and its
    isoformat() cost about three times as much, and this runs once a span."""
    second, nanos = divmod(unix_nano, 1_000_000_000)
    minute, second = divmod(second, 60)
    prefix = _iso_minute(minute)
    if prefix is None:
        return None
    return "%s%02d.%06d+00:00" % (prefix, second, nanos // 1000)  # noqa: UP031 - faster than f"{:02d}"


# --- Decoding ---------------------------------------------------------------------------------


def _slim_request_class():
    """A message class wire-compatible with ExportTraceServiceRequest that reads only what an
    event needs, with attributes declared as `map<string, bytes>`.

    A map entry is encoded exactly like `KeyValue {string key = 1; AnyValue value = 2}`, so
    the parser (C, upb) builds each span's attribute lookup table itself and leaves every
    AnyValue undecoded until asked for: reading a span's HTTP attributes through the generated
    classes costs about 20 µs per span (a Python object per attribute and value), through this
    one about 2-3 µs. Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and
    collector/trace/v1/trace_service.proto; fields not declared here (events, links, status,
    scope, ...) are skipped by the parser as unknown fields.
    """
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="apm_otlp_slim.proto", package="apm.otlp", syntax="proto3")

    def message(name: str, fields: list, *, attributes: int | None = None):
        m = proto.message_type.add(name=name)
        if attributes is not None:
            entry = m.nested_type.add(name="AttributesEntry")
            entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
            entry.options.map_entry = True
            entry_type = f".apm.otlp.{name}.AttributesEntry"
            fields = [*fields, ("attributes", attributes, field.TYPE_MESSAGE, entry_type, True)]
        for fname, number, kind, type_name, repeated in fields:
            f = m.field.add(name=fname, number=number, type=kind,
                            label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name

    message("Resource", [], attributes=1)
    message("Span", [("trace_id", 1, field.TYPE_BYTES, None, False), ("span_id", 2, field.TYPE_BYTES, None, False),
                     ("name", 5, field.TYPE_STRING, None, False), ("kind", 6, field.TYPE_INT32, None, False),
                     ("start_time_unix_nano", 7, field.TYPE_FIXED64, None, False),
                     ("end_time_unix_nano", 8, field.TYPE_FIXED64, None, False)], attributes=9)
    message("ScopeSpans", [("spans", 2, field.TYPE_MESSAGE, ".apm.otlp.Span", True)])
    message("ResourceSpans", [("resource", 1, field.TYPE_MESSAGE, ".apm.otlp.Resource", False),
                              ("scope_spans", 2, field.TYPE_MESSAGE, ".apm.otlp.ScopeSpans", True)])
    message("ExportTraceServiceRequest", [("resource_spans", 1, field.TYPE_MESSAGE, ".apm.otlp.ResourceSpans", True)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("apm.otlp.ExportTraceServiceRequest"))


_SlimExportTraceServiceRequest = _slim_request_class()
# More characters than any event field holds (255), far fewer than a body may send.
MAX_DECODED_STRING = 64 * 1024
_PB_SCALARS = frozenset(("string_value", "int_value", "bool_value", "double_value"))


def _any_value(raw: bytes):
    """The scalar an encoded AnyValue holds; None for arrays, maps and bytes."""
    size = len(raw)
    if size >= 2:
        first, second = raw[0], raw[1]
        if first == 0x0A and second < 0x80 and size == second + 2:
            # The common case: a short string_value (field 1, one-byte length).
            try:
                return raw[2:].decode("utf-8")
            except UnicodeDecodeError:
                return raw  # a value no field accepts: the span is rejected with a message
        if first == 0x18:  # int_value (field 3, varint): one or two bytes cover 0-16383
            if size == 2 and second < 0x80:
                return second
            if size == 3 and second >= 0x80 and raw[2] < 0x80:
                return (second & 0x7F) | (raw[2] << 7)
        if first == 0x0A and size > MAX_DECODED_STRING:
            # A string longer than any field takes is that span's error whatever its length:
            # its first MAX_DECODED_STRING bytes say so (too long) without two more copies
            # of a value that may be the whole body.
            try:
                length, start = _varint_at(raw, 1)
            except IndexError:
                return raw
            if start + length == size:
                return raw[start:start + MAX_DECODED_STRING].decode("utf-8", "replace")
    try:
        value = AnyValue.FromString(raw)
    except DecodeError:
        return raw
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in _PB_SCALARS else None


def _pb_getter(attributes):
    """get(key) over a span's undecoded attribute map: decodes only what is asked for."""
    raw_get = attributes.get

    def get(key):
        raw = raw_get(key)
        if raw is None:
            return None
        # Inlined from _any_value for the common short string (this runs ~4 times a span).
        if len(raw) >= 2 and raw[0] == 0x0A and raw[1] < 0x80 and len(raw) == raw[1] + 2:
            try:
                return raw[2:].decode("utf-8")
            except UnicodeDecodeError:
                return raw
        return _any_value(raw)

    return get


# What the parser allocates per message it builds, as measured in a gunicorn worker thread
# (an empty span ~100 bytes, an attribute map entry ~120), and the most one body may make it
# allocate: 1.5x the byte limit, so that with the body and its events the worker's growth
# stays within the 4x bound of API.md "Back-pressure". A body of 8 million 2-byte empty spans
# fits in 16 MiB and would otherwise take ~850 MiB.
PB_MESSAGE_COST = 128
PB_ENTRY_COST = 128
# The messages the slim parser builds, by parent: field number -> child (None: a map entry).
_PB_CHILDREN = {"request": {1: "resource_spans"}, "resource_spans": {1: "resource", 2: "scope_spans"},
                "resource": {1: None}, "scope_spans": {2: "span"}, "span": {9: None}}
# The same, down to the resources only (a scope_spans counted, not walked into).
_PB_RESOURCES = {**_PB_CHILDREN, "resource_spans": {1: "resource", 2: None}}


def _pb_parse_cost(raw: bytes, budget: int, children: dict = _PB_CHILDREN) -> int:
    """What parsing `raw` would allocate (PB_*_COST units), counted on the wire; stops once
    past `budget`. Only bodies whose tag bytes could add up to more get here (see
    check_protobuf_cost), so ordinary exports never pay for this loop."""
    cost = 0
    stack = [(0, len(raw), "request")]
    try:
        while stack:
            pos, end, kind = stack.pop()
            wanted = children[kind]
            while pos < end:
                tag, pos = _varint_at(raw, pos)
                wire = tag & 7
                if wire == 2:
                    size, pos = _varint_at(raw, pos)
                    if (tag >> 3) in wanted:
                        child = wanted[tag >> 3]
                        if child is None:
                            cost += PB_ENTRY_COST
                        else:
                            cost += PB_MESSAGE_COST
                            stack.append((pos, pos + size, child))
                        if cost > budget:
                            return cost
                    pos += size
                elif wire == 0:
                    pos = _varint_at(raw, pos)[1]
                elif wire in (1, 5):
                    pos += 8 if wire == 1 else 4
                else:  # groups: no OTLP message has one
                    raise OtlpError(400, "The body is not a valid ExportTraceServiceRequest: it holds a group field.")
    except IndexError:
        pass  # truncated: the parser says so with its own message
    return cost


def _varint_at(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def check_protobuf_cost(raw: bytes) -> None:
    """413 for a protobuf body whose parse would allocate more than 1.5x the byte limit.

    The resources are few and counted exactly (a short walk); each span and scope starts with
    a 0x12 tag byte and each span attribute with 0x4a, so counting those bytes (C speed) bounds
    the rest from above. Only a body over the budget by that bound (e.g. 10,000 spans with 20
    attributes each) is walked field by field to count what it really holds."""
    budget = settings.APM_INGEST_MAX_BYTES * 3 // 2
    bound = (_pb_parse_cost(raw, budget, _PB_RESOURCES)
             + max(PB_MESSAGE_COST, PB_ENTRY_COST) * (raw.count(b"\x12") + raw.count(b"\x4a")))
    if bound > budget and _pb_parse_cost(raw, budget) > budget:
        raise OtlpError(413, f"The body holds too many spans and attributes for its size: decoding them would "
                             f"take more than {budget} bytes (1.5 x APM_INGEST_MAX_BYTES); split the export.")


def spans_from_protobuf(raw: bytes, outcome: ExportOutcome):
    """Yield (span label, event or problem) for each SERVER HTTP span of a protobuf body."""
    check_protobuf_cost(raw)
    try:
        request = _SlimExportTraceServiceRequest.FromString(raw)
    except DecodeError as exc:
        raise OtlpError(400, f"The body is not a valid ExportTraceServiceRequest: {exc}.") from None
    for resource_spans in request.resource_spans:
        service = _pb_getter(resource_spans.resource.attributes)("service.name")
        service = DEFAULT_SERVICE if service is None else service
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            outcome.spans += len(spans)
            for span in spans:
                if span.kind != SPAN_KIND_SERVER:
                    outcome.skipped += 1
                    continue
                event = _common_server_span(span, service)
                if event is None:
                    event = span_event(
                        service=service, name=span.name, trace_id=span.trace_id.hex(),
                        start=span.start_time_unix_nano, end=span.end_time_unix_nano,
                        get=_pb_getter(span.attributes),
                    )
                    if event is None:
                        outcome.skipped += 1
                        continue
                yield span.span_id, event


def _common_server_span(span, service):
    """span_event for the span every current HTTP instrumentation sends, inlined: method,
    route and user as short strings, the status as a two-byte varint, no query in the route.
    None for anything else, which span_event then maps (this is the hot loop of a 5,000-span
    export; test_otlp checks both give the same events)."""
    get = span.attributes.get
    method = get("http.request.method")
    route = get("http.route")
    status = get("http.response.status_code")
    start = span.start_time_unix_nano
    if (
        method is None or route is None or status is None or start <= 0
        or len(status) != 3 or status[0] != 0x18 or status[1] < 0x80 or status[2] >= 0x80
        or len(method) < 3 or method[0] != 0x0A or len(method) != method[1] + 2
        or len(route) < 3 or route[0] != 0x0A or route[1] >= 0x80 or len(route) != route[1] + 2
    ):
        return None
    user = get(USER_KEY)
    if user is None:
        user = b"\n\x00"
    elif len(user) < 2 or user[0] != 0x0A or user[1] >= 0x80 or len(user) != user[1] + 2:
        return None
    try:
        method = method[2:].decode()
        route = route[2:].decode()
        user = user[2:].decode()
    except UnicodeDecodeError:
        return None
    if "?" in route:
        return None
    time_ = _iso_time(start)
    if time_ is None:
        return None
    return {
        "time": time_,
        "service": service,
        "endpoint": route,
        "method": method,
        "status_code": (status[1] & 0x7F) | (status[2] << 7),
        "latency_ms": (span.end_time_unix_nano - start) / 1e6,
        "trace_id": span.trace_id.hex(),
        "user_ref": user,
    }


_SERVICE_KEYS = frozenset(("service.name",))
_JSON_VALUE_KINDS = ("stringValue", "intValue", "boolValue", "doubleValue")


def _json_list(obj: dict, key: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise OtlpError(400, f"`{key}` must be a list.")
    return value


def _json_object(value, where: str) -> dict:
    if type(value) is not dict:
        raise OtlpError(400, f"Each item of `{where}` must be an object.")
    return value


def _json_attrs(key_values, wanted: frozenset) -> dict:
    found = {}
    if type(key_values) is not list:
        return found
    for kv in key_values:
        if type(kv) is not dict:
            continue
        key = kv.get("key")
        value = kv.get("value")
        if key in wanted and type(value) is dict:
            for kind in _JSON_VALUE_KINDS:
                if kind in value:
                    item = value[kind]
                    # OTLP/JSON writes int64 as a string or a number.
                    found[key] = _json_int(item) if kind == "intValue" else item
                    break
    return found


def _json_int(value):
    if type(value) is int:
        return value
    if type(value) is str and value.isdigit():
        return int(value)
    return value  # the field rules reject it with their own message


def spans_from_json(raw: bytes, outcome: ExportOutcome):
    """Yield (span label, event or problem) for each SERVER HTTP span of an OTLP/JSON body."""
    # The body is decoded whole into Python objects (~70 bytes a value, unknown fields too):
    # a 16 MiB body of 5.6 million `{}` would take ~400 MiB. Every value but the first of a
    # list follows a comma, a colon or a `[`, so counting those (C speed) bounds the values;
    # past APM_INGEST_MAX_BYTES / 64 (bulk ingest's bound for its one-call decode) it is a 413.
    max_values = settings.APM_INGEST_MAX_BYTES // 64
    if raw.count(b",") + raw.count(b":") + raw.count(b"[") > max_values:
        raise OtlpError(413, f"The OTLP/JSON body holds too many values: more than {max_values} "
                             "(APM_INGEST_MAX_BYTES / 64); split the export or send protobuf.")
    try:
        payload = msgspec.json.decode(raw)
    except RecursionError:
        raise OtlpError(400, "The body is not valid JSON: it is nested too deeply.") from None
    except msgspec.DecodeError:
        # msgspec refuses some valid JSON (a lone surrogate escape, "\ud800"); the standard
        # library reads it, so such a string is one span's error, as in bulk ingest.
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise OtlpError(400, f"The body is not valid JSON: {exc}.") from None
    if type(payload) is not dict:
        raise OtlpError(400, "The body must be a JSON object (ExportTraceServiceRequest).")
    for resource_spans in _json_list(payload, "resourceSpans"):
        resource_spans = _json_object(resource_spans, "resourceSpans")
        resource = resource_spans.get("resource")
        attrs = _json_attrs(resource.get("attributes"), _SERVICE_KEYS) if type(resource) is dict else {}
        service = attrs.get("service.name", DEFAULT_SERVICE)
        # instrumentationLibrarySpans: the pre-1.0 name, still sent by old exporters.
        scopes = _json_list(resource_spans, "scopeSpans") + _json_list(resource_spans, "instrumentationLibrarySpans")
        for scope_spans in scopes:
            for span in _json_list(_json_object(scope_spans, "scopeSpans"), "spans"):
                span = _json_object(span, "spans")
                outcome.spans += 1
                if span.get("kind") not in (SPAN_KIND_SERVER, "SPAN_KIND_SERVER"):
                    outcome.skipped += 1
                    continue
                trace_id = span.get("traceId", "")
                label = span.get("spanId")
                if type(trace_id) is not str or not _is_hex(trace_id):
                    event = "trace_id: traceId must be hex digits"
                else:
                    event = span_event(
                        service=service, name=span.get("name"), trace_id=trace_id.lower(),
                        start=_json_int(span.get("startTimeUnixNano")),
                        end=_json_int(span.get("endTimeUnixNano")),
                        get=_json_attrs(span.get("attributes"), _SPAN_KEYS).get,
                    )
                if event is None:
                    outcome.skipped += 1
                    continue
                yield label, event


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


# --- The export ------------------------------------------------------------------------------


def export_traces(raw: bytes, encoding: str, principal: access.Principal | None = None) -> ExportOutcome:
    """Store the SERVER HTTP spans of one export request as events (one transaction), charged
    to `principal`'s ingest rate limit (a 429 with Retry-After stores nothing)."""
    outcome = ExportOutcome()
    decoded = spans_from_protobuf(raw, outcome) if encoding == "protobuf" else spans_from_json(raw, outcome)
    events: list = []
    labels: list = []
    for label, event in decoded:
        if type(event) is str:
            outcome.rejected += 1
            if len(outcome.problems) < MAX_DESCRIBED:
                outcome.problems.append(f"span {_label(label)}: {event}")
        else:
            events.append(event)
            labels.append(label)
    max_events = settings.APM_INGEST_MAX_EVENTS
    if len(events) > max_events:
        raise OtlpError(413, f"Too many server spans: {len(events)} in one request; the limit is "
                             f"{max_events} (APM_INGEST_MAX_EVENTS).")
    # The same per-key limit as bulk ingest, counted in the events this request would store.
    if principal is not None and (wait := access.ingest_wait(principal, len(events))):
        raise OtlpError(429, f"Ingest rate limit of {settings.APM_INGEST_RATE_LIMIT:g} events/s per key "
                             f"exceeded ({len(events)} server spans sent); nothing was stored.",
                        {"Retry-After": str(math.ceil(wait))})
    result = ingest.ingest_events(events, strict=False, escape=_needs_copy_escaping(events))
    outcome.accepted = result.inserted
    outcome.rejected += result.rejected
    for error in result.errors:
        if len(outcome.problems) >= MAX_DESCRIBED:
            break
        fields = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in error["errors"].items())
        outcome.problems.append(f"span {_label(labels[error['index']])}: {fields}")
    return outcome


# What COPY must escape, and what the validator must look for (NUL, lone surrogates): with
# escape=False, ingest_events also skips those checks (see ingest.needs_copy_escaping).
_NEEDS_CARE = re.compile("[\\\\\t\n\r\x00\ud800-\udfff]").search


def _needs_copy_escaping(events: list[dict]) -> bool:
    """Whether a string of these events holds a character COPY must escape or the validator
    must reject (a protobuf body can't be scanned for them as JSON can). Services and
    endpoints repeat, so each distinct value is looked at once."""
    for name in ("service", "endpoint", "user_ref"):
        for value in {event[name] for event in events}:
            if type(value) is str and _NEEDS_CARE(value):
                return True
    return False


def _label(span_id) -> str:
    if type(span_id) is bytes:
        return span_id.hex() or "(no spanId)"
    return str(span_id) if span_id else "(no spanId)"


# --- HTTP -----------------------------------------------------------------------------------


def encoding_of(content_type: str) -> str | None:
    """'protobuf' or 'json' for a request's media type (parameters ignored), else None."""
    return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def _media_type(encoding: str) -> str:
    return PROTOBUF if encoding == "protobuf" else JSON


def status_body(status: int, message: str, encoding: str) -> bytes:
    """A google.rpc.Status {code, message} in the given encoding."""
    code = _RPC_CODES.get(status, 2)  # 2: UNKNOWN
    if encoding == "json":
        return msgspec.json.encode({"code": code, "message": message})
    # Status is two scalar fields here: 1 (code, varint) and 2 (message, bytes).
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def error_response(status: int, message: str, encoding: str, headers: dict | None = None) -> HttpResponse:
    response = HttpResponse(status_body(status, message, encoding), status=status,
                            content_type=_media_type(encoding))
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def response_encoding(request) -> str:
    """The encoding to answer in: the request's, and JSON when it sent neither."""
    return encoding_of(request.content_type or "") or "json"


def from_error_response(response, request) -> HttpResponse:
    """An error response of the rest of the API ({"detail": ...}, e.g. access control's
    401/403/429) as a google.rpc.Status, keeping the headers a client acts on."""
    detail = ""
    try:
        detail = msgspec.json.decode(response.content).get("detail", "")
    except (msgspec.DecodeError, AttributeError):
        pass
    headers = {name: response[name] for name in ("WWW-Authenticate", "Retry-After") if name in response}
    return error_response(response.status_code, str(detail or "Request refused."),
                          response_encoding(request), headers)


def _unsupported_type(request) -> HttpResponse:
    return error_response(415, f'Unsupported content type "{request.content_type}"; send {PROTOBUF} or {JSON}.',
                          "json")


def receive_traces(request) -> HttpResponse:
    """POST /v1/traces: read, decode and store; the answer the OTLP spec prescribes."""
    encoding = encoding_of(request.content_type or "")
    if encoding is None:
        return _unsupported_type(request)
    try:
        raw = ingest.read_body(request)
        # access.check (the view) left the caller on the request.
        outcome = export_traces(raw, encoding, getattr(request, "apm_principal", None))
        outcome.nbytes = len(raw)
    except ingest.BatchError as exc:
        return error_response(exc.status, exc.detail, encoding)
    except OtlpError as exc:
        return error_response(exc.status, exc.message, encoding, exc.headers)
    except (OperationalError, InterfaceError):
        # Nothing was stored (one transaction): the exporter retries a 503 after Retry-After.
        logger.warning("OTLP export answered 503: database error", exc_info=True)
        return error_response(503, "The database is unavailable; retry later.", encoding,
                              {"Retry-After": str(RETRY_AFTER_SECONDS)})
    answer = ExportTraceServiceResponse()
    if outcome.rejected:
        answer.partial_success.CopyFrom(ExportTracePartialSuccess(
            rejected_spans=outcome.rejected, error_message=outcome.error_message()))
    if encoding == "json":
        body = msgspec.json.encode(json_format.MessageToDict(answer))
    else:
        body = answer.SerializeToString()
    response = HttpResponse(body, status=200, content_type=_media_type(encoding))
    response.otlp_outcome = outcome  # for request metrics (accepted / rejected per request)
    return response


def receive_dropped(request) -> HttpResponse:
    """POST /v1/metrics and /v1/logs: accepted and dropped, so an SDK that exports every
    signal to one endpoint logs no errors; an empty Export*ServiceResponse in either encoding."""
    encoding = encoding_of(request.content_type or "")
    if encoding is None:
        return _unsupported_type(request)
    # Dropped, but read and checked like traces: a broken body is the client's bug to hear
    # about (400), and gzip and the size cap apply the same way.
    try:
        raw = ingest.read_body(request)
    except ingest.BatchError as exc:
        return error_response(exc.status, exc.detail, encoding)
    if problem := _undecodable(raw, encoding):
        return error_response(400, problem, encoding)
    return HttpResponse(b"{}" if encoding == "json" else b"", status=200, content_type=_media_type(encoding))


# A message with no fields: parsing checks the wire format and keeps every field unread.
_WIRE_ONLY = empty_pb2.Empty


def _undecodable(raw: bytes, encoding: str) -> str | None:
    """Why a metrics/logs body is not an OTLP export request at all (None when it may be one).

    Protobuf: the wire format must parse (fields are not interpreted: the data is dropped).
    JSON: a JSON object."""
    if encoding == "json":
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return f"The body is not valid JSON: {exc}."
        return None if type(payload) is dict else "The body must be a JSON object."
    try:
        _WIRE_ONLY.FromString(raw)
    except DecodeError as exc:
        return f"The body is not valid protobuf: {exc}."
    return None
