"""The OpenAPI schema describes every URL, parameter and answer, and the docs pages work offline."""

import json
import re
import tempfile
from pathlib import Path

import yaml
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.http import HttpResponse
from django.test import Client, SimpleTestCase, override_settings
from django.urls import URLResolver, get_resolver, include, path
from drf_spectacular.generators import SchemaGenerator

from observability.params import allowed_query_params
from observability.tests.utils import ApiTestCase, api_key_headers

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.yaml"

# URL patterns the schema leaves out on purpose, each with the reason.
NOT_DESCRIBED = {
    r"api/\Z": "DRF's API root: links to the endpoints, not part of the contract (API.md)",
    r"api/(?P<format>\.[a-z0-9]+/?)\Z": "the API root's format-suffix alias",
    r"api/schema/\Z": "the schema itself",
    r"api/docs/\Z": "HTML page over the schema",
    r"api/redoc/\Z": "HTML page over the schema",
    r"accounts/login/\Z": "HTML login form for people (sessions), not part of the API contract",
    r"accounts/logout/\Z": "ends a browser session (POST from the page); not part of the API contract",
    r"\Z": "the dashboard: an HTML page for people over the JSON API",
    r"dashboard/\Z": "the dashboard's second address",
}
# The router's `.json` aliases answer exactly as the path they extend.
FORMAT_SUFFIX = r"/?\.(?P<format>[a-z0-9]+)/?$"


