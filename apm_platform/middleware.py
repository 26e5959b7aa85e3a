"""JSON for every error response: DRF's own, Django's 404/405/413/500, and bad requests.

API clients parse error bodies; an HTML debug or error page in the middle of a JSON API breaks
them, so errors are rewritten here once instead of in every view.
"""

import logging
from http import HTTPStatus

from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.views import exception_handler

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


def json_exception_handler(exc, context):
    """DRF's handler, with a `detail` string added to field-level validation errors."""
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
    return error_response(500, "Server error.")
