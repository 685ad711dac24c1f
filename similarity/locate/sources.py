"""Built-in locate sources: the photo's own GPS EXIF, and similar reference photos; and the query they share."""

from __future__ import annotations

from dataclasses import asdict

from similarity import search
from similarity.gallery.thumbnails import thumbnail_url
from similarity.geometry.estimate import Estimate
from similarity.geometry.geo import haversine_m
from similarity.locate import LocateQuery, Location, NoLocation
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search.vectors import get_encoder


def decoded_query(data: bytes, *, options: dict | None = None, priors=()) -> LocateQuery:
    """A query on these bytes, decoded once up front at the draft size of the similarity source's encoder
    (ImageRejected for a file that is no image): what /api/locate/ and the batches both run the sources on."""
    try:
        draft_size = get_encoder().draft_size
    except EncoderUnavailable:
        draft_size = None  # the similarity source reports the problem itself
    query = LocateQuery(data, draft_size=draft_size, options=dict(options or {}), priors=priors)
    query.image  # noqa: B018  (decodes and keeps it)
    return query


class ExifGpsSource:
    """The position the camera wrote into the photo, when present and valid."""

    name = "exif_gps"

    def __init__(self, confidence: float = 0.95, radius_m: float = 30.0):
        self.confidence = confidence
        self.radius_m = radius_m

    def locate(self, query: LocateQuery) -> Location:
        position = query.gps
        if position is None:
            raise NoLocation("The photo has no usable GPS EXIF.")
        return Location(position.latitude, position.longitude, self.confidence, self.radius_m)


class ReferenceSimilaritySource:
    """The estimate from the most similar reference photos (see similarity/geometry/estimate.py)."""

    name = "clip_similarity"

    def __init__(self, top_k: int | None = None):
        self.top_k = top_k

    def locate(self, query: LocateQuery) -> Location:
        result = search.search_image(
            query.image,
            top_k=query.options.get("top_k", self.top_k),
            threshold=query.options.get("threshold"),
            priors=query.priors,
            verify=query.options.get("verify"),
            explain=bool(query.options.get("explain")),
        )
        estimate = result.estimate
        matches = [
            {
                "id": m.photo.pk,
                "title": m.photo.title,
                "similarity": round(m.similarity, 6),
                "verified": m.verified,
                "inliers": m.inliers,
                "latitude": m.photo.latitude,
                "longitude": m.photo.longitude,
                "image_url": m.photo.image.url,
                "thumbnail_url": thumbnail_url(m.photo.image.name),
                "distance_m": distance_from(estimate, m.photo),
                **({"correspondences": asdict(m.explanation)} if m.explanation else {}),
            }
            for m in result.matches
        ]
        data = {
            "encoder": result.encoder.public_id,
            "threshold": result.threshold,
            "priors": [prior.as_dict() for prior in result.priors],
            "matches": matches,
        }
        best = result.estimate_match
        if not result.confident or estimate is None or best is None:
            raise NoLocation(result.reason or "No confident match.", data)
        data.update(
            similarity=round(estimate.best_similarity, 6),
            cluster_size=estimate.cluster_size,
            method=estimate.method,
            matched_image=best.photo.pk,
        )
        return Location(estimate.latitude, estimate.longitude, estimate.confidence, estimate.radius_m, data)


def distance_from(estimate: Estimate | None, photo) -> float | None:
    """Metres from the estimate to a matched photo (there is an estimate whenever there are matches)."""
    if estimate is None:
        return None
    return round(haversine_m(estimate.latitude, estimate.longitude, photo.latitude, photo.longitude), 1)
