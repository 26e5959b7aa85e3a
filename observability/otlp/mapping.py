"""Mapping one SERVER span to one event: the HTTP semantic-convention attributes (the stable
names first, then the older ones), the endpoint, the times."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

SPAN_KIND_SERVER = 2

# Attributes read from a span (current HTTP semantic conventions first, then the older names).
METHOD_KEYS = ("http.request.method", "http.method")
STATUS_KEYS = ("http.response.status_code", "http.status_code")
ROUTE_KEY = "http.route"
PATH_KEYS = ("url.path", "http.target")
URL_KEYS = ("url.full", "http.url")
USER_KEY = "enduser.id"
_SPAN_KEYS = frozenset((*METHOD_KEYS, *STATUS_KEYS, ROUTE_KEY, *PATH_KEYS, *URL_KEYS, USER_KEY))
DEFAULT_SERVICE = "unknown_service"  # what the SDKs report when service.name is not set

# A path segment that is an id, not part of the route: a number, a UUID, or long hex.
_ID_SEGMENT = re.compile(
    r"\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}"
).fullmatch
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- Mapping one span to one event ----------------------------------------------------------


def collapse_ids(path: str) -> str:
    """/users/42/orders/9f1c...e2 -> /users/{id}/orders/{id}: one endpoint per route."""
    path = path.split("?", 1)[0].split("#", 1)[0]  # never store query strings
    return "/".join("{id}" if segment and _ID_SEGMENT(segment) else segment for segment in path.split("/"))


def derive_endpoint(get, name: str, method) -> str | None:
    """http.route as sent; else the span name's path (`GET /users/42`) or the request path,
    with ids collapsed; None when the span names no route or path at all. `get(key)` reads
    a span attribute (dict.get will do)."""
    route = get(ROUTE_KEY)
    if type(route) is str and route:
        return route.split("?", 1)[0]
    if type(name) is str and type(method) is str and name.startswith(method + " /"):
        return collapse_ids(name[len(method) + 1:])
    for key in PATH_KEYS:
        path = get(key)
        if type(path) is str and path:
            return collapse_ids(path)
    for key in URL_KEYS:
        url = get(key)
        if type(url) is str and url:
            try:
                path = urlsplit(url).path
            except ValueError:
                continue
            if path:
                return collapse_ids(path)
    return None


def span_event(*, service, name, trace_id: str, start, end, get):
    """The event dict of one SERVER span, a string saying why it can't be one, or None when
    it is not an HTTP span (gRPC, messaging: not ours to store). `get(key)` reads one of the
    span's attributes (None when absent), so only the attributes needed are decoded."""
    method = get("http.request.method")
    if method is None:
        method = get("http.method")
        if method is None:
            return None
    status = get("http.response.status_code")
    if status is None:
        status = get("http.status_code")
        if status is None:
            return "status_code: the span has no http.response.status_code (or http.status_code)"
    endpoint = derive_endpoint(get, name, method)
    if endpoint is None:
        return "endpoint: the span has no http.route, route in its name, url.path or http.target"
    if type(start) is not int or type(end) is not int or start <= 0 or end <= 0:
        return "time: startTimeUnixNano and endTimeUnixNano must be positive integers"
    time_ = _iso_time(start)
    if time_ is None:
        return "time: startTimeUnixNano is out of range"
    user = get(USER_KEY)
    return {
        "time": time_,
        "service": service,
        "endpoint": endpoint,
        "method": method,
        "status_code": status,
        "latency_ms": (end - start) / 1e6,
        "trace_id": trace_id,
        "user_ref": "" if user is None else user if type(user) is str else str(user),
    }


@functools.lru_cache(maxsize=4096)
def _iso_minute(minute: int) -> str | None:
    """'2026-03-02T10:15:' for minutes since the epoch; None past year 9999."""
    try:
        return (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
    except OverflowError:
        return None


def _iso_time(unix_nano: int) -> str | None:
    """ISO 8601 UTC text of a span timestamp, to the microsecond (what the column holds).

    The minute comes from a small cache and the rest is %-formatted: a datetime and its
    isoformat() cost about three times as much, and this runs once a span."""
    second, nanos = divmod(unix_nano, 1_000_000_000)
    minute, second = divmod(second, 60)
    prefix = _iso_minute(minute)
    if prefix is None:
        return None
    return "%s%02d.%06d+00:00" % (prefix, second, nanos // 1000)  # noqa: UP031 - faster than f"{:02d}"


