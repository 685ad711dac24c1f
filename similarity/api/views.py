"""REST endpoints: similarity lookups, the reference-photo gallery, statistics."""

import logging
import uuid

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from similarity import access, search
from similarity.api import pricing
from similarity.api.heavy import verification_slot
from similarity.api.permissions import CuratorsOnly, LookupAllowed, StaffEditsGallery
from similarity.api.responses import LocateResponseSerializer, SimilarResponseSerializer
from similarity.api.serializers import (
    CoverageCellSerializer,
    CoverageQuerySerializer,
    LocateQuerySerializer,
    LookupOptionsSerializer,
    PublicReferencePhotoSerializer,
    ReferencePhotoSerializer,
    SimilarQuerySerializer,
    TextQuerySerializer,
    decode_upload,
    search_payload,
)
from similarity.api.throttles import (
    LargeImageThrottle,
    LookupThrottle,
    ProposalStorageThrottle,
    ProposalThrottle,
    ReadThrottle,
    charge_proposal,
)
from similarity.clients import client_ip
from similarity.gallery import coverage, review
from similarity.gallery.images import ImageRejected
from similarity.gallery.thumbnails import thumbnail_url
from similarity.index.milvus import MilvusUnavailable
from similarity.locate import locate
from similarity.locate.sources import decoded_query
from similarity.models import ReferencePhoto
from similarity.runtime.encoders import EncoderUnavailable, TextNotSupported
from similarity.search.vectors import get_encoder
from similarity.stats import cached_gallery_stats

logger = logging.getLogger(__name__)


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


ENCODER_UNAVAILABLE = "The image model cannot be loaded on this server; its log says why and how to fix it."


def run_search(function, *args, **kwargs):
    """Call a search function, turning setup problems into clear HTTP errors (details only in the log)."""
    try:
        return function(*args, **kwargs)
    except EncoderUnavailable as exc:
        logger.error("%s", exc)
        raise ServiceUnavailable(ENCODER_UNAVAILABLE) from None
    except search.IndexEncoderMismatch as exc:
        raise Conflict(str(exc)) from None
    except MilvusUnavailable as exc:
        logger.error("%s", exc)
        raise ServiceUnavailable("The vector store cannot be reached at the moment; try again shortly.") from None


def keep_query(upload) -> None:
    """Store a looked-up photo when SIMILARITY_KEEP_QUERIES says so (never under the client's name)."""
    if not settings.SIMILARITY_KEEP_QUERIES:
        return
    upload.seek(0)
    default_storage.save(f"queries/{timezone.now():%Y-%m-%d}/{uuid.uuid4().hex}.img", File(upload))
    upload.seek(0)


class SimilarView(APIView):
    """POST a photo, get the most similar reference photos and, when confident, coordinates."""

    permission_classes = [LookupAllowed]
    throttle_classes = [LookupThrottle, LargeImageThrottle]
    parser_classes = [MultiPartParser, FormParser]
    lookup_kind = pricing.UPLOAD

    @extend_schema(request={"multipart/form-data": SimilarQuerySerializer}, responses={200: SimilarResponseSerializer})
    def post(self, request):
        query = SimilarQuerySerializer(data=request.data)
        query.is_valid(raise_exception=True)
        encoder = run_search(get_encoder)
        try:
            image = decode_upload(query.validated_data["image"], draft_size=encoder.draft_size)
        except ValidationError as exc:
            raise ValidationError({"image": exc.detail}) from None
        keep_query(query.validated_data["image"])
        with verification_slot(request):
            result = run_search(
                search.search_image,
                image,
                top_k=query.validated_data.get("top_k"),
                threshold=query.validated_data.get("threshold"),
                encoder=encoder,
                priors=query.validated_data["priors"],
                verify=query.validated_data.get("verify"),
                explain=query.validated_data.get("explain", False),
            )
        upload = query.validated_data["image"]
        proposal = review.proposal_from_search(result)
        if review.worth_suggesting(proposal) and charge_proposal(request, self):
            upload.seek(0)
            review.suggest_automatically(
                upload.read(), upload.name, proposal, proposed_by=request.user, proposed_from=client_ip(request)
            )
        return Response(search_payload(result, request))


