"""Nearest reference photos for a query vector, image, photo or text.

A query is answered from two parts that together always reflect the database:

* the persisted FAISS snapshot (``similarity.index``), whose candidates are checked
  against the database so deleted, deactivated or re-embedded photos never
  come back with a stale vector;
* the *delta*: vectors stored since the snapshot was built, read from the
  database and searched exactly beside it.

So a newly embedded photo is findable at once, without a rebuild, and a
missing or corrupt snapshot only costs speed, never answers. With
SIMILARITY_VECTOR_BACKEND=milvus a Milvus server answers instead, its hits
checked against the database the same way (``vector_store.py``).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np
from django.conf import settings
from django.db.models import Q

from similarity import index
from similarity.geometry import priors as location_priors
from similarity.geometry.estimate import (
    VERIFIED_METHOD,
    CandidatePosition,
    Estimate,
    estimate_position,
    verified_estimate,
)
from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.runtime.encoders import Encoder
from similarity.search import features, shared_index, vector_store
from similarity.search.vectors import get_encoder
from similarity.timing import stage

logger = logging.getLogger(__name__)


class IndexEncoderMismatch(RuntimeError):
    """The index was built by another encoder than the one asked to search."""


@dataclass(frozen=True)
class Explanation:
    """Why a match is verified: corresponding points of the query and the reference photo (fractions of each
    photo's width and height, from the left and the top), a sample of ``total`` such pairs."""

    query: list[list[float]]
    reference: list[list[float]]
    total: int


@dataclass(frozen=True)
class Match:
    photo: ReferencePhoto
    similarity: float
    inliers: int | None = None  # geometric verification's count, when it checked this match
    verified: bool = False  # at least SIMILARITY_VERIFY_MIN_INLIERS: the same scene, point for point
    explanation: Explanation | None = None  # the inlier correspondences, when asked for (explain)


@dataclass
class SearchResult:
    encoder: Encoder
    matches: list[Match]
    threshold: float
    priors: tuple = ()  # location priors every match lies inside (priors.Box / priors.Circle)

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def positions(self) -> list[CandidatePosition]:
        """Where each match was taken, with its similarity, best first."""
        return [CandidatePosition(m.photo.latitude, m.photo.longitude, m.similarity) for m in self.matches]

    @cached_property
    def estimate(self) -> Estimate | None:
        """Position from the strongest group of matches, or from the verified matches around a verified top
        match (None without matches)."""
        grouped = estimate_position(
            self.positions,
            threshold=self.threshold,
            cluster_radius_m=settings.SIMILARITY_CLUSTER_RADIUS_M,
            temperature=settings.SIMILARITY_ESTIMATE_TEMPERATURE,
        )
        if self.matches and self.matches[0].verified:
            return verified_estimate(
                self.positions,
                [m.inliers if m.verified and m.inliers else 0 for m in self.matches],
                grouped,
                cluster_radius_m=settings.SIMILARITY_CLUSTER_RADIUS_M,
            )
        return grouped

    @property
    def estimate_match(self) -> Match | None:
        """The strongest match of the winning group."""
        return self.matches[self.estimate.members[0]] if self.estimate else None

    @property
    def confident(self) -> bool:
        """Whether the top match is verified, or the winning group's best match reaches the threshold."""
        if self.estimate is None:
            return False
        return self.estimate.method == VERIFIED_METHOD or self.estimate.best_similarity >= self.threshold

    @property
    def reason(self) -> str | None:
        """Why there are no coordinates (None when there are)."""
        if self.confident:
            return None
        if not self.matches or self.estimate is None:
            if self.priors:
                return "No embedded reference photo lies inside the location prior."
            return "The reference gallery has no embedded photos yet."
        return f"Best similarity {self.estimate.best_similarity:.3f} is below the threshold {self.threshold:.2f}."


def delta_counts(manifest: index.IndexManifest) -> tuple[int, int]:
    """(vectors stored since the snapshot was built, snapshot vectors no longer current)."""
    vectors = PhotoEmbedding.current(manifest.encoder)
    built_at = manifest.built_at_datetime
    added = vectors.filter(updated__gt=built_at).count()
    removed = manifest.count - vectors.filter(updated__lte=built_at).count()
    return added, removed


def _delta(encoder_id: str, since: datetime | None, priors=()):
    rows = PhotoEmbedding.current(encoder_id)
    if since is not None:
        rows = rows.filter(updated__gt=since)
    if priors:
        rows = rows.filter(_inside_bounds(priors))
    ids, vectors = [], []
    for photo_id, dim, blob, latitude, longitude in rows.values_list(
        "photo_id", "dim", "vector", "photo__latitude", "photo__longitude"
    ):
        if priors and not location_priors.contains(priors, latitude, longitude):
            continue
        ids.append(photo_id)
        vectors.append(np.frombuffer(bytes(blob), dtype=np.float32, count=dim))
    return ids, vectors


def _inside_bounds(priors) -> Q:
    """Photos inside every prior's latitude/longitude box: a range query the database can answer."""
    inside = Q()
    for prior in priors:
        box = prior.bounds()
        inside &= Q(photo__latitude__gte=box.south, photo__latitude__lte=box.north)
        if box.crosses_antimeridian:
            inside &= Q(photo__longitude__gte=box.west) | Q(photo__longitude__lte=box.east)
        else:
            inside &= Q(photo__longitude__gte=box.west, photo__longitude__lte=box.east)
    return inside


def _snapshot_or_none(encoder_id: str) -> index.LoadedIndex | None:
    shared_index.refresh_in_background()  # a newer snapshot published by the worker, on hosts without its disk
    try:
        snapshot = index.load_index()
    except index.IndexCorrupt as exc:
        logger.error("%s Answering from stored vectors until the index is rebuilt.", exc)
        from similarity.search import maintenance

        broken = index.read_manifest()
        maintenance.ask_worker_once("rebuild broken index", broken.build_id if broken else "", verify_index=True)
        return None
    if snapshot is not None and snapshot.manifest.encoder != encoder_id:
        raise IndexEncoderMismatch(
            f"The index was built with encoder '{snapshot.manifest.encoder}' but queries use '{encoder_id}'. "
            f"Rebuild it: python manage.py build_clip_index --encoder {encoder_id} "
            f"(or set SIMILARITY_ENCODER={snapshot.manifest.encoder})."
        )
    return snapshot


def _snapshot_hits(
    snapshot: index.LoadedIndex, query: np.ndarray, wanted: int, skip: set[int], among: np.ndarray | None = None
) -> dict[int, float]:
    """Snapshot hits (only ids in ``among``, if given) still valid in the database, ``wanted`` of them when possible."""
    built_at = snapshot.manifest.built_at_datetime
    available = snapshot.manifest.count if among is None else len(among)
    k = wanted + len(skip) + 8
    while True:
        scores, ids = snapshot.search(query[None, :], k, among=among)
        candidates = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0 and int(i) not in skip}
        still_valid = set(
            PhotoEmbedding.current(snapshot.manifest.encoder)
            .filter(photo_id__in=list(candidates), updated__lte=built_at)
            .values_list("photo_id", flat=True)
        )
        hits = {photo_id: score for photo_id, score in candidates.items() if photo_id in still_valid}
        if len(hits) >= wanted or k >= available:
            return hits
        k = min(k * 4, available)


