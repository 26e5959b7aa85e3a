"""The dashboard page and its login page: server-rendered shells over the JSON API.

The page's numbers come from the same JSON API as everyone else's (fetched by
static/observability/dashboard.js with the session), never from a second query path here.
"""

import logging
from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse

from observability import access

logger = logging.getLogger(__name__)

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


class ThrottledLoginView(LoginView):
    """Django's login, refusing (429) a username or address past its failed-login limit (access.py)."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username, address = self._who()
        if (throttled := access.login_wait(username=username, address=address)) is not None:
            wait, what = throttled
            logger.info("Login refused (throttled, %s): username %r from %s, %d s left", what, username, address, wait)
            response = JsonResponse({"detail": f"Too many failed logins for {what}: try again in {wait} s."},
                                    status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        username, address = self._who()
        for what in access.login_failed(username=username, address=address):
            logger.warning("Login throttled for up to %d s: %s failed logins for %s (username %r from %s)",
                           settings.APM_LOGIN_THROTTLE_SECONDS, self._limit(what), what, username, address)
        return super().form_invalid(form)

    def form_valid(self, form):
        access.login_succeeded(username=self._who()[0])
        return super().form_valid(form)

    def _who(self) -> tuple[str, str]:
        return self.request.POST.get("username", ""), self.request.META.get("REMOTE_ADDR", "")

    @staticmethod
    def _limit(what: str) -> int:
        return (settings.APM_LOGIN_FAILURES_PER_USERNAME if what == "this username"
                else settings.APM_LOGIN_FAILURES_PER_ADDRESS)


login = content_security_policy(ThrottledLoginView.as_view())
