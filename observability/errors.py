"""Domain exceptions: what the read and write paths refuse, free of any HTTP framework.

The project's exception handler (`apm_platform.middleware.json_exception_handler`) maps each
to its status in one place, so domain code never raises a DRF exception itself.
"""


class QueryRefused(Exception):
    """A read the data cannot answer truthfully; the message says why and what would work."""

    status = 400
    code = "query_refused"


class RawEventsDropped(QueryRefused):
    """A query needs raw events that the retention has dropped while the rollups still count
    them: answering from what is left would give silently partial numbers."""

    code = "raw_events_dropped"


class RateLimited(Exception):
    """A caller's ingest rate limit is used up: nothing was stored; retry after `retry_after` s."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
