"""Per-client request budgets, counted in the database, so they hold across worker processes and hosts.

* ``lookup``: every lookup (a photo or a text to locate, a stored photo's neighbours), priced by what it
  costs (api/pricing.py: 1 unit for a plain lookup, more with geometric verification);
* ``lookup_large``: lookups whose image needs a large decode (many pixels, see
  images.is_large): a much smaller budget, since one costs as much CPU as
  dozens of phone photos;
* ``read``: reading the gallery and the statistics;
* ``propose``: proposals for the gallery, made by a client or automatically
  after its lookups (each keeps a photo for review), and ``proposal_bytes``: the
  bytes those photos take on disk (gallery/review.py charges both).

Signed-in users are counted per account, others per client network (clients.client_network).

A budget of N units per period is a sliding window, estimated from fixed
ones: the units of the current window plus those of the window before,
weighted by how much of it still lies within the last period. Each request
is counted by one UPDATE of its client's row (models.RequestCounter) and the
row read back in the same transaction, so concurrent requests cannot both
read a count and both write it plus one, as DRF's own throttles (read the
history, then write it back) let them do. A refused request is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.throttling import SimpleRateThrottle

from similarity.api import pricing
from similarity.clients import client_network
from similarity.models import RequestCounter

# Expired counters (clients gone quiet) are deleted at most this often per process.
PURGE_INTERVAL_SECONDS = 60.0
_next_purge = 0.0


@dataclass
class Charge:
    """One request's charge on a budget: what was counted, and how much of the budget is now used."""

    key: str
    window: int
    units: int
    used: float  # the estimate of the budget used, this request included, as a share of its size
    wait: float | None = None  # refused: the seconds until it would be allowed (nothing was counted)

    @property
    def allowed(self) -> bool:
        return self.wait is None

    def refund(self) -> None:
        """Give the units back (the request did none of its work), while the window it counted in lasts."""
        RequestCounter.objects.filter(key=self.key, window=self.window, count__gte=self.units).update(
            count=F("count") - self.units
        )


def charge(key: str, now: float, period: int, limit: int, units: int = 1) -> Charge:
    """Count ``units`` against ``key``'s budget of ``limit`` per ``period`` seconds, if they fit."""
    units = max(1, units)
    window, into = divmod(now, period)
    window = int(window)
    expires_at = float((window + 2) * period)
    counter = RequestCounter.objects.filter(key=key)

    def count_on_the_row() -> int:
        return counter.update(  # every right-hand side reads the row as it was
            previous=Case(
                When(window=window, then=F("previous")), When(window=window - 1, then=F("count")), default=Value(0)
            ),
            count=Case(When(window=window, then=F("count") + units), default=Value(units)),
            window=Value(window),
            expires_at=Value(expires_at),
        )

    with transaction.atomic():
        if not count_on_the_row():
            try:
                with transaction.atomic():
                    RequestCounter.objects.create(
                        key=key, window=window, count=units, previous=0, expires_at=expires_at
                    )
            except IntegrityError:  # a concurrent request made the row first: count on it the same way
                count_on_the_row()
        count, previous = counter.values_list("count", "previous").get()
        used = previous * (1 - into / period) + count
        if used <= limit:
            return Charge(key, window, units, used / limit)
        counter.update(count=F("count") - units)
    count -= units
    wait = seconds_until_allowed(count, previous, into, period, limit, units)
    return Charge(key, window, 0, (used - units) / limit, wait)


def take(key: str, now: float, period: int, limit: int, units: int = 1) -> float | None:
    """:func:`charge`, answering None when allowed (and counted), else the seconds until it would be."""
    return charge(key, now, period, limit, units).wait


def seconds_until_allowed(count: int, previous: int, into: float, period: int, limit: int, units: int = 1) -> float:
    """When the estimate of a budget with ``count`` units this window (``into`` seconds old) and
    ``previous`` in the last one leaves room for ``units`` more."""
    room = limit - units
    if count <= room and previous:  # later in this window, once less of the last one overlaps
        return max(0.0, (1 - (room - count) / previous) * period - into)
    # in the next window, this one's count weighs less as it goes
    later = max(0.0, 1 - room / count) if count else 0.0
    return (period - into) + min(later, 1.0) * period


