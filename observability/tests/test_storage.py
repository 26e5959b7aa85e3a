"""report_storage: rows, sizes and time span per relation, as a table and as JSON."""

import io
import json
from datetime import timedelta

from django.core.management import call_command
from django.test import TransactionTestCase

from observability import db, retention, rollups
from observability.models import ApiRequest
from observability.tests.test_retention import store
from observability.tests.utils import floor_to, make_events, parse_time


class ReportStorageTests(TransactionTestCase):
    def setUp(self):
        self.events = make_events(300, span=timedelta(days=3), seed=11)
        store(self.events)
        for relation in ("apirequest_hourly", "apirequest_daily"):
            rollups.refresh(relation, None, None)  # False (nothing to do) on plain views

    def tearDown(self):
        ApiRequest.objects.all().delete()
        for relation in ("apirequest_hourly", "apirequest_daily"):
            rollups.refresh(relation, None, None)

    def report(self, *args) -> str:
        out = io.StringIO()
        call_command("report_storage", *args, stdout=out)
        return out.getvalue()

    def test_json_counts_rows_and_time_span_of_raw_and_each_rollup(self):
        document = json.loads(self.report("--json"))
        by_name = {row["relation"]: row for row in document["relations"]}
        times = [parse_time(e["time"]) for e in self.events]
        raw = by_name[retention.RAW]
        self.assertEqual(raw["rows"], 300)
        self.assertEqual((parse_time(raw["oldest"]), parse_time(raw["newest"])), (min(times), max(times)))
        self.assertGreater(raw["total_bytes"] or 1, 0)
        for relation, width in (("apirequest_hourly", timedelta(hours=1)), ("apirequest_daily", timedelta(days=1))):
            series = {(floor_to(parse_time(e["time"]), width), e["service"], e["endpoint"]) for e in self.events}
            self.assertEqual(by_name[relation]["rows"], len(series), relation)
            self.assertEqual(parse_time(by_name[relation]["oldest"]), floor_to(min(times), width))
        self.assertEqual(document["settings"]["APM_RETENTION_RAW_DAYS"], 0)
        self.assertEqual(raw["retention"], "forever")

    def test_the_table_has_one_line_per_relation_and_a_summary(self):
        lines = self.report().splitlines()
        self.assertTrue(lines[0].startswith("relation"))
        names = [line.split()[0] for line in lines[1:-1]]
        # The raw table first, then every rollup: on TimescaleDB each continuous aggregate of the
        # catalogue (the latency histograms of migration 0005 too), elsewhere the two views.
        expected = ({rollup.relation for rollup in rollups.aggregates()} if db.rollups_are_continuous()
                    else {"apirequest_hourly", "apirequest_daily"})
        self.assertEqual(names[0], retention.RAW)
        self.assertEqual(set(names[1:]), expected)
        self.assertEqual(len(names), 1 + len(expected))
        self.assertIn("300", lines[1])
        self.assertRegex(lines[-1], rf"^{len(names)} relations on .*; settings: APM_RETENTION_RAW_DAYS=0")
