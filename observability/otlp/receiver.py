"""The receiver: one export request stored through the ingest service, and the answers the
OTLP specification prescribes (empty response, partialSuccess, or a google.rpc.Status, each in
the request's own encoding)."""

from __future__ import annotations

import json
import logging
import re

import msgspec
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from google.protobuf import empty_pb2, json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from observability import access, ingest
from observability.errors import RateLimited
from observability.otlp.wire import (
    _CONTENT_TYPES,
    JSON,
    MAX_DESCRIBED,
    PROTOBUF,
    ExportOutcome,
    OtlpError,
    spans_from_json,
    spans_from_protobuf,
)

logger = logging.getLogger(__name__)

# Seconds an exporter should wait before retrying after a 503 (database unavailable).
RETRY_AFTER_SECONDS = 5

# The google.rpc.Code closest to each HTTP status we answer (google/rpc/code.proto maps
# 400, 401, 403, 404, 429, 500, 501, 503 this way; 413 and 415 have no exact code).
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}


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
    # The same per-key limit, storage and metrics as bulk ingest (the one receive service),
    # counted in the events this request would store.
    try:
        result = ingest.store_events(events, principal=principal, strict=False, escape=_needs_copy_escaping(events),
                                     endpoint="/v1/traces", nbytes=len(raw), rejected_before=outcome.rejected,
                                     what="server spans")
    except RateLimited as exc:
        raise OtlpError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
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
        outcome = export_traces(raw, encoding, access.principal_for(request))
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
    return HttpResponse(body, status=200, content_type=_media_type(encoding))


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