def purge_expired(now: float) -> None:
    """Delete the counters whose windows are all over, at most every PURGE_INTERVAL_SECONDS per process."""
    global _next_purge
    if now < _next_purge:
        return
    _next_purge = now + PURGE_INTERVAL_SECONDS
    RequestCounter.objects.filter(expires_at__lt=now).delete()


def client_key(request) -> str:
    """Whom a budget counts: a signed-in account, else the client's network."""
    user = getattr(request, "user", None)
    return f"user-{user.pk}" if user is not None and user.is_authenticated else client_network(request)


class PerClientThrottle(SimpleRateThrottle):
    """DRF's rate settings, scopes and clock (``timer``), counted by :func:`charge`, ``units(request)`` a request."""

    def get_ident(self, request):
        return client_network(request)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": client_key(request)}

    def units(self, request, view) -> int:
        return 1

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        self.charged = charge(key, now, self.duration, self.num_requests, self.units(request, view))
        self.wait_seconds = self.charged.wait
        purge_expired(now)
        return self.charged.allowed

    def wait(self):
        return self.wait_seconds


class LookupThrottle(PerClientThrottle):
    """Lookups, priced by what they cost (api/pricing.py); the charge is kept on the request
    (``request.lookup_charge``, with its price as ``request.lookup_price``) for api/heavy.py."""

    scope = "lookup"

    def units(self, request, view) -> int:
        """The lookup's price; one dearer than the whole budget takes the whole budget, so it fits an unused one."""
        request.lookup_price = pricing.request_price(request, view)
        return min(request.lookup_price.units, self.num_requests)

    def allow_request(self, request, view):
        allowed = super().allow_request(request, view)
        if self.rate is not None:
            request.lookup_charge = self.charged
        return allowed


class BatchThrottle(PerClientThrottle):
    """Batches of photos to locate, priced as the lookups of their photos (api/pricing.py); the view charges
    a batch once it has counted its photos (a zip's included)."""

    scope = "batch"

    def charge_units(self, request, view, units: int) -> Charge | None:
        """Count ``units`` on the client's batch budget (None when there is no budget); Throttled (429) when it
        has no room now, ValidationError (400) when the batch costs more than the whole budget."""
        if self.rate is None:
            return None
        if units > self.num_requests:
            raise ValidationError(
                {"files": [f"The batch costs {units} lookup units; a client's batch budget is {self.rate}."]}
            )
        charged = charge(self.get_cache_key(request, view), self.timer(), self.duration, self.num_requests, units)
        if not charged.allowed:
            raise Throttled(
                wait=charged.wait,
                detail=f"The batch costs {units} lookup units, more than is left of the client's batch budget "
                f"({self.rate}).",
            )
        return charged


class ReadThrottle(PerClientThrottle):
    scope = "read"


class ProposalThrottle(PerClientThrottle):
    """Proposals keep a photo on the server: a small budget per client."""

    scope = "propose"


class ProposalStorageThrottle(PerClientThrottle):
    """What proposals keep on disk, in KiB per period (SIMILARITY_PROPOSAL_STORAGE_RATE, set in MiB)."""

    scope = "proposal_storage"

    def units(self, request, view) -> int:
        upload = request.data.get("image") if hasattr(request.data, "get") else None
        return max(1, -(-int(getattr(upload, "size", 0) or 0) // 1024))


def charge_proposal(request, view) -> bool:
    """Count a proposal the service makes by itself after a lookup against the client's proposal budgets;
    whether both had room (if not, neither is charged)."""
    charged: list[Charge] = []
    for throttle in (ProposalThrottle(), ProposalStorageThrottle()):
        if not throttle.allow_request(request, view):
            for done in charged:
                done.refund()
            return False
        if throttle.rate is not None:
            charged.append(throttle.charged)
    return True


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
