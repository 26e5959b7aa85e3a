"""The rollup catalogue: tiers and horizons, bucket arithmetic, histogram bins, and the range
planner (pieces that cover a window exactly once)."""

import math
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.test import SimpleTestCase, override_settings

from observability import rollups
from observability.constants import DAY, HOUR, MINUTE


class TierTests(SimpleTestCase):
    def test_a_rollup_tier_follows_its_bucket_width(self):
        self.assertEqual(rollups.tier_for(timedelta(minutes=1)), "fine")
        self.assertEqual(rollups.tier_for(timedelta(minutes=5)), "fine")
        self.assertEqual(rollups.tier_for(HOUR), "hourly")
        self.assertEqual(rollups.tier_for(6 * HOUR), "hourly")
        self.assertEqual(rollups.tier_for(DAY), "daily")
        self.assertEqual(rollups.tier_for(7 * DAY), "daily")

    def test_the_code_default_keeps_everything(self):
        self.assertIsNone(rollups.raw_horizon())
        self.assertIsNone(rollups.too_old(datetime(1990, 1, 1, tzinfo=UTC), rollups.raw_horizon()))
        self.assertIsNone(rollups.bound_refresh_start(None))

    @override_settings(APM_RETENTION_RAW_DAYS=30)
    def test_refresh_starts_are_moved_up_to_the_raw_horizon(self):
        now = datetime(2026, 6, 1, tzinfo=UTC)
        horizon = datetime(2026, 5, 2, tzinfo=UTC)
        self.assertEqual(rollups.bound_refresh_start(None, now), horizon)
        self.assertEqual(rollups.bound_refresh_start(datetime(2026, 1, 1, tzinfo=UTC), now), horizon)
        later = datetime(2026, 5, 20, tzinfo=UTC)
        self.assertEqual(rollups.bound_refresh_start(later, now), later)

    @override_settings(APM_RETENTION_RAW_DAYS=7)
    def test_an_event_older_than_the_raw_retention_is_refused_with_the_setting_named(self):
        now = datetime(2026, 6, 8, tzinfo=UTC)
        horizon = rollups.raw_horizon(now)
        self.assertEqual(horizon, datetime(2026, 6, 1, tzinfo=UTC))
        self.assertIsNone(rollups.too_old(horizon, horizon))  # the horizon itself is kept
        message = rollups.too_old(horizon - timedelta(microseconds=1), horizon)
        self.assertIn("APM_RETENTION_RAW_DAYS=7", message)


class CatalogueTests(SimpleTestCase):
    def test_every_rollup_is_built_from_a_relation_that_comes_before_it(self):
        seen = set()
        for rollup in rollups.CATALOGUE:
            if rollup.source is not None:
                self.assertIn(rollup.source, seen, f"{rollup.relation} is refreshed before its source")
            seen.add(rollup.relation)

    def test_every_relation_is_read_through_a_model_of_the_same_name(self):
        for rollup in rollups.CATALOGUE:
            self.assertEqual(rollup.model._meta.db_table, rollup.relation)

    def test_a_family_pairs_an_hourly_and_a_daily_rollup_of_the_same_series(self):
        for family in (rollups.COUNTS, rollups.LATENCY, rollups.SERVICE_LATENCY, rollups.GLOBAL):
            self.assertEqual(family.hourly.width, HOUR)
            self.assertEqual(family.daily.width, DAY)
            self.assertEqual(family.hourly.series, family.daily.series)
        self.assertEqual(rollups.GLOBAL.fine.width, MINUTE)


