"""Where a query photo was probably taken, from its top-k matches.

Matches are weighted by similarity (a softmax with temperature, so the best
matches dominate), grouped when they lie within ``cluster_radius_m`` of a
group's first (strongest) member, and the group with the largest total weight
wins. The answer is that group's weighted centre, an uncertainty radius (the
weighted RMS distance of its members from the centre, never below
``min_radius_m``), and a confidence in [0, 1]: how far the group's best
similarity clears the threshold, times the group's share of all the weight.
Groups are tight (50 m by default): at 250 m, neighbouring streets joined
one group and pulled correct top-1 answers away (issue 15).

When geometric verification confirmed the top match, the answer is the
centre of the verified matches within the group radius of it, weighted by
their inlier counts (:func:`verified_estimate`), with its confidence raised:
photos of one scene are taken from around it, and the one that shares most
points with the query shares most of its viewpoint (places gallery,
leave-one-out: median error 3.2 m, against 6.3 m for the top match's own
position; bench/RESULTS.md, issue 27).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from similarity.geometry.geo import haversine_m, weighted_centre

METHOD = "similarity_weighted_cluster"
VERIFIED_METHOD = "verified_match"
# What a verified top match is worth: verified answers were right 25/29, 45/45 and 9/9 on three sets (issue 15)
VERIFIED_CONFIDENCE = 0.9


@dataclass(frozen=True)
class CandidatePosition:
    latitude: float
    longitude: float
    similarity: float


@dataclass(frozen=True)
class Estimate:
    latitude: float
    longitude: float
    confidence: float
    radius_m: float
    cluster_size: int
    best_similarity: float
    members: tuple[int, ...]  # indexes into the candidates, strongest first
    method: str = METHOD


def estimate_position(
    candidates: Sequence[CandidatePosition],
    *,
    threshold: float,
    cluster_radius_m: float = 50.0,
    temperature: float = 0.01,
    min_radius_m: float = 25.0,
    confidence_scale: float = 0.1,
) -> Estimate | None:
    """The strongest group's position, or None without candidates."""
    if not candidates:
        return None
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].similarity)
    best = candidates[order[0]].similarity
    weights = {i: math.exp((candidates[i].similarity - best) / temperature) for i in order}

    groups: list[list[int]] = []
    for i in order:
        c = candidates[i]
        for group in groups:
            head = candidates[group[0]]
            if haversine_m(head.latitude, head.longitude, c.latitude, c.longitude) <= cluster_radius_m:
                group.append(i)
                break
        else:
            groups.append([i])

    winner = max(groups, key=lambda group: sum(weights[i] for i in group))
    points = [(candidates[i].latitude, candidates[i].longitude) for i in winner]
    member_weights = [weights[i] for i in winner]
    latitude, longitude = weighted_centre(points, member_weights)
    total = sum(member_weights)
    spread = math.sqrt(
        sum(w * haversine_m(latitude, longitude, lat, lon) ** 2 for (lat, lon), w in zip(points, member_weights))
        / total
    )
    share = total / sum(weights.values())
    group_best = candidates[winner[0]].similarity
    clearance = 1.0 / (1.0 + math.exp(-(group_best - threshold) / confidence_scale))
    return Estimate(
        latitude=latitude,
        longitude=longitude,
        confidence=round(min(1.0, max(0.0, clearance * share)), 4),
        radius_m=round(max(min_radius_m, spread), 1),
        cluster_size=len(winner),
        best_similarity=group_best,
        members=tuple(winner),
    )


def verified_estimate(
    candidates: Sequence[CandidatePosition],
    inliers: Sequence[int],
    grouped: Estimate | None,
    *,
    cluster_radius_m: float = 50.0,
    min_radius_m: float = 25.0,
) -> Estimate:
    """Where geometric verification puts the query: the centre of the verified candidates within
    ``cluster_radius_m`` of the top one, weighted by their inlier counts (``candidates`` best first, the top
    one verified; ``inliers`` theirs, 0 where unverified), with raised confidence."""
    top = candidates[0]
    members = [
        i
        for i, candidate in enumerate(candidates)
        if inliers[i] > 0
        and haversine_m(top.latitude, top.longitude, candidate.latitude, candidate.longitude) <= cluster_radius_m
    ]
    latitude, longitude = weighted_centre(
        [(candidates[i].latitude, candidates[i].longitude) for i in members], [float(inliers[i]) for i in members]
    )
    confidence = max(VERIFIED_CONFIDENCE, grouped.confidence if grouped is not None else 0.0)
    return Estimate(
        latitude=latitude,
        longitude=longitude,
        confidence=round(confidence, 4),
        radius_m=min_radius_m,
        cluster_size=len(members),
        best_similarity=top.similarity,
        members=tuple(members),
        method=VERIFIED_METHOD,
    )
