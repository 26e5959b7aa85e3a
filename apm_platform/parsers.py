"""The JSON parser of every DRF view: UTF-8 only, bounded in size and memory, never a 500.

DRF's own JSONParser decodes with whatever charset the request names (UTF-16 included), lets
a deeply nested body raise RecursionError (a 500) and builds whatever the body holds. This one
decodes like bulk ingest does (`ingest.decode_event`): one event, unknown fields of a large
body never built.
"""

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from observability import ingest


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class Utf8JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            ingest.check_json_content_type(media_type or self.media_type)
            max_bytes = settings.APM_INGEST_MAX_BYTES
            raw = stream.read(max_bytes + 1) if stream is not None else b""
            if len(raw) > max_bytes:
                raise RequestTooLarge(f"The request body is too large: more than {max_bytes} bytes "
                                      "(APM_INGEST_MAX_BYTES).")
            ingest.check_utf8(raw)
        except ingest.BatchError as exc:
            raise ParseError(exc.detail) from None
        data = ingest.decode_event(raw)
        if isinstance(data, ingest.Undecodable):
            raise ParseError(f"JSON parse error - {data.reason}")
        return data
