"""The dashboard in a real browser: Debian's chromium driven by Playwright, on a live server.

Run once per `make test` by scripts/test/test_dashboard.sh (which installs chromium when missing and
sets APM_BROWSER_TESTS=1); skipped with the reason everywhere else. The numbers the page shows
are compared with the API's answers for the same window and with counts made here from the
events themselves.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from datetime import datetime, timedelta
from unittest import SkipTest
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth import get_user_model
from django.core.servers.basehttp import WSGIServer
from django.test import LiveServerTestCase
from django.test.testcases import LiveServerThread
from django.utils import timezone

from observability import ingest
from observability.models import ApiRequest
from observability.tests.utils import floor_to, iso, make_event, parse_time

CHROMIUM = os.environ.get("APM_CHROMIUM", "/usr/bin/chromium")
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PASSWORD = "browser-tests-only"  # noqa: S105 (a throwaway user in a test database)


def _skip_reason() -> str | None:
    if os.environ.get("APM_BROWSER_TESTS") != "1":
        return "browser tests run once per `make test` by scripts/test/test_dashboard.sh (APM_BROWSER_TESTS=1)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"chromium not found at {CHROMIUM} (scripts/test/test_dashboard.sh installs it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements-dev.txt)"
    return None


def traffic(now: datetime) -> list[dict]:
    """Events over the last 31 days: some hours busy, some idle, a few errors, two services."""
    this_hour = floor_to(now, HOUR)
    events = []
    plan = [  # (hours before this hour, service, endpoint, count, status, latency)
        (0, "checkout", "/cart", 3, 200, 40.0),
        (1, "checkout", "/cart", 5, 200, 55.5),
        (1, "checkout", "/orders/{id}", 2, 503, 1250.0),
        (2, "search", "/q", 7, 200, 8.25),
        (5, "checkout", "/orders/{id}", 4, 200, 120.0),
        (9, "search", "/q", 1200, 200, 12.0),
        (13, "auth", "/login", 6, 500, 2400.0),
        (20, "checkout", "/cart", 9, 200, 33.0),
        (30, "checkout", "/cart", 11, 200, 30.0),  # the previous 24 hours
        (40, "search", "/q", 5, 503, 900.0),
        (24 * 6, "auth", "/login", 8, 200, 70.0),
        (24 * 12, "search", "/q", 13, 200, 15.0),
        (24 * 29, "checkout", "/cart", 2, 200, 20.0),
    ]
    for hours, service, endpoint, count, status, latency in plan:
        at = this_hour - hours * HOUR + timedelta(minutes=1)
        for i in range(count):
            events.append(make_event(time=at + timedelta(seconds=i % 50), service=service, endpoint=endpoint,
                                     status_code=status, latency_ms=latency + i % 7, trace_id=f"t{hours}-{i}"))
    return events


class _SerialWSGIServer(WSGIServer):
    def __init__(self, *args, connections_override=None, **kwargs):
        # The live server thread itself already uses the overridden (shared) connections.
        super().__init__(*args, **kwargs)


class _OneRequestAtATime(LiveServerThread):
    # The page fetches its five API answers at once; on SQLite the live server's threads would
    # share the test database's single in-memory connection. One request at a time (Django then
    # closes each HTTP connection) keeps that safe; the browser queues the rest.
    server_class = _SerialWSGIServer


class DashboardBrowserTests(LiveServerTestCase):
    """Log in, read the tiles, charts and table, sort, filter, go back; no errors, one origin."""

    server_thread_class = _OneRequestAtATime

    @classmethod
    def setUpClass(cls):
        reason = _skip_reason()
        if reason:
            raise SkipTest(reason)
        # Playwright's sync API keeps an event loop on this thread; the ORM calls of these
        # tests are still plain synchronous code.
        os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        super().setUpClass()
        from playwright.sync_api import sync_playwright

        cls._playwright = sync_playwright().start()
        cls.browser = cls._playwright.chromium.launch(executable_path=CHROMIUM, headless=True)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls._playwright.stop()
        super().tearDownClass()

    def setUp(self):
        get_user_model().objects.create_user("ana", password=PASSWORD)
        self.events = traffic(timezone.now())
        ingest.ingest_events([dict(e) for e in self.events], strict=True)
        self.context = self.browser.new_context(viewport={"width": 1366, "height": 900})
        self.context.set_default_timeout(15_000)  # a page that never loads fails, not hangs
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def tearDown(self):
        self.context.close()

    def assert_clean(self, allowed_errors=()):
        """No console error (beyond the expected ones) and no request to another origin."""
        errors = [e for e in self.console_errors if not any(a in e for a in allowed_errors)]
        self.assertEqual(errors, [])
        foreign = [u for u in self.requests if not u.startswith(self.live_server_url + "/")]
        self.assertEqual(foreign, [])

    # --- helpers ----------------------------------------------------------------------------

    def log_in(self, path="/"):
        self.page.goto(self.live_server_url + path)
        self.assertIn("/accounts/login/", self.page.url)
        self.page.fill("#id_username", "ana")
        self.page.fill("#id_password", PASSWORD)
        # The click starts a navigation: wait for the dashboard's URL, so that the wait below
        # never runs against the login page while it unloads.
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        self.assertNotIn("/accounts/login/", self.page.url)
        self.wait_loaded()

    def wait_loaded(self, after: int = 0):
        self.page.wait_for_function(
            f"() => Number(document.getElementById('dashboard')?.dataset.loaded || 0) > {after}")
        return int(self.page.get_attribute("#dashboard", "data-loaded"))

    def click_and_wait(self, selector):
        before = self.wait_loaded()
        self.page.click(selector)
        return self.wait_loaded(before)

    def window(self) -> tuple[datetime, datetime]:
        return (parse_time(self.page.get_attribute("#dashboard", "data-start")),
                parse_time(self.page.get_attribute("#dashboard", "data-end")))

    def api(self, path, **params) -> dict:
        """The API's answer, fetched by the logged-in page itself (same session, same origin)."""
        query = "&".join(f"{k}={v}" for k, v in params.items() if v)
        return self.page.evaluate(
            "async (url) => (await fetch(url)).json()", f"/api/requests/{path}?{query}")

    def tiles(self) -> dict:
        return self.page.eval_on_selector_all(
            ".tile", "els => Object.fromEntries(els.map(e => [e.dataset.kpi, e.dataset.value]))")

    def state(self) -> dict:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.page.url).query).items()}

    def selected(self, start, end, **match) -> list[dict]:
        return [e for e in self.events if start <= parse_time(e["time"]) < end
                and all(e[k] == v for k, v in match.items())]

    def top_rows(self) -> list[dict]:
        return self.page.eval_on_selector_all("#top tbody tr", """rows => rows.map(r => ({
            endpoint: r.cells[1].textContent,
            ...Object.fromEntries([...r.querySelectorAll('td[data-key]')].map(c => [c.dataset.key, c.dataset.value])),
        }))""")

    # --- the tests --------------------------------------------------------------------------

    def test_after_logging_in_the_tiles_equal_the_api_for_the_same_window(self):
        self.log_in()
        start, end = self.window()
        now = timezone.now()
        # 24 hours aligned to the hour, ending with the current hour.
        self.assertEqual(end - start, DAY)
        self.assertEqual(end, floor_to(now, HOUR) + HOUR)
        api = self.api("kpis/", start=iso(start), end=iso(end), precision="approx")
        tiles = self.tiles()
        for key in ("hits", "errors", "error_rate", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms"):
            want, got = api.get(key), tiles[key]
            if want is None:
                self.assertEqual(got, "", key)
            elif isinstance(want, int):
                self.assertEqual(int(got), want, key)
            else:
                self.assertAlmostEqual(float(got), want, places=9, msg=key)
        # ... and the API's counts are the events', counted here.
        events = self.selected(start, end)
        errors = sum(e["status_code"] >= 500 for e in events)
        self.assertEqual(int(tiles["hits"]), len(events))
        self.assertEqual(int(tiles["errors"]), errors)
        # Thousands separators and units.
        self.assertEqual(self.page.text_content('.tile[data-kpi="hits"] .tile-value'), f"{len(events):,}")
        self.assertRegex(self.page.text_content('.tile[data-kpi="p95_latency_ms"] .tile-value'), r"^[\d,.]+ (ms|s)$")
        # The change against the previous 24 hours.
        previous = self.selected(start - DAY, start)
        change = (len(events) - len(previous)) / len(previous) * 100
        self.assertIn(f"{abs(change):,.1f}%", self.page.text_content('.tile[data-kpi="hits"] .tile-change'))
        self.assert_clean()

    def test_the_charts_hold_one_point_per_bucket_with_events(self):
        self.log_in()
        start, end = self.window()
        hours = {floor_to(parse_time(e["time"]), HOUR) for e in self.selected(start, end)}
        for chart in ("#traffic-chart", "#latency-chart"):
            self.assertEqual(self.page.get_attribute(chart, "data-buckets"), "24")
            self.assertEqual(self.page.get_attribute(chart, "data-points"), str(len(hours)))
            self.assertTrue(self.page.is_visible(f"{chart} canvas"))
        self.assertIn("UTC", self.page.text_content("#traffic-chart"))
        # Thirty days: daily buckets.
        self.click_and_wait('[data-window="30d"]')
        start, end = self.window()
        self.assertEqual((end - start, end), (30 * DAY, floor_to(timezone.now(), DAY) + DAY))
        days = {floor_to(parse_time(e["time"]), DAY) for e in self.selected(start, end)}
        self.assertEqual(self.page.get_attribute("#traffic-chart", "data-buckets"), "30")
        self.assertEqual(self.page.get_attribute("#traffic-chart", "data-points"), str(len(days)))
        self.assertEqual(self.state(), {"window": "30d"})
        self.assert_clean()

    def test_count_axes_step_in_whole_numbers_without_repeating_a_label(self):
        # checkout /orders/{id} in the last 24 hours: 2 and 4 requests, the 2 of them errors.
        self.log_in("/?service=checkout&endpoint=/orders/{id}")
        labels = self.page.get_attribute("#traffic-chart", "data-y-ticks").split("|")
        self.assertGreaterEqual(len(labels), 3, labels)
        self.assertTrue(all(label.isdigit() for label in labels), labels)
        self.assertEqual(len(set(labels)), len(labels), f"a label repeats: {labels}")
        self.assertEqual([int(v) for v in labels], sorted(int(v) for v in labels))
        self.assert_clean()

    def test_the_last_hour_is_drawn_by_the_minute(self):
        self.log_in("/?window=1h")
        start, end = self.window()
        # Sixty minutes ending with the current one (the clock may have ticked since the page read it).
        self.assertEqual(end - start, HOUR)
        self.assertIn(end, (floor_to(timezone.now(), MINUTE), floor_to(timezone.now(), MINUTE) + MINUTE))
        self.assertTrue(any("interval=minute" in url for url in self.requests if "/timeseries/" in url))
        minutes = {floor_to(parse_time(e["time"]), MINUTE) for e in self.selected(start, end)}
        for chart in ("#traffic-chart", "#latency-chart"):
            self.assertEqual(self.page.get_attribute(chart, "data-buckets"), "60", chart)
            self.assertEqual(self.page.get_attribute(chart, "data-points"), str(len(minutes)), chart)
        self.assertEqual(self.page.text_content(".interval-label"), "per minute · UTC")
        self.assertRegex(self.page.text_content("#range"), r" UTC · minute buckets$")
        self.assert_clean()

    def test_the_bucket_still_filling_is_drawn_apart_not_as_a_plunge(self):
        self.log_in()
        # The 24-hour window ends with the current hour, which is not over: drawn dashed.
        for chart in ("#traffic-chart", "#latency-chart"):
            self.assertEqual(self.page.get_attribute(chart, "data-partial"), "1", chart)
            self.assertEqual(self.page.get_attribute(chart, "data-solid"), "23", chart)
        self.assertIn("Requests (so far)", self.page.text_content("#traffic-chart"))

        # Where the API marks its buckets (`partial`), the payload decides, not the clock.
        def mark(route, partial_last: bool):
            response = route.fetch()
            body = response.json()
            for i, row in enumerate(body["results"]):
                row["partial"] = partial_last and i == len(body["results"]) - 1
            route.fulfill(response=response, json=body)

        self.page.route("**/api/requests/timeseries/**", lambda route: mark(route, False))
        before = self.wait_loaded()
        self.page.click("#refresh")
        self.wait_loaded(before)
        self.assertEqual(self.page.get_attribute("#traffic-chart", "data-partial"), "0")
        self.assertEqual(self.page.get_attribute("#traffic-chart", "data-solid"), "24")
        self.assertNotIn("(so far)", self.page.text_content("#traffic-chart"))
        self.assert_clean()

    def test_while_a_new_window_loads_the_header_says_so_over_the_old_numbers(self):
        self.log_in()
        hits = self.tiles()["hits"]
        held = []
        self.page.route("**/api/requests/kpis/**", lambda route: held.append(route))
        self.page.click('[data-window="7d"]')
        self.page.wait_for_function("() => document.getElementById('range').textContent.startsWith('Loading ')")
        self.assertEqual(self.page.get_attribute("#dashboard", "aria-busy"), "true")
        self.assertIn("loading", self.page.get_attribute("#dashboard", "class"))
        self.assertEqual(self.tiles()["hits"], hits)  # the old numbers, dimmed, under "Loading ..."
        self.assertEqual(len(held), 2, "this window's and the previous one's key figures")
        for route in held:
            route.continue_()
        self.page.unroute("**/api/requests/kpis/**")
        self.page.wait_for_function("() => !document.getElementById('range').textContent.startsWith('Loading')")
        self.assertIsNone(self.page.get_attribute("#dashboard", "aria-busy"))
        self.assertRegex(self.page.text_content("#range"), r"^\d{4}-\d\d-\d\d \d\d:00 – .* UTC · hourly buckets$")
        self.assertNotEqual(self.tiles()["hits"], hits)  # 7 days hold more than 24 hours
        self.assert_clean()

    def test_sorting_and_clicking_an_endpoint_change_the_url_and_the_numbers(self):
        self.log_in()
        start, end = self.window()
        by_hits = Counter((e["service"], e["endpoint"]) for e in self.selected(start, end))
        rows = self.top_rows()
        self.assertEqual([int(r["hits"]) for r in rows], sorted(by_hits.values(), reverse=True))
        # Sort by errors, then ascending.
        self.click_and_wait('th[data-sort="errors"] button')
        self.assertEqual(self.state(), {"sort": "errors"})
        errors = Counter((e["service"], e["endpoint"]) for e in self.selected(start, end) if e["status_code"] >= 500)
        self.assertEqual(int(self.top_rows()[0]["errors"]), max(errors.values()))
        self.click_and_wait('th[data-sort="errors"] button')
        self.assertEqual(self.state(), {"sort": "errors", "order": "asc"})
        self.assertEqual(int(self.top_rows()[0]["errors"]), 0)
        # A click on an endpoint filters the whole page by it.
        self.click_and_wait('#top a.endpoint-link:text-is("/orders/{id}")')
        self.assertEqual(self.state(), {"sort": "errors", "order": "asc", "service": "checkout",
                                        "endpoint": "/orders/{id}"})
        only = self.selected(start, end, service="checkout", endpoint="/orders/{id}")
        self.assertEqual(int(self.tiles()["hits"]), len(only))
        self.assertEqual(self.page.input_value("#service"), "checkout")
        self.assertEqual(self.page.input_value("#endpoint"), "/orders/{id}")
        self.assertEqual(len(self.top_rows()), 1)
        # The back button goes back to the unfiltered page.
        before = self.wait_loaded()
        self.page.go_back()
        self.wait_loaded(before)
        self.assertEqual(self.state(), {"sort": "errors", "order": "asc"})
        self.assertEqual(int(self.tiles()["hits"]), len(self.selected(start, end)))
        self.assert_clean()

    def test_the_pickers_list_the_series_and_filter_the_page(self):
        self.log_in("/?window=7d")
        start, end = self.window()
        services = sorted({e["service"] for e in self.selected(start, end)})
        options = self.page.eval_on_selector_all("#service option", "os => os.map(o => o.value)")
        self.assertEqual(options, ["", *services])
        before = self.wait_loaded()
        self.page.select_option("#service", "search")
        self.wait_loaded(before)
        self.assertEqual(self.state(), {"window": "7d", "service": "search"})
        self.assertEqual(int(self.tiles()["hits"]), len(self.selected(start, end, service="search")))
        self.assertEqual(self.page.eval_on_selector_all("#endpoint option", "os => os.map(o => o.value)"), ["", "/q"])
        self.assert_clean()

    def test_an_empty_database_shows_how_to_send_data(self):
        ApiRequest.objects.all().delete()
        self.log_in()
        self.assertTrue(self.page.is_visible("#empty"))
        self.assertIn("No data yet", self.page.text_content("#empty"))
        self.assertIn("/api/requests/ingest/", self.page.text_content("#empty"))
        self.assertIn("Send data", self.page.text_content("#send-data-link"))
        self.assertEqual(self.tiles()["hits"], "0")
        self.assert_clean()

    def test_an_api_error_is_shown_as_a_message(self):
        self.page.route("**/api/requests/top-endpoints/**", lambda route: route.fulfill(
            status=503, content_type="application/json", headers={"Retry-After": "5"},
            body=json.dumps({"detail": "The database is not answering."})))
        self.log_in()
        self.assertIn("Top endpoints could not be loaded: HTTP 503, The database is not answering.",
                      self.page.text_content("#messages"))
        self.assertIn("Could not load the top endpoints", self.page.text_content("#top"))
        self.assertNotEqual(self.tiles()["hits"], "")  # the rest of the page still shows
        self.assert_clean(allowed_errors=("status of 503",))

    def test_refresh_on_demand_and_every_30_seconds(self):
        self.page.clock.install()
        self.log_in()
        loaded = self.click_and_wait("#refresh")
        extra = make_event(time=timezone.now(), service="checkout", endpoint="/cart")
        ingest.ingest_events([dict(extra)], strict=True)
        self.page.check("#auto")
        loaded = self.wait_loaded(loaded)
        self.assertEqual(self.state(), {"auto": "1"})
        hits = int(self.tiles()["hits"])
        ingest.ingest_events([dict(extra)], strict=True)
        self.page.clock.run_for(30_000)
        self.wait_loaded(loaded)
        self.assertEqual(int(self.tiles()["hits"]), hits + 1)
        self.assert_clean()

    def test_a_phone_width_shows_everything_without_sideways_scrolling(self):
        self.page.set_viewport_size({"width": 390, "height": 844})
        self.log_in()
        width = self.page.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(width, 390)
        for selector in (".tile", "#traffic-chart canvas", "#top"):
            self.assertTrue(self.page.is_visible(selector), selector)
        self.assert_clean()
