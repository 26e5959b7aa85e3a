#!/usr/bin/env python
"""The live measurement: sustained ingest with late events while a reader loads the dashboard,
on TimescaleDB with every policy live and the background refresher running.

Against DATABASE_URL (PostgreSQL with TimescaleDB; `make bench-live` starts a throwaway cluster):

  1. seeds --events over the 30 days up to now with `seed_requests`, refreshes every aggregate
     once and converts what the columnstore policies would (skip with --no-seed), then
     `apply_policies`: the refresh, retention and columnstore jobs run on their own schedules, as
     in a deployment (the container entrypoint runs the same command);
  2. serves the app with gunicorn on loopback (--workers) and starts the background refresher,
     `manage.py refresh_rollups --follow`, which re-materializes the ranges late writes mark dirty;
  3. for each --rate (events/s), --senders processes post batches of --batch events to
     `POST /api/requests/ingest/`, each sender on its own schedule and ingest key; a --late
     fraction of the events is --late-min to --late-max old, the rest are "now". After --warmup
     seconds a reader loads the dashboard page (its five API calls at once, as dashboard.js sends
     them) for all traffic, the busiest service and its busiest endpoint, over 24 h, 7 d and 30 d,
     windows ending now, back to back and round robin (one untimed load of each view first), until
     every view has --page-loads and --duration has passed (at most --max-duration-factor times it);
  4. measures achieved ingest against offered, batch latency, page time per view, the CPU of the
     refresher (its process and its database backend) and of TimescaleDB's job workers as a share
     of one core, and counts the rows each phase stored against what the senders were told was
     accepted;
  5. at the end, the same views by plain SQL on the raw table (exact percentile_cont), five
     queries at once per page, ingest stopped (a 30-day page takes tens of seconds at 10M events).

Prints the figures beside the targets (issue 28: at 1,000 events/s with 2% late, ingest >= 99% of
offered, batch p95 <= 150 ms, every page p95 <= 300 ms; at 5,000 events/s page p95 <= 500 ms;
stored == accepted) and writes reports/bench_live_<size>.{md,json}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from observability.tests.live import Gunicorn  # noqa: E402
from scripts.bench import setup_django  # noqa: E402
from scripts.bench.bench_dashboard import COUNTS, FOUR, RAW, iso, page_window, refresh_rollups  # noqa: E402

VIEWS = [(scope, window) for scope in ("all traffic", "one service", "one endpoint") for window in ("24h", "7d", "30d")]
CALLS = ["kpis (window)", "kpis (previous window)", "timeseries", "top-endpoints", "series"]
# application_name of each database client this bench starts, to tell their backends apart.
APP_WEB, APP_REFRESHER, APP_MONITOR = "bench-live-web", "bench-live-refresher", "bench-live-monitor"
REFRESHER = ["refresh_rollups", "--follow"]
# Issue 28's targets, by rate (a rate uses the targets of the largest rate at or below it; below
# 1,000/s those of 1,000/s). stored == accepted and ingest >= 99% of offered hold at every rate.
TARGETS = {
    1000: {"ingest_pct": 99.0, "batch_p95_ms": 150.0, "page_p95_ms": 300.0},
    5000: {"ingest_pct": 99.0, "batch_p95_ms": None, "page_p95_ms": 500.0},
}
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
OK_CODES = (200, 200, 200, 201, 204, 304, 400, 404)
ERROR_CODES = (500, 502, 503)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def with_app_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def targets_for(rate: int) -> tuple[int, dict]:
    at = max([r for r in TARGETS if r <= rate], default=min(TARGETS))
    return at, TARGETS[at]


# --- Senders (processes: 1,000-5,000 events/s of JSON is more than one GIL wants beside a reader) ---


def _event(rng: random.Random, now: float, late: float, late_min: float, late_max: float) -> tuple[dict, bool]:
    """One event shaped like seed_requests' traffic (1,000 series, a few hot, log-normal latency),
    and whether it is late."""
    s = int(1000 * rng.random() ** 3)
    is_late = rng.random() < late
    when = now - rng.uniform(late_min, late_max) if is_late else now
    status = ERROR_CODES[rng.randrange(3)] if rng.random() < 0.005 else OK_CODES[rng.randrange(8)]
    z = rng.gauss(0.0, 1.0)
    latency = round(math.exp(2.5 + (s % 11) * 0.15 + 0.6 * z) * (20 if rng.random() < 0.01 else 1), 3)
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"time": stamp, "service": f"svc-{s // 50:03d}", "endpoint": f"/api/v1/r{s % 50}/{{id}}",
            "method": METHODS[s % 6], "status_code": status, "latency_ms": latency,
            "trace_id": f"{rng.getrandbits(64):016x}", "user_ref": f"user-{rng.randrange(50000)}"}, is_late


def sender(index: int, port: int, key: str, batch: int, interval: float, start_at: float, late: float,
           late_min: float, late_max: float, stop, stop_at, progress, results) -> None:
    """Post a batch every `interval` seconds from `start_at` until `stop`; never skip a batch (a
    sender behind its schedule sends at once), so offered - sent is what it fell behind by."""
    rng = random.Random(1000 + index)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    batches = []  # (due, lag_s, latency_ms, http status, accepted, sent, late events)
    k = 0
    while True:
        due = start_at + k * interval
        if stop.wait(max(0.0, due - time.time())):
            break
        now = time.time()
        drawn = [_event(rng, now, late, late_min, late_max) for _ in range(batch)]
        late_events = sum(1 for _, is_late in drawn if is_late)
        body = json.dumps([event for event, _ in drawn]).encode()
        began = time.perf_counter()
        try:
            conn.request("POST", "/api/requests/ingest/", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            status = response.status
            accepted = json.loads(answer).get("inserted", 0) if status in (200, 201, 400) else 0
        except (OSError, http.client.HTTPException, ValueError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status, accepted = 0, 0
        batches.append((due, now - due, (time.perf_counter() - began) * 1000, status, accepted, batch, late_events))
        progress[index] += accepted
        k += 1
    conn.close()
    # Batches due before the stop: what this sender was offered.
    offered = max(0, math.ceil((stop_at.value - start_at) / interval))
    results.put({"index": index, "offered_batches": offered, "batch": batch, "batches": batches})


# --- CPU accounting from /proc ---------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


BOOT = _boot_time()


def proc_stat(pid: int) -> tuple[int, float, float, float] | None:
    """(ppid, own CPU s, CPU s of reaped children, start time as a Unix time) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15) ... starttime(20).
    return (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
            (int(fields[13]) + int(fields[14])) / CLK_TCK, BOOT + int(fields[19]) / CLK_TCK)


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := proc_stat(int(name))) and stat[0] == pid:
            found.append(int(name))
    return found


