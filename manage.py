#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import shlex
import sys

# Commands that answer requests keep the per-round-trip deadline (DB_QUERY_TIMEOUT); the tests
# check it. Every other command is batch work whose queries may rightly run for minutes.
SERVING_COMMANDS = {"runserver", "test", "testserver"}


def is_batch_command(argv: list[str]) -> bool:
    return len(argv) > 1 and argv[1] not in SERVING_COMMANDS


def no_django_message(argv: list[str]) -> str:
    """The one line for a Python without Django: how to run the same command in the project's .venv."""
    args = shlex.join(argv[1:]) or "help"
    return (f"manage.py: Django is not installed for {sys.executable}. Run it in the project's virtualenv: "
            f'make manage ARGS="{args}" (creates .venv on first use), or source .venv/bin/activate first.')


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apm_platform.settings")
    try:
        import django  # noqa: F401
    except ImportError:
        # Outside .venv, a 10-line ModuleNotFoundError traceback that does not say what to do.
        sys.exit(no_django_message(sys.argv))
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings: a bad environment fails here)
    except ImproperlyConfigured as exc:
        # One clear line (a missing DJANGO_SECRET_KEY, a bad value), not a 40-line traceback.
        sys.exit(f"manage.py: {exc}")
    if is_batch_command(sys.argv):
        from apm_platform import dbguard

        # e.g. migrate backfilling a continuous aggregate over months of events: no 10 s
        # deadline, but a frozen database is still detected by the watchdog's probe.
        dbguard.PROCESS_TIMEOUT = dbguard.BATCH_TIMEOUT
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
