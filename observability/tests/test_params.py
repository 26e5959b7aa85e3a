"""Strict query parameters (API.md "Query parameters"): nothing a client sends is silently ignored."""

from datetime import timedelta
from unittest import mock

from django.test import override_settings
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory

from observability.models import ApiRequest
from observability.params import StrictQueryParamsMixin, allowed_query_params
from observability.serializers import KpiParamSerializer
from observability.tests.utils import (
    BASE_TIME,
    ApiTestCase,
    KeyClient,
    api_key_headers,
    iso,
    make_event,
    post_ingest,
)

LIST = "/api/requests/"
HOURLY = "/api/requests/hourly/"
DAILY = "/api/requests/daily/"
KPIS = "/api/requests/kpis/"
TOP = "/api/requests/top-endpoints/"
HEALTH = "/api/health/"
GETS = (LIST, HOURLY, DAILY, KPIS, TOP, HEALTH)
LIST_FILTERS = {"service", "endpoint", "method", "trace_id", "user_ref", "status_code", "status_min", "status_max",
                "start", "end", "latency_min", "latency_max", "search", "ordering"}


class UnknownParameterTests(ApiTestCase):
    def assert_unknown(self, response, *names):
        self.assertEqual(response.status_code, 400, response.content)
        body = response.json()
        for name in names:
            self.assertEqual(body[name], ["Unknown parameter."])
            self.assertIn(name, body["detail"])
        self.assertIn("Unknown query parameter", body["detail"])

    def test_a_misspelt_filter_is_a_400_naming_it_on_every_get_endpoint(self):
        for url in GETS:
            self.assert_unknown(self.client.get(url, {"servce": "checkout"}), "servce")

    def test_every_unknown_parameter_is_named_and_the_accepted_ones_listed(self):
        response = self.client.get(KPIS, {"servce": "a", "limitt": "3", "service": "checkout"})
        self.assert_unknown(response, "servce", "limitt")
        self.assertIn("accepts: end, endpoint, format", response.json()["detail"])

    def test_writes_and_detail_routes_know_their_parameters_too(self):
        post_ingest(self.client, [make_event()])
        pk = ApiRequest.objects.get().pk
        self.assert_unknown(self.client.get(f"{LIST}{pk}/", {"service": "x"}), "service")
        self.assert_unknown(self.client.delete(f"{LIST}{pk}/?force=1"), "force")
        self.assert_unknown(self.client.post(f"{LIST}?strict=true", make_event(), content_type="application/json"),
                            "strict")
        self.assert_unknown(self.client.post("/api/requests/ingest/?strct=true", [make_event()],
                                             content_type="application/json"), "strct")
        self.assertEqual(ApiRequest.objects.count(), 1)  # nothing stored by the refused requests

    def test_each_endpoint_knows_only_its_own_set(self):
        # Pagination only where there are pages, rollups only their four filters, top-endpoints'
        # own parameters only there.
        for url in (KPIS, TOP, HEALTH):
            self.assert_unknown(self.client.get(url, {"page": "1"}), "page")
        for url in (HOURLY, DAILY):
            self.assert_unknown(self.client.get(url, {"method": "GET", "status_min": "500"}), "method", "status_min")
        for url in (LIST, KPIS, HOURLY):
            self.assert_unknown(self.client.get(url, {"sort": "hits", "limit": "5"}), "sort", "limit")
        self.assert_unknown(self.client.get(LIST, {"with_p95": "true"}), "with_p95")
        self.assert_unknown(self.client.get(HEALTH, {"service": "x"}), "service")

    def test_the_declared_sets_are_accepted(self):
        expected = {
            LIST: LIST_FILTERS | {"page", "page_size", "format"},
            HOURLY: {"service", "endpoint", "start", "end", "page", "page_size", "format"},
            KPIS: LIST_FILTERS | {"with_p95", "format"},
            TOP: LIST_FILTERS | {"sort", "order", "limit", "with_p95", "format"},
            HEALTH: {"db", "format"},
        }
        values = {"start": iso(BASE_TIME), "end": iso(BASE_TIME + timedelta(hours=1)), "status_code": "200",
                  "status_min": "200", "status_max": "299", "latency_min": "0", "latency_max": "10",
                  "method": "get", "ordering": "-time", "page": "1", "page_size": "10", "format": "json",
                  "with_p95": "false", "sort": "hits", "order": "asc", "limit": "5", "db": "0"}
        for url, names in expected.items():
            params = {name: values.get(name, "x") for name in names}
            response = self.client.get(url, params)
            self.assertEqual(response.status_code, 200, (url, response.content))

    def test_a_blank_or_repeated_parameter_is_a_400_not_ignored(self):
        for url, query in [(LIST, "service="), (KPIS, "start="), (TOP, "status_code="), (HEALTH, "db="),
                           (LIST, "service=a&service=b"), (HOURLY, "end=2026-01-01T00:00:00Z&end=2026-01-02")]:
            response = self.client.get(f"{url}?{query}")
            self.assertEqual(response.status_code, 400, (url, query))
            name = query.split("=")[0]
            self.assertIn(name, response.json())
            self.assertIn(name, response.json()["detail"])

    def test_a_new_action_is_strict_until_it_declares_its_parameters(self):
        class ProbeViewSet(StrictQueryParamsMixin, viewsets.GenericViewSet):
            authentication_classes = permission_classes = ()  # parameters only, whatever access rules apply

            @action(detail=False)
            def bare(self, request):
                return Response({"ok": True})

            @action(detail=False, query_serializer=KpiParamSerializer)
            def declared(self, request):
                return Response(self.query_params())

        factory = APIRequestFactory()
        bare = ProbeViewSet.as_view({"get": "bare"})
        declared = ProbeViewSet.as_view({"get": "declared"})
        self.assertEqual(bare(factory.get("/", {"format": "json"})).status_code, 200)
        response = bare(factory.get("/", {"with_p95": "false"}))
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.data["with_p95"], ["Unknown parameter."])
        self.assertEqual(declared(factory.get("/", {"with_p95": "false"})).data,
                         {"with_p95": False, "precision": "exact"})
        self.assertEqual(declared(factory.get("/", {"page": "2"})).status_code, 400)


