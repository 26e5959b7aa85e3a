"""The service's URLs, plus the naive ingest path that scripts/bench/bench_ingest.py measures against.

The baseline is what a straightforward DRF implementation does: a ListSerializer of a
ModelSerializer validates the batch, and bulk_create writes it.
"""

from django.urls import path
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apm_platform.urls import urlpatterns as service_urlpatterns
from observability.models import ApiRequest
from observability.views import ApiRequestViewSet


class NaiveSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiRequest
        fields = ["time", "service", "endpoint", "method", "status_code", "latency_ms", "trace_id", "user_ref"]


class NaiveIngestView(APIView):
    authentication_classes = []  # the baseline as it was measured before access control
    permission_classes = [AllowAny]

    def post(self, request):
        serializer = NaiveSerializer(data=request.data, many=True)
        serializer.is_valid(raise_exception=True)
        rows = ApiRequest.objects.bulk_create([ApiRequest(**item) for item in serializer.validated_data])
        return Response({"inserted": len(rows), "rejected": 0, "errors": []})


# The service's ingest view with authentication and permissions off: the benchmark's measure
# of what access control costs per request.
ingest_without_auth = ApiRequestViewSet.as_view({"post": "ingest"}, authentication_classes=[],
                                                permission_classes=[AllowAny])

urlpatterns = [
    *service_urlpatterns,
    path("bench/naive-ingest/", NaiveIngestView.as_view()),
    path("bench/ingest-no-auth/", ingest_without_auth),
]
