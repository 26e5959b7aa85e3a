#!/usr/bin/env python
"""Query benchmark: every analytics path through the API beside plain SQL on the raw table.

Against DATABASE_URL (PostgreSQL; `make bench` starts a throwaway cluster with TimescaleDB
preloaded where it is installed, `APM_TIMESCALE=off make bench` for plain PostgreSQL):

  1. seeds N events over 30 days with `seed_requests` (skip with --no-seed);
  2. serves the app with gunicorn on loopback;
  3. for windows of 1 h, 24 h, 7 d and 30 d ending at the data's end, and for each query,
     checks that the API and the baseline SQL return the same numbers, then times both
     (median and p95 over --calls calls, at least 3 calls and fewer only when one side's
     calls exceed --budget seconds in all: the table says how many ran);
  4. measures the error of approx percentiles: for many windows (aligned and unaligned, 1 h to
     30 d) and filters (global, every service, the 50 largest endpoints), every approx
     percentile of /kpis/ against exact percentile_cont on the same events; prints the max,
     which must stay within (γ-1)/(γ+1) = 0.990099%;
  5. on TimescaleDB, times a rollup refresh after one new hour of data and after 1% late
     data spread over the previous 14 days (both added with plain SQL, then deleted again).

Results: reports/bench_queries.md (a table) and reports/bench_queries.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from observability.sqlite_functions import percentile_cont  # noqa: E402
from observability.tests.live import Gunicorn  # noqa: E402
from scripts.bench import setup_django  # noqa: E402

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SERVICE = "svc-000"  # the busiest service
RAW = "observability_apirequest"


# --- The queries: (name, API path + params, baseline SQL, how to compare) ---------------------

BOUND = (1.02 - 1) / (1.02 + 1)  # the histograms' stated relative error
ENDPOINT = "/api/v1/r0/{id}"  # the busiest endpoint of SERVICE
FOUR = ", ".join(f"percentile_cont({f}) WITHIN GROUP (ORDER BY latency_ms)" for f in (0.5, 0.9, 0.95, 0.99))
PERCENTILE_KEYS = ("p50_latency_ms", "p90_latency_ms", "p95_latency_ms", "p99_latency_ms")


def kpi_sql(extra: str = "", p95: bool = False, four: bool = False) -> str:
    return (
        "SELECT count(*), count(*) FILTER (WHERE status_code >= 500), avg(latency_ms), max(latency_ms)"
        + (", percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)" if p95 else "")
        + (f", {FOUR}" if four else "")
        + f" FROM {RAW} WHERE time >= %(start)s AND time < %(end)s {extra}"
    )


def top_sql(p95: bool, four: bool = False) -> str:
    return (
        "SELECT service, endpoint, count(*) AS hits, count(*) FILTER (WHERE status_code >= 500),"
        " avg(latency_ms), max(latency_ms)"
        + (", percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)" if p95 else "")
        + (f", {FOUR}" if four else "")
        + f" FROM {RAW} WHERE time >= %(start)s AND time < %(end)s"
        " GROUP BY service, endpoint ORDER BY hits DESC, service, endpoint LIMIT 10"
    )


def by_p95_sql() -> str:
    return (
        "SELECT service, endpoint, count(*), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95"
        f" FROM {RAW} WHERE time >= %(start)s AND time < %(end)s GROUP BY service, endpoint"
        " ORDER BY p95 DESC, service, endpoint LIMIT 1000"
    )


def series_sql() -> str:
    return (
        "SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01') AS bucket, count(*),"
        f" count(*) FILTER (WHERE status_code >= 500), avg(latency_ms), max(latency_ms), {FOUR}"
        f" FROM {RAW} WHERE time >= %(start)s AND time < %(end)s GROUP BY 1 ORDER BY 1"
    )


def rollup_sql(width: str) -> str:
    return (
        f"SELECT date_bin(INTERVAL '{width}', time, TIMESTAMPTZ '2000-01-01') AS bucket, endpoint, count(*),"
        " count(*) FILTER (WHERE status_code >= 500), avg(latency_ms), max(latency_ms),"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)"
        f" FROM {RAW} WHERE service = %(service)s AND time >= %(start)s AND time < %(end)s"
        " GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 1000"
    )


KPI_KEYS = ("hits", "errors", "avg_latency_ms", "max_latency_ms")
TOP_KEYS = ("service", "endpoint", "hits", "errors", "avg_latency_ms", "max_latency_ms")
ROLLUP_KEYS = ("bucket", "endpoint", "hits", "errors", "avg_latency_ms", "max_latency_ms", "p95_latency_ms")
SERIES_KEYS = ("bucket", "hits", "errors", "avg_latency_ms", "max_latency_ms", *PERCENTILE_KEYS)
APPROX = {"precision": "approx"}

QUERIES = [
    ("kpis, rollup filters, no p95", "/api/requests/kpis/", {"with_p95": "false"}, kpi_sql(), "kpi", KPI_KEYS),
    ("kpis, rollup filters, exact p95", "/api/requests/kpis/", {}, kpi_sql(p95=True), "kpi",
     (*KPI_KEYS, "p95_latency_ms")),
    ("kpis, raw-only filter (method=POST), no p95", "/api/requests/kpis/", {"method": "POST", "with_p95": "false"},
     kpi_sql("AND method = 'POST'"), "kpi", KPI_KEYS),
    ("top-endpoints, no p95", "/api/requests/top-endpoints/", {}, top_sql(False), "top", TOP_KEYS),
    ("top-endpoints, exact p95", "/api/requests/top-endpoints/", {"with_p95": "true"}, top_sql(True), "top",
     (*TOP_KEYS, "p95_latency_ms")),
    (f"hourly, one service ({SERVICE})", "/api/requests/hourly/", {"service": SERVICE, "page_size": "1000"},
     rollup_sql("1 hour"), "rollup", ROLLUP_KEYS),
    (f"daily, one service ({SERVICE})", "/api/requests/daily/", {"service": SERVICE, "page_size": "1000"},
     rollup_sql("1 day"), "rollup", ROLLUP_KEYS),
    ("kpis, exact p50/p90/p95/p99", "/api/requests/kpis/", {}, kpi_sql(four=True), "kpi",
     (*KPI_KEYS, *PERCENTILE_KEYS)),
    ("kpis, approx percentiles, global", "/api/requests/kpis/", APPROX, kpi_sql(four=True), "kpi~",
     (*KPI_KEYS, *PERCENTILE_KEYS)),
    (f"kpis, approx percentiles, one service ({SERVICE})", "/api/requests/kpis/", {**APPROX, "service": SERVICE},
     kpi_sql("AND service = %(service)s", four=True), "kpi~", (*KPI_KEYS, *PERCENTILE_KEYS)),
    ("kpis, approx percentiles, one endpoint", "/api/requests/kpis/",
     {**APPROX, "service": SERVICE, "endpoint": ENDPOINT},
     kpi_sql("AND service = %(service)s AND endpoint = %(endpoint)s", four=True), "kpi~",
     (*KPI_KEYS, *PERCENTILE_KEYS)),
    ("top-endpoints, approx percentiles", "/api/requests/top-endpoints/", {**APPROX, "with_p95": "true"},
     top_sql(False, four=True), "top~", (*TOP_KEYS, *PERCENTILE_KEYS)),
    ("top-endpoints, sort by approx p95, all series", "/api/requests/top-endpoints/",
     {**APPROX, "sort": "p95_latency_ms", "limit": "1000"}, by_p95_sql(), "rank~",
     ("service", "endpoint", "hits", "p95_latency_ms")),
    ("timeseries hourly, approx", "/api/requests/timeseries/", {**APPROX, "interval": "hour"}, series_sql(),
     "series~", SERIES_KEYS),
    ("timeseries hourly, exact", "/api/requests/timeseries/", {"interval": "hour"}, series_sql(), "series",
     SERIES_KEYS),
]


def api_rows(kind: str, body: dict, keys: tuple) -> list[tuple]:
    kind = kind.rstrip("~")
    if kind == "kpi":
        return [tuple(body[k] for k in keys)]
    rows = body["results"]
    if kind == "rank":
        # An approx ranking may order near-ties differently: compare as a set of series.
        return sorted(tuple(r[k] for k in keys) for r in rows)
    if kind in ("rollup", "series"):
        return [tuple(datetime.fromisoformat(r[k].replace("Z", "+00:00")) if k == "bucket" else r[k]
                      for k in keys) for r in rows]
    return [tuple(r[k] for k in keys) for r in rows]


def same(a: list[tuple], b: list[tuple], tolerances: list[float] | None = None) -> str | None:
    """None when both row lists agree (floats to 1e-9 relative, or the column's tolerance)."""
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for j, (u, v) in enumerate(zip(x, y, strict=True)):
            tolerance = tolerances[j] if tolerances else 1e-9
            if isinstance(u, float) or isinstance(v, float):
                if u is None or v is None:
                    if u is not v:
                        return f"row {i}: {x} vs {y}"
                elif not math.isclose(u, v, rel_tol=tolerance * (1 + 1e-9), abs_tol=1e-9):
                    return f"row {i}: {x} vs {y}"
            elif u != v:
                return f"row {i}: {x} vs {y}"
    return None


def ceil_to(value: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    steps = math.ceil((value - epoch) / width)
    return epoch + steps * width


def timed(fn, calls: int, budget: float) -> list[float]:
    """Seconds per call: `calls` calls, or fewer (at least 3) once `budget` seconds are spent."""
    times: list[float] = []
    spent = 0.0
    while len(times) < calls and (len(times) < 3 or spent < budget):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
        spent += times[-1]
    return times


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        return f"{model}, {os.cpu_count()} cores, {mem / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        return f"{model}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=1_000_000, help="events to seed (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end", default="2026-11-01T00:00:00+00:00",
                        help="end of the seeded 30 days and of every window (default 2026-11-01T00:00Z)")
    parser.add_argument("--no-seed", action="store_true", help="use the data already in the database")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per query and side (default 20)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per query and side after which fewer calls are made (default 60)")
    parser.add_argument("--windows", default="1h,24h,7d,30d", help="comma-separated (default 1h,24h,7d,30d)")
    parser.add_argument("--only", default="", help="run only the queries whose name contains this text"
                        " (and skip the refresh timings)")
    parser.add_argument("--error-windows", type=int, default=4,
                        help="random windows per filter in the approx error sweep (default 4; 0 skips it)")
    parser.add_argument("--output", default=str(ROOT / "reports" / "bench_queries"),
                        help="path prefix of the .md and .json reports")
    args = parser.parse_args()

    url = setup_django("bench_queries", "apm_platform.settings", "bench")
    if url is None:
        return 2
    import psycopg2
    from django.core.management import call_command
    from django.db import connection

    from observability import db, retention, rollups

    end = datetime.fromisoformat(args.end)
    call_command("migrate", verbosity=0)
    if not args.no_seed:
        print(f"seeding {args.events:,} events ...", flush=True)
        call_command("seed_requests", events=args.events, days=30, seed=args.seed, end=end)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {RAW}")
        total = cursor.fetchone()[0]
        cursor.execute(f"ANALYZE {RAW}")
    database = db.describe()
    continuous = db.rollups_are_continuous()
    print(f"{database}: {total:,} events; rollups are "
          f"{'continuous aggregates' if continuous else 'plain views'}", flush=True)

    from observability.tests.utils import api_key_headers

    headers = api_key_headers("read")  # the API answers 401 without a key
    raw = psycopg2.connect(url)
    raw.autocommit = True
    results = []
    with Gunicorn({"DJANGO_DEBUG": "0", "GUNICORN_KEEPALIVE": "3600"}, workers=2) as server:
        http = server.connection()
        for label in args.windows.split(","):
            start = end - WINDOWS[label]
            for name, path, params, sql, kind, keys in QUERIES:
                if args.only not in name:
                    continue
                query = urlencode({**params, "start": start.isoformat(), "end": end.isoformat()})
                bind = {"start": start, "end": end, "service": SERVICE, "endpoint": ENDPOINT}
                if kind == "rollup":
                    # The rollup endpoints filter on the bucket start: whole buckets from the
                    # first one that starts at or after `start` to the last before `end`.
                    width = timedelta(hours=1) if "hourly" in path else timedelta(days=1)
                    bind.update(start=ceil_to(start, width), end=ceil_to(end, width))

                def call_api(path=path, query=query):
                    http.request("GET", f"{path}?{query}", headers=headers)
                    response = http.getresponse()
                    body = response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{path}?{query}: HTTP {response.status} {body[:200]!r}")
                    return json.loads(body)

                def call_sql(sql=sql, bind=bind):
                    with raw.cursor() as cursor:
                        cursor.execute(sql, bind)
                        return cursor.fetchall()

                body = call_api()
                sql_rows = [tuple(row) for row in call_sql()]
                if kind == "rank~":
                    sql_rows.sort()
                tolerances = [BOUND if k in PERCENTILE_KEYS and kind.endswith("~") else 1e-9 for k in keys]
                difference = same(api_rows(kind, body, keys), sql_rows, tolerances)
                if difference:
                    print(f"MISMATCH {label} {name}: {difference}")
                    return 1
                api_times = timed(call_api, args.calls, args.budget)
                sql_times = timed(call_sql, args.calls, args.budget)
                row = {
                    "window": label, "query": name, "source": body.get("source", "rollup"),
                    "api_median_ms": statistics.median(api_times) * 1000,
                    "api_p95_ms": percentile_cont(api_times, 0.95) * 1000,
                    "api_calls": len(api_times),
                    "sql_median_ms": statistics.median(sql_times) * 1000,
                    "sql_p95_ms": percentile_cont(sql_times, 0.95) * 1000,
                    "sql_calls": len(sql_times),
                }
                row["speedup"] = row["sql_median_ms"] / row["api_median_ms"]
                results.append(row)
                print(f"{label:>4} {name:<45} API {row['api_median_ms']:9.1f} ms  SQL {row['sql_median_ms']:9.1f} ms"
                      f"  x{row['speedup']:.1f}  ({len(api_times)}/{len(sql_times)} calls, same numbers)", flush=True)
        http.close()

    errors = approx_errors(raw, end, args)
    refreshes = []
    if continuous and not args.only:  # a partial run (--only) skips the refresh timings
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
            last_id = cursor.fetchone()[0]
        hour_events = max(1, total // (30 * 24))
        late_events = max(1, total // 100)
        for what, options in (
            (f"one new hour ({hour_events:,} events)",
             {"events": hour_events, "days": 1 / 24, "end": end + timedelta(hours=1)}),
            (f"1% late data ({late_events:,} events) over the previous 14 days",
             {"events": late_events, "days": 14, "end": end}),
        ):
            call_command("seed_requests", seed=args.seed, first_row=10**12 + len(refreshes) * 10**9,
                         no_refresh=True, **options, stdout=open(os.devnull, "w"))  # noqa: SIM115
            for relation in [r.relation for r in rollups.aggregates()]:
                began = time.perf_counter()
                rollups.refresh(relation, None, end + timedelta(hours=1))
                refreshes.append({"after": what, "rollup": relation, "seconds": time.perf_counter() - began})
                print(f"refresh {relation} after {what}: {refreshes[-1]['seconds']:.2f} s", flush=True)
        # Leave the seeded data as it was, so a rerun with --no-seed measures the same rows.
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {RAW} WHERE id > %s", [last_id])
        for relation in [r.relation for r in rollups.aggregates()]:
            rollups.refresh(relation, None, end + timedelta(hours=1))
        # ... and columnar as it was: the refreshes above left rows outside the columnstore in
        # the chunks they touched, which slowed the sort of all series by p95 from about 0.6 s
        # to 1.7-2.2 s until the hourly policy ran (as seed_requests does after seeding).
        retention.convert_columnar_now()

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "database": database,
        "rollups": "continuous aggregates" if continuous else "plain views", "events": total,
        "end": end.isoformat(), "calls": args.calls, "budget_s": args.budget, "results": results,
        "refreshes": refreshes, "approx_error": errors,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


def approx_errors(raw, end: datetime, args) -> dict:
    """The max relative error of approx /kpis/ percentiles against exact percentile_cont."""
    if not args.error_windows:
        return {}
    from django.test import Client

    from observability.tests.utils import api_key_headers

    client = Client(headers=api_key_headers("read"))
    rng = random.Random(args.seed)
    with raw.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT service FROM {RAW} WHERE time >= %s ORDER BY 1", [end - timedelta(days=1)])
        services = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"SELECT service, endpoint FROM {RAW} WHERE time >= %s GROUP BY 1, 2 ORDER BY count(*) DESC"
                       " LIMIT 50", [end - timedelta(days=1)])
        endpoints = cursor.fetchall()
    filters = [{}] + [{"service": s} for s in services] + [{"service": s, "endpoint": e} for s, e in endpoints]
    lengths = [timedelta(hours=1), timedelta(hours=5), timedelta(days=1), timedelta(days=7), timedelta(days=30)]
    worst = {"error": 0.0}
    checked = 0
    began = time.perf_counter()
    for chosen in filters:
        for i in range(args.error_windows if chosen else 5 * args.error_windows):
            length = lengths[i % len(lengths)] if chosen else lengths[i % len(lengths)]
            stop = end - timedelta(seconds=rng.randrange(int((timedelta(days=30) - length).total_seconds()) + 1))
            if i % 2 == 0:  # aligned to the hour
                stop = ceil_to(stop, timedelta(hours=1))
            start = stop - length
            where = " AND ".join([f"{k} = %({k})s" for k in chosen] + ["time >= %(start)s", "time < %(end)s"])
            with raw.cursor() as cursor:
                cursor.execute(f"SELECT {FOUR} FROM {RAW} WHERE {where}", {**chosen, "start": start, "end": stop})
                exact = cursor.fetchone()
            if exact[0] is None:
                continue
            body = client.get("/api/requests/kpis/", {**chosen, "start": start.isoformat(), "end": stop.isoformat(),
                                                      "precision": "approx"}, HTTP_HOST="localhost").json()
            for key, want in zip(PERCENTILE_KEYS, exact, strict=True):
                error = abs(body[key] - want) / want if want else abs(body[key])
                checked += 1
                if error > worst["error"]:
                    worst = {"error": error, "key": key, "filters": chosen, "start": start.isoformat(),
                             "end": stop.isoformat(), "approx": body[key], "exact": want,
                             "precision": body["precision"]}
    worst.update(checked=checked, filters=len(filters), seconds=round(time.perf_counter() - began, 1),
                 bound=BOUND)
    print(f"approx error sweep: {checked:,} percentiles over {len(filters)} filters, max relative error "
          f"{worst['error'] * 100:.6f}% (bound {BOUND * 100:.6f}%)", flush=True)
    return worst


def markdown(report: dict) -> str:
    lines = [
        f"## {report['events']:,} events, {report['database']} ({report['rollups']})",
        "",
        f"{report['machine']}; {report['when']}; windows end at {report['end']}; median and p95 over up to "
        f"{report['calls']} calls per side (calls column: API/SQL). Baseline: plain SQL on the raw table.",
        "",
        "| window | query | source | API median ms | API p95 ms | SQL median ms | SQL p95 ms | SQL / API | calls |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['window']} | {r['query']} | {r['source']} | {r['api_median_ms']:.1f} | {r['api_p95_ms']:.1f} | "
            f"{r['sql_median_ms']:.1f} | {r['sql_p95_ms']:.1f} | {r['speedup']:.1f}x | "
            f"{r['api_calls']}/{r['sql_calls']} |"
        )
    if report.get("approx_error"):
        e = report["approx_error"]
        lines += ["", f"Approx percentiles: {e['checked']:,} percentiles of /kpis/ over {e['filters']} filters "
                  f"(global, every service, the 50 largest endpoints) and random windows of 1 h to 30 d, "
                  f"aligned and unaligned: max relative error {e['error'] * 100:.6f}% "
                  f"(bound {e['bound'] * 100:.6f}%)."]
    if report["refreshes"]:
        lines += ["", "| refresh after | rollup | seconds |", "|---|---|---:|"]
        lines += [f"| {r['after']} | {r['rollup']} | {r['seconds']:.2f} |" for r in report["refreshes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
