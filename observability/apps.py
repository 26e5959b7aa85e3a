from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, pre_migrate


class ObservabilityConfig(AppConfig):
    name = "observability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from observability import db

        connection_created.connect(register_sqlite_functions)
        # Migrations create and drop the continuous aggregates (without importing live code).
        pre_migrate.connect(db.forget_rollup_kind, sender=self)
        post_migrate.connect(db.forget_rollup_kind, sender=self)


class _PercentileCont:
    """SQLite aggregate percentile_cont(value, fraction) with PostgreSQL's interpolation."""

    def __init__(self):
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value, fraction):
        if value is not None:
            self.values.append(value)
            self.fraction = fraction

    def finalize(self):
        return percentile_cont(self.values, self.fraction)


class _Percentiles:
    """SQLite aggregate percentiles(value, "f1,f2,...") -> "p1,p2,...": one sort for every fraction."""

    def __init__(self):
        self.values: list[float] = []
        self.fractions = ""

    def step(self, value, fractions):
        if value is not None:
            self.values.append(value)
            self.fractions = fractions

    def finalize(self):
        if not self.values:
            return None
        self.values.sort()
        return ",".join(repr(percentile_cont(self.values, float(f), presorted=True))
                        for f in self.fractions.split(","))


def percentile_cont(values: list[float], fraction: float, *, presorted: bool = False) -> float | None:
    """PostgreSQL's percentile_cont: interpolate between the two nearest ranks."""
    if not values:
        return None
    ordered = values if presorted else sorted(values)
    position = fraction * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _compare_bytes(left: str, right: str) -> int:
    # Code-point order, which is the byte order of UTF-8: PostgreSQL's "C" collation.
    return (left > right) - (left < right)


def register_sqlite_functions(sender, connection, **kwargs) -> None:
    """Give SQLite the functions and collation the PostgreSQL path uses, under the same names."""
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    raw.create_aggregate("percentile_cont", 2, _PercentileCont)
    raw.create_aggregate("percentiles", 2, _Percentiles)
    raw.create_collation("C", _compare_bytes)
