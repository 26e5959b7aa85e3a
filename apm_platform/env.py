"""Typed readers for environment variables that fail loudly on values they cannot parse.

An empty variable means "unset" everywhere (`DJANGO_STATIC_ROOT=` copied from .env.example
must not make the working directory the static root): each helper returns its default then.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    """The variable's value, or None when it is unset or empty (blank counts as empty)."""
    raw = os.environ.get(name)
    return None if raw is None or raw.strip() == "" else raw


def env_str(name: str, default: str) -> str:
    """The variable as a string, or the default when it is unset or empty."""
    raw = _raw(name)
    return default if raw is None else raw


def env_bool(name: str, default: bool) -> bool:
    """The variable as a boolean (1/0, true/false, yes/no, on/off); empty means the default."""
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}.")


def env_int(name: str, default: int) -> int:
    """The variable as a non-negative integer."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, got {raw!r}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """The variable as a comma-separated list, blanks dropped; empty means the default."""
    raw = _raw(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