class FormatTests(ApiTestCase):
    def test_format_json_is_accepted_everywhere(self):
        for url in GETS:
            self.assertEqual(self.client.get(url, {"format": "json"}).status_code, 200, url)

    def test_another_format_is_a_400_saying_only_json_is_offered(self):
        for value in ("api", "xml", "yaml", ""):
            for url in (LIST, KPIS, HEALTH):
                response = self.client.get(f"{url}?format={value}")
                self.assertEqual(response.status_code, 400, (url, value))
                self.assertTrue(response["Content-Type"].startswith("application/json"))
                self.assertIn("format=json only", response.json()["detail"])
                self.assertIn("format", response.json())


class RangeTests(ApiTestCase):
    def test_start_after_end_is_a_400_on_every_endpoint_with_a_time_range(self):
        params = {"start": "2026-03-02T11:00:00Z", "end": "2026-03-02T10:00:00Z"}
        for url in (LIST, HOURLY, DAILY, KPIS, TOP):
            response = self.client.get(url, params)
            self.assertEqual(response.status_code, 400, url)
            self.assertIn("is after end", response.json()["start"][0])
            self.assertIn("start", response.json()["detail"])

    def test_start_equal_to_end_is_an_empty_range_not_an_error(self):
        post_ingest(self.client, [make_event(time=BASE_TIME)])
        params = {"start": iso(BASE_TIME), "end": iso(BASE_TIME)}
        self.assertEqual(self.client.get(LIST, params).json()["count"], 0)
        self.assertEqual(self.client.get(KPIS, params).json()["hits"], 0)

    def test_a_minimum_above_its_maximum_is_a_400(self):
        for low, high, lo, hi in [("status_min", "status_max", 500, 400), ("latency_min", "latency_max", 10, 9.5)]:
            for url in (LIST, KPIS, TOP):
                response = self.client.get(url, {low: lo, high: hi})
                self.assertEqual(response.status_code, 400, (url, low))
                self.assertIn(f"is above {high}", response.json()[low][0])
            self.assertEqual(self.client.get(LIST, {low: lo, high: lo}).status_code, 200)

    def test_values_outside_the_contract_are_400s_naming_them(self):
        for name, value in [("status_min", "600"), ("status_max", "99"), ("status_code", "500,600"),
                            ("status_min", "500.5"), ("latency_min", "-1"), ("latency_max", "86400001"),
                            ("method", "fetch"), ("service", "a\x00b"), ("search", "\x00"),
                            ("start", "0001-01-01T00:00:00+05:00"), ("end", "9999-12-31T23:59:59-05:00")]:
            response = self.client.get(LIST, {name: value})
            self.assertEqual(response.status_code, 400, (name, value))
            self.assertIn(name, response.json()["detail"])

    def test_times_without_a_utc_equivalent_are_400s_on_every_endpoint(self):
        for url in (LIST, HOURLY, DAILY, KPIS, TOP):
            for name, value in (("start", "0001-01-01T00:00:00+05:00"), ("end", "9999-12-31T23:59:59-05:00")):
                response = self.client.get(url, {name: value})
                self.assertEqual(response.status_code, 400, (url, name))
                self.assertEqual(response.json()[name], ["Out of range once converted to UTC."])

    def test_method_takes_each_of_the_seven_in_upper_or_lower_case(self):
        post_ingest(self.client, [make_event(method=m) for m in ("GET", "HEAD", "POST", "PUT", "PATCH",
                                                                 "DELETE", "OPTIONS")])
        for method in ("GET", "head", "Post", "put", "PATCH", "delete", "OPTIONS"):
            rows = self.client.get(LIST, {"method": method}).json()["results"]
            self.assertEqual([r["method"] for r in rows], [method.upper()])