class CpuMeter(threading.Thread):
    """CPU seconds per group of processes over a phase, sampled every `every` seconds.

    A group is a function of the current pg_stat_activity rows returning (pid, whole) pairs;
    `whole` adds the CPU of the process's reaped children (exact for a tree whose root lives: the
    postmaster reaps every backend and job worker). A process first seen after the phase began
    counts from zero; one that exits between two samples loses what it spent since the last one,
    so the groups of short-lived processes (job workers) are lower bounds.
    """

    def __init__(self, url: str | None, groups: dict, every: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.groups, self.every = url, groups, every
        self.lock = threading.Lock()
        self.seen: dict[str, dict[int, list[float]]] = {name: {} for name in groups}
        self.began = time.time()
        self.done = threading.Event()
        self.db = None

    def _activity(self) -> list[tuple]:
        if self.url is None:
            return []
        try:
            if self.db is None:
                import psycopg2

                self.db = psycopg2.connect(with_app_name(self.url, APP_MONITOR))
                self.db.autocommit = True
            with self.db.cursor() as cursor:
                cursor.execute("SELECT pid, backend_type, application_name FROM pg_stat_activity")
                return cursor.fetchall()
        except Exception:  # noqa: BLE001 - a missed sample is a lower bound, not a failed bench
            self.db = None
            return []

    def sample(self) -> None:
        rows = self._activity()
        with self.lock:
            for name, pids in self.groups.items():
                for pid, whole in pids(rows):
                    stat = proc_stat(pid)
                    if stat is None:
                        continue
                    cpu = stat[1] + (stat[2] if whole else 0.0)
                    entry = self.seen[name].get(pid)
                    if entry is None:
                        self.seen[name][pid] = [cpu if stat[3] < self.began else 0.0, cpu]
                    else:
                        entry[1] = cpu

    def start_phase(self) -> None:
        with self.lock:
            self.seen = {name: {} for name in self.groups}
            self.began = time.time()
        self.sample()

    def end_phase(self) -> tuple[dict[str, float], dict[str, int], float]:
        """CPU seconds by group, processes seen by group, and the seconds the phase was metered."""
        self.sample()
        with self.lock:
            return ({name: sum(last - first for first, last in pids.values()) for name, pids in self.seen.items()},
                    {name: len(pids) for name, pids in self.seen.items()}, time.time() - self.began)

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.sample()


def job_runs(cursor) -> dict[str, int]:
    """Runs of TimescaleDB's jobs so far, by kind (its own job statistics; its total_duration
    stays zero in 2.28 unless job execution logging is on, so the time comes from /proc)."""
    try:
        cursor.execute("SELECT j.proc_name, sum(s.total_runs) FROM _timescaledb_internal.bgw_job_stat s"
                       " JOIN timescaledb_information.jobs j USING (job_id) GROUP BY j.proc_name")
        return {name: int(runs or 0) for name, runs in cursor.fetchall()}
    except Exception:  # noqa: BLE001 - an internal table: report n/a where a version moved it
        return {}


# PostgreSQL's own processes and TimescaleDB's long-lived ones; any other backend_type in
# pg_stat_activity is a job worker ("Refresh Continuous Aggregate Policy [1007]", ...).
NOT_JOBS = {"client backend", "autovacuum launcher", "autovacuum worker", "logical replication launcher",
            "background writer", "checkpointer", "walwriter", "startup", "archiver",
            "TimescaleDB Background Worker Launcher", "TimescaleDB Background Worker Scheduler"}


# --- The page: the dashboard's five calls, and the same answers by plain SQL ----------------------


def view_filters(scope: str, pick: dict) -> dict:
    if scope == "one service":
        return {"service": pick["service"]}
    if scope == "one endpoint":
        return {"service": pick["service"], "endpoint": pick["endpoint"]}
    return {}


def api_paths(window: str, filters: dict, now: datetime) -> list[str]:
    """The five requests dashboard.js load() sends for a view (default sort: hits, descending)."""
    start, end, interval = page_window(window, now)
    previous = start - (end - start)
    rng = {"start": iso(start), "end": iso(end)}
    approx = {"precision": "approx"}
    return [
        "/api/requests/kpis/?" + urlencode({**rng, **filters, **approx}),
        "/api/requests/kpis/?" + urlencode({"start": iso(previous), "end": iso(start), **filters, **approx}),
        "/api/requests/timeseries/?" + urlencode({"interval": interval, **rng, **filters, **approx}),
        "/api/requests/top-endpoints/?" + urlencode({"sort": "hits", "order": "desc", "limit": 10, "with_p95": "true",
                                                     **rng, **filters, **approx}),
        "/api/requests/series/?" + urlencode(rng),
    ]


def sql_queries(window: str, filters: dict, now: datetime) -> list[tuple[str, list]]:
    """The same five answers on the raw table (exact percentiles), as a user without the app would."""
    start, end, interval = page_window(window, now)
    previous = start - (end - start)
    extra = "".join(f" AND {column} = %s" for column in filters)  # column names from view_filters
    values = list(filters.values())
    where = f"time >= %s AND time < %s{extra}"
    return [
        (f"SELECT {COUNTS}, {FOUR} FROM {RAW} WHERE {where}", [start, end, *values]),
        (f"SELECT {COUNTS}, {FOUR} FROM {RAW} WHERE {where}", [previous, start, *values]),
        (f"SELECT date_trunc(%s, time) AS b, {COUNTS}, {FOUR} FROM {RAW} WHERE {where} GROUP BY b ORDER BY b",
         [interval, start, end, *values]),
        (f"SELECT service, endpoint, {COUNTS}, {FOUR} FROM {RAW} WHERE {where} GROUP BY service, endpoint "
         "ORDER BY count(*) DESC, service, endpoint LIMIT 10", [start, end, *values]),
        (f"SELECT service, endpoint, count(*) FROM {RAW} WHERE time >= %s AND time < %s GROUP BY service, endpoint "
         "ORDER BY service, endpoint", [start, end]),
    ]


class Reader:
    """Page loads through five keep-alive connections, the five calls at once (as a browser sends them)."""

    def __init__(self, port: int, headers: dict):
        self.port, self.headers = port, headers
        self.connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in CALLS]
        self.pool = ThreadPoolExecutor(len(CALLS))

    def _get(self, i: int, path: str) -> tuple[float, str | None]:
        began = time.perf_counter()
        try:
            self.connections[i].request("GET", path, headers=self.headers)
            response = self.connections[i].getresponse()
            body = response.read()
            json.loads(body)  # the page parses every answer
            error = None if response.status == 200 else f"HTTP {response.status} {body[:200]!r}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.connections[i].close()
            self.connections[i] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            error = f"{type(exc).__name__}: {exc}"
        return (time.perf_counter() - began) * 1000, error

    def page(self, paths: list[str]) -> tuple[float, list[float], list[str]]:
        began = time.perf_counter()
        answers = list(self.pool.map(self._get, range(len(paths)), paths))
        wall = (time.perf_counter() - began) * 1000
        return wall, [ms for ms, _ in answers], [e for _, e in answers if e]

    def close(self) -> None:
        self.pool.shutdown()
        for conn in self.connections:
            conn.close()


