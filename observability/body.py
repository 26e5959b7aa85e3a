"""Reading a write request's body: size cap, gzip inflated as a stream, chunked uploads.

Shared by bulk ingest and the OTLP receiver (through `ingest.read_body`). The cap
(APM_INGEST_MAX_BYTES) counts the bytes the handler will parse, i.e. after decompression,
and is enforced while inflating: a small gzip body that would inflate to gigabytes stops
at cap + one chunk, so a zip bomb costs a 413, never the worker's memory.
"""

from __future__ import annotations

import zlib

# Compressed bytes read from the socket per step, and the most a step may inflate to beyond
# what is still allowed: together they bound the memory one request can take.
READ_CHUNK = 64 * 1024


class BodyError(Exception):
    """The body can't be read as sent; `status` is the HTTP answer (400, 411, 413, 415)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def too_large(max_bytes: int, size: int | None = None, *, inflated: bool = False) -> str:
    """The 413 message: how big the body was when known, and the limit."""
    seen = f": {size} bytes" if size is not None else ""
    counted = " (decompressed)" if inflated else ""
    return (f"The request body is too large{counted}{seen}; the limit is {max_bytes} bytes "
            "(APM_INGEST_MAX_BYTES, counted after decompression).")


def content_encoding(meta) -> str:
    """'gzip' or 'identity'; anything else is a 415 (RFC 9110 15.5.16)."""
    raw = (meta.get("HTTP_CONTENT_ENCODING") or "").strip().lower()
    codings = [c.strip() for c in raw.split(",") if c.strip() and c.strip() != "identity"]
    if not codings:
        return "identity"
    if codings in (["gzip"], ["x-gzip"]):
        return "gzip"
    raise BodyError(415, f'Unsupported Content-Encoding "{raw}"; send gzip or no encoding.')


def body_stream(request):
    """(file-like, declared length or None) for a Django request.

    Django reads at most CONTENT_LENGTH bytes of the WSGI input, and none when the header is
    missing, which is the case of every `Transfer-Encoding: chunked` upload. gunicorn decodes
    the chunking itself and marks its input as ending where the body ends
    (`wsgi.input_terminated`, also set by uWSGI and mod_wsgi), so such a body is read from
    the WSGI input directly. A chunked body on a server without that mark can't be read
    safely (a read could wait for bytes that never come): 411.
    """
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    if length not in (None, ""):
        try:
            declared = int(length)
        except ValueError:
            raise BodyError(400, "Invalid Content-Length header.") from None
        if declared < 0:
            raise BodyError(400, "Invalid Content-Length header.")
        return request, declared
    if "chunked" not in (meta.get("HTTP_TRANSFER_ENCODING") or "").lower():
        return request, 0
    if not meta.get("wsgi.input_terminated"):
        raise BodyError(411, "This server can't read a chunked body; send a Content-Length.")
    return meta["wsgi.input"], None


def read_capped(request, max_bytes: int) -> bytes:
    """The request's body, decompressed when gzip-encoded, of at most `max_bytes` (else 413)."""
    encoding = content_encoding(request.META)
    stream, declared = body_stream(request)
    return read_stream(stream, declared, max_bytes, encoding=encoding)


def read_stream(stream, declared: int | None, max_bytes: int, *, encoding: str) -> bytes:
    """A body from an open stream (`declared` bytes, None: until it ends), inflated when `encoding`
    is gzip, of at most `max_bytes` (else 413). DRF's parsers get such a stream (apm_platform/parsers.py)."""
    if declared is not None and declared > max_bytes:
        # Compressed past the cap means past it once inflated as well.
        raise BodyError(413, too_large(max_bytes, declared))
    if declared == 0:
        return b""
    if encoding == "gzip":
        return _inflate(stream, declared, max_bytes)
    raw = _read(stream, max_bytes + 1 if declared is None else declared)
    if len(raw) > max_bytes:
        raise BodyError(413, too_large(max_bytes))
    return raw


def _read(stream, limit: int) -> bytes:
    """Up to `limit` bytes; loops because a socket-backed read may return less than asked."""
    parts = []
    left = limit
    while left > 0:
        piece = stream.read(min(left, 1024 * 1024))
        if not piece:
            break
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def _inflate(stream, declared: int | None, max_bytes: int) -> bytes:
    """gzip inflated step by step, never holding more than the cap plus one step.

    Each step inflates at most what is still allowed plus one byte (`max_length`), so output
    that would pass the cap is never produced, whatever the compression ratio.
    """
    compressed_left = max_bytes + 1 if declared is None else declared
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    size = 0
    started = False
    data = b""
    while True:
        if not data:
            if compressed_left <= 0:
                break
            data = stream.read(min(READ_CHUNK, compressed_left))
            if not data:
                break
            compressed_left -= len(data)
        if inflater.eof:
            # Concatenated gzip members are one valid gzip body (RFC 1952 2.2).
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(data, max_bytes - size + 1)
        except zlib.error as exc:
            raise BodyError(400, f"The request body is not valid gzip ({exc}).") from None
        started = True
        size += len(out)
        if size > max_bytes:
            raise BodyError(413, too_large(max_bytes, inflated=True))
        parts.append(out)
        data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if declared is None and compressed_left <= 0:
        raise BodyError(413, too_large(max_bytes))  # over the cap even before inflating
    if started and not inflater.eof:
        raise BodyError(400, "The request body is not valid gzip: it ends before the gzip stream does.")
    return b"".join(parts)
