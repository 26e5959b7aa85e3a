"""/metrics: Prometheus text, ingest counts per endpoint, and every gunicorn worker counted."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from django.test import TestCase
from prometheus_client.parser import text_string_to_metric_families

from observability import rollups
from observability.models import ApiRequest
from observability.tests.live import LiveGunicornTestCase, server_key_headers
from observability.tests.test_retention import store
from observability.tests.utils import (
    BASE_TIME,
    ApiTestCase,
    ApiTransactionTestCase,
    make_event,
    make_events,
    post_ingest,
    skip_unless_timescale,
)

ROLLUPS = ("apirequest_hourly", "apirequest_daily")


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def ingest_counts(parsed: dict, endpoint: str = "/ingest/") -> dict:
    def get(name, **labels):
        return parsed.get((name, tuple(sorted({"endpoint": endpoint, **labels}.items()))), 0.0)

    return {
        "accepted": get("apm_ingest_events_total", outcome="accepted"),
        "rejected": get("apm_ingest_events_total", outcome="rejected"),
        "bytes": get("apm_ingest_bytes_total"),
        "requests_200": get("apm_ingest_requests_total", status="200"),
        "requests_413": get("apm_ingest_requests_total", status="413"),
        "duration_count": get("apm_ingest_request_duration_seconds_count"),
    }


class MetricsEndpointTests(ApiTestCase):
    def scrape(self) -> dict:
        response = self.client.get("/metrics")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/plain"))
        return samples(response.content.decode())

    def test_ingest_counts_accepted_rejected_bytes_and_requests_per_endpoint(self):
        before = ingest_counts(self.scrape())
        events = make_events(7) + [make_event(status_code=999), make_event(latency_ms=-1)]
        body = json.dumps(events)
        self.assertEqual(post_ingest(self.client, body).status_code, 200)
        strict = json.dumps([make_event(), make_event(method="FETCH")])
        self.assertEqual(post_ingest(self.client, strict, strict=True).status_code, 400)
        with self.settings(APM_INGEST_MAX_EVENTS=1):
            self.assertEqual(post_ingest(self.client, json.dumps(make_events(2))).status_code, 413)
        after = ingest_counts(self.scrape())
        delta = {key: after[key] - before[key] for key in after}
        self.assertEqual(delta, {
            "accepted": 7,
            "rejected": 2 + 2,  # strict: the valid event is not stored either
            "bytes": len(body.encode()) + len(strict.encode()),
            "requests_200": 1,
            "requests_413": 1,
            "duration_count": 3,  # the strict 400 and the 413 too
        })

    def test_otlp_exports_are_counted_under_their_own_endpoint(self):
        from observability.tests.test_otlp import HTTP_GET, PROTOBUF, export_request, server_span

        before = ingest_counts(self.scrape(), "/v1/traces")
        trace = {**HTTP_GET, "http.request.method": "TRACE"}
        body = export_request(server_span(attrs=HTTP_GET), server_span(attrs=trace),
                              server_span(attrs=HTTP_GET, kind=1)).SerializeToString()
        response = self.client.post("/v1/traces", body, content_type=PROTOBUF)
        self.assertEqual(response.status_code, 200)
        after = ingest_counts(self.scrape(), "/v1/traces")
        delta = {key: after[key] - before[key] for key in after}
        # One stored, one rejected (a method we don't store), the internal span skipped.
        self.assertEqual(delta, {"accepted": 1, "rejected": 1, "bytes": len(body), "requests_200": 1,
                                 "requests_413": 0, "duration_count": 1})

    def test_django_prometheus_request_and_database_metrics_are_exposed(self):
        self.client.get("/api/requests/")
        names = {name for name, _ in self.scrape()}
        self.assertIn("django_http_requests_total_by_view_transport_method_total", names)
        self.assertIn("django_db_execute_total", names)

    def test_only_get_and_head_are_answered(self):
        self.assertEqual(self.client.post("/metrics").status_code, 405)


class RollupLagTests(ApiTransactionTestCase):
    def setUp(self):
        skip_unless_timescale(self, "apm_rollup_lag_seconds reads continuous aggregates' watermarks")

    def tearDown(self):
        ApiRequest.objects.all().delete()
        for relation in ROLLUPS:
            rollups.refresh(relation, None, None)

    def test_rollup_lag_is_now_minus_each_watermark(self):
        store(make_events(50, start=BASE_TIME))
        for relation in ROLLUPS:
            rollups.refresh(relation, None, None)  # materializes up to the data's last bucket
        response = self.client.get("/metrics")
        now = datetime.now(UTC)
        parsed = samples(response.content.decode())
        for relation in ROLLUPS:
            watermark = rollups.watermark(relation)
            self.assertIsNotNone(watermark)
            lag = parsed[("apm_rollup_lag_seconds", (("relation", relation),))]
            self.assertAlmostEqual(lag, (now - watermark).total_seconds(), delta=5)


class MetricsAcrossWorkersTests(LiveGunicornTestCase):
    """A real gunicorn with two workers: one scrape counts what every worker received."""

    workers = 2

    @classmethod
    def server_env(cls):
        metrics_dir = Path(cls.tmp.name, "prometheus")
        metrics_dir.mkdir()  # prometheus_client needs it to exist (manage.py migrate too)
        return {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    def test_a_scrape_counts_the_events_sent_to_every_worker(self):
        metrics_dir = Path(self.env["PROMETHEUS_MULTIPROC_DIR"])
        (metrics_dir / "counter_1.db").write_bytes(b"left over from a previous run")
        batches = [make_events(20 + i, seed=i) + [make_event(status_code=0)] * (i % 3) for i in range(24)]
        bodies = [json.dumps(batch).encode() for batch in batches]
        headers = {"Content-Type": "application/json", **server_key_headers(self.env, "ingest")}
        with self.serve() as server:
            self.assertFalse((metrics_dir / "counter_1.db").exists(), "stale files are removed on start")
            with ThreadPoolExecutor(max_workers=6) as pool:
                answers = list(pool.map(
                    lambda body: server.request("POST", "/api/requests/ingest/", body, headers), bodies))
            self.assertEqual({status for status, _, _ in answers}, {200})
            pids = {name.rsplit("_", 1)[1].split(".")[0] for name in os.listdir(metrics_dir)
                    if name.startswith("counter_")}
            self.assertGreaterEqual(len(pids), 2, f"both workers should have served: {sorted(pids)}")
            status, _, text = server.request("GET", "/metrics", headers=server_key_headers(self.env, "read"))
            self.assertEqual(status, 200)
        counts = ingest_counts(samples(text.decode()))
        self.assertEqual(counts["accepted"], sum(20 + i for i in range(24)))
        self.assertEqual(counts["rejected"], sum(i % 3 for i in range(24)))
        self.assertEqual(counts["bytes"], sum(len(body) for body in bodies))
        self.assertEqual(counts["requests_200"], 24)
        self.assertEqual(counts["duration_count"], 24)


class MetricsAccessTests(TestCase):
    def test_metrics_need_a_read_key(self):
        from observability import access

        self.assertEqual(self.client.get("/metrics").status_code, 401)
        _, ingest_key = access.create_key(name="i", scope="ingest")
        self.assertEqual(self.client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {ingest_key}").status_code, 403)
        _, read_key = access.create_key(name="r", scope="read")
        self.assertEqual(self.client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {read_key}").status_code, 200)

    def test_an_unknown_parameter_is_a_400_naming_it(self):
        from observability import access

        _, read_key = access.create_key(name="r", scope="read")
        response = self.client.get("/metrics", {"nmae": "x"}, HTTP_AUTHORIZATION=f"Bearer {read_key}")
        self.assertEqual(response.status_code, 400)
        self.assertIn("nmae", response.json()["detail"])
