#!/usr/bin/env python3
"""Send a bounded stream of requests to the example apps on this machine (standard library only).

    python3 traffic.py --app django=http://127.0.0.1:8001 --app fastapi=http://127.0.0.1:8002

Every route of each app is called once first, then calls are drawn at random (weighted, some
ids unknown so some answers are 4xx, some routes fail with 5xx) at about --rate requests per
second, until --requests calls or --seconds have passed, whichever comes first. Only loopback
addresses are accepted: this is a demo tool, not a load tester to point at someone's server.
It prints one line per 100 calls and a summary; --json FILE also writes the counts per
(app, method, route, status), which the demo's self-check compares with what the backend stored.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlsplit

# One plan per example app: (weight, method, route template as the framework writes it,
# a function of a random source giving the path, a function giving the JSON body or None).
PLANS = {
    "django": [
        (2, "GET", "health/", lambda r: "/health/", None),
        (10, "GET", "orders/", lambda r: "/orders/", None),
        (4, "POST", "orders/", lambda r: "/orders/",
         lambda r: {"sku": f"sku-{r.randint(1, 99)}"} if r.random() < 0.85 else {"item": "no sku"}),
        (20, "GET", "orders/<int:order_id>/", lambda r: f"/orders/{r.randint(1, 560)}/", None),
        (5, "POST", "orders/<int:order_id>/pay/", lambda r: f"/orders/{r.randint(1, 500)}/pay/", None),
        (2, "GET", "reports/daily/", lambda r: "/reports/daily/", None),
    ],
    "fastapi": [
        (2, "GET", "/health", lambda r: "/health", None),
        (10, "GET", "/items", lambda r: "/items", None),
        (20, "GET", "/items/{item_id}", lambda r: f"/items/{r.randint(1, 560)}", None),
        (4, "PUT", "/items/{item_id}", lambda r: f"/items/{r.randint(1, 500)}",
         lambda r: {"quantity": r.randint(-3, 40)}),
        (8, "POST", "/items/{item_id}/reserve", lambda r: f"/items/{r.randint(1, 500)}/reserve", None),
    ],
}


def loopback_base(spec: str) -> tuple[str, str]:
    """'name=http://127.0.0.1:8001' -> (name, base URL), refusing unknown apps and other hosts."""
    name, _, url = spec.partition("=")
    if name not in PLANS or not url:
        raise argparse.ArgumentTypeError(f"--app wants NAME=URL with NAME one of {', '.join(PLANS)}, got {spec!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"--app {name}: {url!r} is not an http(s) URL")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"--app {name}: can't resolve {parts.hostname}: {exc}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise argparse.ArgumentTypeError(f"--app {name}: {parts.hostname} is not a loopback address")
    return name, url.rstrip("/")


def call(base: str, method: str, path: str, body, timeout: float) -> int | None:
    """The HTTP status of one call, or None when the app could not be reached."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:  # a 4xx/5xx is an answer, which is what we want to count
        exc.read()
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_until_up(apps: dict[str, str], seconds: float, counts: Counter) -> list[str]:
    """The apps still unreachable after `seconds` (each must answer its first route, a call
    that is counted like the others: the app traces it too)."""
    deadline = time.monotonic() + seconds
    pending = dict(apps)
    while pending and time.monotonic() < deadline:
        for name, base in list(pending.items()):
            _, method, route, path, _ = PLANS[name][0]
            status = call(base, method, path(random), None, timeout=2)
            if status is not None:
                counts[(name, method, route, status)] += 1
                del pending[name]
        if pending:
            time.sleep(0.5)
    return list(pending)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", action="append", type=loopback_base, required=True, metavar="NAME=URL",
                        help=f"an example app to call ({', '.join(PLANS)}); repeat for several")
    parser.add_argument("--requests", type=int, default=1500, help="stop after this many calls (default 1500)")
    parser.add_argument("--seconds", type=float, default=120, help="stop after this long (default 120)")
    parser.add_argument("--rate", type=float, default=15, help="calls per second, all apps together (default 15)")
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait for the apps to answer (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable sequence")
    parser.add_argument("--json", metavar="FILE", help="also write the counts per app, method, route and status")
    args = parser.parse_args(argv)
    if args.requests < 0 or args.seconds <= 0 or args.rate <= 0 or args.wait < 0:
        parser.error("--requests must be >= 0; --seconds and --rate > 0; --wait >= 0")
    apps = dict(args.app)
    rng = random.Random(args.seed)

    counts: Counter = Counter()
    down = wait_until_up(apps, args.wait, counts)
    if down:
        print(f"traffic: no answer from {', '.join(down)} after {args.wait:g}s", file=sys.stderr)
        return 1

    # Every route once, then a weighted random draw.
    calls = [(name, entry) for name in apps for entry in PLANS[name]]
    weights = [entry[0] for _, entry in calls]
    unreachable = 0
    began = time.monotonic()
    sent = 0
    interrupted = False
    try:
        while sent < args.requests and time.monotonic() - began < args.seconds:
            name, (_, method, route, path, body) = calls[sent] if sent < len(calls) else \
                rng.choices(calls, weights)[0]
            status = call(apps[name], method, path(rng), body(rng) if body else None, timeout=10)
            sent += 1
            if status is None:
                unreachable += 1
            else:
                counts[(name, method, route, status)] += 1
            if sent % 100 == 0:
                print(f"traffic: {sent} calls in {time.monotonic() - began:.0f}s", flush=True)
            # Pace to --rate; a slow answer just means the next call goes out at once.
            time.sleep(max(0.0, began + sent / args.rate - time.monotonic()))
    except KeyboardInterrupt:  # Ctrl-C: the summary, not a traceback
        interrupted = True

    by_status = Counter()
    for (_, _, _, status), n in counts.items():
        by_status[f"{status // 100}xx"] += n
    summary = ", ".join(f"{n} {k}" for k, n in sorted(by_status.items()))
    total = sum(counts.values()) + unreachable  # with the first call that found each app up
    print(f"traffic: {total} calls in {time.monotonic() - began:.1f}s to {', '.join(apps)}: {summary or 'none'}"
          + (f", {unreachable} unreachable" if unreachable else ""))
    if args.json:
        rows = [{"app": a, "method": m, "route": r, "status": s, "count": n}
                for (a, m, r, s), n in sorted(counts.items())]
        with open(args.json, "w") as handle:
            json.dump({"calls": total, "unreachable": unreachable, "counts": rows}, handle, indent=1)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
