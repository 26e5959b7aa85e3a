"""The checks /hourly/ and /daily/ share; test_hourly.py and test_daily.py run them."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.core.management import call_command

from observability import db, rollups
from observability.models import ApiRequest
from observability.tests.utils import (
    BASE_TIME,
    floor_to,
    iso,
    make_event,
    make_events,
    parse_time,
    post_ingest,
    skip_unless_timescale,
    summarize,
)

CLOSE = 1e-9


def expected_rows(events: list[dict], width: timedelta) -> list[dict]:
    """The rollup rows computed from the events themselves, in contract order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for event in events:
        key = (floor_to(parse_time(event["time"]), width), event["service"], event["endpoint"])
        groups[key].append(event)
    return [
        {"bucket": iso(bucket), "service": service, "endpoint": endpoint, **summarize(group)}
        for (bucket, service, endpoint), group in sorted(groups.items())
    ]


class _RollupCase:
    url = ""
    width = timedelta(hours=1)
    relation = ""

    def assert_rows_match(self, actual: list[dict], expected: list[dict]):
        self.assertEqual([(r["bucket"], r["service"], r["endpoint"]) for r in actual],
                         [(r["bucket"], r["service"], r["endpoint"]) for r in expected])
        for got, want in zip(actual, expected, strict=True):
            self.assertEqual(set(got), {"bucket", "service", "endpoint", "hits", "errors", "error_rate",
                                        "avg_latency_ms", "max_latency_ms", "p95_latency_ms"})
            self.assertEqual((got["hits"], got["errors"]), (want["hits"], want["errors"]), got)
            for key in ("error_rate", "avg_latency_ms", "max_latency_ms", "p95_latency_ms"):
                self.assertAlmostEqual(got[key], want[key], delta=CLOSE * max(1.0, abs(want[key])),
                                       msg=f"{key} of {got}")



class RollupChecks(_RollupCase):
    """Mixed into a TestCase with `url`, `width` and `relation` set."""

    span = timedelta(hours=30)

    def fetch(self, **params):
        params.setdefault("page_size", 1000)
        response = self.client.get(self.url, params)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def seed(self, n=600, **kwargs):
        events = make_events(n, span=kwargs.pop("span", self.span), **kwargs)
        response = post_ingest(self.client, events)
        self.assertEqual(response.json()["inserted"], n)
        return events

    def test_rows_match_buckets_computed_from_the_events(self):
        events = self.seed()
        body = self.fetch()
        self.assertEqual(body["count"], len(expected_rows(events, self.width)))
        self.assert_rows_match(body["results"], expected_rows(events, self.width))

    def test_events_on_a_bucket_boundary_open_the_next_bucket(self):
        edge = floor_to(BASE_TIME, self.width) + self.width
        events = [make_event(time=edge - timedelta(microseconds=1), latency_ms=1),
                  make_event(time=edge, latency_ms=2), make_event(time=edge, latency_ms=4)]
        post_ingest(self.client, events)
        rows = self.fetch()["results"]
        self.assertEqual([(r["bucket"], r["hits"]) for r in rows],
                         [(iso(edge - self.width), 1), (iso(edge), 2)])
        self.assertAlmostEqual(rows[1]["p95_latency_ms"], 2 + 0.95 * 2)

    def test_service_and_endpoint_filters_select_one_series(self):
        events = self.seed()
        chosen = [e for e in events if e["service"] == "search" and e["endpoint"] == "/cart"]
        body = self.fetch(service="search", endpoint="/cart")
        self.assert_rows_match(body["results"], expected_rows(chosen, self.width))

    def test_start_and_end_select_buckets_by_their_start_half_open(self):
        events = self.seed(span=self.width * 5)
        first = floor_to(BASE_TIME, self.width)
        # An unaligned start excludes the bucket it falls in; end excludes the bucket it starts.
        start, end = first + self.width / 2, first + self.width * 3
        chosen = [e for e in events
                  if start <= floor_to(parse_time(e["time"]), self.width) < end]
        body = self.fetch(start=iso(start), end=iso(end))
        self.assert_rows_match(body["results"], expected_rows(chosen, self.width))
        self.assertEqual({r["bucket"] for r in body["results"]},
                         {iso(first + self.width), iso(first + self.width * 2)})

    def test_bad_filter_values_are_400s_naming_them(self):
        for params in ({"start": "soon"}, {"end": "2026-02-30"}, {"page_size": "0"}):
            response = self.client.get(self.url, params)
            self.assertEqual(response.status_code, 400, params)
            self.assertIn(next(iter(params)), response.json())

    def test_pagination_keeps_the_contract_order(self):
        events = self.seed()
        expected = expected_rows(events, self.width)
        first = self.fetch(page_size=5)
        second = self.client.get(first["next"]).json()
        self.assert_rows_match(first["results"] + second["results"], expected[:10])

    def test_just_ingested_events_are_visible_at_once(self):
        self.seed(n=50)
        before = {(r["bucket"], r["service"], r["endpoint"]): r["hits"] for r in self.fetch()["results"]}
        fresh = make_event(time=BASE_TIME + timedelta(minutes=1), service="new-service")
        post_ingest(self.client, [fresh])
        after = {(r["bucket"], r["service"], r["endpoint"]): r["hits"] for r in self.fetch()["results"]}
        key = (iso(floor_to(BASE_TIME, self.width)), "new-service", fresh["endpoint"])
        self.assertNotIn(key, before)
        self.assertEqual(after[key], 1)


