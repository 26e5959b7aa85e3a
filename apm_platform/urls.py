"""Root URLs: the API lives under /api/, the dashboard at / and the login under /accounts/."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from observability import dashboard

urlpatterns = [
    path("api/", include("observability.urls")),
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/", dashboard.dashboard),
    # The login page in the dashboard's style and with its CSP; logout is a POST (its form).
    path("accounts/login/", dashboard.login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
