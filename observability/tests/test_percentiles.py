"""Percentiles: approx within (γ-1)/(γ+1) of an exact computation done here, late data, overflow.

The reference is computed in the test from the events themselves: latencies below 0.01 ms count
as 0 and latencies above 86,400,000 ms as 86,400,000 ms (API.md), then PostgreSQL's
percentile_cont interpolation.
"""

import random
from collections import defaultdict
from datetime import timedelta

from django.db import connection
from django.test import SimpleTestCase, TransactionTestCase

from observability import analytics, rollups
from observability.models import ApiRequest
from observability.tests.utils import (
    BASE_TIME,
    PERCENTILES,
    ApiTransactionTestCase,
    fast_source,
    iso,
    make_event,
    parse_time,
    percentile,
    post_ingest,
)

BOUND = (1.02 - 1) / (1.02 + 1)
CAP = 86_400_000.0


def reference(latencies: list[float], precision: str = "approx") -> dict:
    """Exact percentiles as the API defines them; approx answers count values below 0.01 ms as 0."""
    values = [0.0 if v < 0.01 and precision == "approx" else min(v, CAP) for v in latencies]
    return {key: percentile(values, fraction) for key, fraction in PERCENTILES.items()}


def random_latency(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.04:
        return 0.0
    if roll < 0.08:
        return rng.uniform(0, 0.01)  # below the zero bin's edge
    if roll < 0.10:
        return rng.choice([1e308, 1.7e308, 9e7, 86_400_000.0])  # stored before the cap
    if roll < 0.15:
        return rng.uniform(1e4, 5e6)  # the tail
    return rng.lognormvariate(3, 1.2)


def convert_to_columnstore(relation: str) -> int:
    """Convert every chunk of a continuous aggregate with columnstore enabled; how many were."""
    if not rollups.has_histograms():
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks(%s) c",
                       [relation])
        return cursor.fetchone()[0]


def store(rows: list[dict]) -> None:
    """Insert rows without validation (as old versions could), then refresh what they touched."""
    ApiRequest.objects.bulk_create([ApiRequest(**row) for row in rows])
    rollups.refresh_after_write(row["time"] for row in rows)


def rows_for(n, *, rng, start, span, services=("api", "web"), endpoints=("/a", "/b", "/c")):
    return [
        {"time": start + timedelta(seconds=rng.uniform(0, span.total_seconds())),
         "service": rng.choice(services), "endpoint": rng.choice(endpoints), "method": "GET",
         "status_code": rng.choice([200, 200, 500]), "latency_ms": random_latency(rng)}
        for _ in range(n)
    ]


class BinRankingTests(SimpleTestCase):
    """The ranking of one group's bins as the database hands them over (analytics._rank_group)."""

    def test_bins_handed_over_out_of_order_rank_as_the_events_they_count(self):
        # (bin, count) pairs in the order a hash aggregate may add them up: not ascending.
        pairs = [(300, 2), (-1, 1), (150, 7), (40, 1), (151, 3)]
        events = [rollups.bin_value(b) for b, n in pairs for _ in range(n)]
        row = ("svc", [b for b, _ in pairs], [n for _, n in pairs], 4, 123.5, 9.0)
        result = {}
        analytics._rank_group(row, 1, True, result)
        got = result[("svc",)]
        for key, fraction in PERCENTILES.items():
            self.assertAlmostEqual(got[key], percentile(events, fraction), places=9, msg=key)
        self.assertEqual(got["counts"], {"hits": len(events), "errors": 4, "latency_sum": 123.5,
                                         "max_latency": 9.0})

    def test_a_group_over_no_rows_answers_nothing(self):
        result = {}
        analytics._rank_group((None, None), 0, False, result)
        self.assertEqual(result, {})


