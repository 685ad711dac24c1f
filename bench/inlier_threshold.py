"""Where to put SIMILARITY_VERIFY_MIN_INLIERS: inlier counts of every pair of the places photos.

Extracts the local features of the 54 photos in ../shared/data/places with
the product's code (similarity.geometry.verification), matches every photo
against every other (2,862 ordered pairs, not only an encoder's top 20, so
this is stricter than a lookup) with the product's matcher, and prints:

* the inlier counts of pairs of photos taken within 25 m of each other (the
  same scene, mostly) and of pairs more than 100 m apart (different places);
* for each candidate threshold, how many queries would have a verified
  partner within 25 m (right) and how many one more than 100 m away (wrong),
  and how many far pairs would verify.

The matcher here reports every pair's count (no early reject below the
threshold, the fit's samples bounded for 8 inliers, so mostly 2,000), so one
run covers all thresholds. Then every pair again as a lookup checks it at
--lookup-threshold (pairs below it stop before the fit, the fit draws the
samples it takes to find that many inliers): which pairs verify either way.

    .venv/bin/python bench/inlier_threshold.py [--thresholds 12,15,18,20,25] [--lookup-threshold 20]
"""

import argparse
import csv
import sys
import time

import _django
import numpy as np


def inlier_counts(found: list, min_matches: int) -> np.ndarray:
    """Inliers of every ordered pair (query i, candidate j), matched with ``min_matches`` as a lookup would."""
    from similarity.geometry import verification

    counts = np.zeros((len(found), len(found)), int)
    for i, query in enumerate(found):
        matcher = verification.QueryMatcher(query, min_matches=min_matches)
        for j, candidate in enumerate(found):
            if i != j:
                counts[i, j] = matcher.inliers(candidate)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="12,15,18,20,25")
    parser.add_argument("--lookup-threshold", type=int, default=20, help="SIMILARITY_VERIFY_MIN_INLIERS")
    args = parser.parse_args()
    from PIL import Image, ImageOps

    from similarity.geometry import verification
    from similarity.geometry.geo import haversine_m

    print(_django.machine())
    rows = list(csv.DictReader(open(_django.PLACES / "manifest.csv")))
    found = []
    started = time.perf_counter()
    for row in rows:
        with Image.open(_django.PLACES / row["file"]) as image:
            found.append(verification.extract(ImageOps.exif_transpose(image).convert("RGB")))
    print(f"{len(found)} photos extracted in {time.perf_counter() - started:.1f} s")
    n = len(rows)
    distance = np.array(
        [
            [
                haversine_m(float(a["latitude"]), float(a["longitude"]), float(b["latitude"]), float(b["longitude"]))
                for b in rows
            ]
            for a in rows
        ]
    )
    started = time.perf_counter()
    inliers = inlier_counts(found, verification.MIN_MATCHES)
    pairs = n * (n - 1)
    print(
        f"{pairs} pairs matched in {time.perf_counter() - started:.1f} s ({(time.perf_counter() - started) / pairs * 1000:.1f} ms a pair, one thread)"
    )
    other = ~np.eye(n, dtype=bool)
    near, far = inliers[(distance <= 25) & other], inliers[(distance > 100) & other]
    print(
        f"pairs within 25 m: {len(near)}, inliers median {np.median(near):.0f}, 10th percentile {np.percentile(near, 10):.0f}"
    )
    print(f"pairs over 100 m apart: {len(far)}, inliers max {far.max()}, 99th percentile {np.percentile(far, 99):.0f}")
    print(
        "\n| threshold | queries with a verified partner within 25 m | queries with a verified one > 100 m away | far pairs verified |"
    )
    print("| --- | --- | --- | --- |")
    for threshold in (int(t) for t in args.thresholds.split(",")):
        verified = (inliers >= threshold) & other
        right = int(sum((verified[i] & (distance[i] <= 25)).any() for i in range(n)))
        wrong = int(sum((verified[i] & (distance[i] > 100)).any() for i in range(n)))
        print(f"| {threshold} | {right} | {wrong} | {int((verified & (distance > 100)).sum())} |")
    threshold = args.lookup_threshold
    as_looked_up = inlier_counts(found, threshold)
    full, bounded = (inliers >= threshold) & other, (as_looked_up >= threshold) & other
    print(
        f"\nas a lookup checks them at {threshold}: {int(bounded.sum())} pairs verified, {int(full.sum())} with every "
        f"pair fitted as above; verified only as above: {int((full & ~bounded).sum())}, only as a lookup: "
        f"{int((bounded & ~full).sum())}; far pairs verified: {int((bounded & (distance > 100)).sum())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