def read_pages(reader: Reader, pick: dict, *, loads: int, until: float, cap: float, stop, count: list[int]) -> dict:
    """Round robin over VIEWS until each has `loads` pages and `until` has passed (or `cap`)."""
    pages = {f"{s}, {w}": {"ms": [], "calls": {c: [] for c in CALLS}, "errors": []} for s, w in VIEWS}
    for scope, window in VIEWS:  # one untimed load per view first: connections, caches, as bench_dashboard
        reader.page(api_paths(window, view_filters(scope, pick), datetime.now(UTC)))
    i = 0
    while not stop.is_set():
        scope, window = VIEWS[i % len(VIEWS)]
        done = min(len(p["ms"]) for p in pages.values())
        if (done >= loads and time.time() >= until) or time.time() >= cap:
            break
        wall, per_call, errors = reader.page(api_paths(window, view_filters(scope, pick), datetime.now(UTC)))
        page = pages[f"{scope}, {window}"]
        page["ms"].append(wall)
        for name, ms in zip(CALLS, per_call, strict=True):
            page["calls"][name].append(ms)
        page["errors"] += errors
        i += 1
        count[0] = i
    return pages


# --- One rate ----------------------------------------------------------------------------------


def max_id(cursor) -> int:
    cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
    return cursor.fetchone()[0]