class BooleanTests(ApiTestCase):
    def test_booleans_take_true_false_1_0_and_nothing_else(self):
        for url, name in [(KPIS, "with_p95"), (TOP, "with_p95"), (HEALTH, "db")]:
            for value in ("true", "false", "1", "0"):
                self.assertEqual(self.client.get(url, {name: value}).status_code, 200, (url, name, value))
            for value in ("banana", "yes", "on", "True", "FALSE", "t", "2"):
                response = self.client.get(url, {name: value})
                self.assertEqual(response.status_code, 400, (url, name, value))
                self.assertEqual(response.json()[name], ["Must be one of true, false, 1, 0."])

    def test_health_checks_the_database_only_when_db_is_true_or_1(self):
        for value, queries in (("0", 0), ("false", 0), ("1", 1), ("true", 1)):
            with mock.patch("observability.views.db.ping", return_value=None) as ping:
                body = self.client.get(HEALTH, {"db": value}).json()
            self.assertEqual(ping.call_count, queries, value)
            self.assertEqual("db" in body, bool(queries), value)
        with mock.patch("observability.views.db.ping") as ping:
            self.assertEqual(self.client.get(HEALTH, {"db": "banana"}).status_code, 400)
        ping.assert_not_called()

    def test_with_p95_false_and_0_mean_the_same(self):
        post_ingest(self.client, [make_event()])
        self.assertEqual(self.client.get(KPIS, {"with_p95": "0"}).json(),
                         self.client.get(KPIS, {"with_p95": "false"}).json())
        self.assertIsNone(self.client.get(KPIS, {"with_p95": "0"}).json()["p95_latency_ms"])
        self.assertEqual(self.client.get(KPIS, {"with_p95": "1"}).json()["p95_latency_ms"], 12.5)

    def test_strict_1_is_all_or_nothing_like_strict_true(self):
        response = post_ingest(self.client, [make_event(), make_event(method="FETCH")], strict=None,
                               QUERY_STRING="strict=1")
        self.assertEqual(response.status_code, 400, response.content)
        self.assertEqual(ApiRequest.objects.count(), 0)
        response = self.client.post("/api/requests/ingest/?strict=yes", [make_event()],
                                    content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(ApiRequest.objects.count(), 0)


class TooManyParametersTests(ApiTestCase):
    def test_more_parameters_than_django_takes_is_a_json_400_whatever_debug(self):
        query = "&".join(f"p{i}=1" for i in range(1001))
        self.client.raise_request_exception = False
        for debug in (False, True):
            with override_settings(DEBUG=debug):
                for url in (LIST, KPIS, HEALTH, "/nowhere/"):
                    response = self.client.get(f"{url}?{query}")
                    self.assertEqual(response.status_code, 400, (debug, url))
                    self.assertTrue(response["Content-Type"].startswith("application/json"))
                    self.assertIn("Too many query parameters", response.json()["detail"])


class DeclarationTests(ApiTestCase):
    def test_the_list_filters_are_exactly_api_md_s(self):
        from observability.views import ApiRequestViewSet

        view = ApiRequestViewSet(action="list")
        self.assertEqual(allowed_query_params(view), LIST_FILTERS | {"page", "page_size", "format"})


class FormatCharacterTests(ApiTestCase):
    """A `%`, `%s`, `%(x)s` or `{}` in any parameter is a JSON 4xx (or 200), never a 500.

    Django and django-filter %-format validation messages; one that pasted the client's value in
    (`?method=%25`) raised a TypeError. Every GET endpoint and every parameter it accepts is sent
    each value, as the value and as the parameter's name.
    """

    PAYLOADS = ("%", "%s", "%(x)s", "{}", "%d%%{0}")
    # Plain (non-DRF) GET views and the parameters they read.
    PLAIN = {"/api/health/": {"db", "format"}, "/api/": {"format"}, "/api/schema/": {"format", "lang"},
             "/metrics": {"format"}}
    # Needed for the others to be validated past a missing required value.
    BASE = {"timeseries": {"interval": "hour"}}

    client_class = KeyClient

    def setUp(self):
        super().setUp()
        self.client.api_key = api_key_headers("read")["Authorization"].removeprefix("Bearer ")
        post_ingest(KeyClient(), [make_event()])

    def viewset_gets(self):
        """(action, url, accepted parameters) of every GET route of the events API."""
        from django.urls import reverse

        from observability.urls import router

        for pattern in router.urls:
            callback = pattern.callback
            actions = getattr(callback, "actions", None) or {}
            if "get" not in actions:
                continue
            name = actions["get"]
            kwargs = {"pk": "1"} if "pk" in pattern.pattern.regex.groupindex else {}
            if pattern.pattern.regex.groupindex.keys() - {"pk"}:
                continue  # the format-suffix twins of the same routes
            yield name, reverse(pattern.name, kwargs=kwargs), allowed_query_params(callback.cls(action=name))

    def assert_json_answer(self, response, where):
        self.assertLess(response.status_code, 500, (where, response.content[:300]))
        if response.status_code >= 400:
            self.assertEqual(response["Content-Type"], "application/json", where)
            self.assertIn("detail", response.json(), where)

    def test_every_parameter_of_every_get_endpoint_takes_format_characters(self):
        routes = list(self.viewset_gets())
        self.assertLessEqual({"list", "retrieve", "kpis", "top_endpoints", "timeseries", "series", "hourly",
                              "daily"}, {name for name, _, _ in routes})
        targets = [(url, params, self.BASE.get(name, {})) for name, url, params in routes]
        targets += [(url, params, {}) for url, params in self.PLAIN.items()]
        for url, params, base in targets:
            for param in sorted(params):
                for payload in self.PAYLOADS:
                    where = f"GET {url}?{param}={payload}"
                    with self.subTest(where):
                        self.assert_json_answer(self.client.get(url, {**base, param: payload}), where)
            for payload in self.PAYLOADS:
                with self.subTest(f"GET {url}?{payload}=1"):
                    self.assert_json_answer(self.client.get(url, {**base, payload: "1"}), f"{url} name {payload}")

    def test_a_bad_method_is_named_with_the_value_as_sent(self):
        response = self.client.get(LIST, {"method": "%(x)s"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["method"],
                         ['"%(x)s" is not a valid method. Use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.'])

    def test_a_contradictory_range_still_names_both_values(self):
        response = self.client.get(LIST, {"latency_min": "5", "latency_max": "1"})
        self.assertEqual(response.json()["latency_min"], ["latency_min (5) is above latency_max (1)."])


class TimeMessageTests(ApiTestCase):
    """A time the server can't read names the forms it takes, and the `+` a query string turned into a space."""

    FORMS = "Enter a valid date/time in ISO 8601, e.g. 2026-12-07T10:00:00Z or 2026-12-07T10:00:00+02:00."
    PLUS = (" It holds a space: in a query string + means a space, so send an offset's + as %2B "
            "(2026-12-07T10:00:00%2B02:00).")
    # Every endpoint with a time parameter, and what else it needs to get that far.
    URLS = {LIST: {}, KPIS: {}, TOP: {}, HOURLY: {}, DAILY: {}, "/api/requests/timeseries/": {"interval": "hour"},
            "/api/requests/series/": {}}

    def test_an_unreadable_time_names_iso_8601_with_an_example(self):
        for url, base in self.URLS.items():
            for name in ("start", "end"):
                with self.subTest(url=url, name=name):
                    response = self.client.get(url, {**base, name: "yesterday"})
                    self.assertEqual(response.status_code, 400, response.content)
                    self.assertEqual(response.json()[name], [self.FORMS])
                    self.assertIn(name, response.json()["detail"])

    def test_a_plus_sent_unencoded_gets_the_percent_2b_hint(self):
        for url, base in self.URLS.items():
            with self.subTest(url=url):
                # What ?start=2026-12-07T10:00:00+02:00 arrives as: the + decoded to a space.
                extra = "".join(f"&{name}={value}" for name, value in base.items())
                response = self.client.get(f"{url}?start=2026-12-07T10:00:00+02:00{extra}")
                self.assertEqual(response.status_code, 400, response.content)
                self.assertEqual(response.json()["start"], [self.FORMS + self.PLUS])
        sent = self.client.get(LIST, {"start": "2026-12-07T10:00:00+02:00"})  # the client encodes + as %2B
        self.assertEqual(sent.status_code, 200, sent.content)
