"""Per-client request budgets, counted in the shared cache (the database, or Redis), so they hold
across worker processes and hosts.

* ``lookup``: every lookup (a photo or a text to locate, a stored photo's neighbours);
* ``lookup_large``: lookups whose image needs a large decode (many pixels, see
  images.is_large): a much smaller budget, since one costs as much CPU as
  dozens of phone photos;
* ``read``: reading the gallery and the statistics;
* ``propose``: proposing looked-up photos for the gallery (each is kept for review).

Signed-in users are counted per account, others per client address (clients.client_ip).
"""

from rest_framework.throttling import SimpleRateThrottle

from similarity.clients import client_ip


class PerClientThrottle(SimpleRateThrottle):
    def get_ident(self, request):
        return client_ip(request)

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LookupThrottle(PerClientThrottle):
    scope = "lookup"


class ReadThrottle(PerClientThrottle):
    scope = "read"


class ProposalThrottle(PerClientThrottle):
    """Proposals keep a photo on the server: a small budget per client."""

    scope = "propose"


class LargeImageThrottle(PerClientThrottle):
    """Counts only lookups whose uploaded image would be a large decode (judged from its header)."""

    scope = "lookup_large"

    def get_cache_key(self, request, view):
        from similarity.gallery.images import is_large_upload
        from similarity.runtime.encoders import EncoderUnavailable
        from similarity.search.vectors import get_encoder

        upload = request.data.get("image") if request.method == "POST" and hasattr(request.data, "get") else None
        if upload is None or not hasattr(upload, "read"):
            return None
        try:
            draft_size = get_encoder().draft_size
        except EncoderUnavailable:
            draft_size = None
        if not is_large_upload(upload, draft_size):
            return None
        return super().get_cache_key(request, view)