def url_patterns(patterns=None, prefix=""):
    """(regex, pattern) of every URL of the project, includes flattened."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        regex = prefix + pattern.pattern.regex.pattern.lstrip("^")
        if isinstance(pattern, URLResolver):
            yield from url_patterns(pattern.url_patterns, regex)
        else:
            yield regex, pattern


def generate() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def sample(schema_path: str) -> str:
    """A concrete URL path (no leading slash) for a schema path: {id} -> 1."""
    return re.sub(r"\{[^}]+\}", "1", schema_path).lstrip("/")


def undescribed_urls(schema: dict) -> list[str]:
    """URL patterns of the project that no schema path matches (and not left out on purpose)."""
    samples = [sample(p) for p in schema["paths"]]
    missing = []
    for regex, _ in url_patterns():
        if regex in NOT_DESCRIBED:
            continue
        plain = regex.replace(FORMAT_SUFFIX, "/?$")
        if not any(re.fullmatch(plain, s) or re.fullmatch(regex, s) for s in samples):
            missing.append(regex)
    return missing


class SchemaCoverageTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.schema = generate()

    def test_every_url_of_the_project_is_in_the_schema_or_left_out_with_a_reason(self):
        self.assertEqual(undescribed_urls(self.schema), [],
                         "URL patterns missing from the schema: describe them (observability/schema.py) "
                         "or list them in NOT_DESCRIBED with a reason")

    def test_each_operation_documents_exactly_the_parameters_it_accepts(self):
        # The views as drf-spectacular builds them for each operation (as the router would).
        generator = SchemaGenerator()
        generator._initialise_endpoints()
        checked = 0
        for path_, _regex, method, view in generator._get_paths_and_endpoints():
            operation = self.schema["paths"].get(path_, {}).get(method.lower())
            if operation is None:
                continue  # the schema and docs views
            documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            self.assertEqual(documented, allowed_query_params(view), f"{method} {path_}")
            checked += 1
        self.assertEqual(checked, sum(len(methods) for p, methods in self.schema["paths"].items()
                                      if not p.startswith(("/v1/", "/metrics"))))

    def test_every_operation_documents_its_errors_with_the_error_body(self):
        for path_, methods in self.schema["paths"].items():
            for method, operation in methods.items():
                responses = operation["responses"]
                self.assertIn("400", responses, f"{method} {path_}")
                if operation["security"] != [{}]:
                    self.assertLessEqual({"401", "403"}, set(responses), f"{method} {path_}")
                if "{" in path_:
                    self.assertIn("404", responses)
                if method in ("post", "put", "patch"):
                    self.assertIn("415", responses, f"{method} {path_}")
                body = responses["401" if "401" in responses else "400"]["content"]["application/json"]["schema"]
                # OTLP receivers answer errors with the spec's google.rpc.Status, not our Error.
                error = "google.rpc.Status" if path_.startswith("/v1/") else "Error"
                self.assertIn(error, json.dumps(body), f"{method} {path_}")

    def test_writes_document_back_pressure_and_analytics_the_time_limit(self):
        ingest = self.schema["paths"]["/api/requests/ingest/"]["post"]["responses"]
        self.assertLessEqual({"200", "201", "400", "413", "415", "429", "503"}, set(ingest))
        self.assertIn("Retry-After", ingest["503"]["headers"])
        for name in ("kpis", "top-endpoints", "hourly", "daily"):
            self.assertIn("504", self.schema["paths"][f"/api/requests/{name}/"]["get"]["responses"], name)

    def test_health_is_public_and_everything_else_needs_a_credential(self):
        schemes = self.schema["components"]["securitySchemes"]
        self.assertEqual(schemes["bearerKey"], {**schemes["bearerKey"], "type": "http", "scheme": "bearer"})
        self.assertEqual((schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]), ("header", "X-API-Key"))
        self.assertEqual((schemes["sessionCookie"]["in"], schemes["sessionCookie"]["name"]), ("cookie", "sessionid"))
        for path_, methods in self.schema["paths"].items():
            for method, operation in methods.items():
                expected = [{}] if path_ == "/api/health/" else [{"bearerKey": []}, {"apiKeyHeader": []},
                                                                  {"sessionCookie": []}]
                self.assertEqual(operation["security"], expected, f"{method} {path_}")

    def test_parameters_carry_their_types_enums_and_bounds(self):
        def param(path_, name):
            operation = self.schema["paths"][path_]["get"]
            return next(p["schema"] for p in operation["parameters"] if p["name"] == name)

        self.assertEqual(param("/api/requests/", "page_size"), {"type": "integer", "minimum": 1, "maximum": 1000})
        self.assertEqual(param("/api/requests/", "page")["minimum"], 1)
        self.assertEqual((param("/api/requests/", "status_min")["minimum"],
                          param("/api/requests/", "status_min")["maximum"]), (100, 599))
        self.assertEqual(param("/api/requests/", "status_code")["items"]["maximum"], 599)
        self.assertEqual(param("/api/requests/", "latency_min")["minimum"], 0)
        self.assertEqual(len(param("/api/requests/", "method")["enum"]), 14)
        self.assertEqual(param("/api/requests/", "start")["format"], "date-time")
        self.assertEqual(param("/api/requests/", "service")["minLength"], 1)
        for path_, name in [("/api/health/", "db"), ("/api/requests/kpis/", "with_p95")]:
            self.assertEqual(param(path_, name)["enum"], ["true", "false", "1", "0"])
        self.assertEqual(param("/api/requests/top-endpoints/", "limit")["maximum"], 1000)
        self.assertEqual(param("/api/requests/kpis/", "format")["enum"], ["json"])
        event = self.schema["components"]["schemas"]["ApiRequestRequest"]
        self.assertEqual(event["properties"]["latency_ms"]["maximum"], 86_400_000)
        self.assertEqual(event["properties"]["status_code"]["minimum"], 100)
        self.assertEqual(sorted(event["required"]),
                         ["endpoint", "latency_ms", "method", "service", "status_code", "time"])

    def test_the_committed_openapi_yaml_is_current_and_valid(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "openapi.yaml"
            # --fail-on-warn: any warning of drf-spectacular (an unresolvable type...) fails here.
            call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
            self.assertEqual(out.read_text(), COMMITTED.read_text(),
                             "docs/openapi.yaml is out of date: run `make openapi` and commit it")


def traces_view(request):
    return HttpResponse(status=200)


urlpatterns = [path("api/", include("observability.urls")), path("v1/traces", traces_view),
               path("dashboard/extra", traces_view)]


class PlainViewTests(SimpleTestCase):
    def test_plain_views_are_described_once_their_url_exists(self):
        self.assertLessEqual({"/v1/traces", "/v1/metrics", "/v1/logs"}, set(generate()["paths"]))
        with override_settings(ROOT_URLCONF=__name__):  # /v1/traces, and no /v1/metrics or /v1/logs
            paths = generate()["paths"]
        self.assertNotIn("/v1/metrics", paths)
        self.assertNotIn("/v1/logs", paths)
        operation = paths["/v1/traces"]["post"]
        self.assertLessEqual({"200", "400", "413", "415", "429", "503"}, set(operation["responses"]))
        self.assertIn("application/x-protobuf", operation["requestBody"]["content"])
        self.assertNotIn("/metrics", paths)

    def test_a_url_nobody_described_is_reported(self):
        with override_settings(ROOT_URLCONF=__name__):
            self.assertEqual(undescribed_urls(generate()), [r"dashboard/extra\Z"])


# Static files without collectstatic's manifest (the real server test covers the manifest).
@override_settings(STORAGES={"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                             "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}})
class SchemaEndpointTests(ApiTestCase):
    def test_the_schema_is_served_as_yaml_and_as_json(self):
        response = self.client.get("/api/schema/")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("application/vnd.oai.openapi"))
        self.assertEqual(yaml.safe_load(response.content)["openapi"], "3.0.3")
        for response in (self.client.get("/api/schema/", {"format": "json"}),
                         self.client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")):
            self.assertEqual(response.status_code, 200)
            self.assertIn("/api/requests/kpis/", json.loads(response.content)["paths"])

    def test_the_schema_is_served_to_a_read_key_and_a_session_and_to_no_one_else(self):
        read_key = api_key_headers("read")["Authorization"]
        self.assertEqual(self.client.get("/api/schema/", HTTP_AUTHORIZATION=read_key).status_code, 200)
        anonymous = Client()
        self.assertEqual(anonymous.get("/api/schema/").status_code, 401)
        anonymous.force_login(get_user_model().objects.create_user("reader", password="pw-reader-123"))
        self.assertEqual(anonymous.get("/api/schema/").status_code, 200)

    def test_the_docs_pages_send_a_visitor_without_a_session_to_the_login_page(self):
        for url in ("/api/docs/", "/api/redoc/"):
            response = Client().get(url)
            self.assertEqual(response.status_code, 302, url)
            self.assertTrue(response["Location"].startswith("/accounts/login/"), url)

    def test_the_docs_pages_load_everything_from_this_server(self):
        # The docs pages are for people: a session (a logged-in user), not a key.
        self.client.force_login(get_user_model().objects.create_user("reader", password="pw-reader-123"))
        for url in ("/api/docs/", "/api/redoc/"):
            response = self.client.get(url)
            self.assertEqual(response.status_code, 200, url)
            html = response.content.decode()
            self.assertIn("/static/drf_spectacular_sidecar/", html, url)
            self.assertIn("/api/schema/", html, url)
            self.assertNotRegex(html, r"(src|href)=\"https?://", url)
            self.assertNotIn("validator.swagger.io", html)
