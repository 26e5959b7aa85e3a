from collections import Counter
from datetime import UTC, datetime, timedelta
from unittest import mock

from observability import analytics, ingest, rollups
from observability.tests.utils import BASE_TIME, ApiTestCase, iso, make_event, make_events, parse_time

URL = "/api/requests/series/"


def pairs(events, start, end, service=None):
    """hits per (service, endpoint) in [start, end), counted from the events themselves."""
    counts = Counter(
        (e["service"], e["endpoint"]) for e in events
        if start <= parse_time(e["time"]) < end and (service is None or e["service"] == service)
    )
    return [{"service": s, "endpoint": ep, "hits": n} for (s, ep), n in sorted(counts.items())]


class SeriesTests(ApiTestCase):
    @classmethod
    def setUpTestData(cls):
        # Three days, so that a window can hold whole days, whole hours and partial hours.
        cls.start = BASE_TIME - timedelta(days=1, hours=3)
        cls.events = make_events(1200, seed=23, start=cls.start, span=timedelta(days=3))
        cls.events.append(make_event(service="Zeta", endpoint="/b", time=BASE_TIME))
        cls.events.append(make_event(service="Zeta", endpoint="/a", time=BASE_TIME))
        ingest.ingest_events(list(cls.events), strict=True)

    def series(self, status=200, **params):
        response = self.client.get(URL, params)
        self.assertEqual(response.status_code, status, response.content)
        return response.json()

    def test_lists_the_pairs_with_events_in_an_unaligned_window_with_their_hits(self):
        start = self.start + timedelta(hours=5, minutes=17)
        end = start + timedelta(days=1, hours=20, minutes=41)
        body = self.series(start=iso(start), end=iso(end))
        self.assertEqual(body, {"results": pairs(self.events, start, end), "truncated": False,
                                "source": "hourly" if rollups.fast_rollups() else "raw"})

    def test_pairs_are_ordered_by_service_then_endpoint_in_code_point_order(self):
        body = self.series(start=iso(self.start), end=iso(self.start + timedelta(days=3)))
        keys = [(r["service"], r["endpoint"]) for r in body["results"]]
        self.assertEqual(keys, sorted(keys))
        # "Zeta" sorts before "auth" by code point (upper case first), on every database.
        self.assertEqual(keys[0][0], "Zeta")

    def test_a_service_narrows_the_pairs(self):
        end = self.start + timedelta(days=3)
        body = self.series(start=iso(self.start), end=iso(end), service="search")
        self.assertEqual(body["results"], pairs(self.events, self.start, end, "search"))
        self.assertTrue(body["results"])

    def test_a_window_shorter_than_an_hour_reads_the_raw_events(self):
        start = BASE_TIME + timedelta(minutes=5)
        end = start + timedelta(minutes=40)
        body = self.series(start=iso(start), end=iso(end))
        self.assertEqual(body["source"], "raw")
        self.assertEqual(body["results"], pairs(self.events, start, end))

    def test_a_window_without_events_is_an_empty_list(self):
        start = datetime(2020, 1, 1, tzinfo=UTC)
        body = self.series(start=iso(start), end=iso(start + timedelta(days=2)))
        self.assertEqual(body["results"], [])
        self.assertFalse(body["truncated"])

    def test_the_default_window_is_the_last_24_hours(self):
        now = BASE_TIME + timedelta(hours=7, minutes=30)
        with mock.patch("django.utils.timezone.now", return_value=now):
            body = self.series()
        self.assertEqual(body["results"], pairs(self.events, now - timedelta(hours=24), now))

    def test_an_end_alone_takes_the_24_hours_before_it(self):
        end = BASE_TIME
        body = self.series(end=iso(end))
        self.assertEqual(body["results"], pairs(self.events, end - timedelta(hours=24), end))

    def test_more_pairs_than_the_cap_are_cut_and_say_so(self):
        start, end = self.start, self.start + timedelta(days=3)
        body = analytics.series(start=start, end=end, max_rows=2)
        self.assertEqual(body["results"], pairs(self.events, start, end)[:2])
        self.assertTrue(body["truncated"])


class SeriesParameterTests(ApiTestCase):
    def test_bad_parameters_are_400s_that_name_them(self):
        cases = [
            ({"start": "yesterday"}, "start"),
            ({"end": "2026-13-01T00:00:00Z"}, "end"),
            ({"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start"),
            ({"service": "x" * 101}, "service"),
            ({"end": "0001-01-01T05:00:00Z"}, "end"),
        ]
        for params, name in cases:
            with self.subTest(params=params):
                response = self.client.get(URL, params)
                self.assertEqual(response.status_code, 400, response.content)
                body = response.json()
                self.assertIn(name, body)
                self.assertIn(name, body["detail"])

    def test_an_empty_window_is_an_empty_answer_not_an_error(self):
        # API.md: only start *after* end contradicts; start == end selects nothing.
        response = self.client.get(URL, {"start": "2026-03-02T00:00:00Z", "end": "2026-03-02T00:00:00Z"})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["results"], [])

    def test_windows_at_the_ends_of_the_calendar_answer(self):
        for start, end in (("0001-01-01T00:00:00Z", "0001-01-01T00:30:00Z"),
                           ("9999-12-31T23:00:00Z", "9999-12-31T23:59:59Z"),
                           ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")):
            with self.subTest(start=start, end=end):
                response = self.client.get(URL, {"start": start, "end": end})
                self.assertEqual(response.status_code, 200, response.content)
                self.assertEqual(response.json()["results"], [])
