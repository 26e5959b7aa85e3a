"""The whole-traffic tiers (migration 0006): the planner hands what the hourly aggregates have not
materialized to the minute tier, so fresh data under sustained ingest costs a few minutes of raw
events; answers stay those of the raw events (counts exact, approx percentiles within the bound).
"""

import random
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.core.management import call_command

from observability import retention, rollups
from observability.models import ApiRequest, GlobalLatencyHourly, GlobalLatencyMinute
from observability.tests.test_percentiles import BOUND, reference, rows_for, store
from observability.tests.utils import (
    BASE_TIME,
    PERCENTILES,
    ApiTestCase,
    ApiTransactionTestCase,
    iso,
    make_events,
    post_ingest,
    skip_unless_timescale,
)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


class FinePlanTests(ApiTestCase):
    """How a range is cut when the family has a fine tier (watermarks given, any database)."""

    def plan(self, start, end, marks):
        # The minute tier materialized up to the last whole minute, unless the test says otherwise.
        marks = {"apirequest_global_minute": rollups.floor(end, MINUTE), **marks}

        def cutoff(relation):
            return marks.get(relation)

        with mock.patch.object(rollups, "cutoff", side_effect=cutoff):
            return rollups.plan({"start": start, "end": end}, rollups.GLOBAL)

    def test_past_the_minute_tiers_watermark_the_raw_events_answer(self):
        # Materialized only (0012): the minutes past its watermark are raw events, grouped as the
        # query groups them, not the aggregate's real-time union.
        now = datetime.now(UTC).replace(second=40, microsecond=0)
        hour_mark = rollups.floor(now, HOUR) - HOUR
        minute_mark = rollups.floor(now, MINUTE) - 2 * MINUTE
        pieces, edges = self.plan(now - 5 * HOUR, now, {"apirequest_global_hourly": hour_mark,
                                                        "apirequest_global_minute": minute_mark})
        self.assertIn((GlobalLatencyMinute, hour_mark, minute_mark), pieces)
        self.assertEqual([dict(edge.children) for edge in edges][-1], {"time__gte": minute_mark, "time__lt": now})
        # A minute tier behind the hourly one: nothing of it is read.
        pieces, edges = self.plan(now - 5 * HOUR, now, {"apirequest_global_hourly": hour_mark,
                                                        "apirequest_global_minute": hour_mark - HOUR})
        self.assertNotIn(GlobalLatencyMinute, [piece[0] for piece in pieces])
        self.assertEqual([dict(edge.children) for edge in edges][-1], {"time__gte": hour_mark, "time__lt": now})

    def test_hours_past_the_hourly_watermark_come_from_the_minute_tier(self):
        now = datetime.now(UTC).replace(second=40, microsecond=0)
        hour_mark = rollups.floor(now, HOUR) - HOUR
        start = rollups.floor(now, HOUR) - 30 * HOUR
        # Hierarchical: the daily tier is never ahead of the hourly one.
        pieces, edges = self.plan(start, now, {"apirequest_global_daily": rollups.floor(hour_mark, timedelta(days=1)),
                                               "apirequest_global_hourly": hour_mark})
        models = [piece[0] for piece in pieces]
        self.assertIn(GlobalLatencyMinute, models)
        minute = pieces[models.index(GlobalLatencyMinute)]
        self.assertEqual(minute[1:], (hour_mark, rollups.floor(now, MINUTE)))
        for model, _lo, hi in pieces:
            if model is GlobalLatencyHourly:
                self.assertLessEqual(hi, hour_mark)
        # The raw table answers only the last partial minute.
        self.assertEqual(len(edges), 1)
        self.assertEqual(dict(edges[0].children), {"time__gte": rollups.floor(now, MINUTE), "time__lt": now})

    def test_a_range_that_ends_before_the_hourly_watermark_never_reads_the_minute_tier(self):
        now = datetime.now(UTC)
        end = rollups.floor(now, HOUR) - 5 * HOUR + timedelta(minutes=20)
        pieces, edges = self.plan(end - 10 * HOUR, end, {"apirequest_global_hourly": rollups.floor(now, HOUR)})
        self.assertNotIn(GlobalLatencyMinute, [piece[0] for piece in pieces])
        self.assertEqual([dict(edge.children)["time__lt"] for edge in edges],
                         [end - 10 * HOUR + timedelta(minutes=40), end])  # the partial hours, from raw

    def test_without_a_materialized_hourly_tier_the_minute_tier_is_not_read(self):
        now = datetime.now(UTC)
        pieces, _ = self.plan(now - 5 * HOUR, now, {"apirequest_global_hourly": rollups.NOTHING_MATERIALIZED})
        self.assertNotIn(GlobalLatencyMinute, [piece[0] for piece in pieces])

    def test_an_hourly_watermark_older_than_what_the_minute_tier_keeps_exact_is_not_trusted(self):
        now = datetime.now(UTC)
        old_mark = rollups.floor(now, HOUR) - timedelta(days=3)
        pieces, _ = self.plan(now - timedelta(days=6), now, {"apirequest_global_hourly": old_mark})
        self.assertNotIn(GlobalLatencyMinute, [piece[0] for piece in pieces])
        recent_mark = rollups.floor(now, HOUR) - timedelta(days=1)
        pieces, _ = self.plan(now - timedelta(days=6), now, {"apirequest_global_hourly": recent_mark})
        self.assertIn(GlobalLatencyMinute, [piece[0] for piece in pieces])


