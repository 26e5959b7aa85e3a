"""Access control: who may call which endpoint, with a key, a session, or nothing."""

import hashlib
import io
import json
import time
from unittest import mock

from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.http import HttpResponse
from django.test import Client, RequestFactory, TestCase, override_settings
from django.urls import path

from apm_platform.urls import urlpatterns as service_urlpatterns
from observability import access
from observability.models import ApiKey, ApiRequest
from observability.tests.utils import INGEST_URL, LIST_URL, ApiTestCase, api_key_headers, make_event, make_events


@access.login_required
def _page(request):
    return HttpResponse("<html><body>a page for people</body></html>")


# This module doubles as a URLconf: the service's URLs plus an HTML page, as the dashboard will be.
urlpatterns = [*service_urlpatterns, path("page/", _page)]

JSON = "application/json"
READS = ["/api/", LIST_URL, "/api/requests/hourly/", "/api/requests/daily/", "/api/requests/kpis/",
         "/api/requests/top-endpoints/"]


def key_for(scope: str) -> str:
    return api_key_headers(scope)["Authorization"].removeprefix("Bearer ")


def bearer(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


class ScopeMatrixTests(TestCase):
    """Each scope (and no credential) against each endpoint and method."""

    def setUp(self):
        self.client = Client()
        self.event = ApiRequest.objects.create(**{**make_event(), "time": "2026-03-02T10:00:00Z"})
        self.detail = f"{LIST_URL}{self.event.pk}/"

    def requests(self):
        """(label, kind, method, url, body): kind is read, ingest or admin, what the request needs."""
        for url in READS:
            yield f"GET {url}", "read", "get", url, None
            yield f"HEAD {url}", "read", "head", url, None
        yield f"GET {self.detail}", "read", "get", self.detail, None
        yield "POST /api/requests/", "ingest", "post", LIST_URL, make_event()
        yield "POST ingest", "ingest", "post", INGEST_URL, make_events(3)
        yield "PATCH", "admin", "patch", self.detail, {"status_code": 503}
        yield "PUT", "admin", "put", self.detail, make_event(status_code=201)
        yield "DELETE", "admin", "delete", self.detail, None

    def call(self, method, url, body, headers):
        if body is None:
            return getattr(self.client, method)(url, **headers)
        return getattr(self.client, method)(url, json.dumps(body), content_type=JSON, **headers)

    def test_without_a_credential_every_endpoint_but_health_is_401_with_www_authenticate(self):
        for label, _, method, url, body in self.requests():
            response = self.call(method, url, body, {})
            self.assertEqual(response.status_code, 401, label)
            self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="apm"', label)
            if method != "head":
                self.assertEqual(response.json(), {"detail": "Authentication credentials were not provided."})
        self.assertEqual(ApiRequest.objects.count(), 1, "nothing was written")
        self.assertEqual(self.client.get("/api/health/").status_code, 200)

    def test_an_ingest_key_writes_events_and_cannot_read_anything_back(self):
        self.assert_scope("ingest", allowed={"ingest"})

    def test_a_read_key_reads_everything_and_writes_nothing(self):
        self.assert_scope("read", allowed={"read"})

    def test_an_admin_key_may_do_everything(self):
        self.assert_scope("admin", allowed={"read", "ingest", "admin"})

    def assert_scope(self, scope, allowed):
        headers = bearer(key_for(scope))
        for label, needs, method, url, body in self.requests():
            response = self.call(method, url, body, headers)
            if needs in allowed:
                self.assertLess(response.status_code, 300, f"{scope} key, {label}: {response.content!r}")
            else:
                self.assertEqual(response.status_code, 403, f"{scope} key, {label}")
                if method != "head":
                    self.assertIn(f"scope '{scope}'", response.json()["detail"])
        if "admin" not in allowed:
            self.event.refresh_from_db()
            self.assertEqual(self.event.status_code, 200, "PATCH/PUT were refused: the event is unchanged")

    def test_the_key_may_come_in_x_api_key_and_the_bearer_scheme_is_case_insensitive(self):
        key = key_for("read")
        self.assertEqual(self.client.get(LIST_URL, HTTP_X_API_KEY=key).status_code, 200)
        self.assertEqual(self.client.get(LIST_URL, HTTP_AUTHORIZATION=f"bearer {key}").status_code, 200)

    def test_unknown_malformed_and_revoked_keys_are_401_never_a_500(self):
        key = key_for("admin")
        access.revoke_key(key.split("_")[1])
        for bad in (key, key + "x", "apm_" + key.split("_")[1] + "_wrong", "apm_", "apm__", "nonsense",
                    "apm_" + "x" * 5000, "apm_é_ü", "apm_\x00\x00\x00\x00\x00\x00\x00\x00_x",
                    "apm_" + key.split("_")[1] + "_\x00"):
            for headers in (bearer(bad), {"HTTP_X_API_KEY": bad}):
                response = self.client.get(LIST_URL, **headers)
                self.assertEqual(response.status_code, 401, bad[:40])
                self.assertEqual(response.json(), {"detail": "Invalid or revoked API key."})
                self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="apm"')

    def test_a_bad_key_is_refused_even_when_a_session_would_allow_the_request(self):
        self.client.force_login(get_user_model().objects.create_user("ops", is_staff=True))
        self.assertEqual(self.client.get(LIST_URL).status_code, 200)
        self.assertEqual(self.client.get(LIST_URL, **bearer("apm_00000000_nope")).status_code, 401)

    def test_health_ignores_credentials_even_bad_ones(self):
        response = self.client.get("/api/health/", **bearer("apm_00000000_nope"))
        self.assertEqual((response.status_code, response.json()), (200, {"status": "ok"}))


class KeyStorageTests(TestCase):
    def test_a_key_is_stored_only_as_its_sha256_with_a_public_prefix(self):
        row, key = access.create_key(name="ci", scope="ingest")
        self.assertRegex(key, r"^apm_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")
        self.assertEqual(row.prefix, key.split("_")[1])
        self.assertEqual(row.key_hash, hashlib.sha256(key.encode()).hexdigest())
        stored = json.dumps(list(ApiKey.objects.values()), default=str)
        self.assertNotIn(key.split("_", 2)[2], stored)

    def test_two_keys_never_share_a_secret_or_prefix(self):
        keys = [access.create_key(name=f"k{i}", scope="read")[1] for i in range(20)]
        self.assertEqual(len(set(keys)), 20)
        self.assertEqual(len({k.split("_")[1] for k in keys}), 20)

    def test_an_unknown_scope_is_refused(self):
        with self.assertRaises(ValueError):
            access.create_key(name="x", scope="write")

    def test_use_records_last_used_at(self):
        row, key = access.create_key(name="ci", scope="read")
        access.clear_cache()
        self.assertIsNone(row.last_used_at)
        self.assertEqual(Client().get(LIST_URL, **bearer(key)).status_code, 200)
        row.refresh_from_db()
        self.assertIsNotNone(row.last_used_at)


class RevocationTests(TestCase):
    def test_revoking_in_this_process_takes_effect_at_once(self):
        key = key_for("read")
        client = Client()
        self.assertEqual(client.get(LIST_URL, **bearer(key)).status_code, 200)
        access.revoke_key(key.split("_")[1])
        self.assertEqual(client.get(LIST_URL, **bearer(key)).status_code, 401)

    def test_a_key_revoked_by_another_process_stops_working_when_the_cache_entry_expires(self):
        key = key_for("read")
        client = Client()
        self.assertEqual(client.get(LIST_URL, **bearer(key)).status_code, 200)
        # What the revoke_api_key command does from another process: no signal reaches this one.
        ApiKey.objects.filter(prefix=key.split("_")[1]).update(revoked_at="2026-03-02T10:00:00Z")
        self.assertEqual(client.get(LIST_URL, **bearer(key)).status_code, 200, "still cached")
        later = time.monotonic() + 60.001
        with mock.patch("observability.access.time.monotonic", return_value=later):
            self.assertEqual(client.get(LIST_URL, **bearer(key)).status_code, 401)

    def test_the_cache_period_can_not_exceed_a_minute(self):
        from django.conf import settings

        self.assertLessEqual(settings.APM_API_KEY_CACHE_SECONDS, 60)

    def test_an_unknown_key_is_looked_up_once_per_cache_period(self):
        client = Client()
        client.get(LIST_URL, **bearer("apm_0badbeef_flood"))
        with self.assertNumQueries(0):
            for _ in range(5):
                self.assertEqual(client.get(LIST_URL, **bearer("apm_0badbeef_flood")).status_code, 401)


class SessionTests(TestCase):
    def setUp(self):
        users = get_user_model().objects
        self.reader = users.create_user("reader", password="pw-reader-123")
        self.staff = users.create_user("staff", password="pw-staff-123", is_staff=True)
        self.client = Client(enforce_csrf_checks=True)

    def test_an_active_user_reads_and_may_not_write(self):
        token = self.csrf_token()
        self.client.force_login(self.reader)
        for url in READS:
            self.assertEqual(self.client.get(url).status_code, 200, url)
        response = self.client.post(INGEST_URL, json.dumps(make_events(2)), content_type=JSON,
                                    HTTP_X_CSRFTOKEN=token)
        self.assertEqual(response.status_code, 403)
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_a_staff_user_writes_with_the_csrf_token_and_not_without(self):
        token = self.csrf_token()
        self.client.force_login(self.staff)
        response = self.client.post(INGEST_URL, json.dumps(make_events(2)), content_type=JSON)
        self.assertEqual(response.status_code, 403)
        self.assertIn("CSRF", response.json()["detail"])
        self.assertEqual(ApiRequest.objects.count(), 0)
        response = self.client.post(INGEST_URL, json.dumps(make_events(2)), content_type=JSON,
                                    HTTP_X_CSRFTOKEN=token)
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(ApiRequest.objects.count(), 2)

    def test_an_inactive_user_gets_nothing(self):
        self.staff.is_active = False
        self.staff.save()
        self.client.force_login(self.staff)
        self.assertEqual(self.client.get(LIST_URL).status_code, 401)

    def test_logging_in_on_the_login_page_opens_the_api_to_the_browser(self):
        page = self.client.get("/accounts/login/")
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, 'name="csrfmiddlewaretoken"')
        token = self.client.cookies["csrftoken"].value
        wrong = self.client.post("/accounts/login/", {"username": "reader", "password": "nope",
                                                      "csrfmiddlewaretoken": token})
        self.assertEqual(wrong.status_code, 200)
        self.assertEqual(self.client.get(LIST_URL).status_code, 401)
        done = self.client.post("/accounts/login/", {"username": "reader", "password": "pw-reader-123",
                                                     "csrfmiddlewaretoken": token})
        self.assertEqual(done.status_code, 302)
        self.assertEqual(self.client.get("/api/requests/kpis/").status_code, 200)
        self.client.post("/accounts/logout/", {"csrfmiddlewaretoken": self.client.cookies["csrftoken"].value})
        self.assertEqual(self.client.get(LIST_URL).status_code, 401)

    def csrf_token(self) -> str:
        self.client.get("/accounts/login/")  # sets the csrftoken cookie, as any page with a form does
        return self.client.cookies["csrftoken"].value


