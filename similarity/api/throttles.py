"""Per-client request budgets, counted in the database, so they hold across worker processes and hosts.

* ``lookup``: every lookup (a photo or a text to locate, a stored photo's neighbours);
* ``lookup_large``: lookups whose image needs a large decode (many pixels, see
  images.is_large): a much smaller budget, since one costs as much CPU as
  dozens of phone photos;
* ``read``: reading the gallery and the statistics;
* ``propose``: proposing looked-up photos for the gallery (each is kept for review).

Signed-in users are counted per account, others per client address (clients.client_ip).

A budget of N requests per period is a sliding window, estimated from fixed
ones: the requests of the current window plus those of the window before,
weighted by how much of it still lies within the last period. Each request
is counted by one UPDATE of its client's row (models.RequestCounter) and the
row read back in the same transaction, so concurrent requests cannot both
read a count and both write it plus one, as DRF's own throttles (read the
history, then write it back) let them do. A refused request is not counted.
"""

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from rest_framework.throttling import SimpleRateThrottle

from similarity.clients import client_ip
from similarity.models import RequestCounter

# Expired counters (clients gone quiet) are deleted at most this often per process.
PURGE_INTERVAL_SECONDS = 60.0
_next_purge = 0.0


def take(key: str, now: float, period: int, limit: int) -> float | None:
    """Count a request against ``key``'s budget of ``limit`` per ``period`` seconds.

    Returns None when it is allowed (and counted), else the seconds until one
    would be (and nothing is counted).
    """
    window, into = divmod(now, period)
    window = int(window)
    expires_at = float((window + 2) * period)
    counter = RequestCounter.objects.filter(key=key)

    def count_on_the_row() -> int:
        return counter.update(  # every right-hand side reads the row as it was
            previous=Case(
                When(window=window, then=F("previous")), When(window=window - 1, then=F("count")), default=Value(0)
            ),
            count=Case(When(window=window, then=F("count") + 1), default=Value(1)),
            window=Value(window),
            expires_at=Value(expires_at),
        )

    with transaction.atomic():
        if not count_on_the_row():
            try:
                with transaction.atomic():
                    RequestCounter.objects.create(key=key, window=window, count=1, previous=0, expires_at=expires_at)
            except IntegrityError:  # a concurrent request made the row first: count on it the same way
                count_on_the_row()
        count, previous = counter.values_list("count", "previous").get()
        if previous * (1 - into / period) + count <= limit:
            return None
        counter.update(count=F("count") - 1)
    return seconds_until_allowed(count - 1, previous, into, period, limit)


def seconds_until_allowed(count: int, previous: int, into: float, period: int, limit: int) -> float:
    """When the estimate of a budget with ``count`` requests this window (``into`` seconds old) and
    ``previous`` in the last one leaves room for one more."""
    if count + 1 <= limit and previous:  # later in this window, once less of the last one overlaps
        return max(0.0, (1 - (limit - 1 - count) / previous) * period - into)
    # in the next window, this one's count weighs less as it goes
    later = max(0.0, 1 - (limit - 1) / count) if count else 0.0
    return (period - into) + min(later, 1.0) * period


def purge_expired(now: float) -> None:
    """Delete the counters whose windows are all over, at most every PURGE_INTERVAL_SECONDS per process."""
    global _next_purge
    if now < _next_purge:
        return
    _next_purge = now + PURGE_INTERVAL_SECONDS
    RequestCounter.objects.filter(expires_at__lt=now).delete()


class PerClientThrottle(SimpleRateThrottle):
    """DRF's rate settings, scopes and clock (``timer``), counted by :func:`take`."""

    def get_ident(self, request):
        return client_ip(request)

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        self.wait_seconds = take(key, now, self.duration, self.num_requests)
        purge_expired(now)
        return self.wait_seconds is None

    def wait(self):
        return self.wait_seconds


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
