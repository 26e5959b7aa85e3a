"""Settings for the APM backend: one file, driven by the environment.

Every value a deployment may change is read through the small helpers below, which fail
loudly on a value they cannot parse rather than falling back to a default silently.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from apm_platform.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        # A default key in production would make sessions and signatures forgeable.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off "
            "(set DJANGO_DEBUG=1 for local development)."
        )
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "whitenoise.runserver_nostatic",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and Redoc as static files: /api/docs/ and /api/redoc/ work offline.
    "drf_spectacular_sidecar",
    "django_prometheus",
    "observability",
]

MIDDLEWARE = [
    # Request counts and latency by view for /metrics; first and last so they time everything.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Outermost but for the timer above, so that every error response, Django's own included,
    # leaves as JSON.
    "apm_platform.middleware.JsonErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions for people logged in at /accounts/login/ (keys need neither; both are lazy, so a
    # request with a key never touches the session table).
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Forms (the login page). DRF views check CSRF themselves, for session-authenticated writes.
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "apm_platform.urls"
WSGI_APPLICATION = "apm_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
        ]},
    }
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# A password with URL-special characters (@ / : # ? %) need not be percent-encoded into
# DATABASE_URL: DATABASE_PASSWORD, when set, replaces the URL's password (compose uses it).
_db_password = env_str("DATABASE_PASSWORD", "")
if _db_password:
    DATABASES["default"]["PASSWORD"] = _db_password
_db_sslmode = env_str("DB_SSLMODE", "")
if _db_sslmode:
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DB_SSLMODE only applies to a PostgreSQL DATABASE_URL.")
    DATABASES["default"].setdefault("OPTIONS", {})["sslmode"] = _db_sslmode
DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 5)
# Seconds one round trip may wait for an answer before the connection is cut (503); on SQLite,
# how long a write waits for the database's write lock before it gives up (503).
DB_QUERY_TIMEOUT = env_int("DB_QUERY_TIMEOUT", 10)
# Seconds an analytics request's queries may run (statement_timeout; a progress handler on
# SQLite) before they are cancelled with a 504. Below the gunicorn worker timeout.
APM_QUERY_TIMEOUT = env_int("APM_QUERY_TIMEOUT", 20)
# Seconds a client is told to wait (Retry-After) when the database is unavailable.
APM_RETRY_AFTER = env_int("APM_RETRY_AFTER", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    from apm_platform import dbguard

    options = DATABASES["default"].setdefault("OPTIONS", {})
    # A dead database must not hang a request (or the health check) for minutes.
    options.setdefault("connect_timeout", DB_CONNECT_TIMEOUT)
    # ...nor a frozen one: every round trip has a client-side deadline (see dbguard.py).
    options.setdefault("connection_factory", dbguard.GuardedConnection)
    options.setdefault("cursor_factory", dbguard.GuardedCursor)
    dbguard.DEFAULT_TIMEOUT = float(DB_QUERY_TIMEOUT or 10)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    options = DATABASES["default"].setdefault("OPTIONS", {})
    # SQLite has one write lock per file; concurrent writers (gunicorn's workers x threads)
    # must queue for it, not be refused with "database is locked" (a 503):
    # - WAL: readers never wait for the writer, and a commit is one append to the log;
    # - BEGIN IMMEDIATE: a write transaction takes the lock when it starts, so two of them can
    #   never each hold a read snapshot and wait for the other's upgrade (which SQLite refuses
    #   at once, whatever the timeout);
    # - a busy timeout of DB_QUERY_TIMEOUT (10 s): a writer waits that long for the lock, far
    #   longer than a batch of 10,000 events holds it (the wait is not first come, first served,
    #   so the tail of the queue needs the margin), then answers 503.
    options.setdefault("init_command", "PRAGMA journal_mode=WAL")
    options.setdefault("transaction_mode", "IMMEDIATE")
    options.setdefault("timeout", float(DB_QUERY_TIMEOUT or 10))

# django-prometheus's wrappers of the same backends count queries and database errors by type
# (django_db_errors_total) for /metrics; connection.vendor stays "postgresql"/"sqlite".
DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
    "django.db.backends.", "django_prometheus.db.backends.", 1
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Time -----------------------------------------------------------------------------------
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

# --- Static files (served by WhiteNoise) -------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))).resolve()
if STATIC_ROOT == BASE_DIR or STATIC_ROOT in BASE_DIR.parents:
    # WhiteNoise serves everything under STATIC_ROOT: the code and .env must never be in it.
    raise ImproperlyConfigured(
        f"DJANGO_STATIC_ROOT must be a directory of its own, not {STATIC_ROOT} (it would serve the code)."
    )
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # WhiteNoise's manifest storage, which also works before collectstatic (apm_platform/staticfiles.py).
    "staticfiles": {"BACKEND": "apm_platform.staticfiles.StaticFilesStorage"},
}
# Without collectstatic's manifest, WhiteNoise serves the apps' own static directories, so the
# pages work (never a 500); startup logs a warning and `check --deploy` names collectstatic.
WHITENOISE_USE_FINDERS = DEBUG or not (STATIC_ROOT / "staticfiles.json").is_file()

# --- Security behind TLS (switched on by env for real deployments) ----------------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Health checks (the container's, a load balancer's) speak plain HTTP to the process itself.
SECURE_REDIRECT_EXEMPT = [r"^api/health/?$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # UTF-8 only, bounded, and a JSON 400 for any body (DRF's own would 500 on deep nesting).
    "DEFAULT_PARSER_CLASSES": ["observability.parsers.Utf8JSONParser"],
    # Every DRF view needs a key or a session unless it says otherwise (see access.py). The key
    # class comes first: its header makes a missing credential a 401 with WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "observability.access.ApiKeyAuthentication",
        "observability.access.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["observability.access.ScopePermission"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_PAGINATION_CLASS": "observability.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": env_int("APM_PAGE_SIZE", 100),
    "EXCEPTION_HANDLER": "apm_platform.middleware.json_exception_handler",
    # Responses carry UTC with an explicit offset: 2026-01-01T00:00:00Z.
    "DATETIME_FORMAT": "iso-8601",
    "COERCE_DECIMAL_TO_STRING": False,
    # ?format=xml is a 400 naming the formats offered, not DRF's bare 404 (observability/params.py).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "observability.params.StrictContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "observability.schema.ApmAutoSchema",
}

# --- OpenAPI schema (/api/schema/, docs/openapi.yaml; see observability/schema.py) -----------
SPECTACULAR_SETTINGS = {
    "TITLE": "APM Observability API",
    "DESCRIPTION": (
        "API request events: ingest, CRUD, rollups and analytics. The contract is docs/API.md; "
        "every error is JSON with a `detail` string; an unknown query parameter is a 400."
    ),
    "VERSION": "1.0.0",
    # A request body ("ApiRequestRequest") apart from the response ("ApiRequest"): id is read-only.
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs pages follow the API's own access rules once they exist.
    "SERVE_PERMISSIONS": REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from validator.swagger.io: the page makes no request off this server.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "observability.schema.add_plain_views",
    ],
}

# --- The product's own limits ---------------------------------------------------------------
APM_INGEST_MAX_EVENTS = env_int("APM_INGEST_MAX_EVENTS", 10_000)
APM_INGEST_MAX_BYTES = env_int("APM_INGEST_MAX_BYTES", 16 * 1024 * 1024)
# Django refuses bodies over this before our view can answer 413; keep it above our own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = APM_INGEST_MAX_BYTES + 1
# "auto": use TimescaleDB where the extension can be created; "off": never; "require": fail
# the migration when it can't be used.
APM_TIMESCALE = env_str("APM_TIMESCALE", "auto")
if APM_TIMESCALE not in {"auto", "off", "require"}:
    raise ImproperlyConfigured("APM_TIMESCALE must be one of auto, off, require.")

# --- Access (observability/access.py) ------------------------------------------------------------
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = env_str("APM_LOGIN_REDIRECT_URL", "/")  # the dashboard
LOGOUT_REDIRECT_URL = LOGIN_URL
# How long a worker trusts its cached answer for a key: a revoked key stops working within this.
APM_API_KEY_CACHE_SECONDS = env_int("APM_API_KEY_CACHE_SECONDS", 30)
if APM_API_KEY_CACHE_SECONDS > 60:
    raise ImproperlyConfigured("APM_API_KEY_CACHE_SECONDS must be at most 60 (revocation takes that long).")
# Ingest rate limit per key, in events per second, per worker process; 0 (the default) is off.
APM_INGEST_RATE_LIMIT = env_int("APM_INGEST_RATE_LIMIT", 0)
# The bucket: how many events a key may send at once after a quiet spell. At least one full batch.
APM_INGEST_RATE_BURST = env_int("APM_INGEST_RATE_BURST", max(APM_INGEST_MAX_EVENTS, APM_INGEST_RATE_LIMIT))
if APM_INGEST_RATE_LIMIT and APM_INGEST_RATE_BURST < APM_INGEST_MAX_EVENTS:
    raise ImproperlyConfigured(
        f"APM_INGEST_RATE_BURST must be at least APM_INGEST_MAX_EVENTS ({APM_INGEST_MAX_EVENTS}), "
        "or a full batch could never be accepted."
    )
# Failed logins (observability/access.py "Login throttle"): past this many per username, or per
# client address, within APM_LOGIN_THROTTLE_SECONDS, logins are a 429 until that window ends; 0
# turns a limit off. Counted in Django's default cache (CACHES is not set: this process's memory),
# so each gunicorn worker counts on its own.
APM_LOGIN_FAILURES_PER_USERNAME = env_int("APM_LOGIN_FAILURES_PER_USERNAME", 5)
APM_LOGIN_FAILURES_PER_ADDRESS = env_int("APM_LOGIN_FAILURES_PER_ADDRESS", 20)
APM_LOGIN_THROTTLE_SECONDS = env_int("APM_LOGIN_THROTTLE_SECONDS", 900)
if APM_LOGIN_THROTTLE_SECONDS < 1 or min(APM_LOGIN_FAILURES_PER_USERNAME, APM_LOGIN_FAILURES_PER_ADDRESS) < 0:
    raise ImproperlyConfigured("APM_LOGIN_THROTTLE_SECONDS must be at least 1 and the APM_LOGIN_FAILURES_* "
                               "limits 0 (off) or more.")
# --- Running it for months (observability/retention.py, docs/OPERATIONS.md "Running it for months") ------
# Days each tier keeps; 0 keeps it forever (the default, so fixed-date data never expires).
# On PostgreSQL without TimescaleDB and on SQLite the rollups are views over the raw table, so
# every tier follows APM_RETENTION_RAW_DAYS there.
APM_RETENTION_RAW_DAYS = env_int("APM_RETENTION_RAW_DAYS", 0)
APM_RETENTION_FINE_DAYS = env_int("APM_RETENTION_FINE_DAYS", 0)
APM_RETENTION_HOURLY_DAYS = env_int("APM_RETENTION_HOURLY_DAYS", 0)
APM_RETENTION_DAILY_DAYS = env_int("APM_RETENTION_DAILY_DAYS", 0)
# TimescaleDB: raw chunks older than this many days go to the columnstore; 0 turns it off.
APM_COMPRESS_AFTER_DAYS = env_int("APM_COMPRESS_AFTER_DAYS", 7)
# Where the dashboard's empty state links for "Send data" (the README as your users see it,
# e.g. on your Git host); without it the page shows the instructions and names the section.
APM_README_URL = env_str("APM_README_URL", "")

TEST_RUNNER = "apm_platform.test_runner.ReportingTestRunner"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
}
