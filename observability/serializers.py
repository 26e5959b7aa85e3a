"""CRUD, query-parameter and output serializers.

Event fields are checked by `ingest.validate_fields`, the same rules the bulk endpoint uses,
so a single POST and a bulk ingest accept and reject exactly the same input.
"""

from datetime import UTC, timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from observability import analytics, ingest, rollups
from observability.constants import SOURCES
from observability.filters import invalid_time_message
from observability.models import METHODS, ApiRequest

# The event contract's bounds (API.md "The event"), given to the schema; ingest.py enforces them.
METHOD_SPELLINGS = (*METHODS, *(m.lower() for m in METHODS))
NO_NUL = r"^[^\x00]*$"


def _text(max_length: int, *, blank: bool) -> serializers.CharField:
    """A text field of the event, documented with its length and no NUL character."""
    schema = {"type": "string", "maxLength": max_length, "pattern": NO_NUL}
    if blank:
        schema["nullable"] = True  # null is taken as ""
    else:
        schema["minLength"] = 1
    # A class per field (serializers deep-copy their fields, dropping instance attributes), and not
    # a CharField, whose blank handling drf-spectacular would add to this schema.
    field_class = extend_schema_field(schema)(type("EventTextField", (_TextOut,), {}))
    return field_class(required=not blank)


class _TextOut(serializers.Field):
    def to_representation(self, value):
        return value


@extend_schema_field({"type": "string", "enum": list(METHOD_SPELLINGS),
                      "description": "HTTP method; lower case is accepted and stored upper case."})
class MethodField(serializers.CharField):
    """An HTTP method as the contract spells it (documentation only: ingest.py validates)."""


class EventLatencyField(serializers.FloatField):
    """An event's latency: at most MAX_LATENCY_MS when written; rows stored before that cap may
    read back higher, so only the request schema carries the maximum (schema.py)."""


class ApiRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiRequest
        fields = ["id", *ingest.COLUMNS]
        read_only_fields = ["id"]
        # Used by the schema only (to_internal_value below does the validating).
        extra_kwargs = {
            "status_code": {"min_value": 100, "max_value": 599},
        }

    service = _text(100, blank=False)
    endpoint = _text(255, blank=False)
    method = MethodField()
    latency_ms = EventLatencyField()
    trace_id = _text(64, blank=True)
    user_ref = _text(128, blank=True)

    def update(self, instance, validated_data):
        return ingest.update_event(instance, validated_data)

    def to_internal_value(self, data):
        cleaned, errors = ingest.validate_fields(data, partial=self.partial)
        if "time" in cleaned and (message := rollups.too_old(cleaned["time"], rollups.raw_horizon())):
            errors["time"] = [message]
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned


@extend_schema_field({"type": "string", "enum": ["true", "false", "1", "0"]})
class StrictBooleanField(serializers.BooleanField):
    """A query-string boolean: exactly `true`, `false`, `1` or `0` (API.md), nothing else.

    DRF's BooleanField also takes `yes`, `on`, `t`, `True`...; a contract that names two
    spellings keeps clients to them, so a typo like `db=banana` is a 400, never a guess.
    """

    TRUE_VALUES = {"true", "1"}
    FALSE_VALUES = {"false", "0"}
    CHOICES = ("true", "false", "1", "0")
    default_error_messages = {"invalid": "Must be one of true, false, 1, 0."}

    def to_internal_value(self, data):
        if data is True or data is False:
            return data
        if isinstance(data, str):
            if data in self.TRUE_VALUES:
                return True
            if data in self.FALSE_VALUES:
                return False
        self.fail("invalid")


class TimeParamField(serializers.DateTimeField):
    """A query-string time whose error names the accepted forms (and the + sent unencoded)."""

    def to_internal_value(self, value):
        try:
            return super().to_internal_value(value)
        except serializers.ValidationError as exc:
            if not any(getattr(detail, "code", None) == "invalid" for detail in exc.detail):
                raise
            raise serializers.ValidationError(invalid_time_message(value), code="invalid") from None


class StrictParamSerializer(serializers.Serializer):
    strict = StrictBooleanField(required=False, default=False, help_text=(
        "true: all or nothing (201, or 400 storing nothing); false: store the valid events (200)."))


class KpiParamSerializer(serializers.Serializer):
    with_p95 = StrictBooleanField(required=False, default=True,
                                  help_text="false skips the percentiles (null) for a cheaper answer.")
    precision = serializers.ChoiceField(choices=analytics.PRECISIONS, required=False, default="exact")


class TopEndpointsParamSerializer(serializers.Serializer):
    sort = serializers.ChoiceField(choices=analytics.SORT_KEYS, required=False, default="hits")
    order = serializers.ChoiceField(choices=("desc", "asc"), required=False, default="desc")
    limit = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=10)
    with_p95 = StrictBooleanField(required=False, default=False,
                                  help_text="true: every row carries the percentiles.")
    precision = serializers.ChoiceField(choices=analytics.PRECISIONS, required=False, default="exact")


class HealthParamSerializer(serializers.Serializer):
    db = StrictBooleanField(required=False, default=False,
                            help_text="true: also check the database (503 when it can't be reached).")


