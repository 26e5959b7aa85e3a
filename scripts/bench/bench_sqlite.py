#!/usr/bin/env python
"""The embedded default's speed: the API on SQLite beside plain SQL on the raw table.

Seeds N events over 7 days into a fresh SQLite file (as `make run` + `seed_requests` would),
then times, through the full Django stack (the test client: everything but the socket),
the requests a dashboard makes, each beside the plain-SQL query on the raw table that gives
its counts, in the same run (median of --calls). Prints a table; writes reports/bench_sqlite.md.

    .venv/bin/python scripts/bench/bench_sqlite.py [-n 200000] [--calls 7]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGETS = {"kpis": 150, "top": 150, "timeseries": 150, "hourly": 300}


def timed(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=7)
    parser.add_argument("--output", default=str(ROOT / "reports" / "bench_sqlite.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    path = Path(tempfile.mkdtemp(prefix="apm-bench-sqlite-")) / "apm.sqlite3"
    os.environ.update(DATABASE_URL=f"sqlite:///{path}", APM_TIMESCALE="off", DJANGO_DEBUG="0",
                      DJANGO_SETTINGS_MODULE="apm_platform.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-a-secret")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from observability import access

    call_command("migrate", verbosity=0)
    call_command("seed_requests", events=args.events, days=7, stdout=open(os.devnull, "w"))  # noqa: SIM115
    plain = sqlite3.connect(path)  # the stock module: no project functions
    (service,) = plain.execute("SELECT service FROM observability_apirequest GROUP BY 1 ORDER BY count(*) DESC"
                               " LIMIT 1").fetchone()
    # Every API read needs a key (issue 10); a read key, as a dashboard client would hold.
    _, key = access.create_key(name="bench-sqlite", scope="read")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    raw = "observability_apirequest"
    cases = [
        ("kpis", "/api/requests/kpis/ (exact p95)", "/api/requests/kpis/",
         f"SELECT count(*), sum(status_code >= 500), avg(latency_ms), max(latency_ms) FROM {raw}"),
        ("top", "/api/requests/top-endpoints/?with_p95=true", "/api/requests/top-endpoints/?with_p95=true",
         f"SELECT service, endpoint, count(*) AS n, avg(latency_ms) FROM {raw} GROUP BY 1, 2 ORDER BY n DESC LIMIT 10"),
        ("timeseries", "/api/requests/timeseries/?interval=hour", "/api/requests/timeseries/?interval=hour",
         f"SELECT substr(time, 1, 13), count(*), avg(latency_ms) FROM {raw}"
         " WHERE time >= datetime('now', '-1 day') GROUP BY 1"),
        ("hourly", f"/api/requests/hourly/?service={service} (first page)", f"/api/requests/hourly/?service={service}",
         f"SELECT substr(time, 1, 13), endpoint, count(*), avg(latency_ms) FROM {raw} WHERE service = '{service}'"
         " GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 100"),
    ]
    lines = [f"## SQLite {sqlite3.sqlite_version}, {args.events:,} seeded events over 7 days",
             "", f"Median of {args.calls} calls, in one run; the API through the Django test client. "
             "Baseline: plain SQL for the same counts on the raw table (stock sqlite3 module).", "",
             "| request | API ms | target ms | plain SQL ms |", "|---|---:|---:|---:|"]
    for key, label, url, sql in cases:
        def call(url=url):
            response = client.get(url, HTTP_HOST="localhost")
            assert response.status_code == 200, (url, response.status_code)
        api = timed(call, args.calls)
        base = timed(lambda sql=sql: plain.execute(sql).fetchall(), args.calls)
        print(f"{label:<55} API {api:8.1f} ms (target {TARGETS[key]})  SQL {base:8.1f} ms", flush=True)
        lines.append(f"| {label} | {api:.1f} | {TARGETS[key]} | {base:.1f} |")
    # The machine is shared: say how busy it was, since every figure moves with it.
    lines += ["", f"Load average (1 min) before seeding / after timing: {load_before:.2f} / "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs."]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
