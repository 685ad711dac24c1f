"""Request-wide concerns of the similarity app.

* ``ClientAddressMiddleware``: a forwarded client address that is no IP
  address is a 400 before anything keys a limit or a record on it.
* ``RequestBodyLimitMiddleware``: a body over its limit (web/uploads.py
  body_limit) is refused from its declared length, before any middleware
  (CSRF's check reads the form) or view reads it.
* ``DatabaseUnavailableMiddleware``: a database outage answers 503 (JSON
  under /api/) instead of a 500 page; the next request reconnects.
* ``ServerTimingMiddleware``: the lookup stages (``timing.py``) in a
  ``Server-Timing`` response header.
"""

import logging
import time

from django.db import InterfaceError, OperationalError, connections

from similarity import timing
from similarity.api.errors import DATABASE_DOWN, error_response
from similarity.clients import UnreadableClientAddress, client_network
from similarity.web.uploads import body_too_big

logger = logging.getLogger(__name__)


class ClientAddressMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            client_network(request)
        except UnreadableClientAddress as exc:
            return error_response(request, str(exc), 400)
        return self.get_response(request)


class RequestBodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(request, "The Content-Length header is not a number.", 400)
        too_big = body_too_big(request, declared) if declared > 0 else None
        if too_big is not None:
            return error_response(request, str(too_big), 400)
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.error("Database unavailable: %s", exception)
        for connection in connections.all(initialized_only=True):
            connection.close_if_unusable_or_obsolete()
        return error_response(request, DATABASE_DOWN, 503)


class ServerTimingMiddleware:
    """Adds ``Server-Timing: decode;dur=..., model;dur=..., ..., app;dur=...`` to responses that ran stages."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        with timing.collect() as timings:
            response = self.get_response(request)
        if timings:
            timings["app"] = (time.perf_counter() - started) * 1000
            response["Server-Timing"] = timing.server_timing_header(timings)
        return response
