"""HTTP views: parse, validate parameters, call ingest/analytics, serialize. Nothing else."""

from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from observability import analytics, db, ingest, otlp
from observability.filters import ApiRequestFilter, RollupFilter
from observability.models import ApiRequest
from observability.serializers import (
    ApiRequestSerializer,
    KpiParamSerializer,
    StrictParamSerializer,
    TopEndpointsParamSerializer,
    query_params,
)


def _filterset(filterset_class, request, queryset):
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset


class ApiRequestViewSet(viewsets.ModelViewSet):
    """API request events: CRUD, bulk ingest and analytics."""

    queryset = ApiRequest.objects.order_by("-time", "-id")
    serializer_class = ApiRequestSerializer
    filterset_class = ApiRequestFilter
    filter_backends = [DjangoFilterBackend]

    def perform_create(self, serializer):
        super().perform_create(serializer)
        ingest.refresh_after_write([serializer.instance.time])

    def perform_update(self, serializer):
        before = serializer.instance.time
        super().perform_update(serializer)
        ingest.refresh_after_write([before, serializer.instance.time])

    def perform_destroy(self, instance):
        when = instance.time
        super().perform_destroy(instance)
        ingest.refresh_after_write([when])

    @action(detail=False, methods=["post"])
    def ingest(self, request):
        """Store a batch of events: all valid ones, or with ?strict=true all or nothing."""
        strict = query_params(StrictParamSerializer, request)["strict"]
        if not request.content_type.startswith("application/json"):
            return Response(
                {"detail": f'Unsupported media type "{request.content_type}"; send application/json.'},
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        try:
            raw = ingest.read_body(request._request)
            escape = ingest.needs_copy_escaping(raw)
            events = ingest.parse_batch(raw)
        except ingest.BatchError as exc:
            return Response({"detail": exc.detail}, status=exc.status)
        del raw  # the decoded events are all that is needed from here on
        result = ingest.ingest_events(events, strict=strict, escape=escape)
        if strict:
            code = status.HTTP_400_BAD_REQUEST if result.rejected else status.HTTP_201_CREATED
        else:
            code = status.HTTP_200_OK
        return Response(result.as_dict(), status=code)

    def _rollup(self, request, queryset):
        rows = analytics.rollup_rows(queryset=_filterset(RollupFilter, request, queryset).qs)
        # The rows are already the contract's shape (values() dicts; DRF's encoder writes
        # datetimes as ...Z): a field serializer would only cost ~25 ms per 1000 rows.
        return self.get_paginated_response(self.paginate_queryset(rows))

    @action(detail=False, methods=["get"])
    def hourly(self, request):
        """One row per hour x service x endpoint."""
        return self._rollup(request, analytics.hourly_queryset())

    @action(detail=False, methods=["get"])
    def daily(self, request):
        """One row per day x service x endpoint."""
        return self._rollup(request, analytics.daily_queryset())

    @action(detail=False, methods=["get"])
    def kpis(self, request):
        """Hits, errors, error rate and latency (avg, max, exact p95) over the filtered events."""
        params = query_params(KpiParamSerializer, request)
        filterset = _filterset(ApiRequestFilter, request, ApiRequest.objects.all())
        return Response(analytics.kpis(
            queryset=filterset.qs, filters=filterset.form.cleaned_data,
            used_filters=filterset.used_filters(), **params,
        ))

    @action(detail=False, methods=["get"], url_path="top-endpoints")
    def top_endpoints(self, request):
        """Service x endpoint series ranked by a chosen measure."""
        params = query_params(TopEndpointsParamSerializer, request)
        filterset = _filterset(ApiRequestFilter, request, ApiRequest.objects.all())
        return Response(analytics.top_endpoints(
            queryset=filterset.qs, filters=filterset.form.cleaned_data,
            used_filters=filterset.used_filters(), **params,
        ))


class HealthView(APIView):
    """Liveness, and with ?db=1 a database round trip."""

    def get(self, request):
        if request.query_params.get("db") not in (None, "", "0", "false"):
            problem = db.ping()
            if problem:
                return Response({"status": "error", "db": problem}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
            return Response({"status": "ok", "db": "ok"})
        return Response({"status": "ok"})


# OTLP/HTTP receivers: plain Django views, because their answers (google.rpc.Status in the
# request's encoding) are the OTLP spec's, not DRF's. Exporters send an API key, never a
# session cookie, so CSRF does not apply.


@csrf_exempt
def otlp_traces(request):
    """POST /v1/traces: SERVER spans become events (API.md "OpenTelemetry")."""
    if request.method != "POST":
        return otlp.error_response(405, "Use POST.", otlp.response_encoding(request), {"Allow": "POST"})
    # access: denied = access.check(request, "ingest")
    # access: if denied is not None: return otlp.from_error_response(denied, request)
    return otlp.receive_traces(request)


@csrf_exempt
def otlp_dropped(request):
    """POST /v1/metrics and /v1/logs: accepted with 200 and dropped (traces only are stored)."""
    if request.method != "POST":
        return otlp.error_response(405, "Use POST.", otlp.response_encoding(request), {"Allow": "POST"})
    # access: denied = access.check(request, "ingest")
    # access: if denied is not None: return otlp.from_error_response(denied, request)
    return otlp.receive_dropped(request)
