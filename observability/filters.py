"""The list filters of API.md, shared by the list, /kpis/ and /top-endpoints/."""

from django import forms
from django.db.models import Q
from django_filters import rest_framework as filters

from observability.models import ApiRequest

# Filters that the hourly rollup can answer (its grouping columns and its time bucket).
ROLLUP_FILTERS = frozenset({"service", "endpoint", "start", "end"})


class IntegerInFilter(filters.BaseInFilter):
    """`status_code=500,502,503`: a comma-separated list of integers."""

    field_class = forms.IntegerField


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
    start = filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte")
    end = filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt")
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
    start = filters.IsoDateTimeFilter(field_name="bucket", lookup_expr="gte")
    end = filters.IsoDateTimeFilter(field_name="bucket", lookup_expr="lt")
