"""Shared body of the refresh_apirequest_* commands."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from observability import db, rollups


def parse_when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"Not an ISO 8601 time: {value!r}.") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


class RefreshCommand(BaseCommand):
    relation = ""

    def add_arguments(self, parser):
        parser.add_argument("--start", type=parse_when, help="ISO 8601; default: the earliest data")
        parser.add_argument("--end", type=parse_when, help="ISO 8601; default: now")

    def handle(self, *args, start=None, end=None, **options):
        if start and end and start >= end:
            raise CommandError("--start must be before --end.")
        if not db.is_continuous_aggregate(self.relation):
            self.stdout.write(
                f"{self.relation} is a plain view on {db.describe()}: always current, nothing to refresh."
            )
            return
        began = datetime.now(UTC)
        # Only buckets that end by `end` are materialized, so the one still filling stays
        # real-time (computed from the raw table at query time).
        end = end or began
        # The latency histograms of the same width go with it, so percentiles stay in step.
        width = rollups.BY_RELATION[self.relation].width
        for rollup in rollups.aggregates():
            if rollup.width == width:
                rollups.refresh(rollup.relation, start, end)
        seconds = (datetime.now(UTC) - began).total_seconds()
        window = f"[{start.isoformat() if start else '-inf'}, {end.isoformat()})"
        self.stdout.write(f"Refreshed {self.relation} over {window} in {seconds:.2f}s.")
