"""The places gallery answered on the embedded defaults and on Milvus + S3 media: the same answers?

Imports ../shared/data/places on the defaults (FAISS snapshot, media in the data dir) and records, for
every photo, its leave-one-out lookup (geometric verification on): the matches, their similarities and
inliers, the estimate; and the `evaluate_similarity --leave-one-out` report. Then starts a Milvus
standalone and a SeaweedFS S3 server (their PyPI wheels, loopback ports), moves the installation with
`manage.py copy_to_shared` (media to the bucket, vectors to Milvus), moves the local media folder away so
nothing can be read from it, and runs the same lookups and report again. Checks that the answers are the
same photo for photo and prints the lookup times of both.

    .venv/bin/python bench/distributed_answers.py
"""

import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _django

SIMILARITY_TOLERANCE = 1e-4  # Milvus and FAISS sum the same float32 products in different orders
COMPARED = ("answerable", "estimate_within_radius_of_answerable", "recall", "within_km", "median_error_m")


def answers(photos) -> tuple[list[dict], list[float]]:
    """Every photo's leave-one-out lookup, and how long each took (ms)."""
    from similarity import search

    rows, times = [], []
    for photo in photos:
        started = time.perf_counter()
        result = search.search_similar_to_photo(photo, top_k=10, verify="all")
        times.append((time.perf_counter() - started) * 1000)
        estimate = result.estimate
        rows.append(
            {
                "photo": photo.pk,
                "matches": [(m.photo.pk, m.similarity, m.inliers, m.verified) for m in result.matches],
                "estimate": (estimate.latitude, estimate.longitude, estimate.method) if estimate else None,
                "confident": result.confident,
            }
        )
    return rows, times


def report() -> dict:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("evaluate_similarity", "--leave-one-out", "--json", stdout=out)
    full = json.loads(out.getvalue())
    return {key: full[key] for key in COMPARED}


def differences(before: list[dict], after: list[dict]) -> tuple[list[str], float]:
    """What differs between two runs' answers (empty: the same), and the largest similarity difference."""
    found, largest = [], 0.0
    for one, other in zip(before, after, strict=True):
        ids = [(pk, inliers, verified) for pk, _, inliers, verified in one["matches"]]
        other_ids = [(pk, inliers, verified) for pk, _, inliers, verified in other["matches"]]
        gaps = [abs(a[1] - b[1]) for a, b in zip(one["matches"], other["matches"])]
        largest = max([largest, *gaps])
        estimates_equal = (one["estimate"] is None) == (other["estimate"] is None) and (
            one["estimate"] is None
            or (
                one["estimate"][2] == other["estimate"][2]
                and abs(one["estimate"][0] - other["estimate"][0]) < 1e-7
                and abs(one["estimate"][1] - other["estimate"][1]) < 1e-7
            )
        )
        if ids != other_ids or max(gaps, default=0) > SIMILARITY_TOLERANCE or not estimates_equal:
            found.append(
                f"photo {one['photo']}: {one['matches'][:3]} / {one['estimate']} vs "
                f"{other['matches'][:3]} / {other['estimate']}"
            )
        elif one["confident"] != other["confident"]:
            found.append(f"photo {one['photo']}: confident {one['confident']} vs {other['confident']}")
    return found, largest


def main() -> int:
    data_dir = _django.setup("efficientnet_lite0@384")
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    from geolocator.media_storage import media_storages
    from similarity.models import ReferencePhoto
    from similarity.search import features
    from tests.servers import launch_milvus, launch_seaweedfs, stop

    print(_django.machine())
    _django.import_places()
    call_command("build_clip_index", "--no-progress", stdout=io.StringIO())  # and every photo's local features
    photos = list(ReferencePhoto.objects.order_by("pk"))
    local_rows, local_times = answers(photos)
    local_report = report()

    servers = Path(tempfile.mkdtemp(prefix="geolocator-servers-"))
    (servers / "milvus").mkdir()
    (servers / "seaweedfs").mkdir()
    bin_dir = Path(sys.executable).parent
    milvus, uri, milvus_ready = launch_milvus(servers / "milvus", bin_dir / "milvus-server")
    weed, s3, s3_ready = launch_seaweedfs(servers / "seaweedfs", bin_dir / "weed")
    try:
        deadline = time.monotonic() + 300
        while not (milvus_ready() and s3_ready()):
            if time.monotonic() > deadline or milvus.poll() is not None or weed.poll() is not None:
                print(f"The servers did not start: see {servers}/*/server.log")
                return 1
            time.sleep(1)
        os.environ.update(s3.environment("places"))
        storages, _ = media_storages()
        with override_settings(STORAGES=storages, SIMILARITY_VECTOR_BACKEND="milvus", SIMILARITY_MILVUS_URI=uri):
            out = io.StringIO()
            call_command("copy_to_shared", "--no-progress", "--from", str(settings.MEDIA_ROOT), stdout=out)
            print(out.getvalue().rstrip())
            shutil.move(settings.MEDIA_ROOT, data_dir / "media-moved-away")  # nothing is read locally now
            features.forget_cached()
            shared_rows, shared_times = answers(photos)
            shared_report = report()
    finally:
        stop(milvus)
        stop(weed)

    found, largest = differences(local_rows, shared_rows)
    print(f"\n{len(photos)} leave-one-out lookups, geometric verification on, top 10")
    print(f"{'':36s} {'defaults':>12s} {'Milvus + S3':>12s}")
    print(f"{'lookup p50 (ms)':36s} {statistics.median(local_times):12.1f} {statistics.median(shared_times):12.1f}")
    print(
        f"{'within 25 m, share of answerable':36s} {local_report['estimate_within_radius_of_answerable']:12.3f} "
        f"{shared_report['estimate_within_radius_of_answerable']:12.3f}"
    )
    print(f"largest similarity difference: {largest:.2e}")
    for line in found[:10]:
        print("DIFFERS ", line)
    checks = {
        "the same matches, inliers and estimate for every photo": not found,
        "the same evaluate_similarity report": local_report == shared_report,
    }
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
