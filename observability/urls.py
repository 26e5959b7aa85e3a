from django.urls import include, path, re_path
from rest_framework.routers import DefaultRouter

from observability.views import ApiRequestViewSet, HealthView

# "/?": /api/requests and /api/requests/ both answer. Without it a POST to the slash-less URL
# would be redirected (losing its body) or fail.
router = DefaultRouter()
router.trailing_slash = "/?"  # DRF's constructor only takes a bool
router.register("requests", ApiRequestViewSet, basename="apirequest")

urlpatterns = [
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    path("", include(router.urls)),
]