class TimescaleTestCase(ApiTransactionTestCase):
    """On TimescaleDB only, each test starting and leaving the aggregates empty (a flush
    doesn't empty continuous aggregates)."""

    needs = "the whole-traffic tiers are continuous aggregates"

    def setUp(self):
        skip_unless_timescale(self, self.needs)
        self.tearDown()

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)


class FreshTailTests(TimescaleTestCase):
    """Real TimescaleDB: the last hours partly materialized, as under sustained ingest."""

    def setUp(self):
        super().setUp()
        # The tests set each watermark themselves; a policy run (every 30 s to 5 min) would
        # move them on while a test runs.
        retention.schedule_refresh_policies(False)
        self.addCleanup(retention.schedule_refresh_policies, True)

    def test_fresh_events_are_read_from_the_minute_tier_and_answer_as_the_raw_events(self):
        rng = random.Random(9)
        now = datetime.now(UTC)
        rows = rows_for(900, rng=rng, start=now - 3 * HOUR, span=3 * HOUR - timedelta(seconds=5))
        store(rows)
        # The state just before the hourly tiers' next run: they stop two hours back, the
        # minute tier two minutes back.
        hour_mark = rollups.floor(now, HOUR) - HOUR
        for rollup in rollups.aggregates():
            end = rollups.floor(now, MINUTE) - 2 * MINUTE if rollup.width == MINUTE else hour_mark
            rollups.refresh(rollup.relation, None, end)
        # What the rows left dirty below watermarks earlier tests left: the background refresher's pass.
        self.assertIsNone(rollups.refresh_dirty().failed)
        # (A watermark never moves back: an earlier test may have left it at the current hour.)
        mark = rollups.watermark("apirequest_global_hourly")
        self.assertIn(mark, (hour_mark, hour_mark + HOUR))
        start = now - 3 * HOUR + timedelta(minutes=7)
        filters = {"start": start, "end": now}
        pieces, edges = rollups.plan(filters, rollups.GLOBAL)
        if rollups.floor(now, MINUTE) > mark:  # not in the first minute of an hour
            self.assertIn(GlobalLatencyMinute, [piece[0] for piece in pieces])
        params = {"start": iso(start), "end": iso(now), "precision": "approx"}
        body = self.client.get("/api/requests/kpis/", params).json()
        selected = [r for r in rows if start <= r["time"] < now]
        self.assertEqual(body["hits"], len(selected))
        self.assertEqual(body["errors"], sum(r["status_code"] >= 500 for r in selected))
        capped = [min(r["latency_ms"], 86_400_000.0) for r in selected]
        self.assertAlmostEqual(body["avg_latency_ms"], sum(capped) / len(capped), delta=1e-9 * max(capped))
        self.assertEqual(body["max_latency_ms"], max(capped))
        want = reference([r["latency_ms"] for r in selected])
        for key in PERCENTILES:
            self.assertLessEqual(abs(body[key] - want[key]), BOUND * want[key] + 1e-12, key)
        # By the hour: materialized hours carry exact percentiles, the rest approx ones.
        series = self.client.get("/api/requests/timeseries/", {"interval": "hour", "precision": "approx",
                                                                "start": iso(now - 4 * HOUR)}).json()
        self.assertEqual(sum(r["hits"] for r in series["results"]), len(rows))
        for row in series["results"]:
            bucket = datetime.fromisoformat(row["bucket"].replace("Z", "+00:00"))
            hour = [r["latency_ms"] for r in rows if rollups.floor(r["time"], HOUR) == bucket]
            self.assertEqual(row["hits"], len(hour))
            want = reference(hour)
            for key in PERCENTILES:
                self.assertLessEqual(abs(row[key] - want[key]), BOUND * want[key] + 1e-12, (row["bucket"], key))
        # The exact answer by the hour is exact everywhere.
        exact = self.client.get("/api/requests/timeseries/", {"interval": "hour", "precision": "exact",
                                                               "start": iso(now - 4 * HOUR)}).json()
        for row in exact["results"]:
            bucket = datetime.fromisoformat(row["bucket"].replace("Z", "+00:00"))
            want = reference([r["latency_ms"] for r in rows if rollups.floor(r["time"], HOUR) == bucket], "exact")
            for key in PERCENTILES:
                self.assertAlmostEqual(row[key], want[key], delta=1e-9 * want[key], msg=(row["bucket"], key))

    def test_a_late_event_in_a_materialized_minute_shows_at_once(self):
        now = datetime.now(UTC)
        events = [dict(e, time=iso(now - 30 * MINUTE + i * MINUTE / 10)) for i, e in enumerate(make_events(40))]
        post_ingest(self.client, events)
        rollups.refresh_all(None, rollups.floor(now, MINUTE))
        late = dict(events[0], time=iso(now - 29 * MINUTE), latency_ms=90_000.0, trace_id="late")
        self.assertEqual(post_ingest(self.client, [late]).json()["inserted"], 1)
        # Two hours back: whole hours to plan, the last one past the hourly watermark.
        body = self.client.get("/api/requests/kpis/", {"start": iso(now - 2 * HOUR), "end": iso(now),
                                                       "precision": "approx"}).json()
        self.assertEqual((body["hits"], body["source"]), (41, "hourly"))
        self.assertEqual(body["max_latency_ms"], 90_000.0)
        self.assertGreater(body["p99_latency_ms"], 100)


