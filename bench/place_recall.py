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

    places = _django.import_places()
    per_place = _django.same_place_top1(places)
    hits, total = (sum(counts) for counts in zip(*per_place.values()))
    recall = hits / total
    print(f"encoder: {args.encoder}; photos: {len(places)}; queries with a same-place partner: {total}")
    for place, (good, seen) in sorted(per_place.items()):
        print(f"  {place:18s} {good:3d}/{seen:<3d} top-1 same place")
    print(f"top-1 same-place rate (leave-one-out): {recall:.3f} ({hits}/{total}); target >= {args.min_recall}")
    return 0 if recall >= args.min_recall else 1


if __name__ == "__main__":
    sys.exit(main())