@override_settings(ROOT_URLCONF=__name__)
class HtmlPageTests(TestCase):
    def test_a_page_sends_a_visitor_without_a_session_to_the_login_page(self):
        response = Client().get("/page/")
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response["Location"], "/accounts/login/?next=/page/")

    def test_a_logged_in_user_sees_the_page(self):
        client = Client()
        client.force_login(get_user_model().objects.create_user("reader"))
        self.assertContains(client.get("/page/"), "a page for people")


class PlainViewCheckTests(TestCase):
    """access.check() for plain Django views (OTLP, /metrics)."""

    def request(self, method="get", **meta):
        request = getattr(RequestFactory(), method)("/v1/traces", **meta)
        request.user = None
        return request

    def test_no_credential_is_a_401_with_www_authenticate(self):
        response = access.check(self.request("post"), "ingest")
        self.assertEqual((response.status_code, response["WWW-Authenticate"]), (401, 'Bearer realm="apm"'))
        self.assertEqual(json.loads(response.content)["detail"], "Authentication credentials were not provided.")

    def test_a_key_of_the_right_scope_passes_and_others_are_refused(self):
        for scope, needed, status in (("ingest", "ingest", None), ("admin", "ingest", None), ("read", "ingest", 403),
                                      ("ingest", "read", 403), ("read", "read", None)):
            request = self.request("post", **bearer(key_for(scope)))
            response = access.check(request, needed)
            self.assertEqual(None if response is None else response.status_code, status, (scope, needed))
            self.assertEqual(request.apm_principal.scope, scope)
        self.assertEqual(access.check(self.request(**bearer("apm_00000000_x")), "read").status_code, 401)

    def test_a_session_write_needs_the_csrf_token(self):
        from django.middleware.csrf import get_token

        staff = get_user_model().objects.create_user("staff", is_staff=True)
        request = RequestFactory().post("/v1/traces")
        request.user = staff
        with self.assertLogs("django.security.csrf", "WARNING"):
            self.assertEqual(access.check(request, "ingest").status_code, 403)
        source = RequestFactory().get("/")
        token = get_token(source)
        request = RequestFactory().post("/v1/traces", HTTP_X_CSRFTOKEN=token)
        request.COOKIES["csrftoken"] = source.META["CSRF_COOKIE"]
        request.user = staff
        self.assertIsNone(access.check(request, "ingest"))


