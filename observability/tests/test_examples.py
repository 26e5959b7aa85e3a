"""docs/examples without their own dependencies (scripts/test/test_examples.sh runs them for real):
the traffic generator calls every route of each plan, stays within its bounds and on loopback,
and its Django plan matches the example's URLconf."""

import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.test import SimpleTestCase

EXAMPLES = Path(settings.BASE_DIR) / "docs" / "examples"
spec = importlib.util.spec_from_file_location("example_traffic", EXAMPLES / "traffic.py")
traffic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(traffic)


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 to anything and records (method, path)."""

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.calls.append((self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = handle_one

    def log_message(self, *args):
        pass


class TrafficGeneratorTests(SimpleTestCase):
    def setUp(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        self.server.calls = []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def run_traffic(self, *args):
        with mock.patch("sys.stdout", StringIO()) as out:
            code = traffic.main(list(args))
        return code, out.getvalue()

    def test_it_calls_every_route_of_each_plan_and_counts_every_answer(self):
        for app, plan in traffic.PLANS.items():
            self.server.calls.clear()
            json_file = Path(self.enterContext(tempfile.TemporaryDirectory())) / "traffic.json"
            code, out = self.run_traffic("--app", f"{app}={self.url}", "--requests", str(len(plan)),
                                         "--rate", "1000", "--json", str(json_file))
            self.assertEqual(code, 0, out)
            # The first call found the app up; then every route once, in order.
            self.assertEqual(len(self.server.calls), len(plan) + 1)
            for (method, path), (_, want_method, route, _, _) in zip(self.server.calls[1:], plan, strict=True):
                self.assertEqual(method, want_method)
                pattern = route.replace("<int:order_id>", "[0-9]+").replace("{item_id}", "[0-9]+")
                self.assertRegex(path, "^/?" + pattern.lstrip("/") + "$")
            counts = json.loads(json_file.read_text())
            self.assertEqual(counts["calls"], len(plan) + 1)
            self.assertEqual(sum(r["count"] for r in counts["counts"]), len(plan) + 1)

    def test_it_stops_at_the_request_count_and_at_the_time_limit(self):
        self.run_traffic("--app", f"django={self.url}", "--requests", "25", "--rate", "1000")
        self.assertEqual(len(self.server.calls), 26)
        self.server.calls.clear()
        code, out = self.run_traffic("--app", f"fastapi={self.url}", "--requests", "100000", "--seconds", "0.5",
                                     "--rate", "20")
        self.assertEqual(code, 0)
        self.assertLess(len(self.server.calls), 20)  # 0.5 s at 20/s, plus the first probe

    def test_only_loopback_addresses_and_known_apps_are_accepted(self):
        for bad in ("django=http://192.0.2.1:8001", "rails=http://127.0.0.1:8001", "django=ftp://127.0.0.1/"):
            with self.subTest(bad), mock.patch("sys.stderr", StringIO()), self.assertRaises(SystemExit):
                traffic.main(["--app", bad])
        self.assertEqual(traffic.loopback_base("django=http://localhost:8001/"), ("django", "http://localhost:8001"))


class DjangoExampleTests(SimpleTestCase):
    def test_the_traffic_plan_covers_every_route_of_the_django_example(self):
        # A process of its own: the example is another Django project, with its own settings.
        code = ("import django, json; django.setup()\nfrom django.urls import get_resolver\n"
                "print(json.dumps([str(p.pattern) for p in get_resolver().url_patterns]))")
        result = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES / "django_app", capture_output=True,
                                text=True, timeout=60, env={"DJANGO_SETTINGS_MODULE": "shop.settings"}, check=True)
        self.assertEqual(set(json.loads(result.stdout)), {route for _, _, route, _, _ in traffic.PLANS["django"]})

    def test_the_demo_script_parses(self):
        subprocess.run(["bash", "-n", str(Path(settings.BASE_DIR) / "scripts" / "demo.sh")], check=True)
