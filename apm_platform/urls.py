"""Root URLs: the API lives under /api/; people log in at /accounts/login/."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("api/", include("observability.urls")),
    # Only login and logout: the password-reset views would need mail and more templates.
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]

# Only used with DEBUG off; JsonErrorMiddleware covers DEBUG on as well.
handler400 = "apm_platform.middleware.bad_request"
handler403 = "apm_platform.middleware.permission_denied"
handler404 = "apm_platform.middleware.page_not_found"
handler500 = "apm_platform.middleware.server_error"
