"""The one receive service: every write (JSON bulk, OTLP, the event CRUD) goes through here.

A view filters and validates its parameters, calls one function below and answers what it
returns; the steps in between (decoding limits, the rate charge, validation, storage, rollup
upkeep and the ingest metrics) happen here, once, in this order, for every way in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from observability import access, metrics, rollups
from observability.errors import RateLimited
from observability.ingest.copy import IngestResult, ingest_events
from observability.ingest.decode import check_json_content_type, needs_copy_escaping, parse_batch
from observability.ingest.rules import BatchError
from observability.models import ApiRequest


@dataclass(frozen=True)
class Received:
    """What a view answers: the body (the contract's shape) and its status."""

    body: dict
    status: int


def charge(principal: access.Principal | None, events: int, *, what: str = "events") -> None:
    """Charge `events` to the caller's ingest rate limit, or raise RateLimited (stores nothing)."""
    if principal is None:
        return
    wait = access.ingest_wait(principal, events)
    if wait:
        raise RateLimited(f"Ingest rate limit of {settings.APM_INGEST_RATE_LIMIT:g} events/s per key exceeded "
                          f"({events} {what} sent); nothing was stored.", retry_after=math.ceil(wait))


def store_events(events: list, *, principal: access.Principal | None, strict: bool, escape: bool,
                 endpoint: str, nbytes: int, rejected_before: int = 0, what: str = "events") -> IngestResult:
    """Charge, validate and store decoded events, keeping the rollups up to date, and count them
    in the ingest metrics of `endpoint` (with `rejected_before` events its decoder refused)."""
    sent = len(events)  # ingest_events releases the events as it goes
    charge(principal, sent, what=what)  # 429 before anything is stored
    result = ingest_events(events, strict=strict, escape=escape)
    metrics.record_ingest(endpoint=endpoint, accepted=result.inserted,
                          rejected=rejected_before + sent - result.inserted, nbytes=nbytes)
    return result


def receive_batch(*, body: bytes, content_type: str, principal: access.Principal | None,
                  strict: bool) -> Received:
    """A JSON bulk request (POST /api/requests/ingest/): all valid events, or with `strict` all
    or nothing; its answer and status as API.md gives them."""
    try:
        check_json_content_type(content_type)
        escape = needs_copy_escaping(body)
        events = parse_batch(body)
    except BatchError as exc:
        return Received({"detail": exc.detail}, exc.status)
    nbytes = len(body)
    del body  # the decoded events are all that is needed from here on
    result = store_events(events, principal=principal, strict=strict, escape=escape, endpoint="/ingest/",
                          nbytes=nbytes)
    if strict:
        return Received(result.as_dict(), 400 if result.rejected else 201)
    return Received(result.as_dict(), 200)


# --- The event CRUD ---------------------------------------------------------------------------


def create_event(fields: dict, *, principal: access.Principal | None) -> ApiRequest:
    """Store one validated event (POST /api/requests/), charged as ingest of one event."""
    charge(principal, 1)
    with transaction.atomic():
        instance = ApiRequest.objects.create(**fields)
        rollups.mark_dirty([instance.time])
    return instance


def update_event(instance: ApiRequest, changes: dict) -> ApiRequest:
    """Apply validated field changes to a stored event (PUT/PATCH), keeping its id.

    On a TimescaleDB hypertable an UPDATE can't move a row to another chunk (the chunk's
    CHECK constraint fails), so an event whose time changes is deleted and inserted again,
    in one transaction; the same on every database, so there is one code path.
    """
    before = instance.time
    moved = "time" in changes and changes["time"] != instance.time
    for name, value in changes.items():
        setattr(instance, name, value)
    with transaction.atomic():
        if moved:
            ApiRequest.objects.filter(pk=instance.pk).delete()
            instance.save(force_insert=True)
        else:
            instance.save()
        rollups.mark_dirty([before, instance.time])
    return instance



def delete_event(instance: ApiRequest) -> None:
    """Delete one stored event (DELETE /api/requests/{id}/)."""
    when = instance.time
    with transaction.atomic():
        instance.delete()
        rollups.mark_dirty([when])
