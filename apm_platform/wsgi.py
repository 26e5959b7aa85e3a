"""WSGI entry point (gunicorn apm_platform.wsgi:application; runserver loads it too)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apm_platform.settings")

application = get_wsgi_application()

from observability import checks  # noqa: E402 (needs the settings get_wsgi_application loaded)

checks.warn_if_not_collected()
