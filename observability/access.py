"""Who may call what: API keys, scopes, authentication and permission classes, rate limits.

Machines send an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`); people log in
with Django's auth and their browser session. Every caller ends up with one scope:

    ingest  may only write events (bulk ingest, POST /api/requests/, /v1/traces)
    read    every GET/HEAD
    admin   everything (a staff user; an active non-staff user is `read`)

DRF views get this by default (settings.REST_FRAMEWORK): GET/HEAD need `read`, other methods
`admin`, unless the view, or the action through `@action(required_scope=...)` or the
ViewSet's `action_scopes`, declares another scope. Plain Django views call `check(request,
scope)` at their top; HTML pages use `login_required`.

A key is `apm_<prefix>_<secret>`: the prefix is public and finds the row, the stored hash is
the SHA-256 of the whole key (the secret has 256 bits of entropy, so a fast hash is enough;
no key stretching is needed), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings

# HTML pages (dashboard, API docs) use Django's decorator: no session -> settings.LOGIN_URL.
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from observability.models import ApiKey

SCOPES = ApiKey.SCOPES
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# The scopes a caller of a given scope holds: admin holds all three, the others only themselves.
_GRANTS = {"admin": frozenset(SCOPES), "read": frozenset({"read"}), "ingest": frozenset({"ingest"})}
_KEY_START = "apm_"
WWW_AUTHENTICATE = 'Bearer realm="apm"'
# apm_<8 hex>_<secret>: anything else is refused before it reaches the database (a NUL in a
# query parameter would be a PostgreSQL error, not a 401).
_KEY_SHAPE = re.compile(r"apm_([0-9a-f]{8})_[A-Za-z0-9_-]{1,200}")

__all__ = [
    "ApiKeyAuthentication", "Principal", "ScopePermission", "SessionAuthentication", "check", "create_key",
    "login_failed", "login_required", "login_succeeded", "login_wait", "principal_for", "revoke_key",
]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key or a logged-in person, with the one scope they hold."""

    kind: str  # "key" or "user"
    ident: str  # the key's prefix, or the user's id
    name: str
    scope: str

    is_authenticated = True  # so DRF and Django treat a key like a logged-in user
    is_active = True

    def allows(self, scope: str) -> bool:
        return scope in _GRANTS[self.scope]

    @classmethod
    def for_user(cls, user) -> Principal | None:
        """A logged-in, active user: staff are admin, everyone else reads."""
        if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
            return None
        return cls("user", str(user.pk), user.get_username(), "admin" if user.is_staff else "read")


def principal_of(user) -> Principal | None:
    """The Principal behind DRF's request.user (a key's Principal, or a Django user)."""
    if isinstance(user, Principal):
        return user
    return Principal.for_user(user)


# --- Keys -------------------------------------------------------------------------------------


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(*, name: str, scope: str) -> tuple[ApiKey, str]:
    """A new key: the stored row, and the full key (shown once, never stored)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    for _ in range(5):
        prefix = secrets.token_hex(4)
        key = f"{_KEY_START}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                row = ApiKey.objects.create(name=name, scope=scope, prefix=prefix, key_hash=_digest(key))
            return row, key
        except IntegrityError:  # a prefix collision (1 in 4 billion): draw again
            continue
    raise RuntimeError("could not draw a unique key prefix")


def revoke_key(prefix: str) -> ApiKey | None:
    """Revoke the key with this prefix (idempotent); None when there is no such key."""
    row = ApiKey.objects.filter(prefix=prefix).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
    return row


# Per-process cache: SHA-256 of a presented key -> (monotonic expiry, Principal or None). A hit
# costs one hash and one dict lookup, so auth stays far below 1% of an ingest request. Unknown
# and revoked keys are cached too (as None), so a flood of bad keys can't hammer the database.
# Entries live at most APM_API_KEY_CACHE_SECONDS (≤ 60): a key revoked elsewhere (another
# worker, the revoke_api_key command) stops working in every process within that time; a save
# in this process updates its own entry at once (see apps.py). Looking the digest up in a dict
# is not a timing oracle: learning a digest's prefix says nothing about a key.
_cache: dict[str, tuple[float, Principal | None]] = {}
_CACHE_MAX = 10_000


def clear_cache() -> None:
    _cache.clear()


def _principal_of_row(row: ApiKey) -> Principal | None:
    return Principal("key", row.prefix, row.name, row.scope) if row.revoked_at is None else None


def remember(row: ApiKey) -> None:
    """Refresh this process's cache entry for a key just saved here (revocation is immediate)."""
    _store(row.key_hash, _principal_of_row(row))


