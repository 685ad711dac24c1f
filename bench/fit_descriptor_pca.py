"""Fit the PCA basis that compresses local feature descriptors (similarity/geometry/rootsift_pca.npz).

Extracts the upright RootSIFT descriptors of the photos in ../shared/data/places
(what similarity.geometry.verification.extract keeps before projecting: at
most 2,000 distinct keypoints a photo, from the photo at 1,024 px), fits a PCA
on all of them, and writes the mean, the first 64 components and the step that
quantises a projection to int8. Prints the variance the components keep, and
how much of each coordinate's range the step clips.

The basis is part of the features format (verification.FORMAT_VERSION): a new
basis means new features for every photo. Measured when it was fitted: a basis
fitted on two of the five places (lund, berlin) answered the same as one fitted
on all five (bench/RESULTS.md, issue 27).

    .venv/bin/python bench/fit_descriptor_pca.py [--out similarity/geometry/rootsift_pca.npz]
"""

import argparse
import sys

import _django
import numpy as np

STEP = 1 / 32  # RootSIFT vectors have unit length; int8 codes of this step span -3.97 to 3.97


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(_django.ROOT / "similarity/geometry/rootsift_pca.npz"))
    parser.add_argument("--dims", type=int, default=64)
    args = parser.parse_args()
    from PIL import Image

    from similarity.geometry import verification

    print(_django.machine())
    descriptors = []
    for path in sorted(_django.PLACES.rglob("*.jpg")):
        with Image.open(path) as image:
            descriptors.append(verification.rootsift(image.convert("RGB"))[1])
    data = np.concatenate(descriptors).astype(np.float64)
    mean = data.mean(axis=0)
    _, singular, components = np.linalg.svd(data - mean, full_matrices=False)
    variance = singular**2 / (singular**2).sum()
    kept = components[: args.dims]
    projected = (data - mean) @ kept.T
    clipped = float((np.abs(projected) > 127 * STEP).mean())
    print(
        f"{len(descriptors)} photos, {len(data):,} descriptors; {args.dims} components keep "
        f"{variance[: args.dims].sum():.3f} of the variance; {clipped:.5f} of the codes clip"
    )
    np.savez(args.out, mean=mean.astype(np.float32), components=kept.astype(np.float32), step=np.float32(STEP))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
