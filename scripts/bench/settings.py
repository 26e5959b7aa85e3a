"""The service's settings plus a URLconf with the naive baseline the ingest benchmark needs."""

from apm_platform.settings import *  # noqa: F403

ROOT_URLCONF = "scripts.bench.urls"
