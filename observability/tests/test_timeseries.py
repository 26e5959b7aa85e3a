from collections import defaultdict
from datetime import UTC, datetime, timedelta
from unittest import mock

from observability import ingest, rollups
from observability.tests.utils import (
    BASE_TIME,
    PERCENTILES,
    ApiTestCase,
    fast_source,
    floor_to,
    iso,
    make_events,
    parse_time,
    summarize_all,
)

URL = "/api/requests/timeseries/"
ROW_KEYS = {"bucket", "hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms", *PERCENTILES}


def expected_series(events, width, start, end, **exact):
    """One summary per bucket of `width` that has events in [start, end), from the events."""
    groups = defaultdict(list)
    for event in events:
        bucket = floor_to(parse_time(event["time"]), width)
        if start <= bucket < end and all(event[k] == v for k, v in exact.items()):
            groups[bucket].append(event)
    return [{"bucket": iso(bucket), **summarize_all(group)} for bucket, group in sorted(groups.items())]


class TimeseriesTests(ApiTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.events = make_events(700, start=BASE_TIME - timedelta(days=2, hours=3), span=timedelta(days=3), seed=41)
        ingest.ingest_events(list(cls.events), strict=True)

    def series(self, **params):
        response = self.client.get(URL, params)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def assert_series(self, body, want, *, bound=0.0):
        self.assertEqual([r["bucket"] for r in body["results"]], [r["bucket"] for r in want])
        for got, row in zip(body["results"], want, strict=True):
            self.assertEqual(set(got), ROW_KEYS)
            self.assertEqual((got["hits"], got["errors"]), (row["hits"], row["errors"]))
            for key in ("error_rate", "avg_latency_ms", "max_latency_ms"):
                self.assertAlmostEqual(got[key], row[key], delta=1e-9 * max(1, row[key]), msg=key)
            for key in PERCENTILES:
                self.assertLessEqual(abs(got[key] - row[key]), (bound + 1e-9) * row[key], f"{key} {got}")

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
        self.assert_series(body, expected_series(self.events, timedelta(hours=1), end - timedelta(hours=24), end))

    def test_with_p95_false_leaves_the_percentiles_out(self):
        body = self.series(interval="day", start="2026-02-01T00:00:00Z", end="2026-03-10T00:00:00Z",
                           with_p95="false")
        self.assertEqual(sum(r["hits"] for r in body["results"]), len(self.events))
        self.assertTrue(all(r[key] is None for r in body["results"] for key in PERCENTILES))

    def test_bad_parameters_are_400s_naming_them(self):
        cases = [
            ({}, "interval"), ({"interval": "minute"}, "interval"),
            ({"interval": "hour", "start": "soon"}, "start"),
            ({"interval": "hour", "precision": "rough"}, "precision"),
            ({"interval": "hour", "with_p95": "maybe"}, "with_p95"),
            ({"interval": "hour", "start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start"),
            ({"interval": "hour", "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start"),
            ({"interval": "day", "end": "9999-12-31T12:00:00Z"}, "start/end"),
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
