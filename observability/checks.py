"""System checks and startup warnings of the app (registered by `apps.ObservabilityConfig.ready`).

Static files: without `collectstatic`'s manifest the pages still work (apm_platform/staticfiles.py
serves them unhashed), but a deployment should collect them: `check --deploy` warns (apm.W001)
and the WSGI entry point logs one line, both naming the command.
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
