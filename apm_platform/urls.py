"""Root URLs: the API lives under /api/; its OpenAPI schema and docs pages beside it."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("api/", include("observability.urls")),
    # OpenAPI 3: YAML by default, JSON with ?format=json or Accept: application/vnd.oai.openapi+json.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Our template: drf-spectacular's own links Google Fonts, and the docs must work offline.
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="observability/redoc.html"),
         name="redoc"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
