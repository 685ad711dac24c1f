"""What geometric verification costs, stage by stage, for the code here and for a baseline commit, in one run.

For each tree (this checkout, and --baseline checked out as a git worktree
beside it) a child process imports ../shared/data/places with the offline
encoder (EfficientNet-Lite0 at 384 px) into a throw-away gallery, then measures
with that tree's own code:

* a build's feature stage: ``features.extract_missing()`` over the 54 photos
  (photos/s, CPU per photo), and what the features cost on storage per photo;
* one verified lookup, taken apart: the query's extraction from the 12 MP JPEG
  of bench/latency.py (decoded as a lookup decodes it), then the verification
  of its top 20 candidates (the encoder's, without verification) on the
  verification threads: wall time and CPU, median of 7; then the same 20 pairs
  one by one under cProfile, split into matching and the geometric fit;
* the answers of those 20 pairs: inlier counts, and which verify.

Then prints both side by side, with the ratios. Targets (issue 27): features
<= 100 kB a photo, a build's feature stage >= 2x the baseline's photos/s.

    .venv/bin/python bench/verification_cost.py [--baseline 1c7edce]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _django

CHILD = r"""
import cProfile, io, json, os, pstats, statistics, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "bench"))
os.environ["SIMILARITY_VERIFY"] = "off"  # the import does not extract: the feature stage is timed alone
import _django
_django.setup("efficientnet_lite0@384")
from django.conf import settings
from similarity.gallery.images import open_image
from similarity.geometry import verification
from similarity.models import PhotoFeatures
from similarity.search import features, search_image
from similarity.search.vectors import get_encoder

_django.import_places()
out = {}
if hasattr(verification, "warm_up"):
    verification.warm_up()  # one-time work out of the clock: OpenCV's threads, compiled kernels read from disk
started, cpu = time.perf_counter(), time.process_time()
report = features.extract_missing()
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
photos = report.extracted
out["build"] = {"photos": photos, "photos_per_s": photos / wall, "cpu_s_per_photo": cpu / photos,
                "failed": len(report.failed)}
sizes = [record.size for record in PhotoFeatures.objects.all()]
counts = [record.count for record in PhotoFeatures.objects.all()]
out["bytes_per_photo"] = sum(sizes) / len(sizes)
out["keypoints_per_photo"] = sum(counts) / len(counts)

from PIL import Image
photo = Image.open(_django.PLACES / "berlin/01.jpg").convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
buffer = io.BytesIO(); photo.save(buffer, "JPEG", quality=92)
image = open_image(io.BytesIO(buffer.getvalue()), draft_size=get_encoder().draft_size)
def timed(function, repeats=7):
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - started); cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000, result
extract_ms, extract_cpu_ms, query = timed(lambda: verification.extract(image))
candidates = [match.photo.pk for match in search_image(image, top_k=20, verify="off").matches]
features_of = features.loader(candidates)
for photo_id in candidates:
    features_of(photo_id)  # read once: the lookup's cache is warm in a running server
minimum = settings.SIMILARITY_VERIFY_MIN_INLIERS
def verify_all():
    found = verification.verify(query, candidates, features_of, min_inliers=minimum)
    return {c: (v if isinstance(v, int) else len(v.query)) for c, v in found.items()}
verify_ms, verify_cpu_ms, counts = timed(verify_all)
try:
    matcher = verification.QueryMatcher(query, min_matches=minimum)
except TypeError:
    matcher = verification.QueryMatcher(query)
profile = cProfile.Profile()
profile.enable()
for photo_id in candidates:
    matcher.inliers(features_of(photo_id))
profile.disable()
stats = pstats.Stats(profile).stats
total = sum(t for (_, _, name), (_, _, t, _, _) in stats.items())
fit = sum(ct for (_, _, name), (_, _, _, ct, _) in stats.items() if "findFundamentalMat" in name)
out["lookup"] = {
    "query_extraction_ms": extract_ms, "query_extraction_cpu_ms": extract_cpu_ms, "query_keypoints": len(query),
    "verify_20_ms": verify_ms, "verify_20_cpu_ms": verify_cpu_ms,
    "pair_ms_one_thread": total / len(candidates) * 1000, "pair_fit_ms": fit / len(candidates) * 1000,
    "pair_matching_ms": (total - fit) / len(candidates) * 1000,
    "inliers": [counts.get(c) for c in candidates], "min_inliers": minimum,
    "verified": sum(1 for c in candidates if (counts.get(c) or 0) >= minimum),
}
print(json.dumps(out))
"""


def measure(tree: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(revision: str) -> Path:
    """A worktree of ``revision`` beside this checkout (so that ../shared is where the benches look)."""
    tree = Path(tempfile.mkdtemp(prefix=".geolocator-baseline-", dir=_django.ROOT.parent))
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-f", str(tree), revision],
        cwd=_django.ROOT,
        check=True,
        capture_output=True,
    )
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="1c7edce", help="the commit to compare with (default: before issue 27)")
    args = parser.parse_args()
    print(_django.machine())
    tree = baseline_tree(args.baseline)
    try:
        before = measure(tree)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=_django.ROOT, capture_output=True)
    now = measure(_django.ROOT)
    rows: list[tuple] = [
        ("build: feature stage, photos/s", "build", "photos_per_s", "{:.2f}"),
        ("build: CPU per photo, s", "build", "cpu_s_per_photo", "{:.3f}"),
        ("storage per photo, kB", None, "bytes_per_photo", "{:.0f}", 1e-3),
        ("keypoints per photo", None, "keypoints_per_photo", "{:.0f}"),
        ("lookup: query extraction, ms", "lookup", "query_extraction_ms", "{:.0f}"),
        ("lookup: query extraction CPU, ms", "lookup", "query_extraction_cpu_ms", "{:.0f}"),
        ("lookup: verify 20 pairs, ms", "lookup", "verify_20_ms", "{:.0f}"),
        ("lookup: verify 20 pairs CPU, ms", "lookup", "verify_20_cpu_ms", "{:.0f}"),
        ("a pair on one thread, ms", "lookup", "pair_ms_one_thread", "{:.1f}"),
        ("  of it matching, ms", "lookup", "pair_matching_ms", "{:.1f}"),
        ("  of it the geometric fit, ms", "lookup", "pair_fit_ms", "{:.1f}"),
        ("pairs verified of 20", "lookup", "verified", "{}"),
    ]
    print(f"\n| | baseline {args.baseline} | now | now / baseline |\n| --- | --- | --- | --- |")
    for label, section, key, fmt, *scale in rows:
        old = (before[section] if section else before)[key] * (scale[0] if scale else 1)
        new = (now[section] if section else now)[key] * (scale[0] if scale else 1)
        print(
            f"| {label} | {fmt.format(old)} | {fmt.format(new)} | x{new / old:.2f} |"
            if old
            else f"| {label} | {old} | {new} | |"
        )
    for name, result in (("baseline", before), ("now", now)):
        print(
            f"{name}: inliers of the 20 candidates (min {result['lookup']['min_inliers']}): {result['lookup']['inliers']}"
        )
    kb, speedup = now["bytes_per_photo"] / 1e3, now["build"]["photos_per_s"] / before["build"]["photos_per_s"]
    print(
        f"\nfeatures {kb:.0f} kB a photo (target <= 100): {'met' if kb <= 100 else 'NOT met'}; "
        f"feature stage x{speedup:.2f} the baseline's photos/s (target >= 2): {'met' if speedup >= 2 else 'NOT met'}"
    )
    return 0 if kb <= 100 and speedup >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
