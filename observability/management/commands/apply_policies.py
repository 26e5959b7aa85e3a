from django.core.management.base import BaseCommand, CommandError

from observability import db, retention, rollups


class Command(BaseCommand):
    help = ("Make TimescaleDB's retention, refresh and columnstore policies match APM_RETENTION_*_DAYS and "
            "APM_COMPRESS_AFTER_DAYS. Idempotent; the container entrypoint runs it after migrate.")

    def handle(self, *args, **options):
        try:
            lines = retention.apply_policies()
        except retention.PolicyError as exc:
            raise CommandError(str(exc)) from None
        if not lines:
            self.stdout.write(
                f"No policies on {db.describe()}: the rollups are views over the raw table; "
                f"run prune_requests from cron to keep APM_RETENTION_RAW_DAYS={rollups.retention_days('raw')}."
            )
            return
        for line in lines:
            self.stdout.write(f"  {line}")
        self.stdout.write(f"Applied retention and columnstore policies to {len(lines)} relations.")
