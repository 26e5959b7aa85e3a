"""Reading write bodies: gzip inflated under the byte cap, chunked uploads, bad encodings."""

import gzip
import io
import json
import tracemalloc
import zlib

from django.test import RequestFactory, SimpleTestCase, override_settings

from observability import body
from observability.models import ApiRequest
from observability.tests.utils import INGEST_URL, ApiTestCase, make_event, make_events


def gzip_bomb(inflated_bytes: int) -> bytes:
    """A gzip body of zeros inflating to `inflated_bytes`, compressed in pieces (never whole)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    parts = []
    for _ in range(inflated_bytes // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    return b"".join(parts)


def chunked_request(data: bytes, **meta):
    """A request as gunicorn hands over a chunked upload: no CONTENT_LENGTH, input ends at EOF."""
    request = RequestFactory().post(INGEST_URL, data=b"", content_type="application/json", **meta)
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.META["wsgi.input_terminated"] = True
    request.META["wsgi.input"] = io.BytesIO(data)
    return request


class ReadCappedTests(SimpleTestCase):
    def read(self, data: bytes, max_bytes: int = 1000, **meta) -> bytes:
        request = RequestFactory().post(INGEST_URL, data=data, content_type="application/json", **meta)
        return body.read_capped(request, max_bytes)

    def assert_refused(self, status: int, text: str, data: bytes, max_bytes: int = 1000, **meta):
        with self.assertRaises(body.BodyError) as caught:
            self.read(data, max_bytes, **meta)
        self.assertEqual(caught.exception.status, status)
        self.assertIn(text, caught.exception.detail)

    def test_a_plain_body_is_returned_as_sent(self):
        self.assertEqual(self.read(b"[1, 2]"), b"[1, 2]")

    def test_a_gzip_body_is_returned_inflated(self):
        data = json.dumps(make_events(5)).encode()
        self.assertEqual(self.read(gzip.compress(data), 10_000, HTTP_CONTENT_ENCODING="gzip"), data)

    def test_concatenated_gzip_members_are_one_body(self):
        data = gzip.compress(b"[1, ") + gzip.compress(b"2]")
        self.assertEqual(self.read(data, HTTP_CONTENT_ENCODING="gzip"), b"[1, 2]")

    def test_the_cap_counts_inflated_bytes(self):
        inflated = b"[" + b" " * 2000 + b"]"
        self.assertLess(len(gzip.compress(inflated)), 1000)
        self.assert_refused(413, "decompressed", gzip.compress(inflated), HTTP_CONTENT_ENCODING="gzip")

    def test_a_body_at_the_cap_once_inflated_is_accepted(self):
        inflated = b"[" + b" " * 998 + b"]"
        self.assertEqual(self.read(gzip.compress(inflated), HTTP_CONTENT_ENCODING="gzip"), inflated)

    def test_a_body_that_is_not_gzip_is_a_400(self):
        self.assert_refused(400, "not valid gzip", b"[1, 2]", HTTP_CONTENT_ENCODING="gzip")

    def test_a_truncated_gzip_body_is_a_400(self):
        data = gzip.compress(json.dumps(make_events(5)).encode())
        self.assert_refused(400, "ends before", data[: len(data) // 2], 10_000, HTTP_CONTENT_ENCODING="gzip")

    def test_an_encoding_other_than_gzip_is_a_415(self):
        self.assert_refused(415, "br", b"[]", HTTP_CONTENT_ENCODING="br")

    def test_identity_encoding_is_a_plain_body(self):
        self.assertEqual(self.read(b"[]", HTTP_CONTENT_ENCODING="identity"), b"[]")

    def test_a_chunked_body_without_content_length_is_read_to_its_end(self):
        data = json.dumps(make_events(3)).encode()
        self.assertEqual(body.read_capped(chunked_request(data), 10_000), data)

    def test_a_chunked_body_on_a_server_that_does_not_end_its_input_is_a_411(self):
        request = chunked_request(b"[]")
        del request.META["wsgi.input_terminated"]
        with self.assertRaises(body.BodyError) as caught:
            body.read_capped(request, 1000)
        self.assertEqual(caught.exception.status, 411)

    def test_a_body_without_content_length_or_chunking_is_empty(self):
        request = chunked_request(b"[1]")
        del request.META["HTTP_TRANSFER_ENCODING"]
        self.assertEqual(body.read_capped(request, 1000), b"")

    def test_a_chunked_body_over_the_cap_is_a_413(self):
        with self.assertRaises(body.BodyError) as caught:
            body.read_capped(chunked_request(b" " * 1001), 1000)
        self.assertEqual(caught.exception.status, 413)

    def test_a_chunked_gzip_body_is_inflated(self):
        data = json.dumps(make_events(3)).encode()
        request = chunked_request(gzip.compress(data), HTTP_CONTENT_ENCODING="gzip")
        self.assertEqual(body.read_capped(request, 10_000), data)

    def test_a_zip_bomb_is_a_413_without_inflating_it(self):
        # 200 MiB of zeros in about 200 KiB: 1,000 times its size once inflated.
        bomb = gzip_bomb(200 * 1024 * 1024)
        self.assertGreater(200 * 1024 * 1024 / len(bomb), 1000)
        cap = 1024 * 1024
        for request in (
            RequestFactory().post(INGEST_URL, data=bomb, content_type="application/json",
                                  HTTP_CONTENT_ENCODING="gzip"),
            chunked_request(bomb, HTTP_CONTENT_ENCODING="gzip"),
        ):
            tracemalloc.start()
            try:
                with self.assertRaises(body.BodyError) as caught:
                    body.read_capped(request, cap)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertEqual(caught.exception.status, 413)
            # The cap plus a few read steps, nowhere near the 200 MiB the bomb inflates to.
            self.assertLess(peak, 3 * cap + 4 * body.READ_CHUNK)


@override_settings(APM_INGEST_MAX_BYTES=1024 * 1024)
class IngestBodyTests(ApiTestCase):
    def test_bulk_ingest_takes_a_gzip_body(self):
        events = make_events(20)
        response = self.client.post(INGEST_URL, data=gzip.compress(json.dumps(events).encode()),
                                    content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["inserted"], 20)
        self.assertEqual(ApiRequest.objects.count(), 20)

    def test_bulk_ingest_refuses_a_zip_bomb_with_a_json_413_and_stores_nothing(self):
        response = self.client.post(INGEST_URL, data=gzip_bomb(100 * 1024 * 1024),
                                    content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
        self.assertEqual(response.status_code, 413)
        self.assertIn("decompressed", response.json()["detail"])
        self.assertEqual(ApiRequest.objects.count(), 0)

    def test_bulk_ingest_answers_a_broken_gzip_body_with_a_json_400(self):
        response = self.client.post(INGEST_URL, data=json.dumps([make_event()]),
                                    content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
        self.assertEqual(response.status_code, 400)
        self.assertIn("gzip", response.json()["detail"])

    def test_bulk_ingest_refuses_an_unknown_content_encoding_with_a_json_415(self):
        response = self.client.post(INGEST_URL, data=json.dumps([make_event()]),
                                    content_type="application/json", HTTP_CONTENT_ENCODING="deflate, br")
        self.assertEqual(response.status_code, 415)
        self.assertIn("Content-Encoding", response.json()["detail"])
