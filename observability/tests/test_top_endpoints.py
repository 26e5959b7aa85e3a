import random
from collections import defaultdict
from datetime import timedelta

from django.db import connection

from observability import db, ingest, rollups
from observability.models import ApiRequest
from observability.tests.utils import (
    BASE_TIME,
    PERCENTILES,
    ApiTestCase,
    fast_source,
    iso,
    make_event,
    make_events,
    parse_time,
    summarize_all,
)

URL = "/api/requests/top-endpoints/"
CAP = rollups.CAP_MS
SORT_KEYS = ("hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms", *PERCENTILES)


def ranking(events, sort="hits", order="desc", limit=10):
    """Series ranked as the contract says, computed from the events."""
    groups = defaultdict(list)
    for e in events:
        groups[(e["service"], e["endpoint"])].append(e)
    rows = [{"service": s, "endpoint": ep, **summarize_all(g)} for (s, ep), g in groups.items()]
    rows.sort(key=lambda r: (r["service"], r["endpoint"]))
    rows.sort(key=lambda r: r[sort], reverse=order == "desc")
    return rows[:limit]


class TopEndpointsTests(ApiTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.events = make_events(900, span=timedelta(hours=8), seed=17)
        # Two series with identical numbers, to check the tie-break.
        cls.events += [make_event(service="b-tie", endpoint="/same", trace_id="t1"),
                       make_event(service="a-tie", endpoint="/same", trace_id="t2")]
        ingest.ingest_events(list(cls.events), strict=True)

    def top(self, **params):
        response = self.client.get(URL, params)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def assert_ranked(self, got, want, with_p95):
        self.assertEqual([(r["service"], r["endpoint"]) for r in got],
                         [(r["service"], r["endpoint"]) for r in want])
        keys = {"service", "endpoint", "hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms"}
        for g, w in zip(got, want, strict=True):
            self.assertEqual(set(g), keys | (set(PERCENTILES) if with_p95 else set()))
            self.assertEqual((g["hits"], g["errors"]), (w["hits"], w["errors"]))
            for key in keys - {"service", "endpoint", "hits", "errors"} | (set(PERCENTILES) if with_p95 else set()):
                self.assertAlmostEqual(g[key], w[key], delta=1e-9 * max(1, abs(w[key])), msg=key)

    def test_the_default_is_the_ten_busiest_series_without_p95(self):
        body = self.top()
        self.assertEqual(set(body), {"results", "precision", "max_relative_error", "source"})
        self.assertEqual(body["source"], fast_source())
        self.assert_ranked(body["results"], ranking(self.events), with_p95=False)

    def test_every_sort_key_in_both_orders(self):
        for sort in SORT_KEYS:
            for order in ("desc", "asc"):
                body = self.top(sort=sort, order=order, limit=1000)
                self.assert_ranked(body["results"], ranking(self.events, sort, order, 1000),
                                   with_p95=sort in PERCENTILES)

    def test_ties_are_broken_by_service_then_endpoint(self):
        rows = self.top(sort="hits", order="asc", limit=1000)["results"]
        ties = [(r["service"], r["endpoint"]) for r in rows if r["hits"] == 1]
        self.assertEqual(ties[:2], [("a-tie", "/same"), ("b-tie", "/same")])

    def test_with_p95_adds_the_exact_percentile(self):
        body = self.top(with_p95="true", limit=3)
        self.assert_ranked(body["results"], ranking(self.events, limit=3), with_p95=True)

    def test_filters_apply_and_raw_only_filters_switch_the_source(self):
        start, end = BASE_TIME + timedelta(hours=1, minutes=30), BASE_TIME + timedelta(hours=5)
        chosen = [e for e in self.events if start <= parse_time(e["time"]) < end]
        body = self.top(start=iso(start), end=iso(end), limit=1000)
        self.assertEqual(body["source"], fast_source())
        self.assert_ranked(body["results"], ranking(chosen, limit=1000), with_p95=False)
        body = self.top(status_min=500, sort="errors", with_p95="true")
        self.assertEqual(body["source"], "raw")
        errors = [e for e in self.events if e["status_code"] >= 500]
        self.assert_ranked(body["results"], ranking(errors, sort="errors"), with_p95=True)

    def test_limit_cuts_the_list(self):
        self.assertEqual(len(self.top(limit=2)["results"]), 2)
        self.assertEqual(len(self.top(limit=1000)["results"]), len(ranking(self.events, limit=1000)))

    def test_an_empty_selection_is_an_empty_list(self):
        self.assertEqual(self.top(service="nobody")["results"], [])

    def test_bad_parameters_are_400s_naming_them(self):
        for params in ({"sort": "latency"}, {"order": "up"}, {"limit": "0"}, {"limit": "1001"},
                       {"limit": "ten"}, {"with_p95": "perhaps"}, {"status_code": "x"}):
            response = self.client.get(URL, params)
            self.assertEqual(response.status_code, 400, params)
            self.assertIn(next(iter(params)), response.json())


class TopByHitsTests(ApiTestCase):
    """sort=hits, where SQLite ranks on counts first and aggregates the chosen series only."""

    @classmethod
    def setUpTestData(cls):
        rng = random.Random(23)
        cls.start = BASE_TIME + timedelta(hours=2)
        cls.events = make_events(1500, span=timedelta(hours=6), seed=29)
        # In one hour, a series of 60 events, then three of 40 (the others have about 21 each):
        # limits 2 and 3 cut the tie.
        for service, n in (("busy", 60), ("tie-c", 40), ("tie-a", 40), ("tie-b", 40)):
            cls.events += [make_event(service=service, endpoint="/same", trace_id=f"{service}-{i}",
                                      time=cls.start + timedelta(seconds=rng.uniform(0, 3599)),
                                      latency_ms=round(rng.lognormvariate(3, 1), 3)) for i in range(n)]
        ingest.ingest_events(list(cls.events), strict=True)

    def top(self, **params):
        response = self.client.get(URL, params)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()["results"]

    def test_the_limit_cuts_a_tie_of_hits_by_service_then_endpoint(self):
        hour = [e for e in self.events if self.start <= parse_time(e["time"]) < self.start + timedelta(hours=1)]
        window = {"start": iso(self.start), "end": iso(self.start + timedelta(hours=1))}
        for order in ("desc", "asc"):
            for limit in (1, 2, 3, 4, 1000):
                got = self.top(**window, order=order, limit=limit, with_p95="true")
                want = ranking(hour, "hits", order, limit)
                self.assertEqual([(r["service"], r["endpoint"], r["hits"]) for r in got],
                                 [(r["service"], r["endpoint"], r["hits"]) for r in want], (order, limit))
        self.assertEqual([r["service"] for r in self.top(**window, limit=4)][1:], ["tie-a", "tie-b", "tie-c"])

    def test_sums_add_up_in_the_order_of_one_grouping_of_every_series(self):
        # avg_latency_ms to the last bit: a float sum depends on the order of its terms, and the
        # numbers must not change with the way the API reads them. The grouping below is
        # planned by the database as the API's single grouping of every series always was.
        if not db.groups_by_sorting():
            self.skipTest(f"{db.describe()} sums in an order of its own (hash aggregates, parallel scans)")
        table = ApiRequest._meta.db_table
        for start, end in ((self.start, self.start + timedelta(hours=1)), (BASE_TIME, BASE_TIME + timedelta(hours=6))):
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT service, endpoint, count(*), sum(min(latency_ms, {CAP!r})) FROM {table}"
                               " WHERE time >= %s AND time < %s GROUP BY service, endpoint", [start, end])
                want = {(s, e): total / n for s, e, n, total in cursor.fetchall()}
            got = self.top(start=iso(start), end=iso(end), limit=1000)
            self.assertEqual({(r["service"], r["endpoint"]): r["avg_latency_ms"] for r in got}, want)
