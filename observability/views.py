"""HTTP views: parse, validate parameters, call ingest/analytics, serialize. Nothing else."""

import functools
import logging

from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from observability import access, analytics, db, ingest, metrics, otlp
from observability.filters import ApiRequestFilter, RollupFilter
from observability.models import ApiRequest
from observability.params import StrictQueryParamsMixin
from observability.parsers import EventJSONParser, UnreadBodyParser
from observability.query import ReadQuery
from observability.serializers import (
    ApiRequestSerializer,
    HealthParamSerializer,
    HealthSerializer,
    IngestResultSerializer,
    KpiParamSerializer,
    KpiSerializer,
    RollupRowSerializer,
    SeriesParamSerializer,
    SeriesSerializer,
    StrictParamSerializer,
    TimeseriesParamSerializer,
    TimeseriesSerializer,
    TopEndpointsParamSerializer,
    TopEndpointsSerializer,
)

logger = logging.getLogger(__name__)


def _filterset(filterset_class, request, queryset):
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset


def _read_query(request, precision: str) -> ReadQuery:
    """The typed read query of an event-filtered analytics action (400 on a bad filter)."""
    return ReadQuery.from_filterset(_filterset(ApiRequestFilter, request, ApiRequest.objects.all()),
                                    precision=precision)


# Each action declares its query parameters (filterset_class, query_serializer, paginated: see
# params.py); any other parameter is a 400, and the OpenAPI schema documents the same set.
class ApiRequestViewSet(StrictQueryParamsMixin, viewsets.ModelViewSet):
    """API request events: CRUD, bulk ingest and analytics."""

    queryset = ApiRequest.objects.order_by("-time", "-id")
    serializer_class = ApiRequestSerializer
    filterset_class = ApiRequestFilter
    filter_backends = [DjangoFilterBackend]
    parser_classes = [EventJSONParser]

    def dispatch(self, request, *args, **kwargs):
        # Reads run under the analytics time limit: a query past it is cancelled (504).
        if request.method in ("GET", "HEAD"):
            with db.query_time_limit():
                return super().dispatch(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)
    # Access (access.ScopePermission): reads need `read`, other writes `admin`; creating events
    # is ingest. `required_scope` is also what @action(required_scope=...) sets per action.
    required_scope = None
    action_scopes = {"create": "ingest"}

    def perform_create(self, serializer):
        serializer.instance = ingest.create_event(serializer.validated_data,
                                                  principal=access.principal_for(self.request))

    # Updates go through the serializer (ApiRequestSerializer.update -> ingest.update_event).

    def perform_destroy(self, instance):
        ingest.delete_event(instance)

    @extend_schema(
        request={"application/json": {"oneOf": [
            {"type": "array", "items": {"$ref": "#/components/schemas/ApiRequestRequest"}},
            {"type": "object", "required": ["events"], "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/ApiRequestRequest"}}}}]}},
        responses={200: IngestResultSerializer, 201: IngestResultSerializer, 400: {"anyOf": [
            {"$ref": "#/components/schemas/IngestResult"}, {"$ref": "#/components/schemas/Error"}]}},
    )
    # UnreadBodyParser: read_body reads the stream itself, also after a session's CSRF check.
    @action(detail=False, methods=["post"], query_serializer=StrictParamSerializer, required_scope="ingest",
            parser_classes=[UnreadBodyParser])
    @metrics.timed_ingest("/ingest/")
    def ingest(self, request):
        """Store a batch of events: all valid ones, or with ?strict=true all or nothing."""
        strict = self.query_params()["strict"]
        try:
            body = ingest.read_body(request._request)
        except ingest.BatchError as exc:
            return Response({"detail": exc.detail}, status=exc.status)
        received = ingest.receive_batch(body=body, content_type=request.content_type,
                                        principal=access.principal_for(request), strict=strict)
        return Response(received.body, status=received.status)

    def _rollup(self, request, queryset, interval):
        filterset = _filterset(RollupFilter, request, queryset)
        rows = analytics.rollup_rows(queryset=filterset.qs, filters=filterset.form.cleaned_data, interval=interval)
        # The rows are already the contract's shape (values() dicts; DRF's encoder writes
        # datetimes as ...Z): a field serializer would only cost ~25 ms per 1000 rows.
        return self.get_paginated_response(self.paginate_queryset(rows))

    @extend_schema(responses=RollupRowSerializer)
    @action(detail=False, methods=["get"], filterset_class=RollupFilter, paginated=True)
    def hourly(self, request):
        """One row per hour x service x endpoint."""
        return self._rollup(request, analytics.hourly_queryset(), "hour")

    @extend_schema(responses=RollupRowSerializer)
    @action(detail=False, methods=["get"], filterset_class=RollupFilter, paginated=True)
    def daily(self, request):
        """One row per day x service x endpoint."""
        return self._rollup(request, analytics.daily_queryset(), "day")

    @extend_schema(responses=KpiSerializer)
    @action(detail=False, methods=["get"], filterset_class=ApiRequestFilter, query_serializer=KpiParamSerializer)
    def kpis(self, request):
        """Hits, errors, error rate and latency (avg, max, p50/p90/p95/p99) over the filtered events."""
        params = self.query_params()
        query = _read_query(request, params.pop("precision"))
        return Response(analytics.kpis(query=query, **params))

    @extend_schema(responses=TopEndpointsSerializer)
    @action(detail=False, methods=["get"], url_path="top-endpoints", filterset_class=ApiRequestFilter,
            query_serializer=TopEndpointsParamSerializer)
    def top_endpoints(self, request):
        """Service x endpoint series ranked by a chosen measure."""
        params = self.query_params()
        query = _read_query(request, params.pop("precision"))
        return Response(analytics.top_endpoints(query=query, **params))

    @extend_schema(responses=TimeseriesSerializer)
    @action(detail=False, methods=["get"], query_serializer=TimeseriesParamSerializer)
    def timeseries(self, request):
        """One row per minute, hour or day: counts, avg/max latency, four percentiles, `partial`."""
        params = self.query_params()
        return Response(analytics.timeseries(**params))

    @extend_schema(responses=SeriesSerializer)
    @action(detail=False, methods=["get"], query_serializer=SeriesParamSerializer)
    def series(self, request):
        """The (service, endpoint) pairs with events in a window, for pickers."""
        params = self.query_params()
        return Response(analytics.series(**params))