class ApproxPercentileTests(ApiTransactionTestCase):
    """Random windows over data that is partly materialized (TimescaleDB) and partly not."""

    def setUp(self):
        self.tearDown()  # nothing materialized by an earlier test may linger in the aggregates

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def assert_within_bound(self, got: dict, latencies: list[float], msg, precision="approx"):
        """Within the bound of the exact value (exact answers: within float rounding of it)."""
        want = reference(latencies, precision)
        bound = BOUND if precision == "approx" else 1e-12
        for key in PERCENTILES:
            if want[key] is None:
                self.assertIsNone(got[key], f"{key} {msg}")
                continue
            error = abs(got[key] - want[key])
            self.assertLessEqual(error, bound * want[key] * (1 + 1e-9) + 1e-12,
                                 f"{key}: {got[key]} vs exact {want[key]} {msg}")

    def test_approx_percentiles_stay_within_the_bound_across_day_hour_and_raw_seams(self):
        rng = random.Random(2026)
        first = BASE_TIME - timedelta(days=4)
        rows = rows_for(1500, rng=rng, start=first, span=timedelta(days=3))
        rows += [{"time": BASE_TIME - timedelta(hours=30), "service": "solo", "endpoint": "/one",
                  "method": "GET", "status_code": 200, "latency_ms": 0.004}]
        rows += [{"time": BASE_TIME - timedelta(hours=29, minutes=m), "service": "duo", "endpoint": "/two",
                  "method": "GET", "status_code": 200, "latency_ms": v} for m, v in ((1, 3.0), (2, 1e308))]
        store(rows)
        # Materialize up to BASE_TIME - 1 day (on TimescaleDB); later rows stay real-time.
        rollups.refresh_all(None, BASE_TIME - timedelta(days=1))
        newer = rows_for(600, rng=rng, start=BASE_TIME - timedelta(days=1), span=timedelta(days=1, hours=5))
        store(newer)
        rows += newer
        expected_precision = "approx" if rollups.has_histograms() else "exact"
        filters = [{}, {"service": "api"}, {"endpoint": "/b"}, {"service": "web", "endpoint": "/c"},
                   {"service": "solo"}, {"service": "duo"}]
        for round_ in range(30):
            start = first + timedelta(seconds=rng.randrange(4 * 86400))
            if round_ % 3 == 0:
                start = rollups.floor(start, timedelta(days=1) if round_ % 2 else timedelta(hours=1))
            end = start + timedelta(seconds=rng.randrange(3600, 4 * 86400))
            if round_ % 4 == 0:
                end = rollups.ceil(end, timedelta(hours=1))
            chosen = rng.choice(filters)
            params = {"start": iso(start), "end": iso(end), "precision": "approx", **chosen}
            body = self.client.get("/api/requests/kpis/", params).json()
            selected = [r for r in rows if start <= r["time"] < end
                        and all(r[k] == v for k, v in chosen.items())]
            self.assertEqual(body["hits"], len(selected), params)
            if not selected:
                continue
            if body["source"] == "hourly":
                self.assertEqual(body["precision"], expected_precision, params)
            self.assertEqual(body["max_relative_error"], BOUND if body["precision"] == "approx" else 0)
            self.assert_within_bound(body, [r["latency_ms"] for r in selected], params, body["precision"])
            # The same window per series, ranked by an approx percentile over every series.
            top = self.client.get("/api/requests/top-endpoints/", {**params, "sort": "p99_latency_ms",
                                                                    "limit": 1000}).json()
            for row in top["results"]:
                series = [r["latency_ms"] for r in selected
                          if (r["service"], r["endpoint"]) == (row["service"], row["endpoint"])]
                self.assertEqual(row["hits"], len(series))
                self.assert_within_bound(row, series, f"{params} {row['service']}{row['endpoint']}",
                                         top["precision"])
            p99s = [row["p99_latency_ms"] for row in top["results"]]
            self.assertEqual(p99s, sorted(p99s, reverse=True))
        for interval, width in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
            start, end = rollups.floor(first, width), BASE_TIME + timedelta(days=1)
            body = self.client.get("/api/requests/timeseries/", {"interval": interval, "start": iso(start),
                                                                  "end": iso(end), "precision": "approx"}).json()
            self.assertEqual(body["precision"], expected_precision)
            self.assertEqual(sum(r["hits"] for r in body["results"]), len(rows))
            for row in body["results"]:
                latencies = [r["latency_ms"] for r in rows if iso(rollups.floor(r["time"], width)) == row["bucket"]]
                self.assertEqual(row["hits"], len(latencies))
                self.assert_within_bound(row, latencies, f"{interval} {row['bucket']}", body["precision"])

    def test_late_events_show_up_at_once_in_approx_percentiles(self):
        old = BASE_TIME - timedelta(days=3)
        events = [make_event(time=old + timedelta(minutes=m), latency_ms=10.0) for m in range(20)]
        post_ingest(self.client, events)
        rollups.refresh_all(None, BASE_TIME)
        # The per-series daily histograms in columnstore, as their policy leaves them a day on:
        # a late event must reach converted chunks too.
        self.assertEqual(convert_to_columnstore("apirequest_latency_daily") > 0, rollups.has_histograms())
        params = {"start": iso(old - timedelta(days=1)), "end": iso(old + timedelta(days=2)), "precision": "approx"}
        before = self.client.get("/api/requests/kpis/", params).json()
        self.assert_within_bound(before, [10.0] * 20, "before", before["precision"])
        ranked = {**params, "sort": "p90_latency_ms"}
        top = self.client.get("/api/requests/top-endpoints/", ranked).json()["results"]
        self.assert_within_bound(top[0], [10.0] * 20, "top before", before["precision"])
        late = [make_event(time=old + timedelta(minutes=30 + m), latency_ms=5000.0) for m in range(10)]
        self.assertEqual(post_ingest(self.client, late).json()["inserted"], 10)
        after = self.client.get("/api/requests/kpis/", params).json()
        self.assertEqual(after["hits"], 30)
        self.assert_within_bound(after, [10.0] * 20 + [5000.0] * 10, "after", after["precision"])
        self.assertGreater(after["p90_latency_ms"], 4900)
        top = self.client.get("/api/requests/top-endpoints/", ranked).json()
        self.assertEqual([r["hits"] for r in top["results"]], [30])
        self.assert_within_bound(top["results"][0], [10.0] * 20 + [5000.0] * 10, "top after", top["precision"])
        series = self.client.get("/api/requests/timeseries/", {**params, "interval": "day"}).json()
        self.assertEqual([r["hits"] for r in series["results"]], [30])
        self.assert_within_bound(series["results"][0], [10.0] * 20 + [5000.0] * 10, "timeseries",
                                 series["precision"])