class RateLimitTests(TestCase):
    def setUp(self):
        access.clear_rate_limits()
        self.addCleanup(access.clear_rate_limits)

    def ingest(self, key, n, start=0):
        events = make_events(n, seed=start)
        return Client().post(INGEST_URL, json.dumps(events), content_type=JSON, **bearer(key))

    @override_settings(APM_INGEST_RATE_LIMIT=10, APM_INGEST_RATE_BURST=20, APM_INGEST_MAX_EVENTS=20)
    def test_over_the_rate_a_key_gets_429_with_retry_after_and_nothing_is_stored(self):
        key = key_for("ingest")
        now = [1000.0]
        with mock.patch("observability.access.time.monotonic", side_effect=lambda: now[0]):
            self.assertEqual(self.ingest(key, 15).status_code, 200)  # 5 tokens left
            refused = self.ingest(key, 10, start=1)
            self.assertEqual(refused.status_code, 429)
            self.assertEqual(refused["Retry-After"], "1")  # 5 missing tokens at 10/s: 0.5 s, rounded up
            self.assertIn("rate limit", refused.json()["detail"])
            self.assertEqual(ApiRequest.objects.count(), 15)
            # Another key has its own bucket.
            self.assertEqual(self.ingest(key_for("ingest"), 20).status_code, 200)
            # One event through POST /api/requests/ counts too.
            self.assertEqual(Client().post(LIST_URL, make_event(), content_type=JSON, **bearer(key)).status_code,
                             201)
            now[0] += 0.6  # 4 + 6 = 10 tokens
            self.assertEqual(self.ingest(key, 10, start=2).status_code, 200)
            self.assertEqual(self.ingest(key, 1, start=3).status_code, 429)
            self.assertEqual(Client().post(LIST_URL, make_event(), content_type=JSON, **bearer(key)).status_code,
                             429)
        self.assertEqual(ApiRequest.objects.count(), 15 + 20 + 1 + 10)

    def test_off_by_default(self):
        from django.conf import settings

        self.assertEqual(settings.APM_INGEST_RATE_LIMIT, 0)
        key = key_for("ingest")
        for i in range(5):
            self.assertEqual(self.ingest(key, 200, start=i).status_code, 200)


