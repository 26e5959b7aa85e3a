"""Page-number pagination that rejects a bad `page_size` instead of quietly clamping it."""

from django.conf import settings
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

MAX_PAGE_SIZE = 1000


class PageSizeSerializer(serializers.Serializer):
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, required=False)
    page = serializers.IntegerField(min_value=1, required=False)


class StrictPageNumberPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset, request, view=None):
        params = PageSizeSerializer(data={
            key: request.query_params[key] for key in ("page", "page_size")
            if key in request.query_params
        })
        params.is_valid(raise_exception=True)
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request):
        if self.page_size_query_param in request.query_params:
            return int(request.query_params[self.page_size_query_param])
        return settings.REST_FRAMEWORK["PAGE_SIZE"]
