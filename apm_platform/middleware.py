"""JSON for every error response: DRF's own, Django's 404/405/413/500, and bad requests.

API clients parse error bodies; an HTML debug or error page in the middle of a JSON API breaks
them, so errors are rewritten here once instead of in every view.
"""

import logging
import sys
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http import JsonResponse, UnreadablePostError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from observability import db, errors

logger = logging.getLogger(__name__)

_KEEP_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
# The OTLP receiver answers errors with google.rpc.Status in the request's encoding (binary
# protobuf included), as the OTLP spec requires: its responses are left as they are.
OTLP_PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(status: int, detail: str, **extra) -> JsonResponse:
    """A JSON error response with a `detail` string and any extra fields."""
    return JsonResponse({"detail": detail, **extra}, status=status)


class JsonErrorMiddleware:
    """Replace any non-JSON error response with `{"detail": ...}` of the same status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            request.GET  # noqa: B018 (parsed here, once: see below)
        except TooManyFieldsSent:
            # Django raises this from the first read of request.GET; inside a DRF view, with
            # DEBUG on, DRF's own error path then fails too (no accepted_renderer yet): a 500.
            return error_response(400, "Too many query parameters: at most "
                                       f"{settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} are accepted.")
        response = self.get_response(request)
        if response.status_code < 400 or request.path.rstrip("/") in OTLP_PATHS:
            return response
        content_type = response.get("Content-Type", "")
        if content_type.startswith("application/json"):
            return response
        replacement = error_response(response.status_code, _detail_for(response))
        for header in _KEEP_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement


def _detail_for(response) -> str:
    status = response.status_code
    if status == 404:
        return "Not found."
    if status == 405:
        return "Method not allowed."
    if status >= 500:
        return "Server error."
    return f"{_reason(status)}."


UNAVAILABLE = "The database is unavailable right now; nothing of this request was stored. Retry later."


def _time_limit_detail() -> str:
    return (f"The query ran past the time limit of {settings.APM_QUERY_TIMEOUT} s (APM_QUERY_TIMEOUT) "
            "and was cancelled; try precision=approx or a narrower window (start/end).")


def database_error_response(exc, response_class=JsonResponse):
    """503 + Retry-After when the database can't serve now, 504 past the analytics time limit,
    400 for a body the client stopped sending, None for any other error."""
    if isinstance(exc, UnreadablePostError):
        # The body ended before its Content-Length, or stalled past GUNICORN_READ_TIMEOUT.
        return response_class({"detail": "The request body could not be read to its end "
                                         "(shorter than its Content-Length, or the client stalled)."},
                              status=400)
    if db.is_time_limit(exc):
        logger.warning("Query cancelled at the time limit: %s", exc)
        return response_class({"detail": _time_limit_detail()}, status=504)
    if db.is_unavailable(exc):
        logger.warning("Database unavailable (%s): %s", _chain(exc),
                       str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        detail = UNAVAILABLE
        if db.commit_outcome_unknown(exc):
            detail = ("The database stopped answering while this request was committing: it may or may "
                      "not have been stored (a retry may store it twice). Retry later.")
        response = response_class({"detail": detail}, status=503)
        response["Retry-After"] = str(settings.APM_RETRY_AFTER)
        return response
    return None


def _chain(exc) -> str:
    names = []
    while exc is not None and len(names) < 5:
        names.append(type(exc).__name__)
        exc = exc.__cause__
    return " <- ".join(names)


def json_exception_handler(exc, context):
    """DRF's handler, with a `detail` string added to field-level validation errors, the app's
    domain refusals (`observability.errors`) as their status, and database outages as 503 (504
    for a query past its time limit)."""
    unavailable = database_error_response(exc, Response)
    if unavailable is not None:
        return unavailable
    if isinstance(exc, errors.QueryRefused):
        # The app's domain refusals: one mapping to HTTP, here, for every view.
        return Response({"detail": str(exc)}, status=exc.status)
    if isinstance(exc, errors.RateLimited):
        exc = exceptions.Throttled(wait=exc.retry_after, detail=str(exc))  # 429 with Retry-After
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        if isinstance(data, dict):
            fields = ", ".join(str(key) for key in data if key != "detail")
            if "detail" not in data:
                response.data = {"detail": f"Invalid input: {fields}.", **data}
        else:
            response.data = {"detail": "Invalid input.", "errors": data}
    elif not isinstance(data, dict) or "detail" not in data:
        response.data = {"detail": _reason(response.status_code) + ".", "errors": data}
    return response


def bad_request(request, exception=None):
    return error_response(400, "Bad request.")


def permission_denied(request, exception=None):
    return error_response(403, "Permission denied.")


def page_not_found(request, exception=None):
    return error_response(404, "Not found.")


def server_error(request):
    # Called while the exception is being handled: a database outage outside a DRF view (in
    # middleware, or while committing) is still a 503, not a 500.
    exc = sys.exc_info()[1]
    if exc is not None:
        unavailable = database_error_response(exc)
        if unavailable is not None:
            return unavailable
    return error_response(500, "Server error.")