def run_phase(rate: int, args, server, keys: list[str], read_headers: dict, pick: dict, meter: CpuMeter,
              cursor, refresher) -> dict:
    batch = args.batch or max(1, round(rate / args.senders))
    interval = batch * args.senders / rate
    ctx = multiprocessing.get_context("spawn")
    stop, stop_at = ctx.Event(), ctx.Value("d", 0.0)
    progress = ctx.Array("q", args.senders, lock=False)
    results = ctx.Queue()
    first_id = max_id(cursor)
    jobs_before = job_runs(cursor)
    start_at = time.time() + 2.0  # every sender up and waiting
    procs = [ctx.Process(target=sender, args=(i, server.port, keys[i], batch, interval,
                                              start_at + i * interval / args.senders, args.late, args.late_min,
                                              args.late_max, stop, stop_at, progress, results), daemon=True)
             for i in range(args.senders)]
    for p in procs:
        p.start()
    print(f"rate {rate:,}/s: {args.senders} senders x {batch:,} events every {interval:.2f} s, "
          f"{100 * args.late:g}% late by {args.late_min:g}-{args.late_max:g} s; reader after {args.warmup:g} s",
          flush=True)
    time.sleep(max(0.0, start_at - time.time()))
    meter.groups["senders"] = lambda rows, pids=[p.pid for p in procs]: [(pid, False) for pid in pids]
    meter.start_phase()
    began = time.time()
    reader_stop = threading.Event()
    reader_out: dict = {}
    loads = [0]

    def read():
        time.sleep(args.warmup)
        reader = Reader(server.port, read_headers)
        try:
            reader_out["pages"] = read_pages(reader, pick, loads=args.page_loads, until=began + args.duration,
                                             cap=began + args.max_duration_factor * args.duration, stop=reader_stop,
                                             count=loads)
        finally:
            reader.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    last_print = began
    while thread.is_alive():
        thread.join(1.0)
        if refresher is not None and refresher.poll() is not None:
            reader_stop.set()
            stop.set()
            raise RuntimeError(f"the refresher exited with {refresher.returncode} (log: {args.refresher_log})")
        if time.time() - last_print >= args.progress_every:
            last_print = time.time()
            accepted = sum(progress)
            print(f"  {last_print - began:5.0f} s: {accepted:,} events accepted "
                  f"({accepted / (last_print - began):,.0f}/s), {loads[0]} page loads", flush=True)
    stop_at.value = time.time()
    stop.set()
    sent = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    wall = stop_at.value - began
    cpu, pids, metered = meter.end_phase()
    jobs_after = job_runs(cursor)
    del meter.groups["senders"]
    # Every batch has answered: the rows this phase stored are those with ids past the first.
    cursor.execute(f"SELECT count(*) FROM {RAW} WHERE id > %s", [first_id])
    (stored,) = cursor.fetchone()
    dirty = None
    try:
        cursor.execute("SELECT count(*) FROM apirequest_dirty")
        (dirty,) = cursor.fetchone()
    except Exception:  # noqa: BLE001 - the table comes with migration 0009
        cursor.connection.rollback()
    return summarize(rate, batch, interval, args, sent, wall, stored, dirty, reader_out.get("pages", {}), cpu, pids,
                     metered, {k: jobs_after.get(k, 0) - jobs_before.get(k, 0) for k in jobs_after})


