"""The list filters of API.md, shared by the list, /kpis/ and /top-endpoints/."""

from datetime import UTC

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q
from django_filters import fields as filter_fields
from django_filters import rest_framework as filters

from observability.models import ApiRequest

# Filters that the hourly rollup can answer (its grouping columns and its time bucket).
ROLLUP_FILTERS = frozenset({"service", "endpoint", "start", "end"})


class Int64Field(forms.IntegerField):
    """An integer the database can hold (SQLite raises OverflowError past 64 bits: a 500)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", -(2**63))
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class IntegerInFilter(filters.BaseInFilter):
    """`status_code=500,502,503`: a comma-separated list of integers."""

    field_class = Int64Field


class UtcIsoDateTimeField(filter_fields.IsoDateTimeField):
    """An ISO 8601 time that still exists in UTC: 0001-01-01T00:00+05:00 is in year 0 there,
    which the database adapter can't convert (a 500 on SQLite)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValidationError("Datetime is out of range once converted to UTC.",
                                      code="invalid") from None
        return value


class UtcIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class UpperCharFilter(filters.CharFilter):
    """Methods are stored upper case; `method=get` finds GET."""

    def filter(self, qs, value):
        return super().filter(qs, value.upper() if value else value)


class TieBreakingOrderingFilter(filters.OrderingFilter):
    """The client's order, then newest id first, so pages never shuffle between requests."""

    def filter(self, qs, value):
        qs = super().filter(qs, value)
        return qs.order_by(*qs.query.order_by, "-id") if value else qs


class ApiRequestFilter(filters.FilterSet):
    service = filters.CharFilter()
    endpoint = filters.CharFilter()
    method = UpperCharFilter()
    trace_id = filters.CharFilter()
    user_ref = filters.CharFilter()
    status_code = IntegerInFilter(field_name="status_code", lookup_expr="in")
    status_min = filters.NumberFilter(field_name="status_code", lookup_expr="gte")
    status_max = filters.NumberFilter(field_name="status_code", lookup_expr="lte")
    start = UtcIsoDateTimeFilter(field_name="time", lookup_expr="gte")
    end = UtcIsoDateTimeFilter(field_name="time", lookup_expr="lt")
    latency_min = filters.NumberFilter(field_name="latency_ms", lookup_expr="gte")
    latency_max = filters.NumberFilter(field_name="latency_ms", lookup_expr="lte")
    search = filters.CharFilter(method="filter_search")
    ordering = TieBreakingOrderingFilter(fields=("time", "latency_ms", "status_code"))

    class Meta:
        model = ApiRequest
        fields: list[str] = []

    def filter_search(self, queryset, name, value):
        return queryset.filter(
            Q(endpoint__icontains=value) | Q(trace_id__icontains=value) | Q(user_ref__icontains=value)
        )

    def used_filters(self) -> set[str]:
        """Names of the filters the client gave a value for (after validation)."""
        return {
            name for name, value in self.form.cleaned_data.items()
            if value not in (None, "", []) and name != "ordering"
        }


class RollupFilter(filters.FilterSet):
    """`/hourly/` and `/daily/`: series and a half-open range on the bucket start."""

    service = filters.CharFilter()
    endpoint = filters.CharFilter()
    start = UtcIsoDateTimeFilter(field_name="bucket", lookup_expr="gte")
    end = UtcIsoDateTimeFilter(field_name="bucket", lookup_expr="lt")
