"""JSON parsers for DRF views: UTF-8 only, bounded in size, never a 500.

DRF's own JSONParser decodes with whatever charset the request names (UTF-16 included), reads
any size, and lets a deeply nested body raise RecursionError (a 500). `Utf8JSONParser` (the
default) fixes those; `EventJSONParser` (the event CRUD) also decodes like bulk ingest does
(`ingest.decode_event`), so the unknown fields of a large event are never built.
"""

import json

import msgspec
from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from observability import ingest


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


class Utf8JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        return self.decode(self.read(stream, media_type))

    def decode(self, raw: bytes):
        try:
            return msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            pass
        try:
            # What msgspec refuses but JSON allows (lone surrogate escapes, huge numbers).
            return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None

    def read(self, stream, media_type) -> bytes:
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
        return raw


class EventJSONParser(Utf8JSONParser):
    """One event: decoded like bulk ingest, memory bounded whatever the body holds."""

    def decode(self, raw: bytes):
        data = ingest.decode_event(raw)
        if isinstance(data, ingest.Undecodable):
            raise ParseError(f"JSON parse error - {data.reason}")
        return data


class UnreadBodyParser(BaseParser):
    """Leaves the body unread, for a view that reads and bounds it itself (bulk ingest).

    DRF parses a body before the view runs whenever something reads `request.POST`: the session
    CSRF check does. A parser that read the stream then would leave the view an empty body.
    Any media type is let through so the view's own check gives the contract's 415.
    """

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}
