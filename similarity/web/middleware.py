"""Request-wide concerns of the similarity app.

* ``DatabaseUnavailableMiddleware``: a database outage answers 503 (JSON
  under /api/) instead of a 500 page; the next request reconnects.
* ``ServerTimingMiddleware``: the lookup stages (``timing.py``) in a
  ``Server-Timing`` response header.
"""

import logging
import time

from django.db import InterfaceError, OperationalError, connections
from django.http import HttpResponse, JsonResponse

from similarity import timing
from similarity.api.errors import DATABASE_DOWN

logger = logging.getLogger(__name__)


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
        if request.path.startswith("/api/"):
            return JsonResponse({"success": False, "error": DATABASE_DOWN}, status=503)
        return HttpResponse(DATABASE_DOWN, status=503, content_type="text/plain")


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
