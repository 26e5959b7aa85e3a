"""The dashboard page and its login page: server-rendered shells over the JSON API.

The page's numbers come from the same JSON API as everyone else's (fetched by
static/observability/dashboard.js with the session), never from a second query path here.
"""

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.shortcuts import render
from django.urls import reverse

# Everything the pages load is a vendored static file of this origin: no inline script or
# style, nothing from elsewhere. Scoped to these pages (the API docs pages set their own).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'"
)


def content_security_policy(view):
    """Send the dashboard pages' Content-Security-Policy with every answer of `view`."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return wrapped


@content_security_policy
@login_required
def dashboard(request):
    """KPI tiles, traffic and latency charts and the top endpoints, for a logged-in person."""
    return render(request, "observability/dashboard.html", {
        # The router answers with or without the slash; the script appends "kpis/" etc.
        "api_base": reverse("apirequest-list").rstrip("/") + "/",
        "send_data_url": settings.APM_README_URL + "#send-data" if settings.APM_README_URL else "",
    })


login = content_security_policy(LoginView.as_view(redirect_authenticated_user=True))
