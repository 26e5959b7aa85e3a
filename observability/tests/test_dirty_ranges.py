"""Dirty ranges (rollups: late writes never refresh; the planner reads around what they touched;
the background refresher re-materializes it and clears the rows).

The numbers are checked against the events the tests wrote, computed here.
"""

import threading
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

import psycopg2
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection

from observability import rollups
from observability.management.commands import refresh_rollups
from observability.models import (
    ApiRequest,
    ApiRequestDaily,
    ApiRequestHourly,
    ApiRequestMinute,
    DirtyRange,
    GlobalLatencyMinute,
    LatencyHourly,
    LatencyMinute,
)
from observability.tests.test_percentiles import BOUND, reference
from observability.tests.utils import (
    PERCENTILES,
    ApiTestCase,
    ApiTransactionTestCase,
    iso,
    make_event,
    post_ingest,
    skip_unless_timescale,
)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class DirtyRunsTests(ApiTestCase):
    """How a write's times become the few ranges it records."""

    def test_adjacent_minutes_are_one_range_and_minutes_apart_are_two(self):
        t = datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC)
        m = t.replace(second=0)
        runs = rollups.dirty_runs([t, t + MINUTE, t + 3 * MINUTE, t + 2 * HOUR, t + 2 * HOUR + timedelta(seconds=5)])
        # Only the minutes touched: under live traffic each holds thousands of events to read around.
        self.assertEqual(runs, [(m, m + 2 * MINUTE), (m + 3 * MINUTE, m + 4 * MINUTE),
                                (m + 2 * HOUR, m + 2 * HOUR + MINUTE)])

    def test_a_write_spread_over_a_day_records_a_bounded_number_of_ranges_covering_every_event(self):
        t = datetime(2026, 3, 1, tzinfo=UTC)
        times = [t + i * 17 * MINUTE + timedelta(seconds=i % 60) for i in range(85)]  # 24 h, every 17 min
        runs = rollups.dirty_runs(times)
        self.assertLessEqual(len(runs), rollups.DIRTY_MAX_RANGES)
        for when in times:
            self.assertTrue(any(lo <= when < hi for lo, hi in runs), when)

    def test_nothing_is_recorded_where_the_rollups_are_plain_views(self):
        with mock.patch.object(rollups.db, "rollups_are_continuous", return_value=False):
            self.assertEqual(rollups.mark_dirty([datetime(2020, 1, 1, tzinfo=UTC)]), 0)
        self.assertEqual(DirtyRange.objects.count(), 0)