class MigrationTests(ApiTransactionTestCase):
    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def test_migrating_back_to_0005_and_forward_again_rebuilds_the_whole_traffic_tiers(self):
        from django.db import connection

        from observability import db

        tiers = {r.relation for r in rollups.aggregates() if r.kind in ("stats", "percentiles")}
        post_ingest(self.client, make_events(90, start=BASE_TIME))
        before = self.client.get("/api/requests/kpis/", {"precision": "approx"}).json()
        series_before = self.client.get("/api/requests/timeseries/", {
            "interval": "hour", "start": iso(BASE_TIME - HOUR), "end": iso(BASE_TIME + 24 * HOUR)}).json()
        try:
            call_command("migrate", "observability", "0005", verbosity=0)
            with connection.cursor() as cursor:
                names = {info.name for info in connection.introspection.get_table_list(cursor)}
            self.assertEqual(names & tiers, set())
            self.assertEqual(ApiRequest.objects.count(), 90)
        finally:
            call_command("migrate", "observability", verbosity=0)  # later tests need the latest schema
        with connection.cursor() as cursor:
            names = {info.name for info in connection.introspection.get_table_list(cursor)}
        self.assertEqual(names & tiers, tiers if db.rollups_are_continuous() else set())
        after = self.client.get("/api/requests/kpis/", {"precision": "approx"}).json()
        self.assert_same(after, before)
        series_after = self.client.get("/api/requests/timeseries/", {
            "interval": "hour", "start": iso(BASE_TIME - HOUR), "end": iso(BASE_TIME + 24 * HOUR)}).json()
        self.assertEqual(len(series_after["results"]), len(series_before["results"]))
        for got, want in zip(series_after["results"], series_before["results"], strict=True):
            self.assert_same(got, want)

    def assert_same(self, got: dict, want: dict):
        """Equal, floats within rounding (a rebuilt aggregate may add a bucket's latencies in
        another order)."""
        self.assertEqual(got.keys(), want.keys())
        for key, value in want.items():
            if isinstance(value, float):
                self.assertAlmostEqual(got[key], value, delta=1e-12 * abs(value), msg=key)
            else:
                self.assertEqual(got[key], value, key)


class RankingByPercentileTests(TimescaleTestCase):
    """Sorting every series by an approx percentile: histograms where whole days serve, exact
    percentile_cont over the events where only hours would (cheaper there, and exact)."""

    needs = "approx percentiles come from histograms on TimescaleDB only"

    def test_hours_only_windows_rank_exactly_and_say_so_and_day_windows_use_the_histograms(self):
        rng = random.Random(5)
        first = BASE_TIME - timedelta(days=3)
        rows = rows_for(800, rng=rng, start=first, span=timedelta(days=3))
        store(rows)
        rollups.refresh_all(None, BASE_TIME)
        for start, end, precision in ((BASE_TIME - 20 * HOUR, BASE_TIME - 2 * HOUR, "exact"),
                                      (first, BASE_TIME, "approx")):
            body = self.client.get("/api/requests/top-endpoints/", {
                "start": iso(start), "end": iso(end), "precision": "approx", "sort": "p95_latency_ms",
                "limit": 1000}).json()
            self.assertEqual(body["precision"], precision)
            for row in body["results"]:
                series = [r["latency_ms"] for r in rows if start <= r["time"] < end
                          and (r["service"], r["endpoint"]) == (row["service"], row["endpoint"])]
                want = reference(series, precision)
                bound = BOUND if precision == "approx" else 1e-12
                for key in PERCENTILES:
                    self.assertLessEqual(abs(row[key] - want[key]), bound * want[key] + 1e-9, (precision, key))
