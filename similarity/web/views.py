"""The web page (upload a photo, see every source's answer, the matches and a map) and the media files."""

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import Http404, HttpResponse, HttpResponseForbidden, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import http_date
from django.views.static import serve

from similarity import access, media
from similarity.api.permissions import lookups_allowed
from similarity.gallery.images import ACCEPT_ATTRIBUTE, ACCEPTED_NAMES, format_size
from similarity.gallery.thumbnails import image_name_of
from similarity.models import Candidate, ReferencePhoto
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search.vectors import get_encoder


def locate_page(request):
    try:
        supports_text = get_encoder().supports_text
    except EncoderUnavailable:
        supports_text = False
    return render(
        request,
        "similarity/locate.html",
        {
            "supports_text": supports_text,
            "max_upload": format_size(settings.SIMILARITY_MAX_UPLOAD_BYTES),
            "accepted_formats": ACCEPTED_NAMES,
            "accept": ACCEPT_ATTRIBUTE,
        },
    )


def media_file(request, path):
    """A reference photo, a candidate's photo, or one of their thumbnails, by the lookup policy.

    Whoever may look photos up (everyone, unless SIMILARITY_PUBLIC_LOOKUPS is
    off) gets the files of active photos; staff allowed to view photos get
    every photo's, and those allowed to view candidates the candidates'
    (similarity/access.py). Anything else in the media storage is not served.
    """
    if not lookups_allowed(request):
        return HttpResponseForbidden("Log in to see the gallery's photos.", content_type="text/plain")
    image_name = path if path.startswith(("reference/", "candidates/")) else image_name_of(path)
    if image_name and image_name.startswith("candidates/"):
        if not (access.sees_candidates(request.user) and Candidate.objects.filter(image=image_name).exists()):
            raise Http404("No such photo.")
    else:
        photo = ReferencePhoto.objects.filter(image=image_name).values("is_active").first() if image_name else None
        if photo is None or not (photo["is_active"] or access.sees_private_photos(request.user)):
            raise Http404("No such photo.")
    response = _stored_file(request, path)
    response.setdefault("Cache-Control", "private, max-age=3600")  # access may change: no shared caches
    return response


def _stored_file(request, name: str) -> HttpResponse:
    """The file from the data dir, or from the bucket: streamed, or a redirect to a short-lived presigned URL."""
    if media.is_local():
        return serve(request, name, document_root=settings.MEDIA_ROOT)
    if settings.GEOLOCATOR_MEDIA_REDIRECT:
        redirect = HttpResponseRedirect(default_storage.presigned_url(name))
        # followed again well before the signature expires (GEOLOCATOR_MEDIA_URL_SECONDS)
        redirect["Cache-Control"] = f"private, max-age={default_storage.querystring_expire // 2}"
        return redirect
    try:
        stored = default_storage.stream(name)
    except FileNotFoundError:
        raise Http404("No such photo.") from None
    response = StreamingHttpResponse(stored.chunks, content_type=stored.content_type)
    response["Content-Length"] = str(stored.size)
    if stored.modified is not None:
        response["Last-Modified"] = http_date(stored.modified.timestamp())
    return response