class ExactPercentileTests(ApiTransactionTestCase):
    """Exact percentiles per group (series, bucket, hourly row) equal percentile_cont computed here.

    The groups are built to catch an off-by-one rank or a lost value: one event, two events,
    ties, zeros, latencies stored above the cap, and random ones; on SQLite they exercise the
    sorted_values aggregate (apps.py), elsewhere percentile_cont itself.
    """

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    @staticmethod
    def groups(rng: random.Random) -> dict[tuple[str, str], list[float]]:
        return {
            ("a", "/one"): [rng.lognormvariate(3, 1)],
            ("a", "/two"): [7.5, 1e308],
            ("a", "/ties"): [rng.choice([0.0, 5.0, 5.0, 12.25, 12.25, 12.25, 40.0]) for _ in range(57)],
            ("b", "/zeros"): [0.0] * 9 + [0.004, 3.0],
            ("b", "/huge"): [rng.choice([1e308, 1.7e308, 9e7, 86_400_000.0, 1.5]) for _ in range(23)],
            ("c", "/random"): [random_latency(rng) for _ in range(301)],
        }

    def test_every_group_answers_percentile_cont_of_its_own_capped_latencies(self):
        rng = random.Random(91)
        start, hours = BASE_TIME - timedelta(hours=3), 3
        rows, by_series, by_hour, by_row = [], defaultdict(list), defaultdict(list), defaultdict(list)
        for (service, endpoint), latencies in self.groups(rng).items():
            for i, value in enumerate(latencies):
                # The one- and two-event series stay in one hour; the others spread over three.
                hour = 0 if len(latencies) <= 2 else i % hours
                time = start + timedelta(hours=hour, seconds=rng.uniform(0, 3599))
                rows.append({"time": time, "service": service, "endpoint": endpoint, "method": "GET",
                             "status_code": 200, "latency_ms": value})
                by_series[(service, endpoint)].append(value)
                by_hour[hour].append(value)
                by_row[(hour, service, endpoint)].append(value)
        store(rows)
        window = {"start": iso(start), "end": iso(start + timedelta(hours=hours))}

        kpis = self.client.get("/api/requests/kpis/", window).json()
        self.assertEqual({key: kpis[key] for key in PERCENTILES}, reference(sum(by_series.values(), []), "exact"))

        for params in ({"sort": "p95_latency_ms"}, {"sort": "hits", "with_p95": "true"}):
            top = self.client.get("/api/requests/top-endpoints/", {**window, **params, "limit": 1000}).json()
            self.assertEqual(len(top["results"]), len(by_series), params)
            for row in top["results"]:
                self.assertEqual({key: row[key] for key in PERCENTILES},
                                 reference(by_series[(row["service"], row["endpoint"])], "exact"), (params, row))

        series = self.client.get("/api/requests/timeseries/", {**window, "interval": "hour"}).json()
        self.assertEqual([parse_time(r["bucket"]) for r in series["results"]],
                         [start + timedelta(hours=h) for h in range(hours)])
        for hour, row in enumerate(series["results"]):
            self.assertEqual({key: row[key] for key in PERCENTILES}, reference(by_hour[hour], "exact"), hour)

        hourly = self.client.get("/api/requests/hourly/", {**window, "page_size": 1000}).json()
        self.assertEqual(len(hourly["results"]), len(by_row))
        for row in hourly["results"]:
            hour = (parse_time(row["bucket"]) - start) // timedelta(hours=1)
            want = reference(by_row[(hour, row["service"], row["endpoint"])], "exact")["p95_latency_ms"]
            self.assertEqual(row["p95_latency_ms"], want, row)