class BucketTests(SimpleTestCase):
    def test_floor_and_ceil_are_utc_bucket_starts(self):
        t = datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=UTC)
        self.assertEqual(rollups.floor(t, HOUR), datetime(2026, 3, 4, 5, tzinfo=UTC))
        self.assertEqual(rollups.ceil(t, HOUR), datetime(2026, 3, 4, 6, tzinfo=UTC))
        self.assertEqual(rollups.floor(t, DAY), datetime(2026, 3, 4, tzinfo=UTC))
        start = datetime(2026, 3, 4, 5, tzinfo=UTC)
        self.assertEqual(rollups.ceil(start, HOUR), start)  # a bucket start is its own ceiling

    def test_a_bins_value_is_within_the_stated_error_of_every_latency_in_it(self):
        for latency in (0.011, 0.5, 1.0, 3.7, 42.5, 999.9, 12_345.0, 86_400_000.0):
            estimate = rollups.bin_value(rollups.bin_of(latency))
            self.assertLessEqual(abs(estimate - latency) / latency, rollups.MAX_RELATIVE_ERROR + 1e-12, latency)
        self.assertEqual(rollups.bin_value(rollups.bin_of(0.0)), 0.0)
        # Latencies stored above the cap count as the cap.
        self.assertEqual(rollups.bin_of(10 * 86_400_000.0), rollups.bin_of(86_400_000.0))
        self.assertEqual(rollups.bin_of(1.0), 0)
        self.assertEqual(rollups.bin_of(1.02 ** 10 * 1.0001), math.floor(10.0001))


def _spans(pieces, edges):
    """[lo, hi) spans of a plan, from its rollup pieces and its raw-edge Q objects."""
    spans = [(lo, hi) for _model, lo, hi in pieces]
    for edge in edges:
        bounds = dict(edge.children)
        spans.append((bounds["time__gte"], bounds["time__lt"]))
    return sorted(spans)


class PlannerTests(SimpleTestCase):
    """With every rollup materialized (no watermark), as on SQLite and plain PostgreSQL."""

    def plan(self, start, end):
        with mock.patch.object(rollups, "cutoff", return_value=None):
            return rollups.plan({"start": start, "end": end})

    def test_an_unaligned_window_is_covered_exactly_once_by_days_hours_and_raw_edges(self):
        start = datetime(2026, 3, 1, 10, 17, tzinfo=UTC)
        end = datetime(2026, 3, 4, 7, 45, tzinfo=UTC)
        pieces, edges = self.plan(start, end)
        spans = _spans(pieces, edges)
        self.assertEqual(spans[0][0], start)
        self.assertEqual(spans[-1][1], end)
        for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
            self.assertEqual(hi, lo)  # no gap, no overlap
        models = {model for model, _lo, _hi in pieces}
        self.assertEqual(models, {rollups.COUNTS.hourly.model, rollups.COUNTS.daily.model})
        self.assertEqual(len(edges), 2)  # 10:17-11:00 and 07:00-07:45 from raw

    def test_an_aligned_day_is_one_daily_piece_and_no_raw(self):
        start = datetime(2026, 3, 1, tzinfo=UTC)
        pieces, edges = self.plan(start, start + DAY)
        self.assertEqual(pieces, [(rollups.COUNTS.daily.model, start, start + DAY)])
        self.assertEqual(edges, [])

    def test_a_window_without_one_whole_hour_has_no_plan(self):
        start = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
        self.assertIsNone(self.plan(start, start + timedelta(minutes=50)))

    def test_days_past_the_daily_watermark_come_from_the_hourly_rollup(self):
        start = datetime(2026, 3, 1, tzinfo=UTC)
        mark = datetime(2026, 3, 3, tzinfo=UTC)
        marks = {rollups.COUNTS.daily.relation: mark, rollups.COUNTS.hourly.relation: None}
        with mock.patch.object(rollups, "cutoff", side_effect=lambda relation, **_: marks.get(relation)), \
                mock.patch.object(rollups, "dirty_ranges", return_value=[]):  # watermarks given, nothing late
            pieces, edges = rollups.plan({"start": start, "end": start + 5 * DAY})
        self.assertEqual(sorted(pieces, key=lambda p: p[1]), [
            (rollups.COUNTS.daily.model, start, mark),
            (rollups.COUNTS.hourly.model, mark, start + 5 * DAY),
        ])
        self.assertEqual(edges, [])
