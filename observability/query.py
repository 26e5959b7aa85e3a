"""One read, described once: the typed query every analytics function and the window guard take.

A read arrives as a FilterSet (the event filters of /kpis/ and /top-endpoints/) or as a few
validated parameters (/timeseries/, /series/). Either way it is turned here, once, into a frozen
`ReadQuery`: the cleaned filter values, the names the client gave a value for, the precision
asked for and the raw-event queryset those filters select. The read path then asks it, rather
than rebuilding "which filters were used" by hand, and plans it once: `plan` and
`global_plan` already say what this database can do (None where the raw table answers), so the
read path asks the planner, and the capability behind it, once per read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from types import MappingProxyType

from django.db.models import QuerySet

from observability import rollups
from observability.filters import ROLLUP_FILTERS
from observability.models import ApiRequest


@dataclass(frozen=True)
class ReadQuery:
    filters: Mapping  # cleaned values by filter name (read-only)
    used: frozenset[str]  # the filters the client gave a value for
    queryset: QuerySet  # the raw events the filters select
    precision: str = "exact"

    @classmethod
    def from_filterset(cls, filterset, *, precision: str = "exact") -> ReadQuery:
        """The query of a validated FilterSet (`is_valid()` already true)."""
        return cls(filters=MappingProxyType(dict(filterset.form.cleaned_data)),
                   used=frozenset(filterset.used_filters()), queryset=filterset.qs, precision=precision)

    @classmethod
    def of_series(cls, *, start: datetime, end: datetime, service: str | None = "", endpoint: str | None = "",
                  precision: str = "exact") -> ReadQuery:
        """The events of one series (or all, for blank names) in [start, end)."""
        filters = {"service": service, "endpoint": endpoint, "start": start, "end": end}
        series = {name: filters[name] for name in ("service", "endpoint") if filters[name]}
        return cls(filters=MappingProxyType(filters), used=frozenset(name for name, value in filters.items() if value),
                   queryset=ApiRequest.objects.filter(time__gte=start, time__lt=end, **series),
                   precision=precision)

    @property
    def start(self) -> datetime | None:
        return self.filters.get("start")

    @property
    def end(self) -> datetime | None:
        return self.filters.get("end")

    @property
    def raw_only(self) -> frozenset[str]:
        """The filters only the raw table can answer (method, status, latency, ...)."""
        return self.used - ROLLUP_FILTERS

    @property
    def on_rollups(self) -> bool:
        """True when every filter the client gave is one the rollups can answer."""
        return not self.raw_only

    @cached_property
    def rollups_answer(self) -> bool:
        """Whether the rollups may answer this read: materialized rollups (TimescaleDB; plain
        views elsewhere cost more than the raw scan they hide) and only filters they hold."""
        return self.on_rollups and rollups.fast_rollups()

    @cached_property
    def plan(self):
        """The counts family's plan of this window (`rollups.plan`), or None where raw answers."""
        return rollups.plan(self.filters, rollups.COUNTS) if self.rollups_answer else None

    @cached_property
    def is_global(self) -> bool:
        """All traffic (no service, no endpoint) where the whole-traffic tiers exist."""
        return (self.rollups_answer and rollups.has_histograms()
                and not any(self.filters.get(name) for name in ("service", "endpoint")))

    @cached_property
    def global_plan(self):
        """The whole-traffic tiers' plan of this window, or None where they don't answer it."""
        return rollups.plan(self.filters, rollups.GLOBAL) if self.is_global else None

    @cached_property
    def answered_precision(self) -> str:
        """The precision the answer will have: approx only where histograms can serve it."""
        if self.precision == "approx" and rollups.has_histograms() and self.plan is not None:
            return "approx"
        return "exact"