class OverflowTests(ApiTransactionTestCase):
    """Two events stored at 1e308 ms (before the cap) count as 86,400,000 ms everywhere."""

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def test_every_aggregate_endpoint_answers_with_capped_latencies(self):
        rows = [{"time": BASE_TIME + timedelta(minutes=m), "service": "s", "endpoint": "/e", "method": "GET",
                 "status_code": 200, "latency_ms": v} for m, v in ((1, 1e308), (2, 1e308), (3, 4.0))]
        store(rows)
        for materialized in (False, True):
            if materialized:
                rollups.refresh_all(None, BASE_TIME + timedelta(days=2))
            window = {"start": iso(BASE_TIME - timedelta(days=1)), "end": iso(BASE_TIME + timedelta(days=1))}
            for precision in ("exact", "approx"):
                kpis = self.client.get("/api/requests/kpis/", {**window, "precision": precision})
                self.assertEqual(kpis.status_code, 200, kpis.content)
                body = kpis.json()
                self.assertEqual(body["max_latency_ms"], CAP)
                self.assertAlmostEqual(body["avg_latency_ms"], (2 * CAP + 4.0) / 3)
                self.assertLessEqual(abs(body["p99_latency_ms"] - CAP), BOUND * CAP)
                top = self.client.get("/api/requests/top-endpoints/", {**window, "precision": precision,
                                                                      "with_p95": "true"})
                self.assertEqual(top.status_code, 200, top.content)
                self.assertEqual(top.json()["results"][0]["max_latency_ms"], CAP)
                series = self.client.get("/api/requests/timeseries/", {**window, "precision": precision,
                                                                      "interval": "hour"})
                self.assertEqual(series.status_code, 200, series.content)
                self.assertEqual(series.json()["results"][0]["max_latency_ms"], CAP)
            # The raw path (a filter the rollups can't answer) caps the same way.
            raw = self.client.get("/api/requests/kpis/", {**window, "status_min": 100}).json()
            self.assertEqual((raw["source"], raw["max_latency_ms"]), ("raw", CAP))
            for url in ("/api/requests/hourly/", "/api/requests/daily/"):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 200, response.content)
                rows = response.json()["results"]
                self.assertEqual(len(rows), 1, (url, materialized, rows))
                row = rows[0]
                self.assertEqual((row["hits"], row["max_latency_ms"]), (3, CAP))
                self.assertAlmostEqual(row["avg_latency_ms"], (2 * CAP + 4.0) / 3)
                self.assertAlmostEqual(row["p95_latency_ms"], CAP)


