from collections import defaultdict
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.test import SimpleTestCase

from observability import ingest, rollups
from observability.models import ApiRequest, GlobalLatencyMinute
from observability.tests.utils import (
    BASE_TIME,
    PERCENTILES,
    ApiTestCase,
    ApiTransactionTestCase,
    fast_source,
    floor_to,
    iso,
    make_event,
    make_events,
    parse_time,
    skip_unless_timescale,
    summarize_all,
)

URL = "/api/requests/timeseries/"
ROW_KEYS = {"bucket", "hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms", *PERCENTILES, "partial"}
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
WIDTHS = {"minute": MINUTE, "hour": HOUR, "day": DAY}


def expected_series(events, width, start, end, now=None, **exact):
    """One summary per bucket of `width` that has events in [start, end), from the events;
    `partial` for the bucket holding `now` (the server's time; by default the real clock)."""
    now = now or datetime.now(UTC)
    groups = defaultdict(list)
    for event in events:
        bucket = floor_to(parse_time(event["time"]), width)
        if start <= bucket < end and all(event[k] == v for k, v in exact.items()):
            groups[bucket].append(event)
    return [{"bucket": iso(bucket), **summarize_all(group), "partial": bucket <= now < bucket + width}
            for bucket, group in sorted(groups.items())]


class SeriesAssertions:
    """GET /timeseries/ and compare its rows with `expected_series`."""

    def series(self, **params):
        response = self.client.get(URL, params)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def assert_series(self, body, want, *, bound=0.0):
        self.assertEqual([r["bucket"] for r in body["results"]], [r["bucket"] for r in want])
        for got, row in zip(body["results"], want, strict=True):
            self.assertEqual(set(got), ROW_KEYS)
            self.assertEqual((got["hits"], got["errors"], got["partial"]), (row["hits"], row["errors"], row["partial"]))
            for key in ("error_rate", "avg_latency_ms", "max_latency_ms"):
                self.assertAlmostEqual(got[key], row[key], delta=1e-9 * max(1, row[key]), msg=key)
            for key in PERCENTILES:
                self.assertLessEqual(abs(got[key] - row[key]), (bound + 1e-9) * row[key], f"{key} {got}")


