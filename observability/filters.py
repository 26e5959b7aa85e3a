"""The list filters of API.md, shared by the list, /kpis/ and /top-endpoints/."""

from datetime import UTC

from django import forms
from django.db.models import Q
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from observability.constants import MAX_LATENCY_MS
from observability.models import METHODS, ApiRequest

# Filters that the hourly rollup can answer (its grouping columns and its time bucket).
ROLLUP_FILTERS = frozenset({"service", "endpoint", "start", "end"})


class RangeForm(forms.Form):
    """The filter form, refusing contradictory ranges: `start` after `end` and the like (400)."""

    # (lower, upper): the lower bound may not be above the upper one.
    RANGES = (("start", "end"), ("status_min", "status_max"), ("latency_min", "latency_max"))

    def clean(self):
        cleaned = super().clean()
        for low, high in self.RANGES:
            lo, hi = cleaned.get(low), cleaned.get(high)
            if lo is not None and hi is not None and lo > hi:
                relation = "after" if low == "start" else "above"
                # The client's values go in as params, never into the message itself: the message
                # is %-formatted later (Django, django-filter), and a "%" in it would be a 500.
                self.add_error(low, forms.ValidationError(
                    f"{low} (%(low)s) is {relation} {high} (%(high)s).", code="invalid",
                    params={"low": self.data.get(low), "high": self.data.get(high)}))
        return cleaned


def _no_nul(value):
    # PostgreSQL can't compare with a string holding NUL (psycopg2 raises): a 400, not a 500.
    if value and "\x00" in value:
        raise forms.ValidationError("Null characters are not allowed.")


class TextFilter(filters.CharFilter):
    """An exact or substring text match; a NUL character is a 400."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, validators=[_no_nul, *kwargs.pop("validators", [])], **kwargs)


def invalid_time_message(value) -> str:
    """Why a query-string time was refused: the forms it takes, and the `+` that became a space."""
    message = "Enter a valid date/time in ISO 8601, e.g. 2026-12-07T10:00:00Z or 2026-12-07T10:00:00+02:00."
    if isinstance(value, str) and " " in value.strip():
        message += (" It holds a space: in a query string + means a space, so send an offset's + as %2B "
                    "(2026-12-07T10:00:00%2B02:00).")
    return message


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 time, refused (400) when it has no UTC equivalent (0001-01-01T00:00+05:00)."""

    def to_python(self, value):
        try:
            parsed = super().to_python(value)
        except forms.ValidationError as exc:
            if exc.code != "invalid":
                raise
            # As a param: the message holds "%2B", and Django and django-filter %-format messages.
            raise forms.ValidationError("%(message)s", code="invalid",
                                        params={"message": invalid_time_message(value)}) from None
        value = parsed
        try:
            return value.astimezone(UTC) if value is not None else None
        except OverflowError:
            raise forms.ValidationError("Out of range once converted to UTC.", code="invalid") from None


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class IntegerFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class IntegerInFilter(filters.BaseInFilter):
    """`status_code=500,502,503`: a comma-separated list of integers."""

    field_class = forms.IntegerField


@extend_schema_field({"type": "string", "enum": [*METHODS, *(m.lower() for m in METHODS)]})
class MethodFilter(TextFilter):
    """One of the seven methods, in any letter case (stored upper case: `method=get` finds GET)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, validators=[self.validate_method], **kwargs)

    @staticmethod
    def validate_method(value):
        if value and value.upper() not in METHODS:
            # The value as a param: django-filter %-formats the message (a "%" in it was a 500).
            raise forms.ValidationError(f'"%(value)s" is not a valid method. Use one of {", ".join(METHODS)}.',
                                        code="invalid_choice", params={"value": value})

    def filter(self, qs, value):
        return super().filter(qs, value.upper() if value else value)


class TieBreakingOrderingFilter(filters.OrderingFilter):
    """The client's order, then newest id first, so pages never shuffle between requests."""

    def filter(self, qs, value):
        qs = super().filter(qs, value)
        return qs.order_by(*qs.query.order_by, "-id") if value else qs


class ApiRequestFilter(filters.FilterSet):
    service = TextFilter()
    endpoint = TextFilter()
    method = MethodFilter()
    trace_id = TextFilter()
    user_ref = TextFilter()
    status_code = IntegerInFilter(field_name="status_code", lookup_expr="in", min_value=100, max_value=599,
                                  help_text="One code or a comma-separated list (500,502,503); each 100-599.")
    status_min = IntegerFilter(field_name="status_code", lookup_expr="gte", min_value=100, max_value=599)
    status_max = IntegerFilter(field_name="status_code", lookup_expr="lte", min_value=100, max_value=599)
    start = UtcDateTimeFilter(field_name="time", lookup_expr="gte",
                                      help_text="Inclusive; not after end.")
    end = UtcDateTimeFilter(field_name="time", lookup_expr="lt", help_text="Exclusive.")
    latency_min = filters.NumberFilter(field_name="latency_ms", lookup_expr="gte", min_value=0,
                                       max_value=MAX_LATENCY_MS)
    latency_max = filters.NumberFilter(field_name="latency_ms", lookup_expr="lte", min_value=0,
                                       max_value=MAX_LATENCY_MS)
    search = TextFilter(method="filter_search",
                                help_text="Substring of endpoint, trace_id or user_ref (any case).")
    ordering = TieBreakingOrderingFilter(fields=("time", "latency_ms", "status_code"))

    class Meta:
        model = ApiRequest
        fields: list[str] = []
        form = RangeForm

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

    service = TextFilter()
    endpoint = TextFilter()
    start = UtcDateTimeFilter(field_name="bucket", lookup_expr="gte",
                                      help_text="Bucket start, inclusive; not after end.")
    end = UtcDateTimeFilter(field_name="bucket", lookup_expr="lt", help_text="Bucket start, exclusive.")

    class Meta:
        form = RangeForm
