import random
from datetime import timedelta

from django.test import TestCase, TransactionTestCase

from observability import ingest, rollups
from observability.models import ApiRequest
from observability.tests.utils import (
    BASE_TIME,
    PERCENTILES,
    fast_source,
    iso,
    make_events,
    parse_time,
    post_ingest,
    summarize_all,
)

URL = "/api/requests/kpis/"
KEYS = ("hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms", "p50_latency_ms",
        "p90_latency_ms", "p95_latency_ms", "p99_latency_ms")


def close(case, got: dict, want: dict, msg=""):
    case.assertEqual((got["hits"], got["errors"]), (want["hits"], want["errors"]), msg)
    for key in ("error_rate", "avg_latency_ms", "max_latency_ms", *PERCENTILES):
        if want[key] is None:
            case.assertIsNone(got[key], f"{key} {msg}")
        else:
            case.assertAlmostEqual(got[key], want[key], delta=1e-9 * max(1.0, abs(want[key])), msg=f"{key} {msg}")


def select(events, *, start=None, end=None, **exact):
    return [
        e for e in events
        if (start is None or parse_time(e["time"]) >= start) and (end is None or parse_time(e["time"]) < end)
        and all(e[k] == v for k, v in exact.items())
    ]


class KpiTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.events = make_events(800, span=timedelta(hours=10), seed=5)
        ingest.ingest_events(list(cls.events), strict=True)

    def kpis(self, **params):
        response = self.client.get(URL, params)
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(set(body), {*KEYS, "precision", "max_relative_error", "source"})
        return body

    def test_kpis_over_everything_match_the_events(self):
        body = self.kpis()
        close(self, body, summarize_all(self.events))
        self.assertEqual(body["source"], fast_source())

    def test_an_aligned_range_is_served_by_the_hourly_rollup(self):
        start, end = BASE_TIME + timedelta(hours=2), BASE_TIME + timedelta(hours=5)
        body = self.kpis(start=iso(start), end=iso(end), service="search")
        close(self, body, summarize_all(select(self.events, start=start, end=end, service="search")))
        self.assertEqual(body["source"], fast_source())

    def test_an_unaligned_range_adds_the_partial_hours_from_the_raw_table(self):
        start = BASE_TIME + timedelta(hours=1, minutes=17, seconds=3)
        end = BASE_TIME + timedelta(hours=6, minutes=41, microseconds=5)
        body = self.kpis(start=iso(start), end=iso(end))
        close(self, body, summarize_all(select(self.events, start=start, end=end)))
        self.assertEqual(body["source"], fast_source())

    def test_a_range_inside_one_hour_is_read_from_the_raw_table(self):
        start, end = BASE_TIME + timedelta(minutes=10), BASE_TIME + timedelta(minutes=50)
        body = self.kpis(start=iso(start), end=iso(end))
        close(self, body, summarize_all(select(self.events, start=start, end=end)))
        self.assertEqual(body["source"], "raw")

    def test_raw_only_filters_are_read_from_the_raw_table(self):
        cases = [
            ({"method": "post"}, lambda e: e["method"] == "POST"),
            ({"status_code": "500,503"}, lambda e: e["status_code"] in (500, 503)),
            ({"status_min": 400}, lambda e: e["status_code"] >= 400),
            ({"latency_max": 20}, lambda e: e["latency_ms"] <= 20),
            ({"user_ref": "user-3"}, lambda e: e["user_ref"] == "user-3"),
            ({"trace_id": "trace-00007"}, lambda e: e["trace_id"] == "trace-00007"),
            ({"search": "items"}, lambda e: "items" in e["endpoint"]),
        ]
        for params, predicate in cases:
            body = self.kpis(**params)
            close(self, body, summarize_all([e for e in self.events if predicate(e)]), params)
            self.assertEqual(body["source"], "raw", params)

    def test_an_empty_selection_has_zero_hits_and_null_latencies(self):
        for params in ({"service": "nobody"}, {"service": "nobody", "method": "GET"}):
            body = self.kpis(**params)
            self.assertEqual({k: body[k] for k in KEYS}, {
                "hits": 0, "errors": 0, "error_rate": 0.0, "avg_latency_ms": None,
                "max_latency_ms": None, "p50_latency_ms": None, "p90_latency_ms": None,
                "p95_latency_ms": None, "p99_latency_ms": None,
            })

    def test_ranges_at_the_ends_of_the_calendar_are_answered(self):
        body = self.kpis(start="9999-12-31T23:30:00Z")
        self.assertEqual((body["hits"], body["source"]), (0, "raw"))
        body = self.kpis(start="0001-01-01T00:00:00Z", end="9999-12-31T23:59:59Z")
        close(self, body, summarize_all(self.events))

    def test_with_p95_false_skips_the_percentile(self):
        body = self.kpis(with_p95="false")
        self.assertEqual([body[key] for key in PERCENTILES], [None] * 4)
        self.assertEqual(body["hits"], len(self.events))

    def test_bad_parameters_are_400s_naming_them(self):
        for params in ({"with_p95": "maybe"}, {"start": "later"}, {"status_max": "big"}):
            response = self.client.get(URL, params)
            self.assertEqual(response.status_code, 400, params)
            self.assertIn(next(iter(params)), response.json())


