"""Root URLs: the dashboard at /, the API under /api/ with its schema and docs, the OTLP/HTTP receiver
under /v1/, /metrics, and the login under /accounts/."""

from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from observability import dashboard
from observability.access import login_required
from observability.metrics_view import metrics_view
from observability.views import otlp_dropped, otlp_traces

urlpatterns = [
    path("api/", include("observability.urls")),
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/", dashboard.dashboard),
    # OpenAPI 3: YAML by default, JSON with ?format=json or Accept: application/vnd.oai.openapi+json.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs pages are for people: without a session they send the visitor to the login page.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
    # Our template: drf-spectacular's own links Google Fonts, and the docs must work offline.
    path("api/redoc/", login_required(SpectacularRedocView.as_view(
        url_name="schema", template_name="observability/redoc.html")), name="redoc"),
    # The login page in the dashboard's style and with its CSP; logout is a POST (its form).
    path("accounts/login/", dashboard.login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Prometheus scrape target (docs/OPERATIONS.md "The service's own metrics": who may read it).
    path("metrics", metrics_view, name="metrics"),
    # OTLP/HTTP at the root, where exporters append /v1/<signal> to OTEL_EXPORTER_OTLP_ENDPOINT.
    re_path(r"^v1/traces/?$", otlp_traces, name="otlp-traces"),
    re_path(r"^v1/(?:metrics|logs)/?$", otlp_dropped, name="otlp-dropped"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
