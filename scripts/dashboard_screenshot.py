"""Screenshot of the dashboard on seeded data, for the README (docs/dashboard.png).

    .venv/bin/python scripts/dashboard_screenshot.py [--events 200000] [--out docs/dashboard.png]

Builds a throwaway SQLite database, seeds it with `seed_requests` (30 days), creates a user,
serves the app with gunicorn on loopback (DEBUG off, static files collected, as in
production), logs in with Debian's chromium through Playwright and saves a full-page PNG at a
laptop width (and, with --phone, one at a phone width next to it).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("APM_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--phone", action="store_true", help="also save <out>-phone.png at 390 px")
    parser.add_argument("--login", action="store_true", help="also save <out>-login.png (the login page)")
    parser.add_argument("--query", default="?window=7d", help="dashboard URL state to show")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="apm-shot."))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'apm.sqlite3'}",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "screenshot-only-not-a-secret",
        "DJANGO_STATIC_ROOT": str(work / "static"),
        "APM_TIMESCALE": "off",
        "DJANGO_SUPERUSER_PASSWORD": "demo-password",
    }
    run(env, "migrate", "--noinput", "-v", "0")
    run(env, "collectstatic", "--noinput", "-v", "0")
    run(env, "seed_requests", "--events", str(args.events), "--days", "30")
    run(env, "createsuperuser", "--noinput", "--username", "demo", "--email", "demo@example.com")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "apm_platform.wsgi:application", "-b", f"127.0.0.1:{port}",
         "-w", "2", "--log-level", "warning"], cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/api/health/")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            shots = [(args.out, {"width": 1440, "height": 900})]
            if args.phone:
                shots.append((args.out.replace(".png", "-phone.png"), {"width": 390, "height": 844}))
            for out, viewport in shots:
                page = browser.new_page(viewport=viewport, device_scale_factor=1)
                page.goto(f"{base}/accounts/login/?next=/{args.query}")
                if args.login and viewport["width"] > 1000:
                    page.screenshot(path=args.out.replace(".png", "-login.png"))
                page.fill("#id_username", "demo")
                page.fill("#id_password", "demo-password")
                page.click("button[type=submit]")
                page.wait_for_selector("#dashboard[data-loaded]")
                page.wait_for_timeout(300)
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=out, full_page=True)
                print(f"Saved {out} ({viewport['width']} px wide).")
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
