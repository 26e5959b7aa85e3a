import time

from django.core.management.base import BaseCommand, CommandError

from observability import db


class Command(BaseCommand):
    help = "Wait until the database accepts connections (run once at container start)."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait in all (default 60)")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between tries (default 1)")

    def handle(self, *args, timeout, interval, **options):
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            tries += 1
            reason = db.ping()
            if reason:
                if time.monotonic() + interval > deadline:
                    raise CommandError(
                        f"Database not reachable after {tries} tries in {timeout:.0f}s: {reason}. "
                        "Check DATABASE_URL and that the database is running."
                    ) from None
                self.stdout.write(f"Waiting for the database ({reason}) ...")
                time.sleep(interval)
            else:
                self.stdout.write(f"Database is up (after {tries} {'try' if tries == 1 else 'tries'}).")
                return
