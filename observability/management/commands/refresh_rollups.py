"""Re-materialize the ranges late writes recorded: once, or as the background refresher.

Writes never refresh a continuous aggregate themselves (it would make them wait on the
aggregate's lock); a write below an aggregate's watermark records the minutes it touched in
`apirequest_dirty` and the planner reads them around the aggregates until this command has
refreshed them. `make run`, the container stack (service `refresher`) and docs/DEPLOY.md's
systemd unit run it with --follow; without it answers stay exact but read more raw events the
longer the backlog grows (`apm_rollup_dirty_ranges` and `apm_rollup_dirty_oldest_seconds` on
/metrics say how long).

With --follow a pass refreshes the minute tiers every --every seconds, the hourly ones every
--hourly-every and the daily ones every --daily-every: a coarse bucket re-reads far more than a
minute does (a daily one, a second or more), and until it is refreshed the planner reads the
range from the tier below, which is already current. Without --follow one pass does every tier.
"""

from __future__ import annotations

import math
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
                            help="seconds between passes with --follow: the minute tiers (default 1.0)")
        parser.add_argument("--hourly-every", type=float, default=10.0,
                            help="seconds between refreshes of the hourly tiers with --follow (default 10)")
        parser.add_argument("--daily-every", type=float, default=60.0,
                            help="seconds between refreshes of the daily tiers with --follow (default 60)")

    def handle(self, *args, follow=False, every=1.0, hourly_every=10.0, daily_every=60.0, **options):
        for name, value in (("--every", every), ("--hourly-every", hourly_every), ("--daily-every", daily_every)):
            if not 0 < value < math.inf:  # also refuses nan; inf would never make a second pass
                raise CommandError(f"{name} must be a positive number of seconds.")
        cadence = {rollups.STAGES[rollups.HOUR]: hourly_every, rollups.STAGES[rollups.DAY]: daily_every}
        last = dict.fromkeys(cadence, float("-inf"))  # the first pass does every tier
        if not db.rollups_are_continuous():
            self.stdout.write(f"The rollups are plain views on {db.describe()}: always current, nothing to refresh.")
            if not follow:
                return
            # Stay up (a supervisor would restart a worker that exits), doing nothing.
        stopping = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.append(True))
        if follow:
            self.stdout.write(f"refresh_rollups: following the dirty ranges: minute tiers every {every:g}s,"
                              f" hourly every {hourly_every:g}s, daily every {daily_every:g}s (SIGTERM stops)")
        while not stopping:
            began = time.monotonic()
            try:
                if db.rollups_are_continuous():
                    through = due_stage(began, last, cadence) if follow else rollups.DONE
                    reached = self._pass(quiet=follow, through=through)
                    for stage in last:
                        if stage <= reached:
                            last[stage] = began
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

    def _pass(self, *, quiet: bool, through: int) -> int:
        """One pass up to the tiers of stage `through`; returns the stage every refresh reached."""
        began = time.monotonic()
        done = rollups.refresh_dirty(through=through)
        seconds = time.monotonic() - began
        if done.failed:
            self.stderr.write(f"refresh_rollups: {', '.join(done.failed)} failed; their ranges wait for the next pass")
        elif done.ranges or done.advanced or not quiet:
            advanced = f", {done.advanced} brought to stage {through}" if done.advanced else ""
            self.stdout.write(f"refresh_rollups: {done.ranges} dirty ranges done{advanced}, {done.calls} refreshes"
                              f" in {seconds:.2f}s (oldest waited {done.oldest_seconds:.1f}s)")
        return done.reached


def due_stage(now: float, last: dict[int, float], cadence: dict[int, float]) -> int:
    """The stage a --follow pass at `now` (monotonic seconds) brings the rows to: the coarsest one
    whose tiers were last refreshed at least their cadence ago, else the minute tiers'."""
    due = [stage for stage, every in cadence.items() if now - last[stage] >= every]
    return max(due, default=rollups.STAGES[rollups.MINUTE])
