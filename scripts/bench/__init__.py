"""The benchmarks (bench_*.py, not part of the service) and what they share: Django set up for
a benchmark here, the service's settings and URLs plus the naive baseline (settings.py,
urls.py). The gunicorn harness is observability/tests/live.py."""

from __future__ import annotations

import os


def setup_django(script: str, settings_module: str, make_target: str) -> str | None:
    """Configure Django for a benchmark against PostgreSQL; the DATABASE_URL, or None if unusable."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(f"{script}: DATABASE_URL must point at PostgreSQL (make {make_target} starts one).")
        return None
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-a-secret")
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    from apm_platform import dbguard

    # Batch work, as manage.py commands: a refresh after 100,000 late events or a 30-day exact
    # percentile runs longer than the 10 s a request may wait for one round trip.
    dbguard.PROCESS_TIMEOUT = dbguard.BATCH_TIMEOUT
    return url
