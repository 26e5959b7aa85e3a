"""Static files when `collectstatic` has not been run: the pages still work, and we say so.

With DEBUG off, Django's manifest storage knows a static file's URL only from the manifest
`collectstatic` writes into STATIC_ROOT; without it every HTML page (login, dashboard, API
docs) was a 500 ("Missing staticfiles manifest entry"). We serve instead of refusing to start:
the JSON API, the service's purpose, needs no static files, and a health check or an ingest
endpoint must not go down because a stylesheet was not collected (the suite's own API servers
run that way). So, without a manifest, pages name their files without a hash and WhiteNoise
serves them from the apps' static directories (settings.WHITENOISE_USE_FINDERS), with short
cache lifetimes instead of a year's; startup logs a warning and `check --deploy` reports
`apm.W001`, both naming `collectstatic`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core import checks
from whitenoise.storage import CompressedManifestStaticFilesStorage

MANIFEST_NAME = CompressedManifestStaticFilesStorage.manifest_name  # "staticfiles.json"

logger = logging.getLogger(__name__)


def manifest_path() -> Path:
    return Path(settings.STATIC_ROOT) / MANIFEST_NAME


def collected() -> bool:
    """Whether `collectstatic` has written its manifest into STATIC_ROOT."""
    return manifest_path().is_file()


def not_collected_message() -> str:
    return (f"Static files have not been collected: {manifest_path()} is missing, so pages are served with "
            "unhashed static files from the app directories (short cache lifetimes). Run "
            "`python manage.py collectstatic --noinput` (the container entrypoint does) before starting.")


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's manifest storage, naming files without a hash when there is no manifest."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_manifest = self.manifest_storage.exists(self.manifest_name)

    def stored_name(self, name):
        if not self.has_manifest:
            return name
        return super().stored_name(name)


@checks.register(checks.Tags.staticfiles, deploy=True)
def check_static_collected(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """`check --deploy`: a warning naming collectstatic when STATIC_ROOT has no manifest."""
    if settings.DEBUG or collected():
        return []
    return [checks.Warning(not_collected_message(), id="apm.W001")]


def warn_if_not_collected() -> None:
    """At server start (apm_platform/wsgi.py): one log line when pages run without collectstatic."""
    if not settings.DEBUG and not collected():
        logger.warning(not_collected_message())
