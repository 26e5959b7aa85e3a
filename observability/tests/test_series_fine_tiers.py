"""The series' minute tiers (migration 0010): a read filtered by service or endpoint hands what the
hourly aggregates have not materialized to the minute tier, as reads of all traffic do, and still
answers as the raw events do (counts exact, approx percentiles within the bound).
"""

import random
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.test import SimpleTestCase

from observability import retention, rollups
from observability.constants import DAY, FINE_WINDOW_DAYS, HOUR, MINUTE
from observability.models import ApiRequest, ApiRequestMinute, LatencyMinute, ServiceLatencyMinute
from observability.tests.test_global_tiers import TimescaleTestCase
from observability.tests.test_percentiles import reference, rows_for, store
from observability.tests.utils import PERCENTILES, iso

SERIES_FAMILIES = {rollups.COUNTS: ApiRequestMinute, rollups.LATENCY: LatencyMinute,
                   rollups.SERVICE_LATENCY: ServiceLatencyMinute}
HOURLY_SERIES = tuple(family.hourly.relation for family in SERIES_FAMILIES)


class CatalogueTests(SimpleTestCase):
    def test_every_series_family_has_a_minute_tier_kept_and_refreshed_as_the_whole_traffic_one(self):
        for family, model in SERIES_FAMILIES.items():
            fine = family.fine
            self.assertIs(fine.model, model)
            self.assertEqual((fine.width, fine.series, fine.source), (MINUTE, family.hourly.series, rollups.RAW))
            self.assertEqual(fine.kind, family.hourly.kind)
            self.assertEqual(rollups.tier_for(fine.width), "fine")
            self.assertEqual(fine.window, timedelta(days=FINE_WINDOW_DAYS))
            self.assertEqual(fine.refresh, rollups.GLOBAL.fine.refresh)
            # Refreshed (catalogue order) before the hourly sibling, as the whole-traffic one is.
            self.assertLess(rollups.CATALOGUE.index(fine), rollups.CATALOGUE.index(family.hourly))


class SeriesFinePlanTests(SimpleTestCase):
    """How a filtered read's range is cut now that every series family has a fine tier
    (watermarks given, any database)."""

    def marks(self, now):
        hour_mark = rollups.floor(now, HOUR) - HOUR
        marks = {relation: hour_mark for relation in HOURLY_SERIES}
        marks.update({family.daily.relation: rollups.floor(hour_mark, DAY) for family in SERIES_FAMILIES})
        # The minute tiers materialized up to the last whole minute.
        marks.update({family.fine.relation: rollups.floor(now, MINUTE) for family in SERIES_FAMILIES})
        return hour_mark, marks

    def patched(self, marks):
        # Watermarks given, nothing late (test_dirty_ranges cuts around dirty ranges).
        cutoff = mock.patch.object(rollups, "cutoff", side_effect=lambda relation, using=None: marks.get(relation))
        dirty = mock.patch.object(rollups, "dirty_ranges", return_value=[])
        return _Both(cutoff, dirty)

    def test_hours_past_the_hourly_watermark_come_from_the_series_minute_tier(self):
        now = datetime.now(UTC).replace(second=40, microsecond=0)
        hour_mark, marks = self.marks(now)
        for family, model in SERIES_FAMILIES.items():
            with self.patched(marks):
                pieces, edges = rollups.plan({"service": "api", "start": now - 30 * HOUR, "end": now}, family)
            models = [piece[0] for piece in pieces]
            self.assertIn(model, models, family.hourly.relation)
            self.assertEqual(pieces[models.index(model)][1:], (hour_mark, rollups.floor(now, MINUTE)))
            for piece_model, _lo, hi in pieces:
                if piece_model is family.hourly.model:
                    self.assertLessEqual(hi, hour_mark)
            # The raw events answer only the last partial minute (and the partial first hour).
            self.assertEqual(dict(edges[-1].children), {"time__gte": rollups.floor(now, MINUTE), "time__lt": now})

    def test_the_time_series_buckets_past_the_hourly_watermark_come_from_the_minute_tier(self):
        now = datetime.now(UTC)
        hour_mark, marks = self.marks(now)
        for width in (HOUR, DAY):
            start, end = rollups.floor(now, width) - 3 * width, rollups.floor(now, width) + width
            for family, model in SERIES_FAMILIES.items():
                with self.patched(marks):
                    pieces = rollups.bucket_plan(width, start, end, family)
                # The minute tier up to its watermark, the raw events past it (0012).
                self.assertEqual(pieces[-2:], [(model, hour_mark, rollups.floor(now, MINUTE), True),
                                               (ApiRequest, rollups.floor(now, MINUTE), end, True)],
                                 (width, family.hourly.relation))
                # Covered once: each piece starts where the one before it ends.
                self.assertEqual(pieces[0][1], start)
                for before, after in zip(pieces, pieces[1:], strict=False):
                    self.assertEqual(before[2], after[1])

    def test_without_materialized_hourly_series_the_minute_tier_is_not_read(self):
        now = datetime.now(UTC)
        for family, model in SERIES_FAMILIES.items():
            with self.patched({family.hourly.relation: rollups.NOTHING_MATERIALIZED}):
                pieces, _ = rollups.plan({"start": now - 5 * HOUR, "end": now}, family)
            self.assertNotIn(model, [piece[0] for piece in pieces])
            with self.patched({}):  # plain views (SQLite, PostgreSQL): no watermark, no fine tier
                pieces, _ = rollups.plan({"start": now - 5 * HOUR, "end": now}, family)
            self.assertNotIn(model, [piece[0] for piece in pieces])


