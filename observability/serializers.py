"""CRUD, query-parameter and output serializers.

Event fields are checked by `ingest.validate_fields`, the same rules the bulk endpoint uses,
so a single POST and a bulk ingest accept and reject exactly the same input.
"""

from datetime import UTC, timedelta

from django.utils import timezone
from rest_framework import serializers

from observability import analytics, ingest
from observability.models import ApiRequest


class ApiRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiRequest
        fields = ["id", *ingest.COLUMNS]
        read_only_fields = ["id"]

    def to_internal_value(self, data):
        cleaned, errors = ingest.validate_fields(data, partial=self.partial)
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned


class StrictParamSerializer(serializers.Serializer):
    strict = serializers.BooleanField(required=False, default=False)


class KpiParamSerializer(serializers.Serializer):
    with_p95 = serializers.BooleanField(required=False, default=True)
    precision = serializers.ChoiceField(choices=analytics.PRECISIONS, required=False, default="exact")


class TopEndpointsParamSerializer(serializers.Serializer):
    sort = serializers.ChoiceField(choices=analytics.SORT_KEYS, required=False, default="hits")
    order = serializers.ChoiceField(choices=("desc", "asc"), required=False, default="desc")
    limit = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=10)
    with_p95 = serializers.BooleanField(required=False, default=False)
    precision = serializers.ChoiceField(choices=analytics.PRECISIONS, required=False, default="exact")


class TimeseriesParamSerializer(serializers.Serializer):
    """`/timeseries/`: the interval, the series, a window on the bucket start, and the percentiles."""

    interval = serializers.ChoiceField(choices=tuple(analytics.INTERVALS))
    service = serializers.CharField(required=False, default="")
    endpoint = serializers.CharField(required=False, default="")
    start = serializers.DateTimeField(required=False, default=None, default_timezone=UTC)
    end = serializers.DateTimeField(required=False, default=None, default_timezone=UTC)
    with_p95 = serializers.BooleanField(required=False, default=True)
    precision = serializers.ChoiceField(choices=analytics.PRECISIONS, required=False, default="exact")

    def validate(self, attrs):
        try:
            attrs["start"], attrs["end"] = analytics.timeseries_window(attrs["interval"], attrs["start"], attrs["end"])
        except ValueError as exc:
            name, _, message = str(exc).partition(": ")
            raise serializers.ValidationError({name: [message]}) from None
        return attrs


class SeriesParamSerializer(serializers.Serializer):
    """`/series/`: a half-open window (default: the last 24 hours) and an optional service."""

    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    service = serializers.CharField(required=False, max_length=100)

    def validate(self, attrs):
        end = attrs.get("end") or timezone.now()
        try:
            start = attrs.get("start") or end - timedelta(hours=24)
        except OverflowError:  # an end in the first day of the calendar
            raise serializers.ValidationError({"end": ["end is too early for the default 24-hour window."]}) from None
        if start >= end:
            raise serializers.ValidationError({"start": ["start must be before end."]})
        return {**attrs, "start": start, "end": end}


def query_params(serializer_class, request) -> dict:
    """The request's query parameters validated by `serializer_class` (400 naming the bad one)."""
    names = serializer_class().fields.keys()
    data = {name: request.query_params[name] for name in names if name in request.query_params}
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
