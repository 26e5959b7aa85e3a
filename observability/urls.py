from django.urls import include, path
from rest_framework.routers import DefaultRouter

from observability.views import ApiRequestViewSet, HealthView

router = DefaultRouter()
router.register("requests", ApiRequestViewSet, basename="apirequest")

urlpatterns = [
    path("health/", HealthView.as_view(), name="health"),
    path("", include(router.urls)),
]
