"""The web page: upload a photo, see every source's answer, the matches and a map."""

from django.conf import settings
from django.shortcuts import render

from similarity.encoders import EncoderUnavailable, get_encoder
from similarity.images import ACCEPTED_NAMES
from similarity.uploads import format_size


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
        },
    )