class LocateView(APIView):
    """POST a photo; every configured source in priority order, and the final answer."""

    permission_classes = [LookupAllowed]
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [LookupThrottle, LargeImageThrottle]
    lookup_kind = pricing.UPLOAD

    @extend_schema(
        request={"multipart/form-data": LocateQuerySerializer},
        parameters=[OpenApiParameter("all", bool, description="Run every source, not only until the first answer.")],
        responses={200: LocateResponseSerializer},
    )
    def post(self, request):
        query = LocateQuerySerializer(data=request.data)
        query.is_valid(raise_exception=True)
        run_all = request.query_params.get("all", "").lower() in {"1", "true", "yes"} or query.validated_data.get("all")
        with verification_slot(request):
            locate_query, outcome = run_locate(query.validated_data, run_all=run_all)
        keep_query(query.validated_data["image"])
        upload = query.validated_data["image"]
        proposal = review.proposal_from_locate(outcome)
        if review.worth_suggesting(proposal) and charge_proposal(request, self):
            review.suggest_automatically(
                locate_query.data, upload.name, proposal, proposed_by=request.user, proposed_from=client_ip(request)
            )
        return Response(LocateResponseSerializer(outcome.as_dict()).data)


def run_locate(validated: dict, *, run_all: bool):
    """The locate pipeline on a validated upload: (the query, its outcome); a file that is no image is a 400."""
    options = {key: validated[key] for key in ("top_k", "threshold", "verify", "explain") if key in validated}
    try:
        locate_query = decoded_query(validated["image"].read(), options=options, priors=validated["priors"])
    except ImageRejected as exc:  # a bad file is the client's error
        raise ValidationError({"image": [str(exc)]}) from None
    return locate_query, locate(locate_query, run_all=run_all)


class CandidateView(APIView):
    """POST a photo to propose it as a reference photo.

    It is looked up (every source); when the final answer is confident, the
    photo is kept with that answer for a curator to review (201). The client
    says nothing about where it was taken: the proposal is the service's own.
    """

    permission_classes = [LookupAllowed]
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [LookupThrottle, LargeImageThrottle, ProposalThrottle, ProposalStorageThrottle]
    lookup_kind = pricing.UPLOAD

    @extend_schema(request={"multipart/form-data": SimilarQuerySerializer}, responses={201: dict})
    def post(self, request):
        query = SimilarQuerySerializer(data=request.data)
        query.is_valid(raise_exception=True)
        with verification_slot(request):
            locate_query, outcome = run_locate(query.validated_data, run_all=True)
        proposal = review.proposal_from_locate(outcome)
        if proposal is None:
            raise ValidationError("No source is confident about this photo: there is nothing to propose.")
        try:
            candidate = review.propose(
                locate_query.data,
                query.validated_data["image"].name,
                proposal,
                proposed_by=request.user,
                proposed_from=client_ip(request),
            )
        except review.ProposalRefused as exc:
            raise ValidationError(str(exc)) from None
        body = {
            "success": True,
            "candidate": {
                "id": candidate.pk,
                "status": candidate.status,
                "latitude": candidate.latitude,
                "longitude": candidate.longitude,
                "confidence": candidate.confidence,
                "radius_m": candidate.radius_m,
                "source": candidate.source,
                "near_duplicate_of": candidate.near_duplicate_of_id,
            },
        }
        return Response(body, status=status.HTTP_201_CREATED)


