"""Fidelity of the optimised embedding path against fp32 on full decodes, for every shared photo.

For each encoder, every photo of ../shared/data/places is embedded by the
reference (full JPEG decode, fp32 weights) and by the optimised path the
service uses (JPEG draft decoding, the runtime and precision
SIMILARITY_RUNTIME=auto and SIMILARITY_PRECISION=auto pick on this CPU), the
latter both one at a time (as lookups are) and in batches of 32 (as builds
are; int8 scales activations per batch). Printed: the lowest and median
cosine between twins (the worse of the two batchings), and whether each
photo's leave-one-out top-1 neighbour is the same when optimised queries
search the optimised gallery.

* efficientnet_lite0@384: genuine ImageNet weights (auto keeps it fp32);
* ViT-B-32: random weights (auto picks the int8 ONNX Runtime copy on CPUs
  with int8 dot products, else bf16 on CPUs with native bf16); the same
  compute as real CLIP, so it measures numerical fidelity, not quality.

    .venv/bin/python bench/fidelity.py
"""

import sys

import _django


def embed_all(encoder, paths, draft: bool, batch_size: int = 1):
    """Vectors of ``paths``: one at a time as lookups are, or in batches as builds are."""
    import numpy as np

    from similarity.gallery.images import open_image

    inputs = []
    for path in paths:
        with open(path, "rb") as handle:
            image = open_image(handle, draft_size=encoder.draft_min_side if draft else None)
        inputs.append(encoder.preprocess(image))
    batches = [inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size)]
    return np.vstack([encoder.embed_tensors(batch) for batch in batches])


def top1(queries, gallery=None):
    """Leave-one-out top-1 of each query among the gallery (default: the queries themselves)."""
    import numpy as np

    scores = queries @ (queries if gallery is None else gallery).T
    np.fill_diagonal(scores, -np.inf)
    return scores.argmax(axis=1)


def main() -> int:
    import argparse

    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--draft-factor",
        type=float,
        help="let JPEG drafts go down to this many times the model's input side (default: the encoders' own)",
    )
    args = parser.parse_args()

    spec = _django.random_clip_weights()
    _django.setup("efficientnet_lite0@384")
    from similarity.runtime.encoders import EfficientNetLite0Encoder, OpenClipEncoder

    paths = sorted(_django.PLACES.rglob("*.jpg"))
    weights = spec.split("/", 1)[1]
    pairs = {
        "efficientnet_lite0@384": (EfficientNetLite0Encoder(precision="fp32"), EfficientNetLite0Encoder()),
        "ViT-B-32 (random weights)": (
            OpenClipEncoder("ViT-B-32", weights, precision="fp32"),
            OpenClipEncoder("ViT-B-32", weights),
        ),
    }
    print(f"{_django.machine()}; {len(paths)} photos of ../shared/data/places")
    ok = True
    for name, (reference, optimised) in pairs.items():
        if args.draft_factor:
            optimised.draft_factor = args.draft_factor
        full = embed_all(reference, paths, draft=False)
        queries = embed_all(optimised, paths, draft=True)  # one at a time, as lookups embed
        gallery = embed_all(optimised, paths, draft=True, batch_size=32)  # as build_clip_index embeds
        cosines = np.minimum(np.sum(full * queries, axis=1), np.sum(full * gallery, axis=1))
        same = top1(full) == top1(queries, gallery)
        # how clearly the fp32 top-1 beats the runner-up: a random-weight model
        # ranks near-ties that any rounding may swap
        scores = full @ full.T
        np.fill_diagonal(scores, -np.inf)
        ordered = np.sort(scores, axis=1)
        margin = ordered[:, -1] - ordered[:, -2]
        clear = margin >= 1e-3
        print(
            f"{name:28s} optimised={optimised.runtime} {optimised.precision}+draft to {optimised.draft_min_side} px: cosine min {cosines.min():.6f} "
            f"median {np.median(cosines):.6f}; leave-one-out top-1 unchanged for {int(same.sum())}/{len(paths)} "
            f"({int(same[clear].sum())}/{int(clear.sum())} where the fp32 top-1 leads by >= 0.001)"
        )
        ok &= bool(cosines.min() >= 0.999 and same[clear].all())
    print("every cosine >= 0.999 and every clear top-1 unchanged:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
