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
    "observability",
]

MIDDLEWARE = [
    # Outermost, so that every error response, Django's own included, leaves as JSON.
    "apm_platform.middleware.JsonErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # People log in (the dashboard); machines use API keys.
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # DRF views are CSRF-exempt (no session auth here); kept for any non-API view added later.
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "apm_platform.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
WSGI_APPLICATION = "apm_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
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
_db_sslmode = env_str("DB_SSLMODE", "")
if _db_sslmode:
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DB_SSLMODE only applies to a PostgreSQL DATABASE_URL.")
    DATABASES["default"].setdefault("OPTIONS", {})["sslmode"] = _db_sslmode
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A dead database must not hang a request (or the health check) for minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Time -----------------------------------------------------------------------------------
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

# --- Static files (served by WhiteNoise) -------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Security behind TLS (switched on by env for real deployments) ----------------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
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
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_PAGINATION_CLASS": "observability.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": env_int("APM_PAGE_SIZE", 100),
    "EXCEPTION_HANDLER": "apm_platform.middleware.json_exception_handler",
    # Responses carry UTC with an explicit offset: 2026-01-01T00:00:00Z.
    "DATETIME_FORMAT": "iso-8601",
    "COERCE_DECIMAL_TO_STRING": False,
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