def search_vector(query: np.ndarray, encoder: Encoder, top_k: int, *, exclude_ids=(), priors=()) -> list[Match]:
    """The ``top_k`` active photos most similar to a unit vector, best first (inside every prior, if any)."""
    with stage("search"):
        return _search_vector(query, encoder, top_k, exclude_ids, tuple(priors))


def _search_vector(query: np.ndarray, encoder: Encoder, top_k: int, exclude_ids, priors: tuple) -> list[Match]:
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    skip = set(exclude_ids)
    if vector_store.uses_milvus():
        return _matches(vector_store.milvus_scores(encoder.id, query, top_k, skip, priors), top_k, priors)
    snapshot = _snapshot_or_none(encoder.id)
    if priors and snapshot is not None and snapshot.positions is None:
        snapshot = None  # built before positions were kept: the stored vectors answer until the rebuild
    since = snapshot.manifest.built_at_datetime if snapshot is not None else None
    delta_ids, delta_vectors = _delta(encoder.id, since, priors)
    scores: dict[int, float] = {}
    if snapshot is not None and snapshot.manifest.count:
        among = snapshot.positions.ids_inside(priors) if priors and snapshot.positions is not None else None
        if among is None or len(among):
            scores.update(_snapshot_hits(snapshot, query, top_k, skip | set(delta_ids), among))
    if delta_vectors:
        delta_scores = np.vstack(delta_vectors) @ query
        for photo_id, score in zip(delta_ids, delta_scores):
            if photo_id not in skip:
                scores[photo_id] = float(score)
    return _matches(scores, top_k, priors)


