"""The OpenAPI 3 description of the API (drf-spectacular), from the same declarations the views run on.

- Query parameters: exactly the set `params.allowed_query_params` lets through (the action's
  FilterSet, its `query_serializer`, `page`/`page_size` where it is paginated, `format=json`).
- Responses: the action's own (`@extend_schema(responses=...)`), plus every error it can answer
  with the JSON error body (`ERROR_SCHEMA`): see `error_statuses`.
- Security: every operation needs a key (Bearer or X-API-Key) or a session, except those that say
  `@extend_schema(auth=[{}])` (health). The schemes are declared here, not derived from the
  authentication classes, so the schema is the same before and after access control lands.
- Plain Django views (OTLP `/v1/traces`, `/metrics`) are not DRF views: `add_plain_views` adds
  their hand-written descriptions (`PLAIN_VIEWS`) when their URL exists.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import Resolver404, resolve
from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_parameter_type

from observability.constants import MAX_LATENCY_MS
from observability.filters import TextFilter
from observability.pagination import MAX_PAGE_SIZE
from observability.params import declared, filterset_class_for, is_paginated

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error: a `detail` string, and per-parameter or per-field messages "
                   "(`{\"status_min\": [\"...\"]}`).",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}

SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer",
                  "description": "An API key: `Authorization: Bearer <key>` (what OpenTelemetry exporters send)."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME,
                      "description": "A logged-in browser session (/accounts/login/)."},
}
SECURITY = [{name: []} for name in SECURITY_SCHEMES]

# Errors an action can answer beyond the ones every operation has (see error_statuses).
# 504: an analytics query past the service's time limit; 413: a body over the size limits;
# 429/503: back-pressure on writes (Retry-After). Add new actions here by name.
ACTION_ERRORS = {
    "ingest": (413, 429, 503),
    "create": (413, 429, 503),
    "update": (413, 503),
    "partial_update": (413, 503),
    "destroy": (503,),
    "hourly": (504,),
    "daily": (504,),
    "kpis": (504,),
    "top_endpoints": (504,),
    "timeseries": (504,),
    "series": (504,),
}

ERROR_DESCRIPTIONS = {
    400: "A bad parameter or body: an unknown parameter, an invalid or contradictory value "
         "(`detail` and the per-field messages name it).",
    401: "No credential, or an unknown or revoked key (`WWW-Authenticate: Bearer`).",
    403: "A valid credential whose scope does not allow this operation.",
    404: "No such object, or a page past the last.",
    413: "The body is over APM_INGEST_MAX_EVENTS events or APM_INGEST_MAX_BYTES bytes (after decompression).",
    414: "The request line (URL with its query string) is over 8,190 bytes: refused by gunicorn.",
    415: "A content type other than application/json, or a Content-Encoding other than gzip.",
    429: "The key is over its rate limit; retry after `Retry-After` seconds. Nothing was stored.",
    503: "The service can't take the request now (database down or overloaded); retry after "
         "`Retry-After` seconds. Nothing was stored.",
    504: "The query ran past the service's time limit and was cancelled; try precision=approx or a "
         "narrower window.",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 0},
                               "description": "Seconds to wait before retrying."}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}}

SUMMARIES = {
    "list": "List events",
    "create": "Create an event",
    "retrieve": "Get an event",
    "update": "Replace an event",
    "partial_update": "Change fields of an event",
    "destroy": "Delete an event",
}
TAGS = {"list": "events", "create": "events", "retrieve": "events", "update": "events",
        "partial_update": "events", "destroy": "events", "ingest": "events"}


class ApmAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema reading this project's declarations (see the module doc)."""

    # --- parameters ---------------------------------------------------------------------

    def _is_list_view(self, serializer=None) -> bool:
        # "A list" here means paginated: the list and the rollup actions. Top endpoints answers
        # an object with `results`, not pages, and takes no page parameters.
        return is_paginated(self.view)

    def get_filter_backends(self):
        return getattr(self.view, "filter_backends", []) if filterset_class_for(self.view) else []

    def get_override_parameters(self):
        serializer = declared(self.view, "query_serializer")
        return [*([serializer] if serializer else []), *super().get_override_parameters()]

    def _get_pagination_parameters(self):
        if not is_paginated(self.view):
            return []
        return [
            build_parameter_type("page", {"type": "integer", "minimum": 1}, "query",
                                 description="Page number (1-based); past the last page is a 404."),
            build_parameter_type("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                                 "query", description=f"Rows per page, 1-{MAX_PAGE_SIZE} "
                                                      "(default 100, or the server's APM_PAGE_SIZE)."),
        ]

    def _get_parameters(self):
        parameters = super()._get_parameters()
        for parameter in parameters:
            # A blank value is a 400 (params.check_query_params): never an empty string or list.
            schema = parameter["schema"]
            if parameter["in"] == "query" and schema.get("type") == "string" and "enum" not in schema:
                schema.setdefault("minLength", 1)
            if parameter["in"] == "query" and schema.get("type") == "array":
                schema.setdefault("minItems", 1)
        if not any(p["name"] == "format" and p["in"] == "query" for p in parameters):
            formats = sorted({renderer.format for renderer in self.view.get_renderers()})
            parameters.append(build_parameter_type(
                "format", {"type": "string", "enum": formats}, "query",
                description="The response format; only json is offered (anything else is a 400)."))
        return parameters

    # --- names --------------------------------------------------------------------------

    def get_summary(self):
        action = getattr(self.view, "action", None)
        if action in SUMMARIES:
            return SUMMARIES[action]
        handler = getattr(self.view, action or self.method.lower(), None)
        doc = (getattr(handler, "__doc__", None) or "").strip()
        return doc.splitlines()[0].rstrip(".") if doc else super().get_summary()

    def get_tags(self):
        action = getattr(self.view, "action", None)
        if action is None:
            return [self.path.strip("/").split("/")[-1]]
        return [TAGS.get(action, "analytics")]

    # --- security -----------------------------------------------------------------------

    def get_auth(self):
        # The authentication classes are not consulted: the contract's schemes apply to every
        # operation but those marked public with @extend_schema(auth=[{}]).
        for name, definition in SECURITY_SCHEMES.items():
            self.registry.register_on_missing(ResolvedComponent(
                name=name, type=ResolvedComponent.SECURITY_SCHEMA, object=name, schema=definition))
        return SECURITY

    def _is_public(self) -> bool:
        return self.get_auth() == [{}]

    # --- responses ----------------------------------------------------------------------

    def error_statuses(self) -> list[int]:
        """Every error status this operation can answer with the JSON error body."""
        # 400 at least for `format` and an unknown parameter; 414 from gunicorn itself for a
        # request line over GUNICORN_LIMIT_REQUEST_LINE (8,190 bytes), JSON like every error.
        codes = {400, 414}
        if not self._is_public():
            codes |= {401, 403}
        if "{" in self.path or is_paginated(self.view):
            codes.add(404)
        if self.method in ("POST", "PUT", "PATCH"):
            codes.add(415)
        codes |= set(ACTION_ERRORS.get(getattr(self.view, "action", None), ()))
        codes |= set(getattr(self.view, "extra_error_statuses", ()))
        return sorted(codes)

    def _get_request_body(self, direction="request"):
        body = super()._get_request_body(direction)
        if body and self.method in ("POST", "PUT"):
            body["required"] = True  # an empty body is a 400 (or 415 without a content type)
        return body

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        error = ResolvedComponent(name="Error", type=ResolvedComponent.SCHEMA, object="Error", schema=ERROR_SCHEMA)
        self.registry.register_on_missing(error)
        for code in self.error_statuses():
            if str(code) in responses:
                continue
            response = {"description": ERROR_DESCRIPTIONS.get(code, ""),
                        "content": {"application/json": {"schema": error.ref}}}
            if code in (429, 503):
                response["headers"] = RETRY_AFTER
            if code == 401:
                response["headers"] = WWW_AUTHENTICATE
            responses[str(code)] = response
        return dict(sorted(responses.items()))


class LatencyFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "observability.serializers.EventLatencyField"

    def map_serializer_field(self, auto_schema, direction):
        schema = {"type": "number", "format": "double", "minimum": 0}
        if direction == "request":
            schema["maximum"] = MAX_LATENCY_MS
            schema["description"] = "Milliseconds, finite, at most one day."
        return schema


class BoundedFilterExtension(DjangoFilterExtension):
    """django-filter parameters with the bounds their form fields enforce (min_value, max_value).

    drf-spectacular types a filter from its model field (status_code: any int64); the filters
    here pass tighter bounds to their form fields, and the schema must say what a 400 is.
    """

    priority = 1  # chosen over drf-spectacular's own DjangoFilterExtension

    def resolve_filter_field(self, auto_schema, model, filterset_class, field_name, filter_field):
        parameters = super().resolve_filter_field(auto_schema, model, filterset_class, field_name, filter_field)
        for parameter in parameters:
            schema = parameter["schema"]
            target = schema["items"] if schema.get("type") == "array" else schema
            for kwarg, keyword in (("min_value", "minimum"), ("max_value", "maximum")):
                if kwarg in filter_field.extra:
                    target[keyword] = filter_field.extra[kwarg]
                    # The model field's width (int64 on SQLite, int16 on PostgreSQL) says
                    # nothing once the filter has bounds, and would make the schema vendor-specific.
                    target.pop("format", None)
            if isinstance(filter_field, TextFilter) and "enum" not in target:
                target["pattern"] = r"^[^\x00]*$"  # a NUL is a 400 (see filters.TextFilter)
        return parameters


