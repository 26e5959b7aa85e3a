"""JSON parsers for DRF views: UTF-8 only, bounded in size, never a 500.

DRF's own JSONParser decodes with whatever charset the request names (UTF-16 included), reads
any size, and lets a deeply nested body raise RecursionError (a 500). `Utf8JSONParser` (the
default) fixes those; `EventJSONParser` (the event CRUD) also decodes like bulk ingest does
(`ingest.decode_event`), so the unknown fields of a large event are never built. Both take
`Content-Encoding: gzip` as bulk ingest does (observability/body.py: the same size cap, counted
after decompression) and answer 415 naming any other encoding.
"""

import json

import msgspec
from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from observability import body, ingest


class BodyRefused(APIException):
    """A body that can't be read as sent: 400 (bad gzip), 413 (too large), 415 (an encoding we don't take)."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code


def _declared_length(meta) -> int | None:
    # DRF hands a parser a stream only when CONTENT_LENGTH is a positive integer.
    try:
        return int(meta.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


class Utf8JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        return self.decode(self.read(stream, media_type, request.META if request is not None else {}))

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

    def read(self, stream, media_type, meta=None) -> bytes:
        """The body, gzip inflated as bulk ingest does (same cap, counted after decompression)."""
        try:
            ingest.check_json_content_type(media_type or self.media_type)
            encoding = body.content_encoding(meta or {})  # another encoding: 415 naming it
            max_bytes = settings.APM_INGEST_MAX_BYTES
            raw = b"" if stream is None else body.read_stream(
                stream, _declared_length(meta or {}), max_bytes, encoding=encoding)
            ingest.check_utf8(raw)
        except ingest.BatchError as exc:
            raise ParseError(exc.detail) from None
        except body.BodyError as exc:
            raise BodyRefused(exc.status, exc.detail) from None
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