class AroundDirtyPlanTests(ApiTestCase):
    """The planner's cut around dirty ranges (watermarks and ranges given, any database)."""

    def plan(self, filters, family, marks, dirty):
        with mock.patch.object(rollups, "cutoff", side_effect=lambda relation: marks.get(relation)), \
                mock.patch.object(rollups, "dirty_ranges", return_value=dirty):
            return rollups.plan(filters, family)

    def covered(self, pieces, edges):
        """[(lo, hi, what)] of a plan, sorted: each piece's range and a raw edge's."""
        spans = [(lo, hi, model) for model, lo, hi in pieces]
        spans += [(dict(edge.children)["time__gte"], dict(edge.children)["time__lt"], ApiRequest) for edge in edges]
        return sorted(spans, key=lambda span: span[0])

    def test_a_dirty_minute_takes_its_hour_to_the_minute_tier_and_itself_to_raw(self):
        now = datetime.now(UTC)
        start, end = rollups.floor(now, DAY) - 10 * DAY, rollups.floor(now, HOUR) - 2 * HOUR
        marks = {"apirequest_hourly": end, "apirequest_daily": rollups.floor(now, DAY) - DAY,
                 "apirequest_minute": rollups.floor(now, MINUTE)}
        dirty_minute = end - 5 * HOUR + 7 * MINUTE
        pieces, edges = self.plan({"start": start, "end": end}, rollups.COUNTS, marks,
                                  [(dirty_minute, dirty_minute + MINUTE)])
        spans = self.covered(pieces, edges)
        # Contiguous and exactly the window: no event counted twice or lost.
        self.assertEqual(spans[0][0], start)
        self.assertEqual(spans[-1][1], end)
        for (_, hi, _), (lo, _, _) in zip(spans, spans[1:], strict=False):
            self.assertEqual(hi, lo)
        hole = rollups.floor(dirty_minute, HOUR)
        self.assertIn((hole, dirty_minute, ApiRequestMinute), spans)
        self.assertIn((dirty_minute + MINUTE, hole + HOUR, ApiRequestMinute), spans)
        # Only the dirty minute itself is read from raw events.
        self.assertEqual([span for span in spans if span[2] is ApiRequest],
                         [(dirty_minute, dirty_minute + MINUTE, ApiRequest)])

    def test_without_a_materialized_minute_tier_the_dirty_hour_comes_from_raw(self):
        now = datetime.now(UTC)
        start, end = rollups.floor(now, DAY) - 3 * DAY, rollups.floor(now, HOUR) - 2 * HOUR
        marks = {"apirequest_hourly": end, "apirequest_daily": rollups.floor(now, DAY) - DAY}
        dirty_minute = end - 5 * HOUR + 7 * MINUTE
        with mock.patch.object(rollups, "_fine_mark", return_value=None):
            pieces, edges = self.plan({"start": start, "end": end}, rollups.COUNTS, marks,
                                      [(dirty_minute, dirty_minute + MINUTE)])
        hole = rollups.floor(dirty_minute, HOUR)
        spans = self.covered(pieces, edges)
        self.assertEqual([span for span in spans if span[2] is ApiRequest], [(hole, hole + HOUR, ApiRequest)])

    def test_a_dirty_day_goes_to_the_hourly_tier_and_its_dirty_hour_to_the_minute_tier(self):
        now = datetime.now(UTC)
        today = rollups.floor(now, DAY)
        start, end = today - 5 * DAY, rollups.floor(now, MINUTE)
        marks = {"apirequest_global_daily": today, "apirequest_global_hourly": rollups.floor(now, HOUR),
                 "apirequest_global_minute": rollups.floor(now, MINUTE)}
        dirty_minute = today - DAY + 3 * HOUR + 12 * MINUTE
        pieces, edges = self.plan({"start": start, "end": end}, rollups.GLOBAL, marks,
                                  [(dirty_minute, dirty_minute + MINUTE)])
        spans = self.covered(pieces, edges)
        self.assertEqual((spans[0][0], spans[-1][1]), (start, end))
        for (_, hi, _), (lo, _, _) in zip(spans, spans[1:], strict=False):
            self.assertEqual(hi, lo)
        dirty_day = today - DAY
        hourly = rollups.GLOBAL.hourly.model
        self.assertIn((dirty_day, rollups.floor(dirty_minute, HOUR), hourly), spans)
        self.assertIn((rollups.floor(dirty_minute, HOUR), dirty_minute, GlobalLatencyMinute), spans)
        # The dirty minute itself: raw events.
        self.assertIn((dirty_minute, dirty_minute + MINUTE, ApiRequest), spans)

    def test_a_dirty_range_past_the_watermark_changes_nothing(self):
        now = datetime.now(UTC)
        mark = rollups.floor(now, HOUR) - 3 * HOUR
        marks = {"apirequest_hourly": mark, "apirequest_daily": rollups.floor(mark, DAY)}
        window = {"start": rollups.floor(now, HOUR) - 6 * HOUR, "end": rollups.floor(now, HOUR)}
        self.assertEqual(self.plan(window, rollups.COUNTS, marks, [(mark + MINUTE, mark + 2 * MINUTE)]),
                         self.plan(window, rollups.COUNTS, marks, []))

    def test_time_series_buckets_around_a_dirty_hour_are_regrouped_from_the_finer_pieces(self):
        now = datetime.now(UTC)
        start, end = rollups.floor(now, HOUR) - 6 * HOUR, rollups.floor(now, HOUR)
        dirty_minute = start + 2 * HOUR + 30 * MINUTE
        with mock.patch.object(rollups, "cutoff", side_effect=lambda relation: end), \
                mock.patch.object(rollups, "dirty_ranges", return_value=[(dirty_minute, dirty_minute + MINUTE)]):
            pieces = rollups.bucket_plan(HOUR, start, end, rollups.LATENCY)
        self.assertEqual(pieces, [(LatencyHourly, start, start + 2 * HOUR, False),
                                  (LatencyMinute, start + 2 * HOUR, dirty_minute, True),
                                  (ApiRequest, dirty_minute, dirty_minute + MINUTE, True),
                                  (LatencyMinute, dirty_minute + MINUTE, start + 3 * HOUR, True),
                                  (LatencyHourly, start + 3 * HOUR, end, False)])


