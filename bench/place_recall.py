"""Leave-one-out retrieval on ../shared/data/places with the offline encoder.

Imports the 54 photos, embeds and indexes them, then queries each photo against
the others through the same search code the API uses
(search.search_similar_to_photo) and prints the share whose top match shows
the same place, over photos that have a same-place partner.

    .venv/bin/python bench/place_recall.py [--encoder efficientnet_lite0]
"""

import argparse
import sys

import _django


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite0@384")
    parser.add_argument("--min-recall", type=float, default=0.9)
    args = parser.parse_args()
    _django.setup(args.encoder)

    from similarity import search
    from similarity.models import ReferencePhoto

    places = _django.import_places()
    counts: dict[str, int] = {}
    for place in places.values():
        counts[place] = counts.get(place, 0) + 1

    hits = total = 0
    per_place: dict[str, tuple[int, int]] = {}
    for photo in ReferencePhoto.objects.filter(pk__in=places).order_by("pk"):
        place = places[photo.pk]
        if counts[place] < 2:
            continue
        best = search.search_similar_to_photo(photo, top_k=1).best
        if best is None:
            continue
        top_place = places[best.photo.pk]
        ok = top_place == place
        hits += ok
        total += 1
        good, seen = per_place.get(place, (0, 0))
        per_place[place] = (good + ok, seen + 1)
    recall = hits / total
    print(f"encoder: {args.encoder}; photos: {len(places)}; queries with a same-place partner: {total}")
    for place, (good, seen) in sorted(per_place.items()):
        print(f"  {place:18s} {good:3d}/{seen:<3d} top-1 same place")
    print(f"top-1 same-place rate (leave-one-out): {recall:.3f} ({hits}/{total}); target >= {args.min_recall}")
    return 0 if recall >= args.min_recall else 1


if __name__ == "__main__":
    sys.exit(main())