class LateDataChecks(_RollupCase):
    """Mixed into a TransactionTestCase: refresh_continuous_aggregate needs committed data."""

    def tearDown(self):
        # The flush that follows truncates the raw table but not what the continuous
        # aggregates materialized: delete and refresh so the next test starts empty.
        ApiRequest.objects.all().delete()
        for relation in [r.relation for r in rollups.aggregates()]:
            rollups.refresh(relation, None, None)

    def materialize(self):
        for relation in ("apirequest_hourly", "apirequest_daily"):
            call_command(f"refresh_{relation}", stdout=open("/dev/null", "w"))  # noqa: SIM115

    def rows(self):
        return self.client.get(self.url, {"page_size": 1000}).json()["results"]

    def test_events_ingested_days_late_show_up_in_an_already_materialized_bucket(self):
        old = BASE_TIME - timedelta(days=3)
        events = make_events(40, start=old, span=timedelta(hours=3), seed=11)
        post_ingest(self.client, events)
        self.materialize()
        if db.rollups_are_continuous():
            watermark = rollups.watermark(self.relation)
            self.assertIsNotNone(watermark, "the refresh should have materialized the old buckets")
            self.assertGreaterEqual(watermark, old + timedelta(hours=3))
        late = make_events(25, start=old, span=timedelta(hours=3), seed=12, service="late")
        response = post_ingest(self.client, late)
        self.assertEqual(response.json()["inserted"], 25)
        self.assert_rows_match(self.rows(), expected_rows(events + late, self.width))

    def test_a_single_late_event_posted_through_crud_shows_up(self):
        old = BASE_TIME - timedelta(days=5)
        events = [make_event(time=old + timedelta(minutes=m), latency_ms=m) for m in range(10)]
        post_ingest(self.client, events)
        self.materialize()
        late = make_event(time=old + timedelta(minutes=30), latency_ms=999)
        self.assertEqual(self.client.post("/api/requests/", late, content_type="application/json")
                         .status_code, 201)
        rows = self.rows()
        self.assertEqual(sum(r["hits"] for r in rows), 11)
        self.assertEqual(max(r["max_latency_ms"] for r in rows), 999)

    def test_the_refresh_command_explains_itself_where_there_is_nothing_to_refresh(self):
        from io import StringIO

        out = StringIO()
        call_command(f"refresh_{self.relation}", "--start", "2026-01-01", "--end", "2026-01-02", stdout=out)
        if db.rollups_are_continuous():
            lines = out.getvalue().splitlines()
            # Off a terminal: a progress line per aggregate of this width (counts, then the
            # latency histograms), the last at 100%, then the summary.
            self.assertGreaterEqual(len(lines), 2, lines)
            self.assertTrue(lines[-2].startswith("100.0%") and "aggregates" in lines[-2], lines)
            self.assertTrue(lines[-1].startswith(f"Refreshed {self.relation}"), lines)
        else:
            self.assertIn("nothing to refresh", out.getvalue())

    def test_rollups_are_continuous_aggregates_over_a_hypertable_on_timescaledb(self):
        skip_unless_timescale(self, "checks the TimescaleDB objects the migrations build")
        self.assertTrue(db.is_hypertable("observability_apirequest"))
        self.assertTrue(db.is_continuous_aggregate(self.relation))
