from unittest import mock

from observability import ingest
from observability.models import ApiRequest
from observability.tests.utils import ApiTestCase, make_events, post_ingest


class StrictIngestTests(ApiTestCase):
    def test_strict_mode_stores_nothing_when_one_event_is_invalid(self):
        events = make_events(50)
        events[49]["method"] = "BREW"
        response = post_ingest(self.client, events, strict=True)
        self.assertEqual(response.status_code, 400)
        body = response.json()
        self.assertEqual((body["inserted"], body["rejected"]), (0, 1))
        self.assertEqual(body["errors"][0]["index"], 49)
        self.assertIn("method", body["errors"][0]["errors"])
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_an_invalid_strict_flag_is_a_400_naming_it(self):
        response = self.client.post("/api/requests/ingest/?strict=maybe", data="[]",
                                    content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertIn("strict", response.json())
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_a_database_error_mid_batch_stores_nothing(self):
        # Let one row past validation that the database refuses (its status CHECK), late in
        # the batch, so earlier rows were already sent when the error comes.
        real = ingest.store_rows

        def sneak(rows, **kwargs):
            rows[900] = rows[900][:4] + (999,) + rows[900][5:]
            return real(rows, **kwargs)

        self.client.raise_request_exception = False
        with mock.patch.object(ingest.copy, "store_rows", sneak), \
                mock.patch.object(ingest._CopySource, "CHUNK_ROWS", 100), \
                self.assertLogs("django.request", "ERROR"):
            response = post_ingest(self.client, make_events(1000))
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response.json(), {"detail": "Server error."})
        self.assertEqual(ApiRequest.objects.count(), 0)
