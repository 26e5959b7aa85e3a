"""Root URLs: the API lives under /api/, the OTLP/HTTP receiver under /v1/."""

from django.urls import include, path, re_path

from observability.views import otlp_dropped, otlp_traces

urlpatterns = [
    path("api/", include("observability.urls")),
    # OTLP/HTTP at the root, where exporters append /v1/<signal> to OTEL_EXPORTER_OTLP_ENDPOINT.
    re_path(r"^v1/traces/?$", otlp_traces, name="otlp-traces"),
    re_path(r"^v1/(?:metrics|logs)/?$", otlp_dropped, name="otlp-dropped"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