class CommandTests(TestCase):
    def run_command(self, *args) -> str:
        out = io.StringIO()
        call_command(*args, stdout=out, stderr=io.StringIO())
        return out.getvalue()

    def test_create_list_and_revoke_a_key(self):
        output = self.run_command("create_api_key", "checkout", "--scope", "ingest")
        key = output.strip().splitlines()[-1]
        self.assertRegex(key, r"^apm_[0-9a-f]{8}_\S+$")
        self.assertEqual(Client().post(INGEST_URL, "[]", content_type=JSON, **bearer(key)).status_code, 200)
        listing = self.run_command("list_api_keys")
        prefix = key.split("_")[1]
        self.assertIn(prefix, listing)
        self.assertIn("checkout", listing)
        self.assertNotIn(key.split("_", 2)[2], listing)
        self.assertNotIn(ApiKey.objects.get().key_hash, listing)
        self.assertIn(prefix, self.run_command("revoke_api_key", prefix))
        self.assertEqual(Client().post(INGEST_URL, "[]", content_type=JSON, **bearer(key)).status_code, 401)
        self.assertRegex(self.run_command("list_api_keys"), rf"{prefix} +ingest .*\d{{4}}-.*Z +checkout")

    def test_revoking_an_unknown_prefix_is_an_error(self):
        with self.assertRaises(CommandError):
            self.run_command("revoke_api_key", "00000000")

    def test_create_refuses_an_unknown_scope(self):
        with self.assertRaises(CommandError):
            self.run_command("create_api_key", "x", "--scope", "write")


