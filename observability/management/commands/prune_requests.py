from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand

from observability import db, retention


class Command(BaseCommand):
    help = ("Delete raw events older than APM_RETENTION_RAW_DAYS, in small batches (run it from cron, "
            "e.g. hourly); on TimescaleDB run the retention and columnstore policies now.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help="without TimescaleDB: keep this many days instead of APM_RETENTION_RAW_DAYS")
        parser.add_argument("--batch-size", type=int, default=10_000, help="rows per DELETE (default 10000)")
        parser.add_argument("--pause", type=float, default=0.0, help="seconds to sleep between batches")

    def handle(self, *args, days=None, batch_size=10_000, pause=0.0, **options):
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
        days = retention.retention_days("raw") if days is None else days
        if not days:
            self.stdout.write("Nothing pruned: APM_RETENTION_RAW_DAYS=0 keeps raw events forever.")
            return
        cutoff = began - timedelta(days=days)

        def progress(deleted, total):
            self.stdout.write(f"  deleted {deleted} (total {total})")

        total, batches = retention.prune_raw(cutoff=cutoff, batch_size=max(1, batch_size), pause=pause,
                                             on_batch=progress if options["verbosity"] >= 1 else None)
        seconds = (datetime.now(UTC) - began).total_seconds()
        self.stdout.write(f"Deleted {total} events older than {cutoff.isoformat(timespec='seconds')} "
                          f"in {batches} batches in {seconds:.2f}s.")
