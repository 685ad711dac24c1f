"""The review queue: looked-up photos proposed as reference photos, for curators to approve or reject.

Nothing enters the gallery by itself. After a lookup whose final answer is
confident, the photo may be proposed (the web page's button, POST
/api/candidates/, or automatically once SIMILARITY_SUGGEST_CONFIDENCE is set
and reached): :func:`propose` keeps the photo with what the lookup found.
A curator corrects the position if needed and :func:`approve` makes it a
reference photo (embedded like any other), or :func:`reject` deletes its
file. A candidate that is a near-duplicate of a reference photo says so.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import PurePath

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from similarity import access
from similarity.gallery.intake import ADDED, add_photo
from similarity.gallery.thumbnails import delete_thumbnails
from similarity.models import Candidate, CandidateStatus, ReferencePhoto

logger = logging.getLogger(__name__)


class ProposalRefused(ValueError):
    """The photo cannot be proposed (or a candidate approved); the message says why."""


@dataclass(frozen=True)
class Proposal:
    """Where a lookup placed a photo, how sure it was, and what it matched."""

    latitude: float
    longitude: float
    confidence: float
    radius_m: float | None
    source: str
    matches: list[dict] = field(default_factory=list)  # [{"id": ..., "similarity": ...}], best first

    def __post_init__(self):  # a weighted centre carries float noise; 7 decimals are a centimetre
        object.__setattr__(self, "latitude", round(self.latitude, 7))
        object.__setattr__(self, "longitude", round(self.longitude, 7))

    @property
    def best_similarity(self) -> float | None:
        return self.matches[0]["similarity"] if self.matches else None


def proposal_from_locate(outcome) -> Proposal | None:
    """The proposal a locate outcome makes: its final answer, unless there is none or it is only coarse."""
    final = outcome.final
    if final is None or final.get("coarse"):
        return None
    similarity = next((report for report in outcome.sources if report.result and report.result.get("matches")), None)
    matches = (
        [{"id": m["id"], "similarity": m["similarity"]} for m in similarity.result["matches"]] if similarity else []
    )
    return Proposal(
        final["latitude"], final["longitude"], final["confidence"], final["radius_m"], final["source"], matches
    )


def proposal_from_search(result, source: str = "clip_similarity") -> Proposal | None:
    """The proposal a similarity search makes, when it is confident."""
    if not result.confident:
        return None
    estimate = result.estimate
    matches = [{"id": match.photo.pk, "similarity": round(match.similarity, 6)} for match in result.matches]
    return Proposal(estimate.latitude, estimate.longitude, estimate.confidence, estimate.radius_m, source, matches)


def propose(
    data: bytes,
    filename: str,
    proposal: Proposal,
    *,
    proposed_by=None,
    proposed_from: str | None = None,
    automatic: bool = False,
) -> Candidate:
    """Keep a looked-up photo as a candidate; ProposalRefused when it is in the gallery or the queue already."""
    digest = hashlib.sha256(data).hexdigest()
    existing = ReferencePhoto.objects.filter(sha256=digest).first()
    # a deactivated photo is nobody's business but its curators': to anyone else it is an unknown photo
    if existing is not None and (existing.is_active or access.sees_private_photos(proposed_by)):
        raise ProposalRefused(f"This photo is already in the gallery as photo {existing.pk}.")
    waiting = Candidate.objects.filter(sha256=digest, status=CandidateStatus.PENDING).first()
    if waiting is not None:
        raise ProposalRefused(f"This photo is already waiting for review as candidate {waiting.pk}.")
    near_duplicate = None
    if proposal.best_similarity is not None and proposal.best_similarity >= settings.SIMILARITY_NEAR_DUPLICATE:
        near_duplicate = ReferencePhoto.objects.filter(pk=proposal.matches[0]["id"]).first()
    candidate = Candidate(
        sha256=digest,
        latitude=proposal.latitude,
        longitude=proposal.longitude,
        confidence=proposal.confidence,
        radius_m=proposal.radius_m,
        source=proposal.source,
        best_similarity=proposal.best_similarity,
        matches=proposal.matches,
        near_duplicate_of=near_duplicate,
        title=PurePath(filename).stem[:200] if filename else "",
        proposed_by=proposed_by if proposed_by is not None and proposed_by.is_authenticated else None,
        proposed_from=proposed_from or None,
        automatic=automatic,
    )
    candidate.image.save(filename or "photo.jpg", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            candidate.save()
    except BaseException:
        candidate.image.delete(save=False)  # no orphan file when the row could not be stored
        raise
    logger.info("Candidate %s proposed (%s, confidence %.2f)", candidate.pk, proposal.source, proposal.confidence)
    return candidate


def approve(candidate: Candidate, reviewer) -> ReferencePhoto:
    """Make a pending candidate a reference photo at its (possibly corrected) position."""
    if candidate.status != CandidateStatus.PENDING:
        raise ProposalRefused(f"Candidate {candidate.pk} was already {candidate.get_status_display().lower()}.")
    with candidate.image.open("rb") as handle:
        file = ContentFile(handle.read(), name=PurePath(candidate.image.name).name)

    def mark_approved(photo: ReferencePhoto) -> None:
        candidate.status, candidate.photo = CandidateStatus.APPROVED, photo
        candidate.reviewed_by, candidate.reviewed_at = reviewer, timezone.now()
        candidate.save()

    added = add_photo(  # the save signal queues its embedding once this commits
        file,
        latitude=candidate.latitude,
        longitude=candidate.longitude,
        title=candidate.title,
        address=candidate.address,
        notes=candidate.notes,
        source=f"Proposed after a lookup ({candidate.source}, candidate {candidate.pk})",
        on_saved=mark_approved,
    )
    if added.outcome != ADDED or added.photo is None:
        raise ProposalRefused(added.reason)
    _delete_file(candidate)  # the reference photo has its own copy
    candidate.save()
    return added.photo


def reject(candidate: Candidate, reviewer) -> None:
    """Turn a pending candidate down: its file is deleted, the record stays for the history."""
    if candidate.status != CandidateStatus.PENDING:
        raise ProposalRefused(f"Candidate {candidate.pk} was already {candidate.get_status_display().lower()}.")
    _delete_file(candidate)
    candidate.status, candidate.reviewed_by, candidate.reviewed_at = CandidateStatus.REJECTED, reviewer, timezone.now()
    candidate.save()


def _delete_file(candidate: Candidate) -> None:
    if candidate.image:
        delete_thumbnails(candidate.image.name)
        candidate.image.delete(save=False)


# The source whose answers may become candidates by themselves: the gallery's own similar photos. A position
# a photo claims (its GPS EXIF) is anyone's to write, so it never makes a candidate without a person asking.
GALLERY_SOURCE = "clip_similarity"


def worth_suggesting(proposal: Proposal | None) -> bool:
    """Whether a lookup's proposal becomes a candidate by itself: SIMILARITY_SUGGEST_CONFIDENCE is set and
    reached, by an answer of the gallery's similar photos."""
    needed = settings.SIMILARITY_SUGGEST_CONFIDENCE
    return (
        needed is not None
        and proposal is not None
        and proposal.source == GALLERY_SOURCE
        and bool(proposal.matches)
        and proposal.confidence >= needed
    )


def suggest_automatically(
    data: bytes, filename: str, proposal: Proposal | None, *, proposed_by=None, proposed_from=None
) -> Candidate | None:
    """Keep a lookup as a candidate when :func:`worth_suggesting` says so (quietly otherwise). The caller counts
    it against the client's proposal budgets first (api/throttles.charge_proposal)."""
    if proposal is None or not worth_suggesting(proposal):
        return None
    try:
        return propose(data, filename, proposal, proposed_by=proposed_by, proposed_from=proposed_from, automatic=True)
    except ProposalRefused:
        return None
