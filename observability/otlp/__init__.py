"""OTLP/HTTP traces -> events: decode, map SERVER spans, then the bulk ingest write path.

The receiver answers as the OTLP specification asks (opentelemetry-proto
docs/specification.md, "OTLP/HTTP"), not with the JSON error shape of the rest of the API:
success is an empty `ExportTraceServiceResponse`, spans that can't be stored are a `200` with
`partialSuccess` (exporters must not retry those), and failures carry a `google.rpc.Status`,
each in the request's own encoding (binary protobuf or OTLP/JSON).

OTLP/JSON is not protobuf's JSON mapping (ids are hex, not base64; enums are integers;
int64 may be a string or a number), so JSON bodies are walked by hand after msgspec decodes
them, rather than given to `json_format`, which would read a hex trace id as base64.

Three modules, each one concern, arrows pointing down: `receiver` (the export and its HTTP
answers) -> `wire` (encodings, cost guards, decoding) -> `mapping` (one span -> one event).
The names below are the package's public ones (and a few that tests reach for).
"""

from observability.otlp.mapping import (
    DEFAULT_SERVICE,
    SPAN_KIND_SERVER,
    _iso_time,
    collapse_ids,
    derive_endpoint,
    span_event,
)
from observability.otlp.receiver import (
    RETRY_AFTER_SECONDS,
    _varint,
    encoding_of,
    error_response,
    export_traces,
    from_error_response,
    receive_dropped,
    receive_traces,
    response_encoding,
    status_body,
)
from observability.otlp.wire import (
    JSON,
    MAX_DECODED_STRING,
    PB_MESSAGE_COST,
    PROTOBUF,
    ExportOutcome,
    OtlpError,
    _any_value,
    _common_server_span,
    _pb_getter,
    _SlimExportTraceServiceRequest,
    check_protobuf_cost,
    spans_from_json,
    spans_from_protobuf,
)

__all__ = [
    "DEFAULT_SERVICE",
    "ExportOutcome",
    "JSON",
    "MAX_DECODED_STRING",
    "OtlpError",
    "PB_MESSAGE_COST",
    "PROTOBUF",
    "RETRY_AFTER_SECONDS",
    "SPAN_KIND_SERVER",
    "_SlimExportTraceServiceRequest",
    "_any_value",
    "_common_server_span",
    "_iso_time",
    "_pb_getter",
    "_varint",
    "check_protobuf_cost",
    "collapse_ids",
    "derive_endpoint",
    "encoding_of",
    "error_response",
    "export_traces",
    "from_error_response",
    "receive_dropped",
    "receive_traces",
    "response_encoding",
    "span_event",
    "spans_from_json",
    "spans_from_protobuf",
    "status_body",
]