# --- Plain Django views -------------------------------------------------------------------

_PROTOBUF = {"schema": {"type": "string", "format": "binary"}}
_RPC_STATUS = {
    "type": "object", "description": "google.rpc.Status (OTLP): in the request's encoding.",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                   "details": {"type": "array", "items": {"type": "object"}}},
}


def _otlp_operation(summary: str, description: str, stored: bool) -> dict:
    def rpc(text, headers=None):
        answer = {"description": text, "content": {"application/json": {"schema": _RPC_STATUS},
                                                   "application/x-protobuf": _PROTOBUF}}
        if headers:
            answer["headers"] = headers
        return answer

    success = {"type": "object", "properties": {"partialSuccess": {
        "type": "object", "properties": {"rejectedSpans": {"description": "int64: a JSON number or string"},
                                         "errorMessage": {"type": "string"}}}}}
    return {
        "operationId": summary.lower().replace(" ", "_"),
        "summary": summary,
        # Content-Encoding is not a parameter here: `gzip` describes the body's bytes, which a
        # schema can't tie to the header (a generator would send plain bodies marked gzip).
        "description": description + " The body may be gzip-compressed (`Content-Encoding: gzip`).",
        "tags": ["opentelemetry"],
        "security": SECURITY,
        "requestBody": {"required": True, "content": {
            "application/x-protobuf": _PROTOBUF,
            "application/json": {"schema": {"type": "object", "description": "OTLP/JSON"}}}},
        "responses": {
            "200": {"description": "Accepted" + ("; partialSuccess when some spans could not be stored."
                                                  if stored else " and dropped."),
                    "content": {"application/json": {"schema": success}, "application/x-protobuf": _PROTOBUF}},
            "400": rpc("The body could not be decoded."),
            "401": rpc(ERROR_DESCRIPTIONS[401], WWW_AUTHENTICATE),
            "403": rpc(ERROR_DESCRIPTIONS[403]),
            "413": rpc("The body is over the size limit (counted after decompression)."),
            "415": rpc("A content type other than application/x-protobuf or application/json."),
            "429": rpc(ERROR_DESCRIPTIONS[429], RETRY_AFTER),
            "503": rpc(ERROR_DESCRIPTIONS[503], RETRY_AFTER),
        },
    }


# path -> {method: operation}; added to the schema when the path resolves in ROOT_URLCONF.
PLAIN_VIEWS = {
    "/v1/traces": {"post": _otlp_operation(
        "Export OTLP traces",
        "OTLP/HTTP trace export: each SERVER span with HTTP attributes becomes one event (API.md).",
        stored=True)},
    "/v1/metrics": {"post": _otlp_operation(
        "Export OTLP metrics", "Accepted and dropped (SDKs send every signal to one endpoint).", stored=False)},
    "/v1/logs": {"post": _otlp_operation(
        "Export OTLP logs", "Accepted and dropped (SDKs send every signal to one endpoint).", stored=False)},
    "/metrics": {"get": {
        "operationId": "metrics",
        "summary": "Prometheus metrics",
        "description": "The service's own metrics in the Prometheus text exposition format.",
        "tags": ["metrics"],
        "security": SECURITY,
        "responses": {
            "200": {"description": "Prometheus text format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "400": {"description": "An unknown query parameter (named in `detail`).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "401": {"description": ERROR_DESCRIPTIONS[401], "headers": WWW_AUTHENTICATE,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "403": {"description": ERROR_DESCRIPTIONS[403],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    }},
}


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def add_plain_views(result, generator, request, public):
    """Postprocessing hook: the hand-written operations of plain Django views that exist."""
    for path, operations in PLAIN_VIEWS.items():
        if _resolves(path):
            result["paths"].setdefault(path, {}).update(operations)
    result["paths"] = dict(sorted(result["paths"].items()))
    return result
