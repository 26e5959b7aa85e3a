#!/usr/bin/env python
"""Fresh data under sustained ingest: how much a query pays for what no policy has materialized yet.

Against the PostgreSQL server of DATABASE_URL (TimescaleDB; `make bench-fresh` starts a
throwaway cluster), each rate in a database of its own, created and dropped by this script (a
watermark only moves forward, so each worst case needs a fresh one):

  1. seeds --base events over the 30 days before the last two hours (the history);
  2. for a rate R (events/s; default 100, 1,000 and 10,000), adds the events a sustained R
     leaves unmaterialized in the worst case, i.e. just before the next policy run of each
     continuous aggregate: with its policy's end offset E, schedule S and bucket width W, an
     aggregate lags the clock by up to W + E + S. The background jobs are paused and every
     aggregate is refreshed to exactly that worst-case watermark (W + E + S before now, rounded
     down to its bucket), and the events of the longest lag the whole-traffic tiers have (the
     hourly ones': 1 h 5 min) are written at rate R into the last minutes before now;
  3. times, through the API (gunicorn on loopback, median of --calls), the questions of the
     issue over the last 24 h: KPIs with approx percentiles (and without percentiles), and
     /timeseries/ by the hour; beside them plain SQL on the raw table for the same KPIs;
  4. measures the background refresh cost at that rate: each aggregate's policy refresh of one
     schedule period of new events (the fine tier every minute, the hourly tiers every 5 minutes,
     the daily ones every hour), as seconds per hour of ingest and as a share of one core;

Results: reports/bench_fresh.md (a table) and reports/bench_fresh.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from observability.tests.live import Gunicorn  # noqa: E402
from scripts.bench import setup_django  # noqa: E402

RAW = "observability_apirequest"
FIRST_ROW = 10**13  # ids of the added events, far from the seeded ones
KPI_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE status_code >= 500), avg(latency_ms), max(latency_ms),"
    " percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)"
    f" FROM {RAW} WHERE time >= %s AND time < %s"
)


def worst_lag(rollup) -> timedelta:
    """How far an aggregate's watermark trails the clock just before its next policy run, at
    most: the last run materialized buckets that ended `end_offset` before it, `schedule` ago,
    and the bucket under way then was not among them."""
    return rollup.width + rollup.refresh.end_offset + rollup.refresh.schedule


def worst_mark(rollup, now: datetime) -> datetime:
    """A watermark at least `worst_lag` behind `now` (on a bucket boundary, as every watermark)."""
    from observability import rollups

    return rollups.floor(now - worst_lag(rollup), rollup.width)


def refresh_to(marks: dict) -> None:
    from observability import rollups

    for rollup in rollups.aggregates():  # catalogue order: sources first
        rollups.refresh(rollup.relation, None, marks[rollup.relation])


def add_events(rate: int, start: datetime, end: datetime, seed: int) -> int:
    """rate events/s over [start, end), with seed_requests' services, endpoints and latencies."""
    from django.core.management import call_command

    seconds = (end - start).total_seconds()
    events = int(rate * seconds)
    call_command("seed_requests", events=events, days=seconds / 86400, end=end.isoformat(), seed=seed,
                 first_row=FIRST_ROW, no_refresh=True, verbosity=0)
    return events


def timed(fn, calls: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=2_000_000, help="history events over 30 days (default 2,000,000)")
    parser.add_argument("--rates", default="100,1000,10000", help="events/s, comma-separated")
    parser.add_argument("--calls", type=int, default=7, help="timed calls per query (default 7)")
    parser.add_argument("--output", default=str(ROOT / "reports" / "bench_fresh"))
    parser.add_argument("--one-rate", type=int, help=argparse.SUPPRESS)  # the child: one rate, this database
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print("bench_fresh: DATABASE_URL must point at PostgreSQL with TimescaleDB (make bench-fresh starts one).")
        return 2
    if args.one_rate:
        return child(args)
    import psycopg2

    admin = psycopg2.connect(url)
    admin.autocommit = True
    results = []
    base_url = url.rsplit("/", 1)[0]
    for rate in (int(r) for r in args.rates.split(",")):
        name = f"apm_bench_fresh_{rate}"
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")  # a name this script chose
            cursor.execute(f"CREATE DATABASE {name}")
        try:
            out = Path(tempfile.mkstemp(suffix=".json")[1])
            code = subprocess.call([sys.executable, __file__, "--one-rate", str(rate), "--base", str(args.base),
                                    "--calls", str(args.calls), "--output", str(out)],
                                   env={**os.environ, "DATABASE_URL": f"{base_url}/{name}"})
            if code:
                return code
            results.append(json.loads(out.read_text()))
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    write(results, args)
    return 0


def child(args) -> int:
    url = setup_django("bench_fresh", "apm_platform.settings", "bench-fresh")
    import psycopg2
    from django.core.management import call_command

    from observability import db, rollups
    from observability.tests.utils import api_key_headers

    call_command("migrate", verbosity=0)
    if not db.rollups_are_continuous():
        print("bench_fresh: needs TimescaleDB (continuous aggregates); this database has none.")
        return 2
    history_end = rollups.floor(datetime.now(UTC), rollups.HOUR) - timedelta(hours=2)
    print(f"rate {args.one_rate:,}/s: seeding {args.base:,} history events ...", flush=True)
    call_command("seed_requests", events=args.base, days=30, end=history_end.isoformat(), no_refresh=True,
                 verbosity=0)
    raw = psycopg2.connect(url)
    raw.autocommit = True
    headers = {"Accept": "application/json", **api_key_headers("read")}
    from observability import retention

    retention.schedule_refresh_policies(False)
    with Gunicorn({"DJANGO_DEBUG": "0", "GUNICORN_KEEPALIVE": "3600"}, workers=2) as server:
        http = server.connection()

        def get(path):
            http.request("GET", path, headers=headers)
            response = http.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status} {body[:300]!r}")
            return json.loads(body)

        row = measure(args.one_rate, args, raw, get)
    row["database"] = db.describe()
    Path(args.output).write_text(json.dumps(row))
    return 0


