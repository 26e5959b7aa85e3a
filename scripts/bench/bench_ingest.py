#!/usr/bin/env python
"""Ingest throughput: POST /api/requests/ingest/ and /v1/traces beside raw COPY and a naive DRF path.

Starts gunicorn on loopback against DATABASE_URL (PostgreSQL; `make bench-ingest` starts a
throwaway cluster when none is given), then, each time into the same freshly truncated table:

  1. raw COPY of the rows, B at a time, one transaction each: the physical limit;
  2. the endpoint, N events in batches of B, with an ingest API key (as clients send it);
  3. the same view without authentication (a bench-only URL): what access control costs;
  4. the OTLP receiver, the same N events as SERVER spans (protobuf + gzip, B spans a request,
     with the attributes an instrumented service sends), with the same ingest key;
  5. a naive DRF ListSerializer + bulk_create endpoint: the baseline.

Prints events/s for each, the endpoint's ratio to COPY (the median of each round's paired
ratio) and to the naive path, the cost of
authentication, the OTLP receiver's ratio to the JSON endpoint, and the peak RSS of the gunicorn
workers. Figures also go to reports/bench_ingest.json (`--arrival spread`: bench_ingest_spread.json).

On TimescaleDB every aggregate is materialized up to now first and the refresh policies stay on
their schedule, as in a deployment. `--arrival fresh` (the default) times the events within the
last minute, as live exporters send them; `--arrival spread` over the last 24 hours, below every
hourly watermark, so each batch also records the ranges it touched in `apirequest_dirty` (the
background refresher's work is not part of it: `make bench-live` measures that).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPY, ENDPOINT, NAIVE = "raw COPY (limit)", "POST /api/requests/ingest/", "naive DRF + bulk_create"
NO_AUTH = "same view, no auth"
NO_AUTH_PATH = "/bench/ingest-no-auth/"
OTLP = "POST /v1/traces (pb+gzip)"
sys.path.insert(0, str(ROOT))

from observability.tests.live import Gunicorn  # noqa: E402
from scripts.bench import setup_django  # noqa: E402

ARRIVALS = {"fresh": timedelta(minutes=1), "spread": timedelta(hours=24)}


def make_events(n: int, seed: int, span: timedelta = ARRIVALS["fresh"]) -> list[dict]:
    """Realistic events over the `span` up to now."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    services = [f"svc-{i}" for i in range(20)]
    endpoints = [f"/api/v1/resource-{i}/{{id}}" for i in range(50)]
    events = []
    for _ in range(n):
        events.append({
            "time": (now - rng.random() * span).isoformat(),
            "service": rng.choice(services),
            "endpoint": rng.choice(endpoints),
            "method": rng.choice(("GET", "GET", "GET", "POST", "PUT", "DELETE")),
            "status_code": rng.choice((200, 200, 200, 200, 201, 204, 404, 500)),
            "latency_ms": round(rng.lognormvariate(3.2, 0.9), 3),
            "trace_id": f"{rng.getrandbits(64):016x}",
            "user_ref": f"user-{rng.randrange(5000)}",
        })
    return events


def otlp_body(events: list[dict]) -> bytes:
    """One gzip ExportTraceServiceRequest holding `events` as SERVER spans, one resource per
    service, each span with the attributes the Python SDK's HTTP instrumentation sets."""
    import gzip

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    def kv(key, value):
        return KeyValue(key=key, value=AnyValue(int_value=value) if isinstance(value, int)
                        else AnyValue(string_value=value))

    by_service: dict[str, list] = {}
    for e in events:
        start = int(datetime.fromisoformat(e["time"]).timestamp() * 1e6) * 1000
        path = e["endpoint"].replace("{id}", "12345")
        by_service.setdefault(e["service"], []).append(Span(
            trace_id=bytes.fromhex(e["trace_id"].rjust(32, "0")), span_id=bytes.fromhex(e["trace_id"]),
            name=f"{e['method']} {e['endpoint']}", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=start,
            end_time_unix_nano=start + int(e["latency_ms"] * 1e6),
            attributes=[kv("http.request.method", e["method"]), kv("http.route", e["endpoint"]),
                        kv("http.response.status_code", e["status_code"]), kv("url.path", path),
                        kv("url.scheme", "http"), kv("server.address", "10.0.0.7"), kv("server.port", 8000),
                        kv("network.protocol.version", "1.1"), kv("client.address", "10.0.3.4"),
                        kv("user_agent.original", "python-requests/2.32.3"), kv("enduser.id", e["user_ref"])],
        ))
    request = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource={"attributes": [kv("service.name", service), kv("telemetry.sdk.language", "python")]},
                      scope_spans=[ScopeSpans(scope={"name": "opentelemetry.instrumentation.wsgi"}, spans=spans)])
        for service, spans in by_service.items()
    ])
    return gzip.compress(request.SerializeToString())


