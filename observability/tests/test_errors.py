from django.test import override_settings

from observability.tests.utils import ApiTestCase


class JsonErrorTests(ApiTestCase):
    def test_an_unknown_url_is_a_json_404(self):
        for debug in (False, True):
            with override_settings(DEBUG=debug):
                response = self.client.get("/nowhere/")
            self.assertEqual(response.status_code, 404)
            self.assertEqual(response.json(), {"detail": "Not found."})

    def test_a_wrong_method_is_a_json_405_with_allow(self):
        response = self.client.get("/api/requests/ingest/")
        self.assertEqual(response.status_code, 405)
        self.assertIn("detail", response.json())
        self.assertIn("POST", response["Allow"])

    def test_malformed_json_on_crud_is_a_json_400(self):
        response = self.client.post("/api/requests/", data="{", content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertIn("JSON", response.json()["detail"])

    def test_a_form_post_on_crud_is_a_json_415(self):
        response = self.client.post("/api/requests/", data={"service": "x"})
        self.assertEqual(response.status_code, 415)
        self.assertIn("detail", response.json())

    def test_an_unhandled_error_is_a_json_500(self):
        from unittest import mock

        self.client.raise_request_exception = False
        with mock.patch("observability.views.analytics.kpis", side_effect=RuntimeError("boom")), \
                self.assertLogs("django.request", "ERROR"):
            response = self.client.get("/api/requests/kpis/")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response.json(), {"detail": "Server error."})


class TrailingSlashTests(ApiTestCase):
    def test_urls_answer_with_and_without_the_trailing_slash(self):
        from observability.tests.utils import make_event

        response = self.client.post("/api/requests", make_event(), content_type="application/json")
        self.assertEqual(response.status_code, 201, response.content)
        pk = response.json()["id"]
        self.assertEqual(self.client.get(f"/api/requests/{pk}").json()["id"], pk)
        self.assertEqual(self.client.post("/api/requests/ingest", [make_event()],
                                          content_type="application/json").json()["inserted"], 1)
        self.assertEqual(self.client.get("/api/requests/kpis").json()["hits"], 2)
        self.assertEqual(self.client.get("/api/health").json(), {"status": "ok"})
