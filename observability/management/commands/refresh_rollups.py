"""Re-materialize the ranges late writes recorded: once, or as the background refresher.

Writes never refresh a continuous aggregate themselves (it would make them wait on the
aggregate's lock); a write below an aggregate's watermark records the minutes it touched in
`apirequest_dirty` and the planner reads them around the aggregates until this command has
refreshed them. `make run`, the container stack (service `refresher`) and docs/DEPLOY.md's
systemd unit run it with --follow; without it answers stay exact but read more raw events the
longer the backlog grows (`apm_rollup_dirty_ranges` and `apm_rollup_dirty_oldest_seconds` on
/metrics say how long).
"""

from __future__ import annotations

import signal
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connection

from observability import db, rollups


class Command(BaseCommand):
    help = "Refresh the continuous aggregates over the ranges late writes recorded (--follow: keep doing it)."

    def add_arguments(self, parser):
        parser.add_argument("--follow", action="store_true",
                            help="keep running: a pass every --every seconds until stopped (SIGTERM/SIGINT)")
        parser.add_argument("--every", type=float, default=1.0,
                            help="seconds between passes with --follow (default 1.0)")

    def handle(self, *args, follow=False, every=1.0, **options):
        if every <= 0:
            raise CommandError("--every must be a positive number of seconds.")
        if not db.rollups_are_continuous():
            self.stdout.write(f"The rollups are plain views on {db.describe()}: always current, nothing to refresh.")
            if not follow:
                return
            # Stay up (a supervisor would restart a worker that exits), doing nothing.
        stopping = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.append(True))
        if follow:
            self.stdout.write(f"refresh_rollups: following the dirty ranges every {every:g}s (SIGTERM stops)")
        while not stopping:
            began = time.monotonic()
            try:
                if db.rollups_are_continuous():
                    self._pass(quiet=follow)
            except DatabaseError as exc:
                # The database went away or refused: the rows are kept; try again next pass.
                self.stderr.write(f"refresh_rollups: pass failed, retrying: {exc}".rstrip())
                connection.close()
                if not follow:
                    raise CommandError(str(exc)) from exc
            if not follow:
                return
            close_old_connections()
            while not stopping and time.monotonic() - began < every:
                time.sleep(min(0.1, every))
        self.stdout.write("refresh_rollups: stopped")

    def _pass(self, *, quiet: bool) -> None:
        began = time.monotonic()
        done = rollups.refresh_dirty()
        seconds = time.monotonic() - began
        if done.failed:
            self.stderr.write(f"refresh_rollups: {', '.join(done.failed)} failed; kept every range for the next pass")
        elif done.ranges or not quiet:
            self.stdout.write(f"refresh_rollups: {done.ranges} dirty ranges, {done.calls} refreshes in {seconds:.2f}s"
                              f" (oldest waited {done.oldest_seconds:.1f}s)")