class TestClientTests(ApiTestCase):
    """The suite's own plumbing: ApiTestCase clients are admins and cost no query per request."""

    def test_the_client_carries_an_admin_key_and_looks_it_up_without_a_query(self):
        with self.assertNumQueries(0):
            response = self.client.get("/api/")  # the API root: no query of its own
        self.assertEqual(response.status_code, 200)
        self.assertEqual(ApiKey.objects.get(prefix=self.client.api_key.split("_")[1]).scope, "admin")


class LocalCredentialsTests(TestCase):
    """make run's local_credentials: a working admin key and staff login, the same on every start."""

    def run_command(self, path, *extra) -> str:
        out = io.StringIO()
        call_command("local_credentials", "--file", str(path), "--url", "http://127.0.0.1:9000", *extra, stdout=out)
        return out.getvalue()

    def test_it_creates_then_reuses_an_admin_key_and_a_staff_login(self):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp, override_settings(DEBUG=True):
            path = Path(tmp, "creds.json")
            first = self.run_command(path)
            saved = json.loads(path.read_text())
            self.assertEqual(path.stat().st_mode & 0o777, 0o600)
            self.assertIn(saved["api_key"], first)
            self.assertIn(f"http://127.0.0.1:9000/accounts/login/ as admin / {saved['password']}", first)
            response = Client().delete(f"{LIST_URL}999999/", **bearer(saved["api_key"]))
            self.assertEqual(response.status_code, 404, "an admin key: past the permission check")
            client = Client()
            self.assertTrue(client.login(username="admin", password=saved["password"]))
            self.assertTrue(get_user_model().objects.get(username="admin").is_staff)
            self.assertEqual(self.run_command(path, "--key-only").strip(), saved["api_key"])
            self.assertEqual(json.loads(path.read_text()), saved)
            # A revoked key (or another database) gets a new one.
            access.revoke_key(saved["api_key"].split("_")[1])
            renewed = self.run_command(path, "--key-only").strip()
            self.assertNotEqual(renewed, saved["api_key"])
            self.assertEqual(Client().get(LIST_URL, **bearer(renewed)).status_code, 200)

    def test_it_refuses_to_run_with_debug_off(self):
        with self.assertRaises(CommandError):
            self.run_command("/nonexistent/creds.json")


