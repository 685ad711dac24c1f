"""evaluate_similarity --leave-one-out on ../shared/data/places with the offline encoder.

Prints the command's full report (recall@k, shares within 1/25/200/750/2500 km,
median errors of top-1 and of the estimate, the threshold sweep and the
recommended threshold), then checks that the estimate is not worse than top-1.

    .venv/bin/python bench/evaluate_places.py [--radius-m 25]
"""

import argparse
import io
import json
import sys

import _django


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite0@384")
    parser.add_argument("--radius-m", default="25")
    args = parser.parse_args()
    _django.setup(args.encoder)
    from django.core.management import call_command

    _django.import_places()
    call_command("evaluate_similarity", "--leave-one-out", "--radius-m", args.radius_m)
    out = io.StringIO()
    call_command("evaluate_similarity", "--leave-one-out", "--radius-m", args.radius_m, "--json", stdout=out)
    report = json.loads(out.getvalue())
    top1, estimate = report["median_error_m"]["top1"], report["median_error_m"]["estimate"]
    not_worse = estimate <= top1 and all(
        report["within_km"]["estimate"][level] >= report["within_km"]["top1"][level] for level in report["within_km"]["top1"]
    )
    print(f"\nestimate vs top-1: median {estimate:.1f} m vs {top1:.1f} m; not worse at every km level: {not_worse}")
    return 0 if not_worse else 1


if __name__ == "__main__":
    sys.exit(main())
