from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from observability import db, retention, rollups
from observability.progress import Progress


class Command(BaseCommand):
    help = ("Delete raw events older than APM_RETENTION_RAW_DAYS, in small batches (run it from cron, "
            "e.g. hourly); on TimescaleDB run the retention and columnstore policies now.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help="without TimescaleDB: keep this many days instead of APM_RETENTION_RAW_DAYS")
        parser.add_argument("--batch-size", type=int, default=10_000, help="rows per DELETE (default 10000)")
        parser.add_argument("--pause", type=float, default=0.0, help="seconds to sleep between batches")

    def handle(self, *args, days=None, batch_size=10_000, pause=0.0, **options):
        # A negative --days would put the cutoff in the future and delete every event.
        if days is not None and days < 1:
            raise CommandError(f"--days must be at least 1, got {days}.")
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {batch_size}.")
        if pause < 0:
            raise CommandError(f"--pause must be 0 or more seconds, got {pause}.")
        began = datetime.now(UTC)
        if db.is_hypertable(retention.RAW):
            # Chunks are dropped whole by the policies; apply them first so they match the settings.
            retention.apply_policies()
            runs = retention.run_policies_now()
            for line in runs:
                self.stdout.write(f"  {line}")
            seconds = (datetime.now(UTC) - began).total_seconds()
            self.stdout.write(f"Ran {len(runs)} TimescaleDB policy jobs in {seconds:.2f}s.")
            return
        days = rollups.retention_days("raw") if days is None else days
        if not days:
            self.stdout.write("Nothing pruned: APM_RETENTION_RAW_DAYS=0 keeps raw events forever.")
            return
        cutoff = began - timedelta(days=days)
        # Counted once up front (the time index makes it a range count) so progress has a total;
        # events arriving meanwhile are newer than the cutoff and don't change it.
        due = retention.count_older_than(cutoff)
        if options["verbosity"] >= 1:
            with Progress(total=due, out=self.stdout) as progress:
                total, batches = retention.prune_raw(cutoff=cutoff, batch_size=batch_size, pause=pause,
                                                     on_batch=lambda deleted, total: progress.update(total))
        else:
            total, batches = retention.prune_raw(cutoff=cutoff, batch_size=batch_size, pause=pause)
        seconds = (datetime.now(UTC) - began).total_seconds()
        self.stdout.write(f"Deleted {total} events older than {cutoff.isoformat(timespec='seconds')} "
                          f"in {batches} batches in {seconds:.2f}s.")