class FallbackTests(ApiTransactionTestCase):
    """Where the rollups are plain views, answers are read from raw and approx is exact."""

    def tearDown(self):
        ApiRequest.objects.all().delete()
        rollups.refresh_all(None, None)

    def test_answers_equal_the_raw_path_and_approx_is_exact_without_histograms(self):
        rng = random.Random(5)
        rows = rows_for(400, rng=rng, start=BASE_TIME - timedelta(days=2), span=timedelta(days=2))
        store(rows)
        window = {"start": iso(BASE_TIME - timedelta(days=2, hours=-3)), "end": iso(BASE_TIME)}
        fast = self.client.get("/api/requests/kpis/", {**window, "precision": "approx"}).json()
        raw = self.client.get("/api/requests/kpis/", {**window, "status_min": 100}).json()
        self.assertEqual(fast["source"], fast_source())
        if rollups.has_histograms():
            self.assertEqual(fast["precision"], "approx")
            return
        self.assertEqual((fast["source"], fast["precision"], fast["max_relative_error"]), ("raw", "exact", 0.0))
        self.assertEqual({k: v for k, v in fast.items() if k != "precision"},
                         {k: v for k, v in raw.items() if k != "precision"})
        exact = self.client.get("/api/requests/top-endpoints/", {**window, "with_p95": "true"}).json()
        approx = self.client.get("/api/requests/top-endpoints/", {**window, "with_p95": "true",
                                                                   "precision": "approx"}).json()
        self.assertEqual(approx, exact)


class ConcurrentRefreshTests(TransactionTestCase):
    """A late write while a refresh policy runs still answers 201, and the refresh is retried."""

    def test_a_refresh_blocked_by_a_concurrent_one_is_retried_and_never_fails_the_write(self):
        from unittest import mock

        from django.db import OperationalError

        class Locked(Exception):
            pgcode = "55P03"

        def locked():
            error = OperationalError("could not refresh continuous aggregate due to a concurrent refresh")
            error.__cause__ = Locked()
            return error

        calls = []

        def call_refresh(relation, start, end):
            calls.append(relation)
            if len(calls) <= 2:
                raise locked()

        marks = {r.relation: BASE_TIME for r in rollups.aggregates()}
        with (mock.patch.object(rollups, "_call_refresh", side_effect=call_refresh),
              mock.patch.object(rollups, "watermarks", return_value=marks),
              mock.patch.object(rollups.db, "rollups_are_continuous", return_value=True),
              mock.patch.object(rollups.db, "is_continuous_aggregate", return_value=True),
              mock.patch.object(rollups.time, "sleep")):
            rollups.refresh_after_write([BASE_TIME - timedelta(days=1)])
            # (The fine tiers are kept exact over their last two days only: an event at the
            # fixed BASE_TIME is not refreshed there.)
            recent = [r for r in rollups.aggregates() if r.window is None]
            # The first aggregate refreshed was tried three times, then every other one once.
            self.assertEqual(calls[:3], [recent[0].relation] * 3)
            self.assertEqual(len(calls), len(recent) + 2)
            calls.clear()
            with mock.patch.object(rollups, "_call_refresh", side_effect=lambda *a: (_ for _ in ()).throw(locked())):
                self.assertEqual(rollups.refresh_after_write([BASE_TIME - timedelta(days=1)]),
                                 len(recent))  # gave up quietly, wrote nothing wrong
