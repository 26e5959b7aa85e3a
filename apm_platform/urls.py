"""Root URLs: the API lives under /api/, the dashboard at / and the login under /accounts/."""

from django.urls import include, path

from observability import dashboard

urlpatterns = [
    path("api/", include("observability.urls")),
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/", dashboard.dashboard),
    # Before the auth URLs, so that the styled login page (with its CSP) answers /accounts/login/.
    path("accounts/login/", dashboard.login, name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
