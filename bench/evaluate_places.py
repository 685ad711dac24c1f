"""evaluate_similarity --leave-one-out on ../shared/data/places with the offline encoder, against the old setup.

Prints the command's full report for the configured setup (EfficientNet-Lite0
at 384 px, geometric verification, 50 m estimate groups): recall@k, answers
within 25 m of the answerable queries, verified vs unverified precision, the
threshold sweep. Then measures, in the same run, the setup before issue 15
(EfficientNet-Lite0 at 256 px, no verification, 250 m groups) and checks:

- within 25 m for >= 95 % of the answerable queries;
- same-place top-1 (the top match shows the query's place) 1.000;
- median error of the estimate not worse than the old setup's;
- the estimate not worse than the top-1 match at any km level.

    .venv/bin/python bench/evaluate_places.py [--radius-m 25]
"""

import argparse
import io
import json
import sys

import _django

BASELINE = {
    "SIMILARITY_ENCODER": "efficientnet_lite0",
    "SIMILARITY_VERIFY": "off",
    "SIMILARITY_CLUSTER_RADIUS_M": 250.0,
    "SIMILARITY_THRESHOLDS": {"open_clip": 0.75, "efficientnet_lite0": 0.60},
}


def evaluate(*options: str, show: bool) -> dict:
    from django.core.management import call_command

    if show:
        call_command("evaluate_similarity", "--leave-one-out", *options)
    out = io.StringIO()
    call_command("evaluate_similarity", "--leave-one-out", *options, "--json", stdout=out)
    return json.loads(out.getvalue())


def same_place_top1(place_of: dict[int, str]) -> float:
    right, queries = (sum(counts) for counts in zip(*_django.same_place_top1(place_of).values()))
    return right / queries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite0@384")
    parser.add_argument("--radius-m", default="25")
    args = parser.parse_args()
    _django.setup(args.encoder)
    from django.core.management import call_command
    from django.test.utils import override_settings

    from similarity import index

    print(_django.machine())
    place_of = _django.import_places()
    report = evaluate("--radius-m", args.radius_m, show=True)
    same_place = same_place_top1(place_of)

    with override_settings(**BASELINE):
        index.forget_loaded_index()
        call_command("build_clip_index", "--no-progress", stdout=io.StringIO())
        baseline = evaluate("--radius-m", args.radius_m, "--no-verification", show=False)
        baseline_same_place = same_place_top1(place_of)

    share = report["estimate_within_radius_of_answerable"]
    median, baseline_median = report["median_error_m"]["estimate"], baseline["median_error_m"]["estimate"]
    top1 = report["within_km"]["top1"]
    checks = {
        f"within {args.radius_m} m of answerable >= 0.95": share >= 0.95,
        "same-place top-1 = 1.000": same_place == 1.0,
        "median error of the estimate not worse than the old setup": median <= baseline_median,
        "estimate not worse than top-1 at every km level": all(
            report["within_km"]["estimate"][k] >= top1[k] for k in top1
        ),
    }
    print(f"\n{'':44s} {'now':>10s} {'old setup':>10s}")
    print(
        f"{'within ' + args.radius_m + ' m, share of answerable':44s} {share:10.3f} "
        f"{baseline['estimate_within_radius_of_answerable']:10.3f}   ({report['answerable']} answerable)"
    )
    print(f"{'same-place top-1':44s} {same_place:10.3f} {baseline_same_place:10.3f}")
    print(f"{'median error of the estimate (m)':44s} {median:10.1f} {baseline_median:10.1f}")
    print(
        f"old setup: encoder {baseline['encoder']}, verification {'on' if baseline['geometric_verification'] else 'off'}, "
        f"groups {BASELINE['SIMILARITY_CLUSTER_RADIUS_M']:g} m"
    )
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