class RefresherCadenceTests(ApiTestCase):
    """Which tiers a --follow pass refreshes, by how long ago each was last refreshed."""

    def test_each_pass_does_the_coarsest_tiers_that_are_due_and_else_the_minute_tiers(self):
        hourly, daily = rollups.STAGES[HOUR], rollups.STAGES[DAY]
        cadence = {hourly: 10.0, daily: 60.0}
        never = dict.fromkeys(cadence, float("-inf"))
        self.assertEqual(refresh_rollups.due_stage(0.0, never, cadence), daily)
        last = {hourly: 100.0, daily: 100.0}
        self.assertEqual(refresh_rollups.due_stage(105.0, last, cadence), rollups.STAGES[MINUTE])
        self.assertEqual(refresh_rollups.due_stage(110.0, last, cadence), hourly)
        self.assertEqual(refresh_rollups.due_stage(160.0, {hourly: 155.0, daily: 100.0}, cadence), daily)

    def test_cadences_must_be_positive(self):
        for option in ("--every", "--hourly-every", "--daily-every"):
            for value in ("0", "-1", "nan", "inf"):
                with self.assertRaisesRegex(CommandError, f"{option} must be a positive number"):
                    call_command("refresh_rollups", option, value, stdout=open("/dev/null", "w"))


