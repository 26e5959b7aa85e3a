#!/usr/bin/env python
"""Storage benchmark: bytes per event and query times before and after TimescaleDB's columnstore.

Against DATABASE_URL (TimescaleDB; `make bench-storage` starts a throwaway cluster):

  1. seeds N events over 30 days ending --end with `seed_requests` (skip with --no-seed);
  2. runs scripts/bench/bench_queries.py on that data (API and plain SQL, same numbers checked);
  3. measures every relation with the code `report_storage` uses (rows, bytes) -> bytes/event;
  4. applies the policies (APM_COMPRESS_AFTER_DAYS, default 7) and runs them now, which
     compresses every raw chunk older than that (all of them: the data ends before today);
  5. measures again and runs the query benchmark again.

Results: reports/bench_storage.md and .json, plus the two query reports it ran
(reports/bench_storage_queries_{before,after}.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench import setup_django  # noqa: E402


def measure() -> list[dict]:
    from observability import storage

    rows = storage.relations()
    for row in rows:
        row["oldest"] = row["oldest"].isoformat() if row["oldest"] else None
        row["newest"] = row["newest"].isoformat() if row["newest"] else None
    return rows


def run_queries(label: str, args) -> dict:
    output = ROOT / "reports" / f"bench_storage_queries_{label}"
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_queries.py")), "--no-seed", "--end", args.end,
                    "--calls", str(args.calls), "--budget", str(args.budget), "--windows", args.windows,
                    "--output", str(output)], check=True, env=os.environ)
    return json.loads(output.with_suffix(".json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=1_000_000, help="events to seed (default 1,000,000)")
    parser.add_argument("--end", default="2026-11-01T00:00:00+00:00", help="end of the seeded 30 days")
    parser.add_argument("--no-seed", action="store_true", help="use the data already in the database")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per query and side (default 5)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per query and side (default 20)")
    parser.add_argument("--windows", default="24h,7d,30d", help="query windows (default 24h,7d,30d)")
    args = parser.parse_args()
    if setup_django("bench_storage", "apm_platform.settings", "bench-storage") is None:
        return 2
    from django.conf import settings
    from django.core.management import call_command

    from observability import db, retention

    call_command("migrate", verbosity=0)
    if not db.is_hypertable(retention.RAW):
        print("bench_storage: needs TimescaleDB (the columnstore is what it measures).")
        return 2
    if not args.no_seed:
        print(f"seeding {args.events:,} events ...", flush=True)
        call_command("seed_requests", events=args.events, days=30, end=datetime.fromisoformat(args.end))
    queries_before = run_queries("before", args)
    # Measured after the first query run, whose late-data refresh churns the aggregates: the
    # only change between the two measurements is then the compression.
    before = measure()

    print(f"compressing raw chunks older than {settings.APM_COMPRESS_AFTER_DAYS} days ...", flush=True)
    began = time.perf_counter()
    applied = retention.apply_policies()
    jobs = retention.run_policies_now()
    compress_seconds = time.perf_counter() - began
    after = measure()
    queries_after = run_queries("after", args)

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "database": db.describe(),
        "machine": queries_before["machine"], "events": before[0]["rows"], "policies": applied, "jobs": jobs,
        "compress_seconds": compress_seconds, "before": before, "after": after,
        "queries_before": queries_before["results"], "queries_after": queries_after["results"],
        "refreshes_before": queries_before["refreshes"], "refreshes_after": queries_after["refreshes"],
    }
    out = ROOT / "reports" / "bench_storage"
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


def _mb(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def markdown(report: dict) -> str:
    events = report["events"]
    lines = [
        f"## Columnstore on {events:,} seeded events, {report['database']}",
        "",
        f"{report['machine']}; {report['when']}. Raw chunks older than APM_COMPRESS_AFTER_DAYS compressed by "
        f"`apply_policies` + the policy jobs run now ({report['compress_seconds']:.0f} s); segment by service, "
        "order by time. Sizes are TimescaleDB's `hypertable_detailed_size` (table + indexes + toast) of the "
        "raw hypertable and of each aggregate's materialization hypertable.",
        "",
        "| relation | rows | before MB | after MB | before B/event | after B/event | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b, a in zip(report["before"], report["after"], strict=True):
        ratio = b["total_bytes"] / a["total_bytes"] if a["total_bytes"] else None
        lines.append(
            f"| {b['relation']} | {b['rows']:,} | {_mb(b['total_bytes'])} | {_mb(a['total_bytes'])} | "
            f"{b['total_bytes'] / events:.1f} | {a['total_bytes'] / events:.1f} | "
            f"{'-' if ratio is None else f'{ratio:.1f}x'} |"
        )
    lines += [
        "",
        "Policies in force after: " + "; ".join(report["policies"]) + ".",
        "",
        "### Queries before and after (median ms; API and the plain-SQL baseline on the raw table, same run)",
        "",
        "| window | query | source | API before | API after | SQL before | SQL after |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    after = {(r["window"], r["query"]): r for r in report["queries_after"]}
    for r in report["queries_before"]:
        a = after.get((r["window"], r["query"]))
        if a is None:
            continue
        lines.append(f"| {r['window']} | {r['query']} | {r['source']} | {r['api_median_ms']:.1f} | "
                     f"{a['api_median_ms']:.1f} | {r['sql_median_ms']:.1f} | {a['sql_median_ms']:.1f} |")
    lines += ["", "### Rollup refresh (late data lands in compressed chunks after)", "",
              "| after | rollup | before s | after s |", "|---|---|---:|---:|"]
    for b, a in zip(report["refreshes_before"], report["refreshes_after"], strict=False):
        lines.append(f"| {b['after']} | {b['rollup']} | {b['seconds']:.2f} | {a['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
