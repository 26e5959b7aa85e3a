"""Root URLs: the API under /api/ with its OpenAPI schema and docs, the OTLP/HTTP receiver under
/v1/; people log in at /accounts/login/."""

from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from observability.access import login_required
from observability.views import otlp_dropped, otlp_traces

urlpatterns = [
    path("api/", include("observability.urls")),
    # OpenAPI 3: YAML by default, JSON with ?format=json or Accept: application/vnd.oai.openapi+json.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs pages are for people: without a session they send the visitor to the login page.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
    # Our template: drf-spectacular's own links Google Fonts, and the docs must work offline.
    path("api/redoc/", login_required(SpectacularRedocView.as_view(
        url_name="schema", template_name="observability/redoc.html")), name="redoc"),
    # Only login and logout: the password-reset views would need mail and more templates.
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # OTLP/HTTP at the root, where exporters append /v1/<signal> to OTEL_EXPORTER_OTLP_ENDPOINT.
    re_path(r"^v1/traces/?$", otlp_traces, name="otlp-traces"),
    re_path(r"^v1/(?:metrics|logs)/?$", otlp_dropped, name="otlp-dropped"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