# A fast hasher: the tests try dozens of passwords, and the default one costs ~0.3 s each.
@override_settings(APM_LOGIN_FAILURES_PER_USERNAME=5, APM_LOGIN_FAILURES_PER_ADDRESS=20,
                   APM_LOGIN_THROTTLE_SECONDS=900,
                   PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
class LoginThrottleTests(TestCase):
    """Failed logins per username and per client address: past the limit a 429 with Retry-After."""

    @classmethod
    def setUpTestData(cls):
        users = get_user_model().objects
        cls.ana = users.create_user("ana", password="pw-ana-right")
        cls.bob = users.create_user("bob", password="pw-bob-right")

    def setUp(self):
        access.clear_login_failures()
        self.addCleanup(access.clear_login_failures)
        self.now = 1_800_000_000.0
        clock = mock.patch.object(access, "login_clock", side_effect=lambda: self.now)
        clock.start()
        self.addCleanup(clock.stop)

    def login(self, username, password, address="10.0.0.1"):
        return Client().post("/accounts/login/", {"username": username, "password": password},
                             REMOTE_ADDR=address)

    def assert_throttled(self, response, what, wait):
        self.assertEqual(response.status_code, 429, response.content)
        self.assertEqual(response["Retry-After"], str(wait))
        self.assertEqual(response.json()["detail"], f"Too many failed logins for {what}: try again in {wait} s.")

    def test_five_wrong_passwords_then_a_429_that_refuses_even_the_right_one(self):
        for _ in range(5):
            self.assertEqual(self.login("ana", "wrong").status_code, 200)  # the form again, "didn't match"
        self.assert_throttled(self.login("ana", "wrong"), "this username", 900)
        self.now += 60  # refused attempts are not counted: the window still ends 900 s after the first failure
        self.assert_throttled(self.login("ana", "pw-ana-right"), "this username", 840)
        self.assert_throttled(self.login("ana", "pw-ana-right", address="10.9.9.9"), "this username", 840)

    def test_reaching_the_limit_is_logged_once(self):
        with self.assertLogs("observability.dashboard", "WARNING") as logs:
            for _ in range(7):
                self.login("ana", "wrong")
        self.assertEqual(len(logs.records), 1)
        self.assertIn("5 failed logins for this username (username 'ana' from 10.0.0.1)", logs.output[0])

    def test_the_count_resets_when_the_window_ends(self):
        for _ in range(5):
            self.login("ana", "wrong")
        self.now += 899
        self.assert_throttled(self.login("ana", "pw-ana-right"), "this username", 1)
        self.now += 1
        self.assertEqual(self.login("ana", "pw-ana-right").status_code, 302)
        for _ in range(5):  # a fresh window: five more tries before the next 429
            self.assertEqual(self.login("ana", "wrong").status_code, 200)
        self.assertEqual(self.login("ana", "wrong").status_code, 429)

    def test_another_username_from_another_address_is_not_affected(self):
        for _ in range(6):
            self.login("ana", "wrong")
        self.assertEqual(self.login("bob", "pw-bob-right", address="10.0.0.2").status_code, 302)

    def test_one_address_trying_many_usernames_is_throttled_too(self):
        for i in range(20):
            self.assertEqual(self.login(f"user{i}", "wrong").status_code, 200)
        self.assert_throttled(self.login("bob", "pw-bob-right"), "this address", 900)
        self.assertEqual(self.login("bob", "pw-bob-right", address="10.0.0.2").status_code, 302)

    def test_a_right_password_forgets_the_username_s_failures(self):
        for _ in range(4):
            self.login("ana", "wrong")
        self.assertEqual(self.login("ana", "pw-ana-right").status_code, 302)
        for _ in range(4):
            self.assertEqual(self.login("ana", "wrong").status_code, 200)

    @override_settings(APM_LOGIN_FAILURES_PER_USERNAME=0, APM_LOGIN_FAILURES_PER_ADDRESS=0)
    def test_zero_turns_the_limits_off(self):
        for _ in range(30):
            self.assertEqual(self.login("ana", "wrong").status_code, 200)


class CredentialHintTests(ApiTestCase):
    """A key sent in the wrong form is told how to send it; the key itself is never echoed."""

    HINT = ('The Authorization header is not "Bearer <key>": send the API key as '
            '"Authorization: Bearer <key>" or as "X-API-Key: <key>".')

    def test_an_authorization_header_without_bearer_says_how_to_send_the_key(self):
        key = api_key_headers("read")["Authorization"].removeprefix("Bearer ")
        for header in (key, "abc123", f"Token {key}", "Bearer", "Basic YTpi"):
            for url in (LIST_URL, "/metrics"):
                with self.subTest(header=header, url=url):
                    response = self.client.get(url, HTTP_AUTHORIZATION=header)
                    self.assertEqual(response.status_code, 401, response.content)
                    self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="apm"')
                    self.assertEqual(response.json(), {"detail": self.HINT})
                    self.assertNotIn(key, response.content.decode())
        self.assertEqual(self.client.get(LIST_URL, HTTP_AUTHORIZATION=f"Bearer {key}").status_code, 200)

    def test_no_credential_at_all_is_still_not_provided(self):
        response = Client().get(LIST_URL)
        self.assertEqual(response.json(), {"detail": "Authentication credentials were not provided."})