def otlp_poster(port: int, headers: dict):
    def post(body: bytes, state: dict):
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", "/v1/traces", body=body,
                     headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", **headers})
        response = conn.getresponse()
        payload = response.read()
        # 200 with an empty ExportTraceServiceResponse: every span stored, none rejected.
        if response.status != 200 or payload:
            raise RuntimeError(f"/v1/traces: HTTP {response.status}: {payload[:300]!r}")
    return post


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_parallel(jobs: list, worker, concurrency: int) -> float:
    """Run worker(job) over jobs with `concurrency` threads; wall seconds."""
    queue = list(reversed(jobs))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def loop():
        state = {}
        while True:
            with lock:
                if not queue or failures:
                    return
                job = queue.pop()
            try:
                worker(job, state)
            except BaseException as exc:  # noqa: BLE001 - reported after the join
                with lock:
                    failures.append(exc)
                return

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - started


def http_poster(port: int, path: str, expected: int, headers: dict | None = None):
    def post(body: bytes, state: dict):
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        payload = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"{path}: HTTP {response.status}: {payload[:300]!r}")
        inserted = json.loads(payload)["inserted"]
        if inserted != expected and inserted != body.count(b'"service"'):
            raise RuntimeError(f"{path}: inserted {inserted}")
    return post


def auth_cost_us(key: str, rounds: int = 20_000) -> float:
    """Microseconds the default DRF authentication + permission take per request, in-process.

    The same request is built with and without the authenticators; the difference is what a
    key costs (a hash and a cache lookup once the worker has seen the key).
    """
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from observability import access
    from observability.views import ApiRequestViewSet

    factory = APIRequestFactory()
    view = ApiRequestViewSet(action="ingest", required_scope="ingest")

    def timed(with_auth: bool) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            request = Request(factory.post("/api/requests/ingest/", HTTP_AUTHORIZATION=f"Bearer {key}"),
                              authenticators=[access.ApiKeyAuthentication(), access.SessionAuthentication()]
                              if with_auth else [])
            if with_auth:
                request.user  # noqa: B018 - runs the authenticators
                assert access.ScopePermission().has_permission(request, view)
        return (time.perf_counter() - started) / rounds

    timed(True)
    return max(0.0, min(timed(True) - timed(False) for _ in range(3))) * 1e6


