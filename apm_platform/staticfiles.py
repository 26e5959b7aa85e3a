"""Static files when `collectstatic` has not been run: the pages still work, and we say so.

With DEBUG off, Django's manifest storage knows a static file's URL only from the manifest
`collectstatic` writes into STATIC_ROOT; without it every HTML page (login, dashboard, API
docs) was a 500 ("Missing staticfiles manifest entry"). We serve instead of refusing to start:
the JSON API, the service's purpose, needs no static files, and a health check or an ingest
endpoint must not go down because a stylesheet was not collected (the suite's own API servers
run that way). So, without a manifest, pages name their files without a hash and WhiteNoise
serves them from the apps' static directories (settings.WHITENOISE_USE_FINDERS), with short
cache lifetimes instead of a year's; startup logs a warning and `check --deploy` reports
`apm.W001`, both naming `collectstatic` (observability/checks.py).
"""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's manifest storage, naming files without a hash when there is no manifest."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_manifest = self.manifest_storage.exists(self.manifest_name)

    def stored_name(self, name):
        if not self.has_manifest:
            return name
        return super().stored_name(name)