class TextSearchView(APIView):
    """GET /api/similar/text/?q=... -- photos matching a description (CLIP encoders)."""

    permission_classes = [LookupAllowed]
    throttle_classes = [LookupThrottle]
    lookup_kind = pricing.TEXT

    @extend_schema(parameters=[TextQuerySerializer], responses={200: SimilarResponseSerializer})
    def get(self, request):
        query = TextQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            result = run_search(
                search.search_text,
                query.validated_data["q"],
                top_k=query.validated_data.get("top_k"),
                threshold=query.validated_data.get("threshold"),
                priors=query.validated_data["priors"],
            )
        except TextNotSupported as exc:
            return Response({"success": False, "error": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(search_payload(result, request))


class ReferencePhotoViewSet(viewsets.ModelViewSet):
    """The gallery: everyone allowed to look up reads the public fields of active photos; staff see and change all."""

    queryset = ReferencePhoto.objects.all()
    serializer_class = ReferencePhotoSerializer
    permission_classes = [StaffEditsGallery]
    lookup_kind = pricing.STORED  # what the similar action starts from (api/pricing.py)

    def _private(self) -> bool:
        """Whether this client sees inactive photos and private fields (similarity/access.py)."""
        return access.sees_private_photos(self.request.user)

    def get_queryset(self):
        photos = super().get_queryset()
        return photos if self._private() else photos.filter(is_active=True)

    def get_serializer_class(self):
        if self.request.method not in SAFE_METHODS:  # writing needs staff with the permission for it
            return ReferencePhotoSerializer
        return ReferencePhotoSerializer if self._private() else PublicReferencePhotoSerializer

    parser_classes = [MultiPartParser, FormParser]

    def get_throttles(self):
        if self.action == "similar":
            return super().get_throttles()
        return [ReadThrottle()] if self.request.method in SAFE_METHODS else []  # writes need staff rights

    @extend_schema(
        parameters=[OpenApiParameter("top_k", int), OpenApiParameter("threshold", float)],
        responses={200: SimilarResponseSerializer},
    )
    @action(detail=True, methods=["get"], permission_classes=[LookupAllowed], throttle_classes=[LookupThrottle])
    def similar(self, request, pk=None):
        photo = self.get_object()
        options = LookupOptionsSerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        try:
            with verification_slot(request):
                result = run_search(
                    search.search_similar_to_photo,
                    photo,
                    top_k=options.validated_data.get("top_k"),
                    threshold=options.validated_data.get("threshold"),
                    priors=options.validated_data["priors"],
                    verify=options.validated_data.get("verify"),
                    explain=options.validated_data.get("explain", False),
                )
        except LookupError as exc:
            return Response({"success": False, "error": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(search_payload(result, request))


class StatsView(APIView):
    permission_classes = [LookupAllowed]
    throttle_classes = [ReadThrottle]

    @extend_schema(responses={200: dict})
    def get(self, request):
        stats = run_search(cached_gallery_stats)
        if not (request.user and request.user.is_staff):
            stats.pop("runtime_candidates", None)  # build errors may quote the machine; staff only
        return Response({"success": True, **stats})


def _photos_for(validated) -> QuerySet:
    photos = ReferencePhoto.objects.all()
    if validated["state"] != "all":
        photos = photos.filter(embedding_status=validated["state"])
    if validated["active"] != "all":
        photos = photos.filter(is_active=validated["active"] == "yes")
    return photos


class CoverageView(APIView):
    """GET the gallery as GeoJSON cells with photo counts, for the coverage map (curators)."""

    permission_classes = [CuratorsOnly]

    @extend_schema(parameters=[CoverageQuerySerializer], responses={200: dict})
    def get(self, request):
        query = CoverageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        box = query.validated_data.get("bbox")
        bounds = (box.south, box.west, box.north, box.east) if box else (-90.0, -180.0, 90.0, 180.0)
        zoom = coverage.cell_zoom_for(query.validated_data["zoom"])
        try:
            cells = coverage.cells(_photos_for(query.validated_data), zoom, *bounds)
        except coverage.CoverageError as exc:
            raise ValidationError(str(exc)) from None
        return Response(
            {
                "type": "FeatureCollection",
                "cell_zoom": zoom,
                "total": sum(cell.count for cell in cells),
                "features": [cell.as_feature() for cell in cells],
            }
        )


class CoverageCellView(APIView):
    """GET the photos of one coverage cell (the first 50, and how many there are)."""

    permission_classes = [CuratorsOnly]

    @extend_schema(parameters=[CoverageCellSerializer], responses={200: dict})
    def get(self, request):
        query = CoverageCellSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        try:
            photos = coverage.in_cell(_photos_for(data), data["zoom"], data["x"], data["y"]).order_by("pk")
        except coverage.CoverageError as exc:
            raise ValidationError(str(exc)) from None
        listed = [
            {
                "id": photo.pk,
                "title": str(photo),
                "latitude": photo.latitude,
                "longitude": photo.longitude,
                "embedding_status": photo.embedding_status,
                "is_active": photo.is_active,
                "thumbnail_url": thumbnail_url(photo.image.name) if photo.image else None,
                "admin_url": reverse("admin:similarity_referencephoto_change", args=[photo.pk]),
            }
            for photo in photos[:50]
        ]
        return Response({"count": photos.count(), "photos": listed})