def summarize(rate, batch, interval, args, sent, wall, stored, dirty, pages, cpu, pids, metered, jobs) -> dict:
    batches = [b for s in sent for b in s["batches"]]
    offered = sum(s["offered_batches"] * s["batch"] for s in sent)
    accepted = sum(b[4] for b in batches)
    latencies = [b[2] for b in batches]
    lags = [b[1] for b in batches]
    failed = [b for b in batches if b[3] not in (200, 201)]
    refresh_cpu = cpu.get("refresher process", 0.0) + cpu.get("refresher backend", 0.0)
    row = {
        "rate": rate, "senders": args.senders, "batch": batch, "interval_s": interval, "late": args.late,
        "late_min_s": args.late_min, "late_max_s": args.late_max, "wall_s": wall,
        "offered": offered, "sent": sum(b[5] for b in batches), "accepted": accepted,
        "late_events": sum(b[6] for b in batches),
        "offered_rate": offered / wall, "achieved_rate": accepted / wall,
        "achieved_pct": 100.0 * accepted / offered if offered else 0.0,
        "batches": len(batches), "failed_batches": len(failed),
        "failed_statuses": sorted({b[3] for b in failed}),
        "batch_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "max": max(latencies, default=None)},
        "schedule_lag_s": {"p95": pct(lags, 95), "max": max(lags, default=None)},
        "kept_schedule": all(s["offered_batches"] == len(s["batches"]) for s in sent)
        and max(lags, default=0.0) < interval,
        "stored": stored, "stored_equals_accepted": stored == accepted,
        "dirty_ranges_pending": dirty,
        "pages": {}, "cpu_s": cpu, "cpu_pids": pids,
        "cpu_metered_s": metered, "cpu_core_share": {name: seconds / metered for name, seconds in cpu.items()},
        "timescaledb_job_runs": jobs,
        "refresh_core_share": refresh_cpu / metered,
    }
    # Job workers live for a run: the sampled CPU misses runs shorter than a sample and the ends
    # of longer ones. What the postmaster reaped and no sample saw (job workers, autovacuum
    # workers, short connections) bounds the rest from above.
    unsampled = max(0.0, cpu.get("postgresql", 0.0) - cpu.get("postgresql, sampled", 0.0))
    row["timescaledb_jobs_core_share"] = {"sampled": cpu.get("timescaledb job workers", 0.0) / metered,
                                          "at_most": (cpu.get("timescaledb job workers", 0.0) + unsampled) / metered}
    for name, page in pages.items():
        row["pages"][name] = {
            "loads": len(page["ms"]), "p50": pct(page["ms"], 50), "p95": pct(page["ms"], 95),
            "max": max(page["ms"], default=None), "errors": len(page["errors"]), "first_errors": page["errors"][:3],
            "calls_p50": {c: pct(v, 50) for c, v in page["calls"].items()},
        }
    at, target = targets_for(rate)
    checks = [("ingest >= 99% of offered", f"{row['achieved_pct']:.2f}%", row["achieved_pct"] >= target["ingest_pct"]),
              ("stored == accepted", f"{stored:,} / {accepted:,}", row["stored_equals_accepted"])]
    if target["batch_p95_ms"] is not None:
        p95 = row["batch_ms"]["p95"]
        checks.append((f"batch p95 <= {target['batch_p95_ms']:.0f} ms", f"{p95:.0f} ms" if p95 is not None else "n/a",
                       p95 is not None and p95 <= target["batch_p95_ms"]))
    for name, page in row["pages"].items():
        ok = page["p95"] is not None and page["p95"] <= target["page_p95_ms"] and not page["errors"]
        shown = f"{page['p95']:.0f} ms" if page["p95"] is not None else "n/a"
        checks.append((f"page p95 <= {target['page_p95_ms']:.0f} ms: {name}",
                       shown + (f", {page['errors']} failed calls" if page["errors"] else ""), ok))
    row["targets_of_rate"] = at
    row["checks"] = [{"target": t, "measured": m, "pass": ok} for t, m, ok in checks]
    row["all_pass"] = all(ok for _, _, ok in checks)
    print(f"rate {rate:,}/s done: {accepted:,} accepted of {offered:,} offered in {wall:.1f} s "
          f"({row['achieved_rate']:,.0f}/s, {row['achieved_pct']:.2f}%), stored {stored:,}, batch p95 "
          f"{row['batch_ms']['p95'] or 0:.0f} ms, refresher {100 * row['refresh_core_share']:.1f}% of a core",
          flush=True)
    return row


