"""The demo's self-check (scripts/demo.sh --check): every route of each example app is in the
traffic generator's plan, and the backend stored exactly the calls the generator made, per
service, method, route and status, from the apps' own OpenTelemetry spans.

    check_demo.py --backend URL --key KEY --traffic traffic.json --app NAME=SERVICE=PYTHON ...
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

# Printed by each app's own interpreter: (method, route template) for every route it serves.
LIST_ROUTES = {
    "django": ("import django, json; django.setup()\n"
               "from django.urls import get_resolver\n"
               "print(json.dumps([str(p.pattern) for p in get_resolver().url_patterns]))"),
    "fastapi": ("import json\nfrom fastapi.routing import APIRoute\nfrom app import app\n"
                "print(json.dumps([[m, r.path] for r in app.routes if isinstance(r, APIRoute) for m in r.methods]))"),
}


def load_traffic():
    spec = importlib.util.spec_from_file_location("traffic", EXAMPLES / "traffic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app_routes(app: str, python: str) -> set:
    """Routes as the app declares them: Django's have no methods (a view picks them)."""
    out = subprocess.run([python, "-c", LIST_ROUTES[app]], cwd=EXAMPLES / f"{app}_app", check=True,
                         capture_output=True, text=True, timeout=60,
                         env={"DJANGO_SETTINGS_MODULE": "shop.settings", "PATH": "/usr/bin:/bin"}).stdout
    return {tuple(r) if isinstance(r, list) else r for r in json.loads(out)}


def stored(backend: str, key: str, service: str) -> Counter:
    counts: Counter = Counter()
    url = f"{backend}/api/requests/?service={service}&page_size=1000"
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.load(response)
        counts.update((e["method"], e["endpoint"], e["status_code"]) for e in page["results"])
        url = page["next"]
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--traffic", required=True)
    parser.add_argument("--app", action="append", required=True, help="NAME=SERVICE=PYTHON")
    parser.add_argument("--wait", type=float, default=30)
    args = parser.parse_args()
    plans = load_traffic().PLANS
    sent = json.loads(Path(args.traffic).read_text())
    ok = True

    for spec in args.app:
        app, service, python = spec.split("=", 2)
        declared = app_routes(app, python)
        planned = {route if app == "django" else (method, route) for _, method, route, _, _ in plans[app]}
        if declared != planned:
            print(f"FAIL {app}: served but never called by traffic.py: {sorted(map(str, declared - planned))}; "
                  f"called but not served: {sorted(map(str, planned - declared))}")
            ok = False

        expected = Counter({(r["method"], r["route"], r["status"]): r["count"]
                            for r in sent["counts"] if r["app"] == app})
        hit = {(m, r) for m, r, _ in expected}
        missed = {(m, r) for _, m, r, _, _ in plans[app]} - hit
        if missed:
            print(f"FAIL {app}: traffic.py did not call {sorted(missed)}")
            ok = False
        statuses = {s // 100 for _, _, s in expected}
        if not {2, 4, 5} <= statuses:
            print(f"FAIL {app}: the traffic should include 2xx, 4xx and 5xx answers, got {sorted(statuses)}xx")
            ok = False

        # Spans are exported in batches (every second in the demo): wait for the last ones.
        deadline = time.monotonic() + args.wait
        while (got := stored(args.backend, args.key, service)) != expected and time.monotonic() < deadline:
            time.sleep(1)
        if got != expected:
            print(f"FAIL {app} ({service}): the backend stored other events than the calls made.")
            for row in sorted(set(got) | set(expected), key=str):
                if got[row] != expected[row]:
                    print(f"    {row}: sent {expected[row]}, stored {got[row]}")
            ok = False
        else:
            print(f"ok   {app} ({service}): {sum(got.values())} events stored, one per call, over "
                  f"{len(hit)} routes: " + ", ".join(f"{m} {r}" for m, r in sorted(hit)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