def _store(digest: str, principal: Principal | None) -> None:
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[digest] = (time.monotonic() + settings.APM_API_KEY_CACHE_SECONDS, principal)


def authenticate_key(key: str) -> Principal | None:
    """The Principal of a valid, unrevoked key; None for anything else."""
    digest = _digest(key)
    hit = _cache.get(digest)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    principal = None
    shape = _KEY_SHAPE.fullmatch(key)
    if shape is not None:
        row = ApiKey.objects.filter(prefix=shape.group(1)).first()
        if row is not None and hmac.compare_digest(row.key_hash, digest):
            principal = _principal_of_row(row)
            if principal is not None:
                # At most once per key per process per cache period: cheap, and close enough.
                ApiKey.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
    _store(digest, principal)
    return principal


NOT_PROVIDED = "Authentication credentials were not provided."
NOT_BEARER = ('The Authorization header is not "Bearer <key>": send the API key as '
              '"Authorization: Bearer <key>" or as "X-API-Key: <key>".')


def missing_credential_detail(meta) -> str:
    """Why a request has no credential: none sent, or an Authorization header of another form."""
    auth = meta.get("HTTP_AUTHORIZATION", "").strip()
    # `Authorization: abc123` (the key alone), `Basic ...`, `Bearer` without a key. The value is
    # never echoed: it may be the key itself.
    return NOT_BEARER if auth else NOT_PROVIDED


def key_from_headers(meta) -> str | None:
    """The key in `Authorization: Bearer <key>` or `X-API-Key: <key>`, if either is sent."""
    auth = meta.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    value = meta.get("HTTP_X_API_KEY", "").strip()
    return value or None


# --- DRF: authentication and the default permission -------------------------------------------


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """An API key in `Authorization: Bearer` or `X-API-Key`; a bad one is a 401, never a fallback."""

    def authenticate(self, request):
        key = key_from_headers(request.META)
        if key is None:
            return None
        principal = authenticate_key(key)
        if principal is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return principal, principal

    def authenticate_header(self, request):
        # First in the list, so DRF answers 401 with this header (not 403) without a credential.
        return WWW_AUTHENTICATE


class SessionAuthentication(authentication.SessionAuthentication):
    """Django's session (a person logged in at /accounts/login/); CSRF-checked for writes."""


def required_scope(request, view) -> str:
    """The scope a request to this view needs: declared by the view/action, else by method."""
    action = getattr(view, "action", None)
    declared = (getattr(view, "action_scopes", None) or {}).get(action) or getattr(view, "required_scope", None)
    if declared:
        if declared not in SCOPES:
            raise ValueError(f"{type(view).__name__}: unknown required_scope {declared!r}")
        return declared
    return "read" if request.method in SAFE_METHODS else "admin"


class ScopePermission(permissions.BasePermission):
    """The default permission: the caller's scope must grant what the request needs."""

    def has_permission(self, request, view):
        principal = principal_of(request.user)
        if principal is None:
            # 401 + WWW-Authenticate (DRF adds the header), saying how to send a key.
            raise exceptions.NotAuthenticated(missing_credential_detail(request.META))
        needed = required_scope(request, view)
        if principal.allows(needed):
            return True
        self.message = (f"This {'key' if principal.kind == 'key' else 'account'} has scope "
                        f"'{principal.scope}'; {request.method} {request.path} needs '{needed}'.")
        return False


# --- Plain Django views ------------------------------------------------------------------------


def _unauthorized(detail: str) -> HttpResponse:
    response = JsonResponse({"detail": detail}, status=401)
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response


def check(request, scope: str) -> HttpResponse | None:
    """For a plain Django view: None when the caller may act with `scope`, else the 401/403.

    Call it first thing: `if (denied := access.check(request, "ingest")): return denied`.
    The caller's Principal is left on `request.apm_principal` (for charge_ingest & co.).
    """
    key = key_from_headers(request.META)
    if key is not None:
        principal = authenticate_key(key)
        if principal is None:
            return _unauthorized("Invalid or revoked API key.")
    else:
        principal = Principal.for_user(getattr(request, "user", None))
        if principal is None:
            return _unauthorized(missing_credential_detail(request.META))
        if request.method not in SAFE_METHODS:
            # A session is a cookie the browser sends by itself: writes need the CSRF token.
            reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if reason is not None:
                return JsonResponse({"detail": "CSRF Failed: send the csrftoken cookie's value "
                                               "in X-CSRFToken."}, status=403)
    request.apm_principal = principal
    if not principal.allows(scope):
        return JsonResponse({"detail": f"This credential has scope '{principal.scope}'; "
                                       f"{request.method} {request.path} needs '{scope}'."}, status=403)
    return None


