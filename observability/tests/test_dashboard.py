"""The dashboard and login pages as HTML: who may see them, what they load, their CSP.

What the page shows is tested in a real browser: test_dashboard_browser.py.
"""

import hashlib
import re
import shlex
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

from django.contrib.auth import get_user_model
from django.test import TestCase

from observability.dashboard import CONTENT_SECURITY_POLICY
from observability.tests.utils import BASE_TIME, ApiTestCase, api_key_headers, iso

STATIC = Path(__file__).resolve().parent.parent / "static" / "observability"
UPLOT = STATIC / "vendor" / "uplot-1.6.32"


class _Assets(HTMLParser):
    """Every script, stylesheet, inline script/style and event-handler attribute of a page."""

    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.inline = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            (self.scripts if attrs.get("src") else self.inline).append(attrs.get("src") or "<script>")
        if tag == "link" and attrs.get("rel") in ("stylesheet", "icon"):
            self.styles.append(attrs["href"])
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {name}" for name in attrs if name == "style" or name.startswith("on")]


def assets(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


class DashboardAccessTests(TestCase):
    def test_a_visitor_without_a_session_is_sent_to_the_login_page(self):
        for url in ("/", "/dashboard/", "/?window=7d&service=checkout"):
            with self.subTest(url=url):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 302)
                self.assertTrue(response["Location"].startswith("/accounts/login/?next="), response["Location"])

    def test_logging_in_leads_to_the_dashboard(self):
        get_user_model().objects.create_user("ana", password="pw-for-tests-only")
        page = self.client.get("/accounts/login/?next=/")
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, 'name="username"')
        response = self.client.post(
            "/accounts/login/", {"username": "ana", "password": "pw-for-tests-only", "next": "/"})
        self.assertRedirects(response, "/", fetch_redirect_response=False)
        self.assertEqual(self.client.get("/").status_code, 200)

    def test_the_login_page_tells_how_to_create_an_account_through_make(self):
        page = self.client.get("/accounts/login/").content.decode()
        self.assertIn('<code>make manage ARGS="createsuperuser"</code>', page)
        self.assertNotIn("python manage.py", page)

    def test_a_wrong_password_shows_the_form_again_with_a_message(self):
        get_user_model().objects.create_user("ana", password="pw-for-tests-only")
        response = self.client.post("/accounts/login/", {"username": "ana", "password": "nope"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "didn't match")


class DashboardPageTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.user = get_user_model().objects.create_user("ana", password="pw-for-tests-only")

    def setUp(self):
        self.client.force_login(self.user)

    def test_both_pages_send_a_same_origin_content_security_policy(self):
        self.assertIn("default-src 'self'", CONTENT_SECURITY_POLICY)
        self.assertNotIn("unsafe", CONTENT_SECURITY_POLICY)
        for url in ("/", "/dashboard/"):
            self.assertEqual(self.client.get(url)["Content-Security-Policy"], CONTENT_SECURITY_POLICY)
        self.client.logout()
        self.assertEqual(self.client.get("/accounts/login/")["Content-Security-Policy"], CONTENT_SECURITY_POLICY)

    def test_the_policy_is_scoped_to_the_pages_not_the_api(self):
        self.assertNotIn("Content-Security-Policy", self.client.get("/api/health/"))

    def test_the_pages_load_only_static_files_of_this_origin_and_no_inline_code(self):
        self.client.logout()
        login = self.client.get("/accounts/login/").content.decode()
        self.client.force_login(self.user)
        for html in (self.client.get("/").content.decode(), login):
            found = assets(html)
            self.assertEqual(found.inline, [])
            for url in found.scripts + found.styles:
                self.assertTrue(url.startswith("/static/"), url)
            self.assertNotRegex(html, r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/[^\s\"']*\.(js|css)")
        dashboard = assets(self.client.get("/").content.decode())
        self.assertEqual([Path(s).name.split(".")[0] for s in dashboard.scripts], ["uPlot", "dashboard"])

    def test_the_page_names_the_api_it_reads_and_the_signed_in_user(self):
        html = self.client.get("/").content.decode()
        self.assertRegex(html, r'data-api="/api/requests/"')
        self.assertIn("ana", html)
        self.assertIn("Send data", html)


class VendoredAssetsTests(TestCase):
    def test_uplot_is_the_pinned_release_with_its_licence(self):
        digests = {
            "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
            "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
        }
        for name, digest in digests.items():
            self.assertEqual(hashlib.sha256((UPLOT / name).read_bytes()).hexdigest(), digest, name)
        self.assertIn("MIT License", (UPLOT / "LICENSE.txt").read_text())
        self.assertIn("Leon Sorokin", (UPLOT / "LICENSE.txt").read_text())

    def test_our_script_loads_nothing_from_elsewhere(self):
        script = (STATIC / "dashboard.js").read_text()
        self.assertIsNone(re.search(r"https?://", script))
        self.assertNotIn("eval(", script)


class SeriesForSessionsTests(ApiTestCase):
    def test_the_api_the_page_reads_answers_a_logged_in_session(self):
        user = get_user_model().objects.create_user("ana", password="pw-for-tests-only")
        self.client.force_login(user)
        for url in ("/api/requests/series/", "/api/requests/kpis/", "/api/requests/top-endpoints/"):
            self.assertEqual(self.client.get(url).status_code, 200, url)


class EmptyStateExampleTests(ApiTestCase):
    """The empty state's `curl`, pasted as the page shows it (origin and time filled in by the script), is
    answered 200: it sends the key, and says how to get it."""

    def test_the_example_sends_the_key_and_says_where_it_comes_from(self):
        self.client.force_login(get_user_model().objects.create_user("ana", password="pw-for-tests-only"))
        html = self.client.get("/").content.decode()
        pre = re.search(r'<pre id="empty-example">(.*?)</pre>', html, re.S).group(1)
        # What dashboard.js puts into the two spans (renderEmpty).
        text = re.sub(r'<span id="empty-origin"></span>', "http://testserver", pre)
        text = unescape(re.sub(r'<span id="empty-time"></span>', iso(BASE_TIME), text))
        self.assertIn("make -s key", html.split('<pre id="empty-example">')[0])
        first, _, command = text.partition("\n")
        self.assertEqual(first, "export APM_KEY=$(make -s key)")
        args = shlex.split(command.replace("\\\n", " "))
        self.assertEqual(args[:3], ["curl", "-X", "POST"])
        headers = dict(args[i + 1].split(": ", 1) for i, arg in enumerate(args) if arg == "-H")
        self.assertEqual(headers["Authorization"], "Bearer $APM_KEY")
        # As the shell would run it, with a key in APM_KEY (and no session: a terminal has none).
        self.client.logout()
        key = api_key_headers("ingest")["Authorization"].removeprefix("Bearer ")
        response = self.client.post(args[3].removeprefix("http://testserver"), args[args.index("-d") + 1],
                                    content_type=headers["Content-Type"],
                                    HTTP_AUTHORIZATION=headers["Authorization"].replace("$APM_KEY", key))
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["inserted"], 1)


class DashboardScriptTests(TestCase):
    """What can be read from dashboard.js without a browser (test_dashboard_browser.py runs it)."""

    script = (STATIC / "dashboard.js").read_text()

    def test_count_axes_use_whole_number_steps(self):
        steps = re.search(r"var COUNT_INCRS = \[([^\]]*)\]", self.script).group(1)
        values = [float(v) for v in re.split(r"[,\s]+", steps.strip()) if v]
        self.assertEqual(values[0], 1)
        self.assertTrue(all(v == int(v) for v in values), values)
        self.assertEqual(values, sorted(values))
        self.assertIn("if (seriesDefs[0].counts) yAxis.incrs = COUNT_INCRS;", self.script)
        # The traffic chart (requests and errors) is the one that counts.
        self.assertRegex(self.script, r'key: "hits",[^}]*counts: true')

    def test_the_api_partial_flag_decides_when_sent_and_the_bucket_end_otherwise(self):
        self.assertIn('"partial" in row', self.script)
        self.assertIn("row.partial === true", self.script)
        self.assertIn("x + win.width > now", self.script)
        self.assertIn("dash: [5, 4]", self.script)

    def test_a_load_marks_the_page_busy_until_its_answers_are_drawn(self):
        start, end = self.script.index("function load()"), self.script.index("load();\n})();")
        body = self.script[start:end]
        self.assertLess(body.index('setAttribute("aria-busy", "true")'), body.index("Promise.all"))
        self.assertLess(body.index("Promise.all"), body.index('removeAttribute("aria-busy")'))
        self.assertIn('"Loading " + rangeEl.dataset.range', self.script)