class FastPathEqualsRawPathTests(TransactionTestCase):
    """Random ranges and series: the rollup-served answer equals the raw one and the events'.

    On TimescaleDB the first part of the data is materialized and the rest is real-time, so
    both halves of the continuous aggregate are exercised.
    """

    def tearDown(self):
        ApiRequest.objects.all().delete()
        for relation in [r.relation for r in rollups.aggregates()]:
            rollups.refresh(relation, None, None)

    def test_fast_path_and_raw_path_give_the_same_numbers(self):
        # Four days of older data (materialized on TimescaleDB up to day 3), then a day of
        # newer data: ranges mix whole days, whole hours and partial hours on both sides.
        old = make_events(900, start=BASE_TIME - timedelta(days=3), span=timedelta(days=4), seed=21)
        post_ingest(self.client, old)
        for relation in [r.relation for r in rollups.aggregates()]:
            rollups.refresh(relation, None, BASE_TIME)
        new = make_events(500, start=BASE_TIME + timedelta(hours=6), span=timedelta(days=1), seed=22)
        post_ingest(self.client, new)
        events = old + new
        rng = random.Random(99)
        first = BASE_TIME - timedelta(days=3, hours=2)
        for round_ in range(40):
            params, exact = {}, {}
            start = end = None
            if rng.random() < 0.85:
                start = first + timedelta(seconds=rng.randrange(5 * 86400))
                if rng.random() < 0.3:
                    start = start.replace(minute=0, second=0, hour=0 if rng.random() < 0.5 else start.hour)
                params["start"] = iso(start)
            if rng.random() < 0.85:
                end = (start or first) + timedelta(seconds=rng.randrange(1, 4 * 86400))
                if rng.random() < 0.3:
                    end = end.replace(minute=0, second=0, hour=0 if rng.random() < 0.5 else end.hour)
                params["end"] = iso(end)
            for name, choices in (("service", ["checkout", "auth"]), ("endpoint", ["/cart", "/login"])):
                if rng.random() < 0.4:
                    exact[name] = params[name] = rng.choice(choices)
            want = summarize_all(select(events, start=start, end=end, **exact))
            fast = self.client.get(URL, params).json()
            raw = self.client.get(URL, {**params, "status_min": 100}).json()  # same rows, raw path
            self.assertEqual(raw["source"], "raw")
            close(self, fast, want, f"fast {round_} {params}")
            close(self, raw, want, f"raw {round_} {params}")
            top_fast = self.client.get("/api/requests/top-endpoints/", {**params, "limit": 1000}).json()
            top_raw = self.client.get("/api/requests/top-endpoints/",
                                      {**params, "limit": 1000, "status_min": 100}).json()
            self.assertEqual([(r["service"], r["endpoint"], r["hits"], r["errors"]) for r in top_fast["results"]],
                             [(r["service"], r["endpoint"], r["hits"], r["errors"]) for r in top_raw["results"]])
            for a, b in zip(top_fast["results"], top_raw["results"], strict=True):
                self.assertAlmostEqual(a["avg_latency_ms"], b["avg_latency_ms"], delta=1e-9 * b["avg_latency_ms"])
                self.assertEqual(a["max_latency_ms"], b["max_latency_ms"])


class RollupPlanTests(TestCase):
    """How a range is cut into rollup pieces and raw edges (no TimescaleDB watermark here)."""

    def test_an_unaligned_multi_day_range_uses_days_hours_and_raw_edges(self):
        from unittest import mock

        from observability.models import ApiRequestDaily, ApiRequestHourly

        start = BASE_TIME.replace(hour=20, minute=30)       # 2026-03-02 20:30
        end = BASE_TIME + timedelta(days=3, hours=-6, minutes=15)  # 2026-03-05 04:15
        with mock.patch.object(rollups, "cutoff", return_value=None):
            pieces, edges = rollups.plan({"start": start, "end": end})
        day = BASE_TIME.replace(hour=0)
        self.assertEqual(pieces, [
            (ApiRequestDaily, day + timedelta(days=1), day + timedelta(days=3)),
            (ApiRequestHourly, start.replace(hour=21, minute=0), day + timedelta(days=1)),
            (ApiRequestHourly, day + timedelta(days=3), end.replace(minute=0)),
        ])
        self.assertEqual(len(edges), 2)

    def test_days_past_the_daily_watermark_are_read_from_the_hourly_rollup(self):
        from unittest import mock

        from observability.models import ApiRequestDaily, ApiRequestHourly

        day = BASE_TIME.replace(hour=0)
        with mock.patch.object(rollups, "cutoff", return_value=day + timedelta(days=2)):
            pieces, edges = rollups.plan({"start": day, "end": day + timedelta(days=5)})
        self.assertEqual(pieces, [(ApiRequestDaily, day, day + timedelta(days=2)),
                                  (ApiRequestHourly, day + timedelta(days=2), day + timedelta(days=5))])
        self.assertEqual(edges, [])
