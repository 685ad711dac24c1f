"""Measuring how well similarity search locates photos (used by ``evaluate_similarity``).

The metrics are those the field compares: recall@k within a radius, the share
of predictions within 1 / 25 / 200 / 750 / 2500 km (as GeoCLIP reports), the
median error, and for a range of thresholds the coverage (share answered) and
precision (share answered within the radius). A query is *answerable* when
some gallery photo (not itself) lies within the radius of where it was taken:
only those can be answered right, so their share answered within the radius
is the headline figure. Answers whose top match geometric verification
confirmed are counted apart, with their precision.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from similarity.geometry.estimate import CandidatePosition, Estimate
from similarity.geometry.geo import haversine_m

KM_LEVELS = (1, 25, 200, 750, 2500)
RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class QueryOutcome:
    """One query: where it really is, what search returned (best first), the estimate."""

    label: str
    latitude: float
    longitude: float
    matches: Sequence[CandidatePosition]
    estimate: Estimate | None
    answerable: bool = True  # some gallery photo lies within the radius of the truth
    verified: bool = False  # geometric verification confirmed the top match

    def error_m(self, latitude: float, longitude: float) -> float:
        return haversine_m(self.latitude, self.longitude, latitude, longitude)

    @property
    def top1_error_m(self) -> float:
        if not self.matches:
            return math.inf
        return self.error_m(self.matches[0].latitude, self.matches[0].longitude)

    @property
    def estimate_error_m(self) -> float:
        if self.estimate is None:
            return math.inf
        return self.error_m(self.estimate.latitude, self.estimate.longitude)

    @property
    def best_similarity(self) -> float:
        return self.matches[0].similarity if self.matches else -math.inf


def recall_at_k(outcomes: Sequence[QueryOutcome], k: int, radius_m: float) -> float:
    """Share of queries with at least one of the top k matches within radius_m of the truth."""
    hits = sum(any(o.error_m(m.latitude, m.longitude) <= radius_m for m in o.matches[:k]) for o in outcomes)
    return hits / len(outcomes)


def share_within_km(errors_m: Sequence[float], km_levels=KM_LEVELS) -> dict[str, float]:
    return {f"{km}km": sum(e <= km * 1000 for e in errors_m) / len(errors_m) for km in km_levels}


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def threshold_sweep(outcomes: Sequence[QueryOutcome], thresholds: Sequence[float], radius_m: float) -> list[dict]:
    """Coverage and precision of the estimate if answers needed best similarity >= threshold."""
    rows = []
    for threshold in thresholds:
        answered = [o for o in outcomes if o.best_similarity >= threshold]
        correct = sum(o.estimate_error_m <= radius_m for o in answered)
        rows.append(
            {
                "threshold": round(threshold, 4),
                "coverage": len(answered) / len(outcomes),
                "precision": correct / len(answered) if answered else None,
                "answered": len(answered),
            }
        )
    return rows


def recommend_threshold(sweep: Sequence[dict], target_precision: float) -> float | None:
    """The threshold answering the most queries while keeping precision >= target."""
    good = [row for row in sweep if row["precision"] is not None and row["precision"] >= target_precision]
    if not good:
        return None
    return max(good, key=lambda row: (row["coverage"], -row["threshold"]))["threshold"]


def default_thresholds(start: float = 0.30, stop: float = 0.95, step: float = 0.05) -> list[float]:
    count = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 4) for i in range(count)]


def summarize(
    outcomes: Sequence[QueryOutcome],
    *,
    radius_m: float,
    thresholds: Sequence[float],
    target_precision: float,
) -> dict:
    if not outcomes:
        raise ValueError("no queries to evaluate")
    top1_errors = [o.top1_error_m for o in outcomes]
    estimate_errors = [o.estimate_error_m for o in outcomes]
    sweep = threshold_sweep(outcomes, thresholds, radius_m)
    answerable = [o for o in outcomes if o.answerable]
    return {
        "queries": len(outcomes),
        "radius_m": radius_m,
        "answerable": len(answerable),
        "estimate_within_radius_of_answerable": (
            sum(o.estimate_error_m <= radius_m for o in answerable) / len(answerable) if answerable else None
        ),
        "verification": verification_split(outcomes, radius_m),
        "recall": {f"@{k}": recall_at_k(outcomes, k, radius_m) for k in RECALL_KS},
        "within_km": {"top1": share_within_km(top1_errors), "estimate": share_within_km(estimate_errors)},
        "median_error_m": {"top1": median(top1_errors), "estimate": median(estimate_errors)},
        "thresholds": sweep,
        "target_precision": target_precision,
        "recommended_threshold": recommend_threshold(sweep, target_precision),
    }


def verification_split(outcomes: Sequence[QueryOutcome], radius_m: float) -> dict:
    """How often answers were right (estimate within the radius) with a verified top match, and without."""
    split = {}
    for name, group in (
        ("verified", [o for o in outcomes if o.verified]),
        ("unverified", [o for o in outcomes if not o.verified]),
    ):
        right = sum(o.estimate_error_m <= radius_m for o in group)
        split[name] = {"queries": len(group), "right": right, "precision": right / len(group) if group else None}
    return split
