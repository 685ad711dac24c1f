"""Every API error is JSON: {"success": false, "error": "<one readable sentence>", ...}."""

import logging

from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

DATABASE_DOWN = "The database is unavailable at the moment; nothing was changed. Try again shortly."


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
        return "Invalid request."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid request."
    return str(detail)


def json_exception_handler(exc, context):
    from similarity.gallery.images import DecoderBusy

    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("Database unavailable: %s", exc)
        return Response({"success": False, "error": DATABASE_DOWN}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, DecoderBusy):
        return Response({"success": False, "error": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, SuspiciousOperation):  # the request body broke a limit while it streamed in
        return Response({"success": False, "error": request_error_message(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):  # a model's own checks, at save time (e.g. a duplicate that won a race)
        exc = ValidationError(as_serializer_error(exc))
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    body = {"success": False, "error": _first_message(detail)}
    if isinstance(detail, dict) and set(detail) != {"detail"}:
        body["fields"] = detail
    response.data = body
    return response


def request_error_message(exc: Exception) -> str:
    """What a client is told about a request Django refused before any view saw it."""
    if isinstance(exc, (RequestDataTooBig, TooManyFilesSent)) and str(exc):
        return str(exc)  # ours (similarity/web/uploads.py), written for the client
    if isinstance(exc, TooManyFilesSent):
        return "The request holds too many files."
    if isinstance(exc, TooManyFieldsSent):
        return "The request holds too many form fields."
    if isinstance(exc, RequestDataTooBig):
        return "The request is too large."
    return "Bad request."


def error_response(request, message: str, status: int) -> HttpResponse:
    """An error answered outside DRF's views (handlers, middleware): JSON under /api/, plain text elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"success": False, "error": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def bad_request(request, exception=None):
    """handler400: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"success": False, "error": request_error_message(exception)}, status=400)
    from django.views.defaults import bad_request as django_bad_request

    return django_bad_request(request, exception)


def server_error(request):
    """handler500: a database outage met outside a view (in a middleware) is a 503 like any other."""
    import sys

    exc = sys.exc_info()[1]
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("Database unavailable: %s", exc)
        return error_response(request, DATABASE_DOWN, 503)
    if request.path.startswith("/api/"):
        return JsonResponse({"success": False, "error": "Internal error; the server log has the details."}, status=500)
    from django.views.defaults import server_error as django_server_error

    return django_server_error(request)