class TimeseriesParamSerializer(serializers.Serializer):
    """`/timeseries/`: the interval, the series, a window on the bucket start, and the percentiles."""

    interval = serializers.ChoiceField(choices=tuple(analytics.INTERVALS))
    service = serializers.CharField(required=False, default="")
    endpoint = serializers.CharField(required=False, default="")
    start = TimeParamField(required=False, default=None, default_timezone=UTC)
    end = TimeParamField(required=False, default=None, default_timezone=UTC)
    with_p95 = StrictBooleanField(required=False, default=True,
                                  help_text="false skips the percentiles (null) for a cheaper answer.")
    precision = serializers.ChoiceField(choices=analytics.PRECISIONS, required=False, default="exact")

    def validate(self, attrs):
        # One clock reading for the request: its default window and its `partial` bucket.
        attrs["now"] = analytics.current_time()
        try:
            attrs["start"], attrs["end"] = analytics.timeseries_window(attrs["interval"], attrs["start"], attrs["end"],
                                                                       attrs["now"])
        except ValueError as exc:
            name, _, message = str(exc).partition(": ")
            raise serializers.ValidationError({name: [message]}) from None
        return attrs


class SeriesParamSerializer(serializers.Serializer):
    """`/series/`: a half-open window (default: the last 24 hours) and an optional service."""

    start = TimeParamField(required=False)
    end = TimeParamField(required=False)
    service = serializers.CharField(required=False, max_length=100)

    def validate(self, attrs):
        end = attrs.get("end") or timezone.now()
        try:
            start = attrs.get("start") or end - timedelta(hours=24)
        except OverflowError:  # an end in the first day of the calendar
            raise serializers.ValidationError({"end": ["end is too early for the default 24-hour window."]}) from None
        if start > end:  # equal: an empty window, answered with no rows
            raise serializers.ValidationError({"start": ["start must not be after end."]})
        return {**attrs, "start": start, "end": end}


def query_params(serializer_class, request) -> dict:
    """The request's query parameters validated by `serializer_class` (400 naming the bad one)."""
    names = serializer_class().fields.keys()
    data = {name: request.query_params[name] for name in names if name in request.query_params}
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- Output shapes (the OpenAPI schema's; the views return plain dicts of this shape) -------


class RollupRowSerializer(serializers.Serializer):
    bucket = serializers.DateTimeField()
    service = serializers.CharField()
    endpoint = serializers.CharField()
    hits = serializers.IntegerField(min_value=0)
    errors = serializers.IntegerField(min_value=0)
    error_rate = serializers.FloatField(min_value=0, max_value=1)
    avg_latency_ms = serializers.FloatField(allow_null=True)
    max_latency_ms = serializers.FloatField(allow_null=True)
    p95_latency_ms = serializers.FloatField(allow_null=True)


class _Precision(serializers.Serializer):
    precision = serializers.ChoiceField(choices=("exact", "approx"),
                                        help_text="How the percentiles were computed (approx: from histograms).")
    max_relative_error = serializers.FloatField(min_value=0, help_text="0 for exact; (γ-1)/(γ+1) for approx.")


class _Counts(serializers.Serializer):
    # The count and latency fields every analytics row shares (a comment: a docstring would
    # become the description of every schema component built on it).

    hits = serializers.IntegerField(min_value=0)
    errors = serializers.IntegerField(min_value=0)
    error_rate = serializers.FloatField(min_value=0, max_value=1)
    avg_latency_ms = serializers.FloatField(allow_null=True)
    max_latency_ms = serializers.FloatField(allow_null=True)


class _Percentiles(_Counts):
    p50_latency_ms = serializers.FloatField(allow_null=True)
    p90_latency_ms = serializers.FloatField(allow_null=True)
    p95_latency_ms = serializers.FloatField(allow_null=True)
    p99_latency_ms = serializers.FloatField(allow_null=True)


class KpiSerializer(_Percentiles, _Precision):
    source = serializers.ChoiceField(choices=SOURCES)


class TimeseriesRowSerializer(_Percentiles):
    bucket = serializers.DateTimeField()
    partial = serializers.BooleanField(
        help_text="true for the bucket that holds the server's current time (still filling), false for every other.")


class TimeseriesSerializer(_Precision):
    interval = serializers.ChoiceField(choices=tuple(analytics.INTERVALS))
    source = serializers.ChoiceField(choices=SOURCES)
    results = TimeseriesRowSerializer(many=True)


class TopEndpointRowSerializer(_Counts):
    service = serializers.CharField()
    endpoint = serializers.CharField()
    # Present with with_p95=true or when sorting by a percentile.
    p50_latency_ms = serializers.FloatField(allow_null=True, required=False)
    p90_latency_ms = serializers.FloatField(allow_null=True, required=False)
    p95_latency_ms = serializers.FloatField(allow_null=True, required=False)
    p99_latency_ms = serializers.FloatField(allow_null=True, required=False)


class TopEndpointsSerializer(_Precision):
    results = TopEndpointRowSerializer(many=True)
    source = serializers.ChoiceField(choices=SOURCES)


class SeriesRowSerializer(serializers.Serializer):
    service = serializers.CharField()
    endpoint = serializers.CharField()
    hits = serializers.IntegerField(min_value=1)


class SeriesSerializer(serializers.Serializer):
    results = SeriesRowSerializer(many=True)
    source = serializers.ChoiceField(choices=SOURCES)
    truncated = serializers.BooleanField(help_text="true when more than 10,000 pairs were cut.")


class IngestEventErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0)
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class IngestResultSerializer(serializers.Serializer):
    inserted = serializers.IntegerField(min_value=0)
    rejected = serializers.IntegerField(min_value=0)
    errors = IngestEventErrorSerializer(many=True, help_text="The first 100 rejected events.")
    errors_truncated = serializers.BooleanField(required=False, help_text="Present (true) when errors were cut.")


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=("ok", "error"))
    db = serializers.CharField(required=False, help_text='"ok", or why the database can\'t be reached.')