class HealthView(StrictQueryParamsMixin, APIView):
    """Liveness, and with ?db=1 a database round trip. Public: no credential is looked at."""

    authentication_classes = []
    permission_classes = [AllowAny]

    query_serializer = HealthParamSerializer

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, auth=[{}])
    def get(self, request):
        """Liveness; with db=true (or 1) also a database round trip."""
        if self.query_params()["db"]:
            # Bounded whatever the database does (DB_CONNECT_TIMEOUT + 1 s at most).
            problem = db.ping(timeout=settings.DB_CONNECT_TIMEOUT)
            if problem:
                # The reason (host, port, error) is for the logs, not for anonymous callers.
                logger.warning("Health check: database unavailable: %s", problem)
                return Response({"status": "error", "db": "unavailable"},
                                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                                headers={"Retry-After": str(settings.APM_RETRY_AFTER)})
            return Response({"status": "ok", "db": "ok"})
        return Response({"status": "ok"})


# OTLP/HTTP receivers: plain Django views, because their answers (google.rpc.Status in the
# request's encoding) are the OTLP spec's, not DRF's. Exporters send an API key, never a
# session cookie, so CSRF does not apply.


def _otlp_endpoint(receive):
    """An OTLP/HTTP endpoint: POST only, an `ingest` key, then `receive(request)`; every
    refusal in the request's own encoding."""

    @csrf_exempt
    @functools.wraps(receive)
    def view(request):
        if request.method != "POST":
            return otlp.error_response(405, "Use POST.", otlp.response_encoding(request), {"Allow": "POST"})
        if (denied := access.check(request, "ingest")):
            return otlp.from_error_response(denied, request)
        return receive(request)

    return view


@csrf_exempt  # outermost too: the metrics wrapper must not hide the exemption
@metrics.timed_ingest("/v1/traces")
@_otlp_endpoint
def otlp_traces(request):
    """POST /v1/traces: SERVER spans become events (API.md "OpenTelemetry")."""
    return otlp.receive_traces(request)


@_otlp_endpoint
def otlp_dropped(request):
    """POST /v1/metrics and /v1/logs: accepted with 200 and dropped (traces only are stored)."""
    return otlp.receive_dropped(request)
