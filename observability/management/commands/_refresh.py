"""Shared body of the refresh_apirequest_* commands."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from observability import db, rollups
from observability.progress import Progress


def parse_when(option: str, value: str | None) -> datetime | None:
    """Parsed in handle(), not as an argparse `type`: a CommandError raised while argparse parses
    escapes Django's handler and prints a traceback instead of one line."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} must be an ISO 8601 time (like 2026-03-01T00:00:00Z), got {value!r}.") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


class RefreshCommand(BaseCommand):
    relation = ""

    def add_arguments(self, parser):
        parser.add_argument("--start", help="ISO 8601; default: the raw retention horizon, else all history")
        parser.add_argument("--end", help="ISO 8601; default: now")

    def handle(self, *args, start=None, end=None, **options):
        start, end = parse_when("--start", start), parse_when("--end", end)
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
        # Bounded by the raw retention: a window over dropped raw chunks would erase buckets
        # (rollups.refresh bounds every refresh; here it also makes the summary line true).
        start = rollups.bound_refresh_start(start)
        # The latency histograms of the same width go with it, so percentiles stay in step.
        width = rollups.BY_RELATION[self.relation].width
        relations = [rollup.relation for rollup in rollups.aggregates() if rollup.width == width]
        # Each relation is one CALL (seconds to minutes over a long history): progress per relation.
        with Progress(total=len(relations), out=self.stdout, unit="aggregates") as progress:
            for done, relation in enumerate(relations, 1):
                rollups.refresh(relation, start, end)
                progress.update(done)
        seconds = (datetime.now(UTC) - began).total_seconds()
        window = f"[{start.isoformat() if start else '-inf'}, {end.isoformat()})"
        self.stdout.write(f"Refreshed {self.relation} over {window} in {seconds:.2f}s.")