# --- Rate limits ---------------------------------------------------------------------------------
# A token bucket per caller, in this process's memory: with W gunicorn workers a caller may get up
# to W x the rate in total (each worker enforces it alone). Refused requests take no tokens.

_buckets: dict[str, list[float]] = {}  # ident -> [tokens, monotonic time of last refill]
_buckets_lock = threading.Lock()


def ingest_wait(principal: Principal, events: int) -> float:
    """0 and the events are charged, or the seconds to wait before `events` would be allowed."""
    rate = settings.APM_INGEST_RATE_LIMIT
    if not rate or events <= 0:
        return 0.0
    burst = settings.APM_INGEST_RATE_BURST
    ident = f"{principal.kind}:{principal.ident}"
    with _buckets_lock:
        now = time.monotonic()
        bucket = _buckets.setdefault(ident, [float(burst), now])
        bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if events <= bucket[0]:
            bucket[0] -= events
            return 0.0
        return (events - bucket[0]) / rate


def clear_rate_limits() -> None:
    with _buckets_lock:
        _buckets.clear()


def principal_for(request) -> Principal | None:
    """The caller of a request: the one `check` (or DRF's authentication) found, else its user's."""
    return getattr(request, "apm_principal", None) or principal_of(getattr(request, "user", None))


# --- Login throttle ------------------------------------------------------------------------------
# Failed logins are counted per username and per client address in Django's cache, in windows of
# APM_LOGIN_THROTTLE_SECONDS that start at the first failure. Past a limit, every login for that
# username, or from that address, is a 429 with Retry-After until its window ends, the right
# password included (else guessing would only need to wait for a 200). The project configures no
# cache, so Django's default is this process's memory: each gunicorn worker counts on its own,
# and with W workers an attacker may get up to W x the limits (docs/OPERATIONS.md "Security").

_login_lock = threading.Lock()  # the cache's get-then-set, atomic among this worker's threads


def login_clock() -> float:
    """Wall-clock seconds for the login windows (a function, so tests can move time)."""
    return time.time()


def _login_counters(username: str, address: str) -> list[tuple[str, int, str]]:
    """(cache key, limit, what it names) of each counter a login attempt is checked against."""
    digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
    counters = [(f"apm:login:user:{digest}", settings.APM_LOGIN_FAILURES_PER_USERNAME, "this username"),
                (f"apm:login:addr:{address}", settings.APM_LOGIN_FAILURES_PER_ADDRESS, "this address")]
    return [counter for counter in counters if counter[1] > 0]


def login_wait(*, username: str, address: str) -> tuple[int, str] | None:
    """(seconds to wait, what is throttled) when a login must be refused now; None when it may be tried."""
    now = login_clock()
    for key, limit, what in _login_counters(username, address):
        count, ends = cache.get(key) or (0, 0.0)
        if count >= limit and ends > now:
            return max(1, math.ceil(ends - now)), what
    return None


def login_failed(*, username: str, address: str) -> list[str]:
    """Count a failed login; the counters that reached their limit with it (to be logged)."""
    window = settings.APM_LOGIN_THROTTLE_SECONDS
    now = login_clock()
    reached = []
    with _login_lock:
        for key, limit, what in _login_counters(username, address):
            count, ends = cache.get(key) or (0, 0.0)
            if ends <= now:
                count, ends = 0, now + window  # a new window from this failure
            count += 1
            cache.set(key, (count, ends), timeout=max(1, math.ceil(ends - now)))
            if count == limit:
                reached.append(what)
    return reached


def login_succeeded(*, username: str) -> None:
    """A right password: that username's failures are forgotten (its address's are not)."""
    for key, _, what in _login_counters(username, ""):
        if what == "this username":
            cache.delete(key)


def clear_login_failures() -> None:
    """Forget every count (tests; the default cache holds nothing else)."""
    cache.clear()