def _matches(scores: dict[int, float], top_k: int, priors: tuple) -> list[Match]:
    """The ``top_k`` best of (photo id, score), as matches of the photos (inside every prior, if any)."""
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    photos = ReferencePhoto.objects.in_bulk([photo_id for photo_id, _ in best])
    return [
        Match(photos[photo_id], min(1.0, score))
        for photo_id, score in best
        if photo_id in photos
        and (not priors or location_priors.contains(priors, photos[photo_id].latitude, photos[photo_id].longitude))
    ]


def threshold_for(encoder: Encoder, override: float | None = None) -> float:
    return float(override) if override is not None else encoder.default_threshold


def search_image(
    image,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    encoder: Encoder | None = None,
    priors=(),
    verify: str | None = None,
    explain: bool = False,
) -> SearchResult:
    """Photos most similar to an upright RGB PIL image, verified geometrically unless ``verify`` is off (with
    ``explain``, verified matches carry their correspondences).

    The query's local features are extracted on another thread while the
    model embeds it and the index answers.
    """
    encoder = encoder or get_encoder()
    top_k = top_k or settings.SIMILARITY_DEFAULT_TOP_K
    mode = features.verification_mode(verify)
    query_features = features.extract_in_background(image) if mode != "off" else None
    query = encoder.embed_images([image])[0]
    matches = search_vector(query, encoder, _candidates(top_k, mode), priors=priors)
    matches = _verified(matches, query_features, mode, explain)
    return SearchResult(encoder, matches[:top_k], threshold_for(encoder, threshold), tuple(priors))


def search_similar_to_photo(
    photo: ReferencePhoto,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    priors=(),
    verify: str | None = None,
    explain: bool = False,
) -> SearchResult:
    """Photos most similar to a stored reference photo, excluding itself (verified with its stored features)."""
    encoder = get_encoder()
    top_k = top_k or settings.SIMILARITY_DEFAULT_TOP_K
    stored = PhotoEmbedding.objects.filter(photo=photo, encoder=encoder.id, source_sha256=photo.sha256).first()
    if stored is None:
        raise LookupError(f"Photo {photo.pk} has no {encoder.id} embedding yet (status: {photo.embedding_status}).")
    mode = features.verification_mode(verify)
    matches = search_vector(stored.as_array(), encoder, _candidates(top_k, mode), exclude_ids={photo.pk}, priors=priors)
    query_features = features.stored_features(photo) if mode != "off" else None
    matches = _verified(matches, query_features, mode, explain)
    return SearchResult(encoder, matches[:top_k], threshold_for(encoder, threshold), tuple(priors))


def _verified(matches: list[Match], query_features, mode: str, explain: bool = False) -> list[Match]:
    """``matches`` reordered by geometric verification against the query's features (or a future of them);
    as they are when there is nothing to verify with."""
    if query_features is None or not matches:
        return matches
    with stage("verify"):
        if isinstance(query_features, Future):
            query_features = query_features.result()
        return features.verify_matches(matches, query_features, mode, explain)


def _candidates(top_k: int, mode: str) -> int:
    """How many matches to fetch: verification looks at SIMILARITY_VERIFY_TOP_N."""
    return top_k if mode == "off" else max(top_k, settings.SIMILARITY_VERIFY_TOP_N)


def search_text(text: str, *, top_k: int | None = None, threshold: float | None = None, priors=()) -> SearchResult:
    """Photos best described by a text (CLIP encoders only; TextNotSupported otherwise)."""
    encoder = get_encoder()
    top_k = top_k or settings.SIMILARITY_DEFAULT_TOP_K
    query = encoder.embed_text([text])[0]
    matches = search_vector(query, encoder, top_k, priors=priors)
    return SearchResult(encoder, matches, threshold_for(encoder, threshold), tuple(priors))