def measure(rate: int, args, raw, get) -> dict:
    from observability import rollups

    now = datetime.now(UTC)
    marks = {rollup.relation: worst_mark(rollup, now) for rollup in rollups.aggregates()}
    # The events of the longest worst-case lag among the tiers the planner reads for all
    # traffic (the hourly whole-traffic ones: 1 h 5 min), at the rate.
    tail_start = now - max(worst_lag(rollups.BY_RELATION[name])
                           for name in ("apirequest_global_hourly", "apirequest_global_percentiles_hourly"))
    print(f"rate {rate:,}/s: writing the unmaterialized tail [{tail_start:%H:%M}, {now:%H:%M:%S}) ...", flush=True)
    added = add_events(rate, tail_start, now, seed=rate)
    refresh_to(marks)
    window = {"start": (now - timedelta(hours=24)).isoformat(), "end": now.isoformat()}
    queries = {
        "kpis, approx percentiles": "/api/requests/kpis/?" + urlencode({**window, "precision": "approx"}),
        "kpis, no percentiles": "/api/requests/kpis/?" + urlencode({**window, "with_p95": "false"}),
        "timeseries by hour, approx": "/api/requests/timeseries/?" + urlencode(
            {"interval": "hour", "precision": "approx"}),
        "kpis, one service, approx (no fine tier)": "/api/requests/kpis/?" + urlencode(
            {**window, "precision": "approx", "service": "svc-000"}),
    }
    row = {"rate": rate, "tail_events": added,
           "tail_minutes": round((now - tail_start).total_seconds() / 60, 1),
           "fine_lag_s": round((now - marks["apirequest_global_minute"]).total_seconds()),
           "api_ms": {}}
    # The answer must be right before it is timed: the events of the window, all of them.
    with raw.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {RAW} WHERE time >= %s AND time < %s",
                       [now - timedelta(hours=24), now])
        (expected,) = cursor.fetchone()
    hits = get(queries["kpis, approx percentiles"])["hits"]
    if hits != expected:
        raise RuntimeError(f"rate {rate}: /kpis/ counted {hits} events, the raw table {expected}")
    for name, path in queries.items():
        row["api_ms"][name] = statistics.median(timed(lambda path=path: get(path), args.calls))

    def sql():
        with raw.cursor() as cursor:
            cursor.execute(KPI_SQL, [now - timedelta(hours=24), now])
            return cursor.fetchall()

    row["sql_kpis_ms"] = statistics.median(timed(sql, max(3, args.calls // 2)))
    # Background cost: each aggregate's refresh of what it has not materialized yet (its
    # worst-case lag: mostly events at the rate), timed, and scaled to the events of an hour at
    # the rate (a refresh costs about its events: every policy run materializes the buckets that
    # ended since the last one, so an hour of runs materializes an hour of events once).
    row["refresh_s_per_hour"] = {}
    for rollup in rollups.aggregates():
        lo, hi = marks[rollup.relation], rollups.floor(now, rollup.width)
        if rollup.width == rollups.MINUTE:
            hi = min(hi, lo + rollup.width)  # a minute of events, what two policy runs materialize
        with raw.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {RAW} WHERE time >= %s AND time < %s", [lo, hi])
            (events,) = cursor.fetchone()
        began = time.perf_counter()
        rollups.refresh(rollup.relation, lo, hi)
        spent = time.perf_counter() - began
        row["refresh_s_per_hour"][rollup.relation] = spent * rate * 3600 / events if events else 0.0
    row["refresh_core_share"] = sum(row["refresh_s_per_hour"].values()) / 3600
    print(f"  {json.dumps(row)}", flush=True)
    return row


def write(results: list[dict], args) -> None:
    out = Path(args.output)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    names = list(results[0]["api_ms"]) if results else []
    lines = [
        f"## Fresh data under sustained ingest, {results[0]['database'] if results else ''}",
        "",
        f"{platform.processor() or platform.machine()}, {args.base:,} history events over 30 days; "
        f"{datetime.now(UTC):%Y-%m-%dT%H:%M}Z. Worst case: every continuous aggregate at the watermark it "
        "has just before its next policy run; the events a sustained rate writes since the oldest watermark "
        "the whole-traffic tiers have (1 h 5 min) added at that rate. Median of "
        f"{args.calls} calls through the API (gunicorn, loopback), last 24 h; baseline: plain SQL on raw for the "
        "same KPIs (exact percentiles).",
        "",
        "| events/s | unmaterialized tail | fine-tier lag | " + " | ".join(f"{n} ms" for n in names)
        + " | plain SQL KPIs ms | background refresh, share of one core |",
        "|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rate']:,} | {r['tail_events']:,} events ({r['tail_minutes']} min) | {r['fine_lag_s']} s | "
            + " | ".join(f"{r['api_ms'][n]:.1f}" for n in names)
            + f" | {r['sql_kpis_ms']:.1f} | {100 * r['refresh_core_share']:.1f}% |")
    lines += ["", "Background refresh, seconds per hour of ingest, by aggregate:", "",
              "| aggregate | " + " | ".join(f"{r['rate']:,}/s" for r in results) + " |",
              "|---|" + "---:|" * len(results)]
    for name in results[0]["refresh_s_per_hour"] if results else []:
        lines.append(f"| {name} | " + " | ".join(f"{r['refresh_s_per_hour'][name]:.1f}" for r in results) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