class TimescaleDirtyTestCase(ApiTransactionTestCase):
    """On TimescaleDB: history materialized, then late events through the API."""

    def setUp(self):
        skip_unless_timescale(self, "dirty ranges exist where continuous aggregates materialize")
        self.tearDown()
        now = datetime.now(UTC)
        # Three days ago (past the fine tier's window: raw around the dirty buckets) and two
        # hours ago (within it: the minute tier around them).
        self.old = rollups.floor(now, HOUR) - 3 * DAY
        self.recent = rollups.floor(now, HOUR) - 2 * HOUR
        self.events = []
        for base in (self.old, self.recent):
            for m in range(40):
                self.events.append(make_event(time=iso(base + m * MINUTE + timedelta(seconds=7)),
                                              service=("api", "web")[m % 2], endpoint=("/a", "/b", "/c")[m % 3],
                                              status_code=500 if m % 7 == 0 else 200, latency_ms=10.0 + m))
        self.assertEqual(post_ingest(self.client, self.events, strict=True).status_code, 201)
        rollups.refresh_all(None, None)
        rollups.refresh_dirty()
        DirtyRange.objects.all().delete()
        self.window = {"start": iso(self.old - DAY), "end": iso(rollups.floor(now, HOUR) + HOUR)}

    def tearDown(self):
        ApiRequest.objects.all().delete()
        DirtyRange.objects.all().delete()
        rollups.refresh_all(None, None)

    def late_events(self):
        late = []
        for base in (self.old, self.recent):
            for m in range(12):
                late.append(make_event(time=iso(base + (10 + m) * MINUTE + timedelta(seconds=30)),
                                       service="api", endpoint="/late", status_code=503 if m % 4 == 0 else 201,
                                       latency_ms=3000.0 + 100 * m))
        return late

    def post_late(self):
        """Send the late batch (201 or the test fails); every event stored since, times parsed."""
        late = self.late_events()
        self.assertEqual(post_ingest(self.client, late, strict=True).status_code, 201)
        return self.stored() + [{**e, "time": datetime.fromisoformat(e["time"].replace("Z", "+00:00"))}
                                for e in late]

    def stored(self):
        return [{**e, "time": datetime.fromisoformat(e["time"].replace("Z", "+00:00"))} for e in self.events]

    def assert_answers_match(self, events, msg=""):
        """KPIs, top endpoints, time series, series and /hourly/ equal a computation over `events`."""
        start = datetime.fromisoformat(self.window["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(self.window["end"].replace("Z", "+00:00"))
        for filters in ({}, {"service": "api"}, {"service": "api", "endpoint": "/late"}):
            chosen = [e for e in events if start <= e["time"] < end and all(e[k] == v for k, v in filters.items())]
            latencies = [e["latency_ms"] for e in chosen]
            for precision in ("approx", "exact"):
                params = {**self.window, **filters, "precision": precision}
                kpis = self.client.get("/api/requests/kpis/", params).json()
                self.assertEqual((kpis["hits"], kpis["errors"]),
                                 (len(chosen), sum(e["status_code"] >= 500 for e in chosen)), (msg, params))
                self.assertAlmostEqual(kpis["max_latency_ms"], max(latencies))
                self.assertAlmostEqual(kpis["avg_latency_ms"], sum(latencies) / len(latencies))
                want = reference(latencies, precision)
                bound = BOUND if kpis["precision"] == "approx" else 1e-9
                for key in PERCENTILES:
                    self.assertLessEqual(abs(kpis[key] - want[key]), bound * want[key] + 1e-9, (msg, params, key))
                top = self.client.get("/api/requests/top-endpoints/", {**params, "limit": 100}).json()["results"]
                by_series = {}
                for e in chosen:
                    by_series[(e["service"], e["endpoint"])] = by_series.get((e["service"], e["endpoint"]), 0) + 1
                self.assertEqual({(r["service"], r["endpoint"]): r["hits"] for r in top}, by_series, (msg, params))
                for interval, width in (("hour", HOUR), ("day", DAY)):
                    series = self.client.get("/api/requests/timeseries/", {**params, "interval": interval}).json()
                    buckets = {}
                    for e in chosen:
                        key = iso(rollups.floor(e["time"], width))
                        buckets[key] = buckets.get(key, 0) + 1
                    self.assertEqual({r["bucket"]: r["hits"] for r in series["results"]}, buckets,
                                     (msg, params, interval))
            # /series/ filters by service only: the endpoint's row of its service's pairs.
            pairs = self.client.get("/api/requests/series/", {**self.window, **{
                k: v for k, v in filters.items() if k == "service"}}).json()["results"]
            self.assertEqual(sum(r["hits"] for r in pairs if r["endpoint"] == filters.get("endpoint", r["endpoint"])),
                             len(chosen), (msg, filters))
            hourly = self.client.get("/api/requests/hourly/", {**filters, "page_size": 1000, **{
                "start": self.window["start"], "end": self.window["end"]}}).json()
            self.assertEqual(sum(r["hits"] for r in hourly["results"]), len(chosen), (msg, filters))


class LateWritesTests(TimescaleDirtyTestCase):
    def test_a_late_batch_answers_while_an_aggregate_is_locked_and_records_its_ranges(self):
        # A policy run (or anyone) holding the hourly aggregate's materialization: a write that
        # refreshed before answering would wait here until the lock went.
        with connection.cursor() as cursor:
            cursor.execute("SELECT quote_ident(h.schema_name) || '.' || quote_ident(h.table_name)"
                           " FROM _timescaledb_catalog.continuous_agg c"
                           " JOIN _timescaledb_catalog.hypertable h ON h.id = c.mat_hypertable_id"
                           " WHERE c.user_view_name = 'apirequest_hourly'")
            materialization = cursor.fetchone()[0]
        settings = connection.settings_dict
        holder = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"],
                                  port=settings["PORT"], password=settings["PASSWORD"] or None)
        try:
            with holder.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {materialization} IN ACCESS EXCLUSIVE MODE")
            answer = {}

            def send():
                answer["response"] = post_ingest(self.client, self.late_events(), strict=True)
                connection.close()

            began = time.monotonic()
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            sender.join(timeout=10)
            self.assertFalse(sender.is_alive(), "the late batch waited on the locked aggregate")
            self.assertLess(time.monotonic() - began, 5)
            self.assertEqual(answer["response"].status_code, 201, answer["response"].content)
        finally:
            holder.rollback()
            holder.close()
        ranges = list(DirtyRange.objects.values_list("lo", "hi"))
        self.assertEqual(len(ranges), 2)  # the old minutes and the recent ones, 12 minutes each
        for base in (self.old, self.recent):
            self.assertIn((base + 10 * MINUTE, base + 22 * MINUTE), ranges)

    def test_a_fresh_batch_records_only_what_an_aggregate_may_have_materialized(self):
        now = datetime.now(UTC)
        batch = [make_event(time=iso(now - timedelta(seconds=s))) for s in (1, 2, 3)]
        self.assertEqual(post_ingest(self.client, batch, strict=True).status_code, 201)
        # Recorded only below an aggregate's watermark (a refresh may have gone past now) or
        # below what a policy run could materialize by the commit.
        marks = [mark for mark in rollups.watermarks(r.relation for r in rollups.aggregates()).values() if mark]
        reach = max(rollups.floor(now + rollups.DIRTY_SLACK - r.refresh.end_offset, r.width)
                    for r in rollups.aggregates())
        below = rollups.floor(now - timedelta(seconds=3), MINUTE) < max([reach, *marks])
        self.assertEqual(DirtyRange.objects.count(), 1 if below else 0)
        if not below:
            return
        self.assertEqual(list(DirtyRange.objects.values_list("lo", flat=True)),
                         [rollups.floor(now - timedelta(seconds=3), MINUTE)])

    def test_late_events_are_in_every_answer_at_once_and_stay_after_the_refresher(self):
        everything = self.post_late()
        # Before any refresh: the aggregates still hold the history alone ...
        materialized = sum(ApiRequestHourly.objects.filter(bucket__lt=self.recent + HOUR)
                           .values_list("hits", flat=True))
        self.assertEqual(materialized, len(self.events))
        # ... and every answer has the late events.
        self.assert_answers_match(everything, "before the refresher")
        self.assertTrue(DirtyRange.objects.exists())
        done = rollups.refresh_dirty()
        self.assertIsNone(done.failed)
        self.assertEqual(done.ranges, 2)
        self.assertFalse(DirtyRange.objects.exists())
        # Re-materialized: the aggregates hold the late events now.
        materialized = sum(ApiRequestHourly.objects.filter(bucket__lt=self.recent + HOUR)
                           .values_list("hits", flat=True))
        self.assertEqual(materialized, len(everything))
        minute = GlobalLatencyMinute.objects.filter(bucket__gte=self.recent, bucket__lt=self.recent + HOUR)
        self.assertEqual(sum(minute.values_list("n", flat=True)), 40 + 12)
        self.assert_answers_match(everything, "after the refresher")

    def test_a_failed_refresh_keeps_the_ranges_answers_stay_exact_and_the_next_pass_clears_them(self):
        everything = self.post_late()
        real = rollups._call_refresh
        calls = []

        def flaky(relation, start, end):
            calls.append(relation)
            if len(calls) == 1:
                raise OperationalError("could not refresh: the server went away")
            real(relation, start, end)

        with mock.patch.object(rollups, "_call_refresh", side_effect=flaky), \
                self.assertLogs("observability.rollups", "WARNING"):
            done = rollups.refresh_dirty()
        self.assertEqual(done.failed, [rollups.aggregates()[0].relation])
        self.assertEqual(DirtyRange.objects.count(), 2)  # kept for the next pass
        self.assert_answers_match(everything, "after a failed pass")
        call_command("refresh_rollups", stdout=open("/dev/null", "w"))
        self.assertFalse(DirtyRange.objects.exists())
        self.assert_answers_match(everything, "after the retry")

    def test_the_refresher_brings_a_range_through_the_tiers_and_every_stage_answers_exactly(self):
        everything = self.post_late()
        recent_hour = {"start": self.recent, "end": self.recent + HOUR}

        def materialized(model, lo, hi, field="hits"):
            return sum(model.objects.filter(bucket__gte=lo, bucket__lt=hi).values_list(field, flat=True))

        self.assertEqual(set(DirtyRange.objects.values_list("stage", flat=True)), {0})
        pieces, edges = rollups.plan(recent_hour, rollups.COUNTS)
        self.assertTrue(edges, "a range no tier has caught up with: its minutes come from raw events")

        # The minute tiers: they hold the late events, the hourly ones don't yet ...
        done = rollups.refresh_dirty(through=1)
        self.assertEqual((done.failed, done.advanced, done.ranges), (None, 2, 0))
        self.assertEqual(set(DirtyRange.objects.values_list("stage", flat=True)), {1})
        self.assertEqual(materialized(ApiRequestMinute, self.recent, self.recent + HOUR), 40 + 12)
        self.assertEqual(materialized(ApiRequestHourly, self.recent, self.recent + HOUR), 40)
        # ... so the dirty hour is read from the minute tier, and raw events only past its
        # watermark (the last event's minute, here: no events after it), none of the late ones'.
        fine_mark = min(self.recent + HOUR, rollups.cutoff("apirequest_minute"))
        pieces, edges = rollups.plan(recent_hour, rollups.COUNTS)
        self.assertEqual(pieces, [(ApiRequestMinute, self.recent, fine_mark)])
        self.assertTrue(all(dict(edge.children)["time__gte"] >= fine_mark for edge in edges), edges)
        self.assert_answers_match(everything, "after the minute tiers")

        # The hourly tiers: the daily ones are still out of date over the old day.
        old_day = (rollups.floor(self.old, DAY), rollups.floor(self.old, DAY) + DAY)
        done = rollups.refresh_dirty(through=2)
        self.assertEqual((done.failed, done.advanced, done.ranges), (None, 2, 0))
        self.assertEqual(set(DirtyRange.objects.values_list("stage", flat=True)), {2})
        self.assertEqual(materialized(ApiRequestHourly, self.recent, self.recent + HOUR), 40 + 12)
        self.assertEqual(materialized(ApiRequestDaily, *old_day), 40)
        self.assert_answers_match(everything, "after the hourly tiers")

        # The daily tiers: done, the rows go.
        done = rollups.refresh_dirty(through=rollups.DONE)
        self.assertEqual((done.failed, done.advanced, done.ranges), (None, 0, 2))
        self.assertFalse(DirtyRange.objects.exists())
        self.assertEqual(materialized(ApiRequestDaily, *old_day), 40 + 12)
        self.assert_answers_match(everything, "after the daily tiers")

    def test_a_failed_hourly_refresh_keeps_the_rows_at_the_minute_stage(self):
        everything = self.post_late()
        real = rollups._call_refresh
        refreshed = []

        def hourly_fails(relation, start, end):
            refreshed.append(relation)
            if relation == "apirequest_latency_hourly":
                raise OperationalError("canceling statement due to lock timeout")
            real(relation, start, end)

        with mock.patch.object(rollups, "_call_refresh", side_effect=hourly_fails), \
                self.assertLogs("observability.rollups", "WARNING"):
            done = rollups.refresh_dirty()
        self.assertEqual(done.failed, ["apirequest_latency_hourly"])
        self.assertEqual(done.advanced, 2)
        self.assertEqual(set(DirtyRange.objects.values_list("stage", flat=True)), {1})
        # Nothing coarser is refreshed over a tier that failed (the daily ones read the hourly ones).
        self.assertFalse([r for r in refreshed if rollups.BY_RELATION[r].width == DAY])
        self.assert_answers_match(everything, "after a failed hourly refresh")
        rollups.refresh_dirty()
        self.assertFalse(DirtyRange.objects.exists())
        self.assert_answers_match(everything, "after the retry")

    def test_updates_and_deletes_of_old_events_are_read_around_at_once(self):
        event = ApiRequest.objects.filter(time__lt=self.old + HOUR).order_by("time").first()
        response = self.client.patch(f"/api/requests/{event.pk}/",
                                     {"status_code": 500, "time": iso(self.recent + 5 * MINUTE)},
                                     content_type="application/json")
        self.assertEqual(response.status_code, 200, response.content)
        kpis = self.client.get("/api/requests/kpis/", {"start": iso(self.old), "end": iso(self.old + HOUR)}).json()
        self.assertEqual(kpis["hits"], 39)
        recent = ApiRequest.objects.filter(time__gte=self.recent, time__lt=self.recent + HOUR)
        other = recent.exclude(pk=event.pk).first()
        self.assertEqual(self.client.delete(f"/api/requests/{other.pk}/").status_code, 204)
        kpis = self.client.get("/api/requests/kpis/", {"start": iso(self.recent),
                                                       "end": iso(self.recent + HOUR)}).json()
        self.assertEqual(kpis["hits"], 40)  # 40 + the moved one - the deleted one
        self.assertEqual(recent.count(), 40)


class RefresherCommandTests(TimescaleDirtyTestCase):
    def test_follow_makes_passes_until_sigterm_and_clears_what_writes_recorded(self):
        post_ingest(self.client, self.late_events(), strict=True)
        self.assertTrue(DirtyRange.objects.exists())
        handlers = {}
        passes = []
        real = rollups.refresh_dirty

        stages = []

        def one_pass(**kwargs):
            stages.append(kwargs["through"])
            passes.append(real(**kwargs))
            if len(passes) == 2:
                handlers[15]()  # SIGTERM after the second pass
            return passes[-1]

        with mock.patch("signal.signal", side_effect=lambda sig, handler: handlers.__setitem__(int(sig), handler)), \
                mock.patch.object(rollups, "refresh_dirty", side_effect=one_pass):
            out = open("/tmp/refresh_rollups_test.out", "w+")
            call_command("refresh_rollups", "--follow", "--every", "0.05", stdout=out)
            out.seek(0)
            text = out.read()
        self.assertEqual(len(passes), 2)
        # The first pass does every tier; the next, 0.05 s later, the minute tiers only.
        self.assertEqual(stages, [rollups.DONE, rollups.STAGES[MINUTE]])
        self.assertEqual(passes[0].ranges, 2)
        self.assertEqual(passes[1].ranges, 0)
        self.assertFalse(DirtyRange.objects.exists())
        self.assertIn("refresh_rollups: 2 dirty ranges", text)
        self.assertIn("refresh_rollups: stopped", text)

    def test_metrics_show_the_backlog(self):
        post_ingest(self.client, self.late_events(), strict=True)
        body = self.client.get("/metrics").content.decode()
        self.assertIn("apm_rollup_dirty_ranges 2.0", body)
        rollups.refresh_dirty()
        body = self.client.get("/metrics").content.decode()
        self.assertIn("apm_rollup_dirty_ranges 0.0", body)
        self.assertIn("apm_rollup_dirty_oldest_seconds 0.0", body)
