"""Limits on request bodies, enforced before and while they stream in, before anything is stored.

:func:`body_limit` is the one limit on a whole body, by path and requester:

* a lookup (similar, locate, candidates): one photo, SIMILARITY_MAX_UPLOAD_BYTES
  plus the multipart framing;
* a signed-in staff account (session or API token): SIMILARITY_MAX_REQUEST_BYTES,
  for a curator's bulk upload;
* a batch of photos (/api/batches/) from a signed-in account: GEOLOCATOR_BATCH_MAX_BYTES in all, in at most
  GEOLOCATOR_BATCH_MAX_FILES files (zips of photos among them);
* anyone else, on any other path (the admin's login, the page): SIMILARITY_MAX_FORM_BYTES.

``web.middleware.RequestBodyLimitMiddleware`` refuses a body whose declared
length passes it before any middleware or view reads a byte (CSRF's check
reads the form). :class:`BoundedUploadHandler` comes first in
FILE_UPLOAD_HANDLERS: it stops a file part as soon as it passes
SIMILARITY_MAX_UPLOAD_BYTES and lets lookup endpoints carry one file part
only. So neither memory nor a temporary file ever holds more than the
limits, whatever a client sends. Errors are Django's own
(RequestDataTooBig, TooManyFilesSent): a 400 everywhere, in JSON under /api/
(api/errors.py). The storing handlers after it are Django's, reading in the
same larger steps.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.core.files import uploadhandler
from django.urls import Resolver404, resolve

from similarity.gallery.images import format_size

# URL names of the endpoints that take one photo to look up
LOOKUP_ENDPOINTS = {"similar", "locate", "candidates"}
BATCH_ENDPOINT = "batches"  # many photos, or zips of them, from a signed-in account
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small form fields beside the file
# Django's parser reads in the smallest step any handler asks for, and its own handlers ask 64 KiB:
# 256 KiB steps parse a 3 MB photo in 12, sooner behind gunicorn (bench/RESULTS.md).
CHUNK_SIZE = 256 * 1024


def url_name(request) -> str | None:
    try:
        return resolve(request.path_info).url_name
    except Resolver404:
        return None


def is_lookup(request) -> bool:
    return url_name(request) in LOOKUP_ENDPOINTS


def signed_in_user(request):
    """The account signed in by session or by API token (read here: DRF reads tokens only in its views), or None."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "token" or not key.strip() or len(key) > 100:
        return None
    from rest_framework.authtoken.models import Token

    token = Token.objects.filter(key=key.strip()).select_related("user").first()
    return token.user if token is not None and token.user.is_active else None


def is_staff(request) -> bool:
    """A signed-in staff account, by session or by API token."""
    user = signed_in_user(request)
    return bool(user is not None and user.is_staff)


def is_batch(request) -> bool:
    """A batch of photos sent by a signed-in account (anyone else gets the form limit, then a 403)."""
    return request.method == "POST" and url_name(request) == BATCH_ENDPOINT and signed_in_user(request) is not None


LOOKUP, BATCH, STAFF, FORM = "lookup", "batch", "staff", "form"  # what a body is, for its limit


def body_limit(request) -> tuple[int, str]:
    """The most bytes this request's body may have (see the module's docstring), and what the body is (LOOKUP,
    BATCH, STAFF or FORM); worked out once per request (the middleware and the upload handler both ask)."""
    known = getattr(request, "_body_limit", None)
    if known is None:
        if is_lookup(request):
            known = (settings.SIMILARITY_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD, LOOKUP)
        elif is_batch(request):
            known = (settings.GEOLOCATOR_BATCH_MAX_BYTES + MULTIPART_OVERHEAD, BATCH)
        elif is_staff(request):
            known = (settings.SIMILARITY_MAX_REQUEST_BYTES, STAFF)
        else:
            known = (settings.SIMILARITY_MAX_FORM_BYTES, FORM)
        request._body_limit = known
    return known


def body_too_big(request, content_length: int) -> RequestDataTooBig | None:
    """The error for a body of ``content_length`` bytes, or None when it is within :func:`body_limit`."""
    limit, kind = body_limit(request)
    if content_length <= limit:
        return None
    if kind == LOOKUP:
        return RequestDataTooBig(
            f"The request is {format_size(content_length)}; a lookup takes one photo of at most "
            f"{format_size(settings.SIMILARITY_MAX_UPLOAD_BYTES)}."
        )
    if kind == BATCH:
        return RequestDataTooBig(
            f"The request is {format_size(content_length)}; a batch takes at most "
            f"{format_size(settings.GEOLOCATOR_BATCH_MAX_BYTES)} of photos in all."
        )
    return RequestDataTooBig(f"The request is {format_size(content_length)}; at most {format_size(limit)} is accepted.")


class BoundedUploadHandler(uploadhandler.FileUploadHandler):
    chunk_size = CHUNK_SIZE

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        kind = body_limit(self.request)[1]
        self.lookup, self.batch = kind == LOOKUP, kind == BATCH
        too_big = body_too_big(self.request, content_length)  # the middleware checked it; a caller may not have
        if too_big is not None:
            raise too_big
        self.file_parts = 0
        self.batch_bytes = 0
        return None  # the next handlers store the data

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        self.file_parts += 1
        self.field_name = field_name
        if self.lookup and self.file_parts > 1:
            raise TooManyFilesSent("A lookup takes one photo; the request holds more than one file.")
        if self.batch and self.file_parts > settings.GEOLOCATOR_BATCH_MAX_FILES:
            raise TooManyFilesSent(f"A batch takes at most {settings.GEOLOCATOR_BATCH_MAX_FILES} files.")

    def receive_data_chunk(self, raw_data, start):
        if self.batch:  # its files may be zips of photos: bounded in all (their photos, one by one, later)
            self.batch_bytes += len(raw_data)
            if self.batch_bytes > settings.GEOLOCATOR_BATCH_MAX_BYTES:
                raise RequestDataTooBig(
                    f"A batch takes at most {format_size(settings.GEOLOCATOR_BATCH_MAX_BYTES)} of photos in all."
                )
            return raw_data
        limit = settings.SIMILARITY_MAX_UPLOAD_BYTES
        if start + len(raw_data) > limit:
            raise RequestDataTooBig(f"The {self.field_name} file is over the limit of {format_size(limit)}.")
        return raw_data

    def file_complete(self, file_size):
        return None


class MemoryFileUploadHandler(uploadhandler.MemoryFileUploadHandler):
    """Django's: a file part up to FILE_UPLOAD_MAX_MEMORY_SIZE kept in memory, read in CHUNK_SIZE steps."""

    chunk_size = CHUNK_SIZE


class TemporaryFileUploadHandler(uploadhandler.TemporaryFileUploadHandler):
    """Django's: a larger file part streamed to a temporary file, read in CHUNK_SIZE steps."""

    chunk_size = CHUNK_SIZE