class TimeseriesTests(SeriesAssertions, ApiTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.events = make_events(700, start=BASE_TIME - timedelta(days=2, hours=3), span=timedelta(days=3), seed=41)
        ingest.ingest_events(list(cls.events), strict=True)

    def test_hourly_buckets_match_the_events(self):
        start, end = BASE_TIME - timedelta(days=1), BASE_TIME + timedelta(hours=5)
        body = self.series(interval="hour", start=iso(start), end=iso(end))
        self.assertEqual((body["interval"], body["precision"], body["max_relative_error"], body["source"]),
                         ("hour", "exact", 0.0, fast_source()))
        self.assert_series(body, expected_series(self.events, timedelta(hours=1), start, end))

    def test_daily_buckets_for_one_service_match_the_events(self):
        start, end = BASE_TIME - timedelta(days=5), BASE_TIME + timedelta(days=2)
        body = self.series(interval="day", start=iso(start), end=iso(end), service="auth")
        want = expected_series(self.events, timedelta(days=1), floor_to(start, timedelta(days=1)), end,
                               service="auth")
        self.assertEqual(len(want), 4)
        self.assert_series(body, want)

    def test_approx_percentiles_are_within_the_stated_bound(self):
        start, end = BASE_TIME - timedelta(days=3), BASE_TIME + timedelta(days=1)
        for interval, width in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
            body = self.series(interval=interval, start=iso(start), end=iso(end), precision="approx",
                               endpoint="/cart")
            expected = "approx" if rollups.has_histograms() else "exact"
            self.assertEqual(body["precision"], expected)
            self.assertEqual(body["max_relative_error"], rollups.MAX_RELATIVE_ERROR if expected == "approx" else 0)
            self.assert_series(body, expected_series(self.events, width, start, end, endpoint="/cart"),
                               bound=body["max_relative_error"])

    def test_the_default_window_is_the_last_24_hours_up_to_the_end_of_this_hour(self):
        now = BASE_TIME + timedelta(minutes=20)
        with mock.patch("observability.analytics.datetime") as clock:
            clock.now.return_value = now
            body = self.series(interval="hour")
        end = BASE_TIME + timedelta(hours=1)
        want = expected_series(self.events, timedelta(hours=1), end - timedelta(hours=24), end, now)
        self.assertEqual([row["bucket"] for row in want if row["partial"]], [iso(BASE_TIME)])
        self.assert_series(body, want)

    def test_with_p95_false_leaves_the_percentiles_out(self):
        body = self.series(interval="day", start="2026-02-01T00:00:00Z", end="2026-03-10T00:00:00Z",
                           with_p95="false")
        self.assertEqual(sum(r["hits"] for r in body["results"]), len(self.events))
        self.assertTrue(all(r[key] is None for r in body["results"] for key in PERCENTILES))

    def test_bad_parameters_are_400s_naming_them(self):
        cases = [
            ({}, "interval"), ({"interval": "second"}, "interval"),
            ({"interval": "hour", "start": "soon"}, "start"),
            ({"interval": "hour", "precision": "rough"}, "precision"),
            ({"interval": "hour", "with_p95": "maybe"}, "with_p95"),
            ({"interval": "hour", "start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start"),
            ({"interval": "hour", "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start"),
            ({"interval": "day", "end": "9999-12-31T12:00:00Z"}, "start/end"),
            # 1,001 minutes (1,000 are answered: see the minute tests).
            ({"interval": "minute", "start": "2026-03-01T00:00:00Z", "end": "2026-03-01T16:41:00Z"}, "start"),
        ]
        for params, name in cases:
            response = self.client.get(URL, params)
            self.assertEqual(response.status_code, 400, params)
            self.assertIn(name, response.json(), params)
            self.assertIn("detail", response.json())

    def test_an_empty_window_has_no_rows(self):
        start = datetime(2020, 1, 1, tzinfo=UTC)
        body = self.series(interval="day", start=iso(start), end=iso(start + timedelta(days=3)))
        self.assertEqual(body["results"], [])


class MinuteAndPartialTests(SeriesAssertions, ApiTransactionTestCase):
    """interval=minute and `partial` over events up to now. A TransactionTestCase: on TimescaleDB
    the minute tier is refreshed (outside a transaction) so that its older minutes are
    materialized and the newest read in real time, as under ingest."""

    def setUp(self):
        # The server's clock, fixed for the request (the default window and `partial` hang on it).
        self.now = datetime.now(UTC).replace(second=37, microsecond=250_000)
        if self.now > datetime.now(UTC):
            self.now -= MINUTE
        # Refreshes end here, never in the bucket of now: a watermark never moves back, and later
        # tests set their own below the current hour.
        self.mark = rollups.floor(self.now, MINUTE) - 20 * MINUTE
        self.tearDown()  # nothing an earlier test materialized may linger in the aggregates
        clock = mock.patch("observability.analytics.current_time", return_value=self.now)
        clock.start()
        self.addCleanup(clock.stop)
        # 75 minutes of events (the last at `now`, in the minute still filling), an hour and a day back.
        self.events = make_events(400, start=self.now - timedelta(minutes=75), span=timedelta(minutes=75), seed=28)
        self.events += [make_event(time=self.now, latency_ms=900.0, service="auth", endpoint="/login",
                                   status_code=503),
                        make_event(time=self.now - HOUR, latency_ms=3.0, service="auth", endpoint="/login"),
                        make_event(time=self.now - DAY, latency_ms=4.0, service="auth", endpoint="/login")]
        self.assertEqual(ingest.ingest_events(list(self.events), strict=True).inserted, len(self.events))
        # TimescaleDB: materialize all but the last 20 minutes (elsewhere nothing to do), and what
        # the write recorded as dirty below a watermark a policy run moved meanwhile, as the
        # background refresher would.
        rollups.refresh_all(None, self.mark)
        rollups.refresh_dirty()

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, self.mark)

    def test_minute_buckets_of_the_default_hour_match_the_events_for_all_traffic_and_one_series(self):
        end = rollups.floor(self.now, MINUTE) + MINUTE
        start = end - 60 * MINUTE
        for filters in ({}, {"service": "auth"}, {"service": "auth", "endpoint": "/login"}):
            body = self.series(interval="minute", **filters)
            want = expected_series(self.events, MINUTE, start, end, self.now, **filters)
            self.assertGreater(len(want), 40 if not filters else 10)
            self.assertEqual(want[-1]["bucket"], iso(rollups.floor(self.now, MINUTE)))  # the event at now
            self.assertEqual((body["interval"], body["precision"], body["max_relative_error"]),
                             ("minute", "exact", 0.0))
            # On TimescaleDB all traffic and each series read their minute tiers (0006, 0010).
            self.assertEqual(body["source"], fast_source(), filters)
            self.assert_series(body, want)

    def test_approx_minute_buckets_are_within_the_stated_bound(self):
        end = rollups.floor(self.now, MINUTE) + MINUTE
        start = end - 45 * MINUTE
        for filters, family in (({}, rollups.GLOBAL), ({"endpoint": "/cart"}, rollups.LATENCY)):
            body = self.series(interval="minute", start=iso(start), precision="approx", **filters)
            # Approx where a histogram family keeps minutes (every family on TimescaleDB).
            expected = "approx" if rollups.has_histograms() and family.fine is not None else "exact"
            self.assertEqual(body["precision"], expected, filters)
            self.assertEqual(body["max_relative_error"], rollups.MAX_RELATIVE_ERROR if expected == "approx" else 0)
            self.assert_series(body, expected_series(self.events, MINUTE, start, end, self.now, **filters),
                             bound=body["max_relative_error"])

    def test_partial_is_true_only_for_the_bucket_that_holds_now_at_every_interval(self):
        for interval, width in WIDTHS.items():
            for filters in ({}, {"service": "auth"}):
                body = self.series(interval=interval, **filters)
                partial = [row["bucket"] for row in body["results"] if row["partial"]]
                self.assertEqual(partial, [iso(floor_to(self.now, width))], (interval, filters))
                self.assertGreater(len(body["results"]), 1, (interval, filters))  # complete buckets too
                self.assertTrue(all(row["partial"] is False for row in body["results"][:-1]))

    def test_a_window_that_ends_before_now_has_no_partial_bucket(self):
        body = self.series(interval="minute", end=iso(rollups.floor(self.now, MINUTE)))
        self.assertTrue(body["results"])
        self.assertFalse(any(row["partial"] for row in body["results"]))

    def test_minutes_older_than_the_minute_tier_keeps_come_from_raw_events(self):
        old = make_events(300, start=BASE_TIME, span=timedelta(minutes=90), seed=3)
        ingest.ingest_events(list(old), strict=True)
        rollups.refresh_all(None, self.mark)
        start, end = BASE_TIME - 5 * MINUTE, BASE_TIME + 95 * MINUTE
        for filters in ({}, {"service": "search"}):
            body = self.series(interval="minute", start=iso(start), end=iso(end), **filters)
            self.assertEqual(body["source"], "raw")
            self.assert_series(body, expected_series(old, MINUTE, start, end, self.now, **filters))

    def test_one_thousand_minutes_are_answered_and_one_more_is_a_400_naming_start(self):
        end = rollups.floor(self.now, MINUTE) + MINUTE
        body = self.series(interval="minute", start=iso(end - 1000 * MINUTE), end=iso(end))
        self.assertEqual(sum(row["hits"] for row in body["results"]), len(self.events) - 1)  # not the day-old one
        response = self.client.get(URL, {"interval": "minute", "start": iso(end - 1001 * MINUTE), "end": iso(end)})
        self.assertEqual(response.status_code, 400)
        self.assertIn("start", response.json())
        self.assertIn("1000 minutes", response.json()["start"][0])


class MinuteTierHorizonTests(SeriesAssertions, ApiTransactionTestCase):
    """TimescaleDB: a window across the first minute the minute tier keeps exact reads raw
    events before it and the tier after it, and answers as the events do."""

    def setUp(self):
        skip_unless_timescale(self, "the whole-traffic minute tier is a continuous aggregate")
        self.mark = rollups.floor(datetime.now(UTC), HOUR)  # refreshes never reach the current hour
        self.tearDown()

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, self.mark)

    def test_minutes_across_the_fine_tiers_horizon_are_those_of_the_events(self):
        since = rollups.fine_since(rollups.GLOBAL)
        start, end = since - 30 * MINUTE, since + 30 * MINUTE
        events = make_events(500, start=start, span=end - start, seed=11)
        ingest.ingest_events(list(events), strict=True)
        rollups.refresh_all(None, self.mark)
        models = [piece[0] for piece in rollups.bucket_plan(MINUTE, start, end, rollups.GLOBAL)]
        self.assertEqual(models, [ApiRequest, GlobalLatencyMinute])
        for precision in ("exact", "approx"):
            body = self.series(interval="minute", start=iso(start), end=iso(end), precision=precision)
            self.assertEqual((body["precision"], body["source"]), (precision, "hourly"))
            self.assert_series(body, expected_series(events, MINUTE, start, end),
                             bound=body["max_relative_error"])


class MinutePlanTests(SimpleTestCase):
    """How `rollups.bucket_plan` cuts a window into minutes (watermarks given, any database)."""

    def plan(self, start, end, family, continuous=True):
        def cutoff(relation):
            if not continuous:
                return None
            # The minute tier materialized up to the window's end (past its watermark raw events answer).
            return end if family.fine and relation == family.fine.relation else rollups.NOTHING_MATERIALIZED

        with mock.patch.object(rollups, "cutoff", side_effect=cutoff), \
                mock.patch.object(rollups, "dirty_ranges", return_value=[]):  # nothing late
            before = rollups.fine_since(family) if continuous and family.fine else None
            pieces = rollups.bucket_plan(MINUTE, start, end, family)
            after = rollups.fine_since(family) if continuous and family.fine else None
        return pieces, (before, after)

    def test_recent_minutes_of_all_traffic_come_from_the_minute_tier(self):
        end = rollups.floor(datetime.now(UTC), MINUTE) + MINUTE
        pieces, _ = self.plan(end - 60 * MINUTE, end, rollups.GLOBAL)
        self.assertEqual(pieces, [(GlobalLatencyMinute, end - 60 * MINUTE, end, False)])

    def test_minutes_past_the_minute_tiers_watermark_come_from_raw_events(self):
        end = rollups.floor(datetime.now(UTC), MINUTE) + MINUTE
        mark = end - 2 * MINUTE
        with mock.patch.object(rollups, "cutoff", side_effect=lambda relation: (
                mark if relation == rollups.GLOBAL.fine.relation else rollups.NOTHING_MATERIALIZED)), \
                mock.patch.object(rollups, "dirty_ranges", return_value=[]):
            pieces = rollups.bucket_plan(MINUTE, end - 60 * MINUTE, end, rollups.GLOBAL)
        self.assertEqual(pieces, [(GlobalLatencyMinute, end - 60 * MINUTE, mark, False),
                                  (ApiRequest, mark, end, True)])

    def test_minutes_before_what_the_minute_tier_keeps_exact_come_from_raw_events(self):
        end = rollups.floor(datetime.now(UTC), MINUTE) - 3 * DAY
        pieces, _ = self.plan(end - 60 * MINUTE, end, rollups.GLOBAL)
        self.assertEqual(pieces, [(ApiRequest, end - 60 * MINUTE, end, True)])

    def test_a_window_across_the_horizon_is_cut_at_the_first_exact_minute(self):
        # Refreshed over two days, with an hour of margin; a shorter fine retention wins.
        for days, kept in ((0, 2 * DAY), (5, 2 * DAY), (1, DAY)):
            with self.settings(APM_RETENTION_FINE_DAYS=days):
                now = datetime.now(UTC)
                start = rollups.floor(now - kept + HOUR, MINUTE) - 90 * MINUTE
                end = start + 300 * MINUTE
                pieces, (before, after) = self.plan(start, end, rollups.GLOBAL)
            self.assertEqual([p[0] for p in pieces], [ApiRequest, GlobalLatencyMinute], days)
            (_, lo, cut, _), (_, cut_again, hi, regroup) = pieces
            self.assertEqual((lo, hi, cut, regroup), (start, end, cut_again, False))
            self.assertIn(cut, (before, after))
            first = rollups.ceil(now - kept + HOUR, MINUTE)
            self.assertIn(before, (first, first + MINUTE))  # (the clock may tick past a minute)

    def test_minutes_without_aggregates_come_from_raw_events(self):
        end = rollups.floor(datetime.now(UTC), MINUTE) + MINUTE
        for family, continuous in ((rollups.COUNTS, False), (rollups.LATENCY, False), (rollups.GLOBAL, False)):
            pieces, _ = self.plan(end - 60 * MINUTE, end, family, continuous)
            self.assertEqual(pieces, [(ApiRequest, end - 60 * MINUTE, end, True)], family)
