#!/usr/bin/env python
"""What access control costs one ingest request, measured in pairs against its noise floor.

Serves the app with one gunicorn worker on loopback and posts the same N-event batch to
POST /api/requests/ingest/ with an ingest key and to the same view with authentication off
(scripts/bench/urls.py), alternating which goes first, and reports the median of the pairs'
time ratios. The same is done with the unauthenticated view against itself (an A/A test): its
distance from 1.000 is what this machine's noise allows one to resolve.

    scripts/lib/with_postgres.sh .venv/bin/python scripts/bench/bench_auth.py [-n 5000] [--pairs 40]
"""

import argparse
import http.client
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from observability.tests.live import Gunicorn  # noqa: E402
from scripts.bench import setup_django  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=5000, help="events per request (default 5000)")
    parser.add_argument("--pairs", type=int, default=40, help="pairs per comparison (default 40)")
    args = parser.parse_args()
    if setup_django("bench_auth", "scripts.bench.settings", "bench-ingest") is None:
        return 2
    from django.core.management import call_command

    from observability import access, db

    call_command("migrate", verbosity=0)
    key = access.create_key(name="bench_auth", scope="ingest")[1]
    now = datetime.now(UTC)
    body = json.dumps([{"time": (now - timedelta(seconds=i)).isoformat(), "service": f"s{i % 20}",
                        "endpoint": f"/e{i % 50}", "method": "GET", "status_code": 200, "latency_ms": 1.5 + i % 100}
                       for i in range(args.events)]).encode()
    with_key = ("/api/requests/ingest/", {"Authorization": f"Bearer {key}"})
    without = ("/bench/ingest-no-auth/", {})
    print(f"database: {db.describe()}, {args.events} events per request, {args.pairs} pairs, 1 gunicorn worker")
    with Gunicorn({}, workers=1, settings="scripts.bench.settings") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)

        def timed(path, headers) -> float:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}")
            return time.perf_counter() - started

        timed(*with_key), timed(*without)  # warm-up: imports, connections, the key in the cache
        for label, first, second in (("with a key / without auth", with_key, without),
                                     ("without auth / without auth (A/A noise floor)", without, without),
                                     ("with a key / without auth", with_key, without)):
            a, b = [], []
            for i in range(args.pairs):
                if i % 2:
                    a.append(timed(*first))
                    b.append(timed(*second))
                else:
                    b.append(timed(*second))
                    a.append(timed(*first))
            ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
            print(f"{label:<48} median pair ratio {ratio:.3f}  "
                  f"(medians {statistics.median(a) * 1e3:.1f} / {statistics.median(b) * 1e3:.1f} ms)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
