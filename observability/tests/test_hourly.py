from datetime import timedelta

from django.db import connection

from observability import db, ingest, rollups
from observability.models import ApiRequest
from observability.tests.rollup_cases import LateDataChecks, RollupChecks
from observability.tests.utils import BASE_TIME, ApiTestCase, ApiTransactionTestCase, iso, make_events


class HourlyRollupTests(RollupChecks, ApiTestCase):
    url = "/api/requests/hourly/"
    width = timedelta(hours=1)
    relation = "apirequest_hourly"


class HourlyLateDataTests(LateDataChecks, ApiTransactionTestCase):
    url = "/api/requests/hourly/"
    width = timedelta(hours=1)
    relation = "apirequest_hourly"


class RawPagesTests(ApiTestCase):
    """Pages of rows read from the raw table (SQLite, PostgreSQL without TimescaleDB)."""

    @classmethod
    def setUpTestData(cls):
        cls.events = make_events(1200, span=timedelta(hours=9), seed=41)
        ingest.ingest_events(list(cls.events), strict=True)

    def rows(self, **params):
        response = self.client.get("/api/requests/hourly/", params)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def test_pages_laid_end_to_end_are_the_rows_of_one_page(self):
        for params in ({}, {"service": "search"}, {"start": iso(BASE_TIME + timedelta(hours=2, minutes=10)),
                                                   "end": iso(BASE_TIME + timedelta(hours=6))}):
            whole = self.rows(**params, page_size=1000)
            pages, page = [], 1
            while True:
                body = self.rows(**params, page_size=7, page=page)
                self.assertEqual(body["count"], whole["count"], params)
                pages += body["results"]
                if not body["next"]:
                    break
                page += 1
            self.assertEqual(pages, whole["results"], params)
            self.assertEqual(len(pages), whole["count"])

    def test_sums_add_up_in_the_order_of_one_grouping_of_every_row(self):
        # avg_latency_ms to the last bit (see test_top_endpoints): a page's figures are read by a
        # query of their own, and must equal those of one grouping of every row.
        if not db.groups_by_sorting():
            self.skipTest(f"{db.describe()} sums in an order of its own (hash aggregates, parallel scans)")
        table = ApiRequest._meta.db_table
        for where, params, args in (
                ("service = %s", {"service": "search"}, ["search"]),
                ("time >= %s AND time < %s", {"start": iso(BASE_TIME + timedelta(hours=2)),
                                              "end": iso(BASE_TIME + timedelta(hours=6))},
                 [BASE_TIME + timedelta(hours=2), BASE_TIME + timedelta(hours=6)])):
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT substr(time, 1, 13), service, endpoint, count(*),"
                               f" sum(min(latency_ms, {rollups.CAP_MS!r})) FROM {table} WHERE {where}"
                               " GROUP BY 1, 2, 3", args)
                want = {(f"{hour.replace(' ', 'T')}:00:00Z", s, e): total / n
                        for hour, s, e, n, total in cursor.fetchall()}
            got = {(r["bucket"], r["service"], r["endpoint"]): r["avg_latency_ms"]
                   for page in (1, 2, 3) for r in self.rows(**params, page_size=10, page=page)["results"]}
            self.assertEqual(len(got), 30)
            self.assertEqual(got, {key: want[key] for key in got}, params)