class FreshSeriesTests(TimescaleTestCase):
    """Real TimescaleDB: the hourly aggregates behind, the minute ones nearly current, as under
    sustained ingest; reads filtered by service or endpoint."""

    needs = "the series' minute tiers are continuous aggregates"

    def setUp(self):
        super().setUp()
        # The tests set each watermark themselves; a policy run would move them on meanwhile.
        retention.schedule_refresh_policies(False)
        self.addCleanup(retention.schedule_refresh_policies, True)
        self.now = datetime.now(UTC)
        self.rows = rows_for(1200, rng=random.Random(28), start=self.now - 3 * HOUR,
                             span=3 * HOUR - timedelta(seconds=5))
        store(self.rows)
        # Just before the hourly aggregates' next run: they stop an hour or two back, the
        # minute tiers two minutes back (a watermark never moves back: an earlier test may have
        # left the hourly ones at the current hour).
        hour_mark = rollups.floor(self.now, HOUR) - HOUR
        for rollup in rollups.aggregates():
            end = rollups.floor(self.now, MINUTE) - 2 * MINUTE if rollup.width == MINUTE else hour_mark
            rollups.refresh(rollup.relation, None, end)
        # What the rows left in the dirty ranges (below marks earlier tests left) is covered:
        # the background refresher's pass.
        self.assertIsNone(rollups.refresh_dirty().failed)
        self.hour_mark = rollups.watermark("apirequest_hourly")
        self.assertIn(self.hour_mark, (hour_mark, hour_mark + HOUR))

    def older_hourly_marks(self):
        """The planner told the hourly series aggregates stopped two hours back (below what they
        have materialized, so every answer stays that of the raw events): the minute tiers then
        serve two hours, whatever the minute of the hour the test runs in."""
        real = rollups.cutoff
        older = rollups.floor(self.now, HOUR) - 2 * HOUR

        def cutoff(relation, using=None):
            mark = real(relation) if using is None else real(relation, using)
            return min(mark, older) if relation in HOURLY_SERIES and mark is not None else mark

        return mock.patch.object(rollups, "cutoff", side_effect=cutoff)

    def selected(self, start, end, **series):
        return [r for r in self.rows if start <= r["time"] < end
                and all(r[name] == value for name, value in series.items())]

    def assert_counts(self, got: dict, rows: list[dict], msg=None):
        """hits, errors, avg and max as the raw events give them (latencies capped)."""
        self.assertEqual(got["hits"], len(rows), msg)
        self.assertEqual(got["errors"], sum(r["status_code"] >= 500 for r in rows), msg)
        capped = [min(r["latency_ms"], rollups.CAP_MS) for r in rows]
        self.assertEqual(got["max_latency_ms"], max(capped), msg)
        self.assertAlmostEqual(got["avg_latency_ms"], sum(capped) / len(capped), delta=1e-9 * max(capped), msg=msg)

    def assert_approx(self, got: dict, rows: list[dict], msg=None):
        want = reference([r["latency_ms"] for r in rows])
        for key in PERCENTILES:
            self.assertLessEqual(abs(got[key] - want[key]), rollups.MAX_RELATIVE_ERROR * want[key] + 1e-12,
                                 (msg, key))

    def test_a_service_filtered_window_reads_the_minute_tiers_and_answers_as_the_raw_events(self):
        start = self.now - 3 * HOUR + timedelta(minutes=7)
        filters = {"service": "api", "start": start, "end": self.now}
        if rollups.floor(self.now, MINUTE) > self.hour_mark:  # not in the first minute of an hour
            for family, model in ((rollups.COUNTS, ApiRequestMinute), (rollups.SERVICE_LATENCY, ServiceLatencyMinute)):
                pieces, _ = rollups.plan(filters, family)
                self.assertIn(model, [piece[0] for piece in pieces], family.hourly.relation)
        params = {"service": "api", "start": iso(start), "end": iso(self.now), "precision": "approx"}
        body = self.client.get("/api/requests/kpis/", params).json()
        self.assertEqual((body["source"], body["precision"]), ("hourly", "approx"))
        self.assert_counts(body, self.selected(start, self.now, service="api"))
        self.assert_approx(body, self.selected(start, self.now, service="api"))

    def test_kpis_top_endpoints_series_and_timeseries_of_a_service_count_as_the_raw_events(self):
        start = rollups.floor(self.now, HOUR) - 2 * HOUR - timedelta(minutes=13)
        with self.older_hourly_marks():
            for family, model in SERIES_FAMILIES.items():
                filters = {"service": "web", "start": start, "end": self.now}
                pieces, _ = rollups.plan(filters, family)
                models = [piece[0] for piece in pieces]
                self.assertIn(model, models, family.hourly.relation)
                lo, hi = pieces[models.index(model)][1:]
                # Up to the minute tier's watermark (two minutes back, or a minute later if a
                # policy ran since): the raw events answer past it (0012).
                self.assertEqual(lo, rollups.floor(self.now, HOUR) - 2 * HOUR)
                self.assertEqual(hi, rollups.cutoff(family.fine.relation))
            window = {"service": "web", "start": iso(start), "end": iso(self.now)}

            kpis = self.client.get("/api/requests/kpis/", {**window, "precision": "approx"}).json()
            self.assertEqual(kpis["source"], "hourly")
            self.assert_counts(kpis, self.selected(start, self.now, service="web"))
            self.assert_approx(kpis, self.selected(start, self.now, service="web"))
            exact = self.client.get("/api/requests/kpis/", window).json()
            self.assert_counts(exact, self.selected(start, self.now, service="web"))

            # One endpoint: the (service, endpoint) histograms' minute tier.
            one = self.client.get("/api/requests/kpis/", {**window, "endpoint": "/b", "precision": "approx"}).json()
            self.assert_counts(one, self.selected(start, self.now, service="web", endpoint="/b"))
            self.assert_approx(one, self.selected(start, self.now, service="web", endpoint="/b"))

            top = self.client.get("/api/requests/top-endpoints/", {**window, "with_p95": "true", "limit": 100,
                                                                   "precision": "approx"}).json()
            self.assertEqual(top["source"], "hourly")
            hits = {e: len(self.selected(start, self.now, service="web", endpoint=e)) for e in ("/a", "/b", "/c")}
            self.assertEqual([r["endpoint"] for r in top["results"]], sorted(hits, key=lambda e: (-hits[e], e)))
            for row in top["results"]:
                rows = self.selected(start, self.now, service="web", endpoint=row["endpoint"])
                self.assert_counts(row, rows, row["endpoint"])
                if top["precision"] == "approx":
                    self.assert_approx(row, rows, row["endpoint"])

            series = self.client.get("/api/requests/series/", window).json()
            self.assertEqual(series["source"], "hourly")
            self.assertEqual({r["endpoint"]: r["hits"] for r in series["results"]}, hits)

            # By the day, today comes partly from hours and partly from minutes, regrouped.
            for interval, width in (("hour", HOUR), ("day", DAY)):
                first = rollups.floor(self.now, width) - (4 if width == HOUR else 1) * width
                body = self.client.get("/api/requests/timeseries/", {
                    "service": "web", "interval": interval, "precision": "approx", "start": iso(first)}).json()
                self.assertEqual(body["source"], "hourly")
                # Exactly the buckets with events, each counted as its raw events are.
                want = {}
                for row in self.selected(first, self.now + DAY, service="web"):
                    want.setdefault(rollups.floor(row["time"], width), []).append(row)
                got = {datetime.fromisoformat(r["bucket"].replace("Z", "+00:00")): r for r in body["results"]}
                self.assertEqual(sorted(got), sorted(want), interval)
                for bucket, row in got.items():
                    self.assert_counts(row, want[bucket], (interval, bucket))
                    self.assert_approx(row, want[bucket], (interval, bucket))

    def test_the_hourly_rows_keep_their_exact_p95_from_the_hourly_rollup(self):
        with self.older_hourly_marks():
            body = self.client.get("/api/requests/hourly/", {"service": "api", "page_size": 1000}).json()
        rows = body["results"]
        self.assertEqual(sum(r["hits"] for r in rows), len(self.selected(self.now - DAY, self.now, service="api")))
        for row in rows:
            bucket = datetime.fromisoformat(row["bucket"].replace("Z", "+00:00"))
            events = self.selected(bucket, bucket + HOUR, service="api", endpoint=row["endpoint"])
            want = reference([r["latency_ms"] for r in events], "exact")["p95_latency_ms"]
            self.assertAlmostEqual(row["p95_latency_ms"], want, delta=1e-9 * want, msg=row["bucket"])


class _Both:
    """Two patches as one context manager."""

    def __init__(self, *patches):
        self.patches = patches

    def __enter__(self):
        for patch in self.patches:
            patch.start()

    def __exit__(self, *exc):
        for patch in reversed(self.patches):
            patch.stop()
