"""The OTLP/HTTP wire: the encodings we read, cost guards that bound what a protobuf or JSON
body may make us build, and decoding either into (span id, event or reason) pairs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import msgspec
from django.conf import settings
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from observability.otlp.mapping import _SPAN_KEYS, DEFAULT_SERVICE, SPAN_KIND_SERVER, USER_KEY, _iso_time, span_event

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# The content types each encoding is read from; the answer is always sent as the first.
_CONTENT_TYPES = {PROTOBUF: "protobuf", "application/protobuf": "protobuf", JSON: "json"}


# How many rejected spans the partialSuccess message describes one by one.
MAX_DESCRIBED = 5



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
    problems: list[str] = field(default_factory=list)

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        shown = "; ".join(problem.rstrip(".") for problem in self.problems[:MAX_DESCRIBED])
        more = f" (and {self.rejected - MAX_DESCRIBED} more)" if self.rejected > MAX_DESCRIBED else ""
        return f"{self.rejected} span(s) not stored: {shown}{more}."



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