def worker_rss_kib(master_pid: int) -> list[int]:
    """Peak RSS (VmHWM) of each gunicorn worker, in KiB."""
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout
    peaks = []
    for pid in out.split():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
        except FileNotFoundError:
            pass
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=200_000, help="events per path (default 200000)")
    parser.add_argument("-b", "--batch", type=int, default=5_000, help="events per request (default 5000)")
    parser.add_argument("--concurrency", type=int, default=2, help="parallel clients (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--naive-events", type=int, default=None,
                        help="events for the naive path (default: --events, at most 50000: its rate is "
                             "what counts, and 200,000 took 10-20 s a round)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds of the paths, interleaved; medians are reported (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arrival", choices=sorted(ARRIVALS), default="fresh",
                        help="event times: within the last minute (fresh, default) or over the last 24 h (spread)")
    args = parser.parse_args()

    os.environ["APM_INGEST_MAX_EVENTS"] = str(max(args.batch, 10_000))
    # scripts.bench.settings adds the naive baseline's URL, which the service does not have.
    url = setup_django("bench_ingest", "scripts.bench.settings", "bench-ingest")
    if url is None:
        return 2
    from django.core.management import call_command
    from django.db import connection

    from observability import access, db, ingest

    call_command("migrate", verbosity=0)
    # What a client sends: an ingest key (a new one per run; the bench database is throwaway).
    key = access.create_key(name="bench_ingest", scope="ingest")[1]
    auth = {"Authorization": f"Bearer {key}"}
    database = db.describe()
    table = "observability_apirequest"
    hypertable = db.is_hypertable(table)

    naive_n = args.naive_events or min(args.events, 50_000)

    def prepare():
        """Every path's bodies, timed from now (untimed: each round's "fresh" is fresh when sent)."""
        events = make_events(args.events, args.seed, ARRIVALS[args.arrival])
        rows = [ingest.validate_event(e) for e in events]
        return (events, [json.dumps(chunk).encode() for chunk in batches(events, args.batch)],
                [json.dumps(chunk).encode() for chunk in batches(events[:naive_n], args.batch)],
                [otlp_body(chunk) for chunk in batches(events, args.batch)],
                [ingest._CopySource(chunk).read_all() for chunk in batches(rows, args.batch)])

    print(f"preparing {args.events} events ...", flush=True)
    events, bodies, naive_bodies, otlp_bodies, copy_texts = prepare()
    mb = sum(len(b) for b in bodies) / 1e6

    def truncate():
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {table}")

    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            return cursor.fetchone()[0]

    if hypertable:
        # As a deployment runs: the aggregates materialized up to now (the events once, then
        # gone; a watermark never moves back), the refresh policies on their schedule. Spread
        # events then land below the hourly and daily watermarks and are recorded as dirty.
        from observability import retention, rollups

        retention.schedule_refresh_policies(True)
        ingest.ingest_events(events[:50_000], strict=True)
        for rollup in rollups.aggregates():
            rollups.refresh(rollup.relation, None, datetime.now(UTC))
        truncate()
    with Gunicorn({"DJANGO_DEBUG": "0"}, workers=args.workers, settings="scripts.bench.settings") as server:
        port = server.port
        # Warm up: imports, connections, first COPY.
        run_parallel(bodies[:args.concurrency], http_poster(port, "/api/requests/ingest/", args.batch, auth),
                     args.concurrency)
        run_parallel(bodies[:args.concurrency], http_poster(port, NO_AUTH_PATH, args.batch), args.concurrency)
        run_parallel(naive_bodies[:args.concurrency], http_poster(port, "/bench/naive-ingest/", args.batch),
                     args.concurrency)
        base_rss = max(worker_rss_kib(server.pid) or [0])

        run_parallel(otlp_bodies[:args.concurrency], otlp_poster(port, auth), args.concurrency)
        timings: dict[str, list[float]] = {COPY: [], ENDPOINT: [], NO_AUTH: [], OTLP: [], NAIVE: []}
        peak_rss = base_rss

        def copy_batch(text: str, state: dict):
            import psycopg2

            conn = state.get("conn")
            if conn is None:
                conn = state["conn"] = psycopg2.connect(url)
            with conn, conn.cursor() as cursor:
                cursor.copy_expert(f"COPY {table} ({', '.join(ingest.COLUMNS)}) FROM STDIN", io.StringIO(text))

        # Interleaved rounds, each path into the same freshly truncated table, so drift in
        # the machine's load touches every path alike; the median is reported.
        for round_ in range(1, args.repeat + 1):
            if round_ > 1:
                events, bodies, naive_bodies, otlp_bodies, copy_texts = prepare()
            truncate()
            timings[COPY].append(run_parallel(copy_texts, copy_batch, args.concurrency))
            assert count() == args.events, "raw COPY lost rows"
            truncate()
            # With and without auth in alternating order, so neither always runs right after COPY.
            pair = [(ENDPOINT, http_poster(port, "/api/requests/ingest/", args.batch, auth)),
                    (NO_AUTH, http_poster(port, NO_AUTH_PATH, args.batch))]
            for i, (name, poster) in enumerate(pair if round_ % 2 else pair[::-1]):
                if i:
                    truncate()
                timings[name].append(run_parallel(bodies, poster, args.concurrency))
                assert count() == args.events, f"{name} lost rows"
            peak_rss = max([peak_rss, *worker_rss_kib(server.pid)])
            truncate()
            timings[OTLP].append(run_parallel(otlp_bodies, otlp_poster(port, auth), args.concurrency))
            assert count() == args.events, "the OTLP receiver lost rows"
            peak_rss = max([peak_rss, *worker_rss_kib(server.pid)])
            truncate()
            timings[NAIVE].append(run_parallel(
                naive_bodies, http_poster(port, "/bench/naive-ingest/", args.batch), args.concurrency))
            assert count() == naive_n, "the naive path lost rows"
            truncate()
            print(f"round {round_}/{args.repeat}: " + ", ".join(
                f"{name} {(naive_n if name == NAIVE else args.events) / t[-1]:,.0f}/s"
                for name, t in timings.items()), flush=True)
        results = {
            name: (naive_n if name == NAIVE else args.events, statistics.median(t))
            for name, t in timings.items()
        }

    limit = args.events / results[COPY][1]
    endpoint = args.events / results[ENDPOINT][1]
    naive = naive_n / results[NAIVE][1]
    otlp = args.events / results[OTLP][1]
    print()
    print(f"database: {database} ({'hypertable' if hypertable else 'plain table'}), "
          f"{args.events} events in batches of {args.batch} ({mb:.1f} MB of JSON), "
          f"{args.concurrency} clients, {args.workers} gunicorn workers, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"median of {args.repeat} interleaved rounds")
    print(f"{'path':<30} {'events':>9} {'seconds':>8} {'events/s':>10} {'vs COPY':>8}")
    for name, (n, secs) in results.items():
        print(f"{name:<30} {n:>9} {secs:>8.2f} {n / secs:>10.0f} {n / secs / limit:>8.0%}")
    # Paired per round, then the median: raw COPY alone varied by up to 1.5x between the rounds
    # of one run on the 2-core machine, and a ratio of medians mixes rounds.
    per_round = [c / e for c, e in zip(timings[COPY], timings[ENDPOINT], strict=True)]
    vs_copy = statistics.median(per_round)
    print(f"endpoint / raw COPY: {vs_copy:.0%} (median of the rounds' paired ratios; "
          f"{endpoint / limit:.0%} as a ratio of medians; target >= 70% on TimescaleDB, histograms maintained)")
    print(f"endpoint / naive:    {endpoint / naive:.1f}x (target >= 5x)")
    per_request_s = results[ENDPOINT][1] * args.concurrency / len(bodies)
    auth_us = auth_cost_us(key)
    # Paired per round (same machine state), then the median: steadier than a ratio of medians.
    paired = statistics.median(1 - a / b for a, b in zip(timings[NO_AUTH], timings[ENDPOINT], strict=True))
    print(f"auth cost:           {paired:+.1%} of ingest throughput over HTTP (median of the rounds' paired "
          f"ratios, with a key vs the same view without auth; target <= 3%)")
    print(f"auth cost in-process: {auth_us:.1f} us per request = {auth_us / 1e6 / per_request_s:.3%} of one "
          f"{args.batch}-event request ({per_request_s * 1e3:.0f} ms)")
    print(f"OTLP / JSON endpoint: {otlp / endpoint:.0%} (target >= 50%; one {args.batch}-span "
          f"protobuf+gzip body is {len(otlp_bodies[0]) / 1e6:.2f} MB)")
    dirty = None
    if hypertable:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM apirequest_dirty")
            dirty = cursor.fetchone()[0]
        print(f"dirty ranges recorded by the rounds' writes (below a watermark): {dirty:,}")
    print(f"peak gunicorn worker RSS: {peak_rss / 1024:.0f} MiB "
          f"(after warm-up {base_rss / 1024:.0f} MiB; one {args.batch}-event body is "
          f"{len(bodies[0]) / 1e6:.1f} MB)")
    report = {
        "when": datetime.now(UTC).isoformat(), "database": database, "hypertable": hypertable,
        "arrival": args.arrival, "arrival_span_s": ARRIVALS[args.arrival].total_seconds(), "dirty_ranges": dirty,
        "events": args.events, "batch": args.batch, "concurrency": args.concurrency, "workers": args.workers,
        "cores": os.cpu_count(),
        "repeat": args.repeat,
        "paths": {name: {"events": n, "median_seconds": secs, "events_per_s": n / secs,
                         "all_seconds": timings[name]} for name, (n, secs) in results.items()},
        "endpoint_vs_copy": vs_copy, "endpoint_vs_copy_ratio_of_medians": endpoint / limit,
        "endpoint_vs_copy_per_round": per_round,
        "endpoint_vs_naive": endpoint / naive,
        "auth_cost": paired, "auth_cost_in_process_us": auth_us,
        "otlp_vs_endpoint": otlp / endpoint,
        "peak_worker_rss_mib": peak_rss / 1024,
    }
    (ROOT / "reports").mkdir(exist_ok=True)
    name = "bench_ingest.json" if args.arrival == "fresh" else f"bench_ingest_{args.arrival}.json"
    (ROOT / "reports" / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
