#!/usr/bin/env python
"""The dashboard's API calls for one view, timed as the page makes them, beside plain SQL.

Against DATABASE_URL (PostgreSQL; `make bench-dashboard` starts a throwaway cluster with
TimescaleDB preloaded where it is installed):

  1. seeds N events over the 30 days up to the current hour with `seed_requests` (skip with
     --no-seed);
  2. serves the app with gunicorn on loopback;
  3. for the chosen view (default: 30 days, every service, approx percentiles) issues the five
     requests dashboard.js makes, at once from five connections as a browser does (KPIs of the
     window and of the previous one, the time series, the top endpoints with percentiles, the
     service/endpoint pairs), and times the wall from the first request to the last answer;
  4. in the same run, the baseline: the same five answers by plain SQL on the raw table (exact
     percentile_cont), also at once from five connections.

Prints a table (median and max over --rounds) and writes reports/bench_dashboard.{md,json}.
The issue's target: the API's wall at most 300 ms on TimescaleDB with 10M events.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from observability.tests.live import Gunicorn  # noqa: E402
from scripts.bench import setup_django  # noqa: E402

RAW = "observability_apirequest"
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
FOUR = ", ".join(f"percentile_cont({f}) WITHIN GROUP (ORDER BY latency_ms)" for f in (0.5, 0.9, 0.95, 0.99))
COUNTS = "count(*), count(*) FILTER (WHERE status_code >= 500), avg(latency_ms), max(latency_ms)"
TARGET_MS = 300.0


def page_window(label: str, now: datetime) -> tuple[datetime, datetime, str]:
    """The window dashboard.js asks for: aligned to its interval, ending with the current one."""
    length = WINDOWS[label]
    width = timedelta(hours=1) if length <= timedelta(days=7) else timedelta(days=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    end = epoch + ((now - epoch) // width + 1) * width
    return end - length, end, "hour" if width == timedelta(hours=1) else "day"


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def api_calls(start, end, interval, precision) -> list[str]:
    previous = start - (end - start)
    window = {"start": iso(start), "end": iso(end)}
    return [
        "/api/requests/kpis/?" + urlencode({**window, "precision": precision}),
        "/api/requests/kpis/?" + urlencode({"start": iso(previous), "end": iso(start), "precision": precision}),
        "/api/requests/timeseries/?" + urlencode({"interval": interval, **window, "precision": precision}),
        "/api/requests/top-endpoints/?" + urlencode({"sort": "hits", "order": "desc", "limit": 10,
                                                     "with_p95": "true", **window, "precision": precision}),
        "/api/requests/series/?" + urlencode(window),
    ]


def sql_calls(start, end, interval) -> list[tuple[str, tuple]]:
    previous = start - (end - start)
    where = "time >= %s AND time < %s"
    return [
        (f"SELECT {COUNTS}, {FOUR} FROM {RAW} WHERE {where}", (start, end)),
        (f"SELECT {COUNTS}, {FOUR} FROM {RAW} WHERE {where}", (previous, start)),
        (f"SELECT date_trunc(%s, time) AS b, {COUNTS}, {FOUR} FROM {RAW} WHERE {where} GROUP BY b ORDER BY b",
         (interval, start, end)),
        (f"SELECT service, endpoint, {COUNTS}, {FOUR} FROM {RAW} WHERE {where} GROUP BY service, endpoint "
         "ORDER BY count(*) DESC, service, endpoint LIMIT 10", (start, end)),
        (f"SELECT service, endpoint, count(*) FROM {RAW} WHERE {where} GROUP BY service, endpoint "
         "ORDER BY service, endpoint", (start, end)),
    ]


def refresh_rollups(attempts: int = 30, *, verbose: bool = False, end=None) -> None:
    """Materialize every rollup over all history (up to `end`: only the buckets that end before
    it), waiting out a refresh policy run at the same time.

    seed_requests refreshes too, but fails when TimescaleDB's own policy job refreshes the same
    aggregate at that moment ("due to a concurrent refresh"); a benchmark must not lose a
    10-minute seed to that.
    """
    from django.db import OperationalError

    from observability import rollups

    for rollup in rollups.aggregates():
        began = time.monotonic()
        for attempt in range(attempts):
            try:
                rollups.refresh(rollup.relation, None, end)
                if verbose:
                    print(f"  refreshed {rollup.relation} in {time.monotonic() - began:.1f} s", flush=True)
                break
            except OperationalError as exc:
                if "concurrent refresh" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=1_000_000, help="events to seed (default 1,000,000)")
    parser.add_argument("--no-seed", action="store_true", help="use the data already in the database")
    parser.add_argument("--now", default=None,
                        help="ISO 8601 time the page is opened at (default: now); with --no-seed, the end of "
                             "the data already there (e.g. `make bench`'s 2026-11-01T00:00:00+00:00)")
    parser.add_argument("--window", default="30d", choices=sorted(WINDOWS))
    parser.add_argument("--precision", default="approx", choices=("approx", "exact"))
    parser.add_argument("--rounds", type=int, default=10, help="timed page loads (default 10)")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="timed SQL rounds (default 3)")
    parser.add_argument("--workers", type=int, default=5,
                        help="gunicorn workers (default 5: gunicorn.conf.py's default on 2 cores)")
    parser.add_argument("--output", default=str(ROOT / "reports" / "bench_dashboard"))
    args = parser.parse_args()

    url = setup_django("bench_dashboard", "apm_platform.settings", "bench-dashboard")
    if url is None:
        return 2
    import psycopg2
    from django.core.management import call_command
    from django.db import connection

    from observability import db
    from observability.tests.utils import api_key_headers

    call_command("migrate", verbosity=0)
    if not args.no_seed:
        print(f"seeding {args.events:,} events ...", flush=True)
        call_command("seed_requests", events=args.events, days=30, no_refresh=True)
        refresh_rollups()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {RAW}")
        total = cursor.fetchone()[0]
        cursor.execute(f"ANALYZE {RAW}")
    database = db.describe()
    headers = {"Accept": "application/json", **api_key_headers("read")}
    opened = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    # A page opened at the end of the data (just before it, so that the last bucket is the one
    # that ends there, as on a live page).
    start, end, interval = page_window(args.window, opened - timedelta(microseconds=1) if args.now else opened)
    print(f"{database}: {total:,} events; view {args.window} [{iso(start)}, {iso(end)}) by {interval}, "
          f"precision={args.precision}", flush=True)
    names = ["kpis (window)", "kpis (previous window)", "timeseries", "top-endpoints", "series"]

    paths = api_calls(start, end, interval, args.precision)
    api_walls, per_call = [], {name: [] for name in names}
    with Gunicorn({"DJANGO_DEBUG": "0"}, workers=args.workers) as server:
        connections = [server.connection() for _ in paths]

        def get(i):
            t0 = time.perf_counter()
            connections[i].request("GET", paths[i], headers=headers)
            response = connections[i].getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{paths[i]}: HTTP {response.status} {body[:300]!r}")
            return names[i], (time.perf_counter() - t0) * 1000

        with ThreadPoolExecutor(len(paths)) as pool:
            list(pool.map(get, range(len(paths))))  # warm-up: connections, caches
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                answers = list(pool.map(get, range(len(paths))))
                api_walls.append((time.perf_counter() - t0) * 1000)
                for name, ms in answers:
                    per_call[name].append(ms)

    queries = sql_calls(start, end, interval)
    raws = [psycopg2.connect(url) for _ in queries]

    def run_sql(i):
        with raws[i].cursor() as cursor:
            cursor.execute(*queries[i])
            cursor.fetchall()

    sql_walls = []
    with ThreadPoolExecutor(len(queries)) as pool:
        for _ in range(args.baseline_rounds):
            t0 = time.perf_counter()
            list(pool.map(run_sql, range(len(queries))))
            sql_walls.append((time.perf_counter() - t0) * 1000)
    for raw in raws:
        raw.close()

    report = {
        "gunicorn": f"{args.workers} sync workers",
        "database": database, "events": total, "window": args.window, "interval": interval,
        "precision": args.precision, "machine": f"{platform.machine()}, {platform.python_version()}",
        "api_wall_ms": {"median": statistics.median(api_walls), "max": max(api_walls), "rounds": len(api_walls)},
        "per_call_ms": {path: statistics.median(v) for path, v in per_call.items()},
        "sql_wall_ms": {"median": statistics.median(sql_walls), "max": max(sql_walls), "rounds": len(sql_walls)},
        "target_ms": TARGET_MS,
    }
    report["within_target"] = report["api_wall_ms"]["max"] <= TARGET_MS
    lines = [
        f"# Dashboard page load: {args.window} view, precision={args.precision}",
        "",
        f"{database}, {total:,} events. Wall time from the first of the page's five API requests "
        f"(sent at once on five connections, as a browser does) to the last answer; baseline: the "
        f"same numbers by plain SQL on the raw table (exact percentiles), also at once.",
        "",
        "| | median | max | rounds |",
        "|---|---:|---:|---:|",
        f"| dashboard API calls | {report['api_wall_ms']['median']:,.0f} ms | {report['api_wall_ms']['max']:,.0f} ms "
        f"| {len(api_walls)} |",
        f"| plain SQL on the raw table | {report['sql_wall_ms']['median']:,.0f} ms | "
        f"{report['sql_wall_ms']['max']:,.0f} ms | {len(sql_walls)} |",
        "",
        "| call (median, while the others run) | ms |",
        "|---|---:|",
        *[f"| `{path}` | {ms:,.0f} |" for path, ms in report["per_call_ms"].items()],
        "",
        f"Target: at most {TARGET_MS:.0f} ms: {'met' if report['within_target'] else 'NOT met'} (max of the rounds).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.output + ".md").write_text(text)
    Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