def sql_baseline(url: str, pick: dict, loads: int) -> dict:
    import psycopg2

    conns = [psycopg2.connect(url) for _ in CALLS]
    pool = ThreadPoolExecutor(len(CALLS))

    def run(i, query):
        with conns[i].cursor() as cursor:
            cursor.execute(*query)
            cursor.fetchall()

    out = {}
    for scope, window in VIEWS:
        walls = []
        for _ in range(loads):
            queries = sql_queries(window, view_filters(scope, pick), datetime.now(UTC))
            began = time.perf_counter()
            list(pool.map(run, range(len(queries)), queries))
            walls.append((time.perf_counter() - began) * 1000)
        out[f"{scope}, {window}"] = {"loads": loads, "p50": pct(walls, 50), "p95": pct(walls, 95)}
        print(f"  plain SQL {scope}, {window}: p50 {out[f'{scope}, {window}']['p50']:,.0f} ms", flush=True)
    pool.shutdown()
    for conn in conns:
        conn.close()
    return out


# --- Report ----------------------------------------------------------------------------------------


def ms(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def write_report(report: dict, output: str) -> str:
    lines = [
        f"# Live: ingest with late events while the dashboard loads ({report['database']})",
        "",
        f"{report['machine']}; {report['events_total_at_start']:,} events at the start "
        f"({report['seeded']}); gunicorn {report['workers']} workers; refresher: {report['refresher']}; "
        f"TimescaleDB policies live (`apply_policies`); {report['finished']}.",
        f"Views: all traffic, {report['pick']['service']}, {report['pick']['service']} "
        f"{report['pick']['endpoint']} (the busiest service and endpoint) over 24 h, 7 d and 30 d, windows "
        "ending now; a page = the dashboard's five API calls at once on five connections, timed to the last answer. "
        "Plain SQL on raw: the same five answers (exact percentile_cont), five queries at once, right after "
        "each phase with ingest stopped (the refresher and the policies still running).",
    ]
    for phase in report["phases"]:
        lines += [
            "",
            f"## {phase['rate']:,} events/s offered, {100 * phase['late']:g}% late "
            f"({phase['late_min_s']:g} s to {phase['late_max_s']:g} s)",
            "",
            f"{phase['senders']} senders, batches of {phase['batch']:,} every {phase['interval_s']:.2f} s each, "
            f"{phase['wall_s']:.0f} s of load.",
            "",
            "| ingest | |",
            "|---|---:|",
            f"| offered | {phase['offered']:,} events ({phase['offered_rate']:,.0f}/s) |",
            f"| accepted | {phase['accepted']:,} events ({phase['achieved_rate']:,.0f}/s, "
            f"{phase['achieved_pct']:.2f}% of offered) |",
            f"| stored (rows counted at the end) | {phase['stored']:,} |",
            f"| late events sent | {phase['late_events']:,} |",
            f"| batches (failed) | {phase['batches']:,} ({phase['failed_batches']}) |",
            f"| batch latency p50 / p95 / max | {ms(phase['batch_ms']['p50'])} / {ms(phase['batch_ms']['p95'])} / "
            f"{ms(phase['batch_ms']['max'])} ms |",
            f"| senders kept their schedule | {'yes' if phase['kept_schedule'] else 'no'} (lag p95 "
            f"{phase['schedule_lag_s']['p95'] or 0:.3f} s, max {phase['schedule_lag_s']['max'] or 0:.3f} s) |",
            f"| dirty ranges pending at the end | {phase['dirty_ranges_pending'] if phase['dirty_ranges_pending'] is not None else 'n/a'} |",  # noqa: E501
            "",
            "| view | page loads | API p50 ms | API p95 ms | target p95 | | plain SQL p50 ms | plain SQL p95 ms |",
            "|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        target = TARGETS[phase["targets_of_rate"]]["page_p95_ms"]
        for name, page in phase["pages"].items():
            sql = phase.get("sql", {}).get(name, {})
            ok = page["p95"] is not None and page["p95"] <= target and not page["errors"]
            failed = f" ({page['errors']} failed calls)" if page["errors"] else ""
            lines.append(f"| {name} | {page['loads']}{failed} "
                         f"| {ms(page['p50'])} | {ms(page['p95'])} | {target:.0f} | {'pass' if ok else 'FAIL'} "
                         f"| {ms(sql.get('p50'))} | {ms(sql.get('p95'))} |")
        cpu = phase["cpu_core_share"]
        lines += [
            "",
            "| CPU, share of one core over the phase | |",
            "|---|---:|",
            f"| **background refresh** (refresher process + its database backend) | "
            f"**{share(phase['refresh_core_share'])}** |",
            f"| refresher process | {share(cpu.get('refresher process'))} |",
            f"| refresher's database backend | {share(cpu.get('refresher backend'))} |",
            f"| TimescaleDB policy jobs ({sum(phase['timescaledb_job_runs'].values()):,} runs): sampled job workers, "
            f"at most + what no sample saw | {share(phase['timescaledb_jobs_core_share']['sampled'])} to "
            f"{share(phase['timescaledb_jobs_core_share']['at_most'])} |",
            f"| gunicorn (master + workers) | {share(cpu.get('gunicorn'))} |",
            f"| PostgreSQL, every process | {share(cpu.get('postgresql'))} |",
            f"| load generator (senders) | {share(cpu.get('senders'))} |",
            "",
            f"Targets (those of {phase['targets_of_rate']:,} events/s):",
            "",
            "| target | measured | |",
            "|---|---:|---|",
            *[f"| {c['target']} | {c['measured']} | {'pass' if c['pass'] else 'FAIL'} |" for c in phase["checks"]],
        ]
    text = "\n".join(lines) + "\n"
    Path(output + ".md").write_text(text)
    Path(output + ".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return text


# --- Main ------------------------------------------------------------------------------------------


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=2_000_000, help="events to seed over 30 days (2,000,000)")
    parser.add_argument("--no-seed", action="store_true", help="use the data already in the database")
    parser.add_argument("--rate", default="1000", help="events/s offered, one phase per value: 1000 or 1000,5000")
    parser.add_argument("--senders", type=int, default=4, help="sender processes (4)")
    parser.add_argument("--batch", type=int, default=0,
                        help="events per POST (default rate/senders: one batch a second per sender)")
    parser.add_argument("--late", type=float, default=0.02, help="fraction of events sent late (0.02)")
    parser.add_argument("--late-min", type=float, default=60.0, help="seconds late, at least (60)")
    parser.add_argument("--late-max", type=float, default=3 * 3600.0, help="seconds late, at most (10800)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of live load per rate, at least (120)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of ingest before the reader starts (10)")
    parser.add_argument("--page-loads", type=int, default=30, help="page loads per view, at least (30)")
    parser.add_argument("--max-duration-factor", type=float, default=4.0,
                        help="stop a phase at this many times --duration even if views lack page loads (4)")
    parser.add_argument("--sql-loads", type=int, default=3, help="plain SQL page loads per view (3; 0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2: the machine's cores)")
    parser.add_argument("--no-refresher", action="store_true",
                        help="run without `manage.py refresh_rollups --follow` (a branch without it)")
    parser.add_argument("--progress-every", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="report path without suffix (reports/bench_live_<size>)")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rate.split(",") if r.strip()]
    if not args.rates or min(args.rates) < 1 or args.senders < 1 or args.batch < 0 or not 0 <= args.late <= 1 \
            or args.late_min > args.late_max or args.page_loads < 1:
        parser.error("--rate, --senders must be positive, --late in [0, 1], --late-min <= --late-max")
    args.output = args.output or str(ROOT / "reports" / f"bench_live_{size_label(args.events)}")
    return args


def main() -> int:
    args = parse_args()
    url = setup_django("bench_live", "apm_platform.settings", "bench-live")
    if url is None:
        return 2
    import psycopg2
    from django.conf import settings
    from django.core.management import call_command, get_commands

    from observability import access, db, retention

    batch_max = max(args.batch or round(rate / args.senders) for rate in args.rates)
    if batch_max > settings.APM_INGEST_MAX_EVENTS:
        print(f"bench_live: batches of {batch_max:,} exceed APM_INGEST_MAX_EVENTS "
              f"({settings.APM_INGEST_MAX_EVENTS:,}).")
        return 2
    if not args.no_refresher and REFRESHER[0] not in get_commands():
        print(f"bench_live: `manage.py {' '.join(REFRESHER)}` does not exist on this branch; it is the background "
              "refresher the bench measures (merge it in, or pass --no-refresher to run without it).")
        return 2
    call_command("migrate", verbosity=0)
    if not db.rollups_are_continuous():
        print("bench_live: needs TimescaleDB (continuous aggregates with policies); this database has none.")
        return 2
    raw = psycopg2.connect(url)
    raw.autocommit = True
    cursor = raw.cursor()
    seeded = "reused (--no-seed)"
    if not args.no_seed:
        began = time.monotonic()
        end = datetime.now(UTC).replace(microsecond=0)
        call_command("seed_requests", events=args.events, days=30, end=end.isoformat(), no_refresh=True)
        seed_s = time.monotonic() - began
        print("refreshing every continuous aggregate once ...", flush=True)
        # Up to now, as `make seed` does: only the buckets that have ended. An open end would
        # materialize the current hour and day too, and every fresh write would then land below
        # a watermark (dirty), which no deployment sees.
        refresh_rollups(verbose=True, end=datetime.now(UTC))
        columnar = retention.convert_columnar_now()
        cursor.execute(f"ANALYZE {RAW}")
        seeded = (f"{args.events:,} seeded over 30 days in {seed_s:.0f} s, aggregates refreshed and "
                  f"{', '.join(columnar) or 'nothing'} converted in {time.monotonic() - began - seed_s:.0f} s")
        print(seeded, flush=True)
    call_command("apply_policies")
    retention.schedule_refresh_policies(True)  # a --no-seed rerun after bench_fresh, which pauses them
    cursor.execute(f"SELECT count(*) FROM {RAW}")
    (total,) = cursor.fetchone()
    keys = [access.create_key(name=f"bench-live sender {i}", scope="ingest")[1] for i in range(args.senders)]
    read_headers = {"Accept": "application/json",
                    "Authorization": f"Bearer {access.create_key(name='bench-live reader', scope='read')[1]}"}

    report = {"database": db.describe(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}", "events_total_at_start": total, "seeded": seeded,
              "workers": args.workers, "args": {k: v for k, v in vars(args).items() if k != "output"},
              "phases": [], "targets": TARGETS}
    server_env = {"DJANGO_DEBUG": "0", "GUNICORN_KEEPALIVE": "3600", "DATABASE_URL": with_app_name(url, APP_WEB)}
    refresher = None
    args.refresher_log = None
    with Gunicorn(server_env, workers=args.workers) as server:
        if not args.no_refresher:
            log = tempfile.NamedTemporaryFile(prefix="bench-live-refresher-", suffix=".log", delete=False)  # noqa: SIM115
            args.refresher_log = log.name
            refresher = subprocess.Popen([sys.executable, "manage.py", *REFRESHER], cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "DJANGO_DEBUG": "0",
                                              "DATABASE_URL": with_app_name(url, APP_REFRESHER)})
            time.sleep(3)
            if refresher.poll() is not None:
                print(f"bench_live: the refresher exited with {refresher.returncode}:\n{Path(log.name).read_text()}")
                return 2
        report["refresher"] = "off (--no-refresher)" if refresher is None else f"`manage.py {' '.join(REFRESHER)}`"
        postmaster = proc_stat(raw.get_backend_pid())
        postmaster_pid = postmaster[0] if postmaster else None
        groups = {
            "gunicorn": lambda rows: [(server.pid, False), *((p, False) for p in children(server.pid))],
            "postgresql": lambda rows: ([(postmaster_pid, True), *((p, False) for p in children(postmaster_pid))]
                                        if postmaster_pid else []),
            "refresher process": lambda rows: [(refresher.pid, True)] if refresher else [],
            "refresher backend": lambda rows: [(r[0], False) for r in rows if r[2] == APP_REFRESHER],
            "timescaledb job workers": lambda rows: [(r[0], False) for r in rows if r[1] and r[1] not in NOT_JOBS],
            "postgresql, sampled": lambda rows: [(r[0], False) for r in rows],
        }
        meter = CpuMeter(url, groups)
        meter.start()
        try:
            # The busiest service and its busiest endpoint, as the dashboard's table ranks them.
            status, _, body = server.request("GET", "/api/requests/top-endpoints/?limit=1&sort=hits&precision=approx"
                                             f"&start={iso(datetime.now(UTC) - timedelta(days=30))}",
                                             headers=read_headers)
            top = json.loads(body)["results"][0]
            report["pick"] = pick = {"service": top["service"], "endpoint": top["endpoint"]}
            for rate in args.rates:
                phase = run_phase(rate, args, server, keys, read_headers, pick, meter, cursor, refresher)
                report["phases"].append(phase)
                if args.sql_loads:
                    # Each phase's own baseline, on the data that phase read (a 5,000 events/s
                    # phase adds as many events as a 2M seed holds); ingest stopped meanwhile.
                    print(f"plain SQL on {RAW}, {args.sql_loads} page loads per view (ingest stopped) ...",
                          flush=True)
                    phase["sql"] = sql_baseline(url, pick, args.sql_loads)
        finally:
            meter.done.set()
            if refresher is not None:
                refresher.terminate()
                refresher.wait(30)
    report["finished"] = f"{datetime.now(UTC):%Y-%m-%dT%H:%M}Z"
    print(write_report(report, args.output))
    log = f"; the refresher's log: {args.refresher_log}" if args.refresher_log else ""
    print(f"wrote {args.output}.md and .json{log}")
    failed = sum(not c["pass"] for phase in report["phases"] for c in phase["checks"])
    print(f"targets: {'all met' if not failed else f'{failed} NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
