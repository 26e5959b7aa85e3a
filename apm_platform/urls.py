"""Root URLs: the API lives under /api/."""

from django.urls import include, path

from observability.metrics import metrics_view

urlpatterns = [
    path("api/", include("observability.urls")),
    # Prometheus scrape target (README "Running it for months": who may read it).
    path("metrics", metrics_view, name="metrics"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
