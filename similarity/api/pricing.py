"""What a lookup costs a client's budget, in units of one plain lookup.

A plain lookup (decode, model, index search) is 1 unit: about 0.2 CPU-seconds
of a worker on 2 cores. Geometric verification is what makes a lookup
expensive, and its price follows what it does (measured as worker CPU per
request, bench/RESULTS.md):

* the query's local features, extracted from an uploaded photo:
  QUERY_FEATURES units (about 0.7 CPU-seconds);
* every candidate pair checked: 1 unit per PAIRS_PER_UNIT pairs (about
  0.04 CPU-seconds a pair). A lookup checks max(top_k, SIMILARITY_VERIFY_TOP_N)
  candidates; ``verify=first`` may stop earlier but is priced as ``all``.

So a default upload lookup with verification costs 1 + 4 + 4 = 9 units, a
stored photo's neighbours with ``verify=all&top_k=50`` 1 + 10 = 11, and every
lookup without verification 1. A budget (SIMILARITY_LOOKUP_RATE) counts units.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

PLAIN = 1
QUERY_FEATURES = 4
PAIRS_PER_UNIT = 5

UPLOAD, STORED, TEXT = "upload", "stored", "text"  # what a lookup starts from (a view's ``lookup_kind``)


@dataclass(frozen=True)
class Price:
    units: int
    pairs: int  # candidate pairs verification may check (0: none)

    @property
    def verifies(self) -> bool:
        return self.pairs > 0


def price(kind: str, *, top_k: int | None = None, verify: str | None = None) -> Price:
    """The price of a lookup of ``kind`` with these options (the defaults where None)."""
    from similarity.search.features import verification_mode

    top_k = top_k or settings.SIMILARITY_DEFAULT_TOP_K
    mode = verification_mode(verify) if kind != TEXT else "off"
    if mode == "off":
        return Price(PLAIN, 0)
    pairs = max(top_k, settings.SIMILARITY_VERIFY_TOP_N)
    units = PLAIN + (QUERY_FEATURES if kind == UPLOAD else 0) + -(-pairs // PAIRS_PER_UNIT)
    return Price(units, pairs)


def request_price(request, view) -> Price:
    """The price of the lookup a request asks for. Options that do not parse cost the default: the view
    refuses them with a 400 anyway."""
    kind = getattr(view, "lookup_kind", UPLOAD)
    options = request.query_params if request.method == "GET" else request.data
    verify = options.get("verify") if hasattr(options, "get") else None
    top_k = options.get("top_k") if hasattr(options, "get") else None
    try:
        top_k = min(max(int(top_k), 1), settings.SIMILARITY_MAX_TOP_K) if top_k not in (None, "") else None
    except (TypeError, ValueError):
        top_k = None
    if verify not in ("all", "first", "off"):
        verify = None
    return price(kind, top_k=top_k, verify=verify)
