"""Request and response shapes of the REST API."""

import math
from dataclasses import asdict

from django.conf import settings
from rest_framework import serializers

from similarity.api.responses import SimilarResponseSerializer
from similarity.gallery.images import ACCEPTED_NAMES, ImageRejected, format_size, open_image
from similarity.gallery.intake import ADDED, Refused, add_photo, check_photo
from similarity.gallery.thumbnails import thumbnail_url
from similarity.geometry import priors
from similarity.models import ReferencePhoto, parse_number, validate_latitude, validate_longitude
from similarity.search import Match, SearchResult


def check_upload_size(upload) -> None:
    limit = settings.SIMILARITY_MAX_UPLOAD_BYTES
    if upload.size == 0:
        raise serializers.ValidationError("The uploaded file is empty.")
    if upload.size > limit:
        raise serializers.ValidationError(
            f"The file is {format_size(upload.size)}; at most {format_size(limit)} is accepted."
        )


def decode_upload(upload, *, draft_size: int | None = None, lookup: bool = True):
    """Size-check and decode an uploaded image; ValidationError names the problem."""
    check_upload_size(upload)
    try:
        return open_image(upload, draft_size=draft_size, lookup=lookup)
    except ImageRejected as exc:
        raise serializers.ValidationError(str(exc)) from None


class FiniteFloatField(serializers.FloatField):
    """A finite number written plainly: what float() stretches to read ('1_0', full-width digits) is refused."""

    def to_internal_value(self, data):
        try:
            value = parse_number(data)
        except ValueError:
            self.fail("invalid")
        if not math.isfinite(value):
            raise serializers.ValidationError("Must be a finite number.")
        return value


class SimilarQuerySerializer(serializers.Serializer):
    image = serializers.FileField(help_text=f"The query photo ({ACCEPTED_NAMES}).")
    top_k = serializers.IntegerField(required=False, min_value=1, help_text="How many matches (default 5, at most 50).")
    threshold = FiniteFloatField(
        required=False, min_value=-1.0, max_value=1.0, help_text="Similarity needed to report coordinates."
    )
    near = serializers.CharField(
        required=False, max_length=100, help_text="Location prior: '<latitude>,<longitude>', with radius_km."
    )
    radius_km = serializers.CharField(required=False, max_length=40, help_text="Radius of the near prior, in km.")
    verify = serializers.ChoiceField(
        choices=["all", "first", "off"],
        required=False,
        help_text="Geometric verification of the top matches: all, first (stop at the first verified) or off "
        "(default SIMILARITY_VERIFY).",
    )
    explain = serializers.BooleanField(
        required=False,
        default=False,
        help_text="With 1, each verified match carries its correspondences: up to 100 pairs of points, one in the "
        "query and one in the reference photo, that agree on one camera geometry (why the match is trusted).",
    )
    bbox = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Location prior: '<south>,<west>,<north>,<east>' (west > east crosses the antimeridian).",
    )

    def validate(self, data):
        try:
            prior = priors.parse(
                data.pop("near", None), data.pop("radius_km", None), data.pop("bbox", None), parse_number=parse_number
            )
        except priors.PriorError as exc:
            raise serializers.ValidationError(str(exc)) from None
        data["priors"] = (prior,) if prior else ()
        return data

    def validate_top_k(self, value):
        if value > settings.SIMILARITY_MAX_TOP_K:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.SIMILARITY_MAX_TOP_K}."
            )
        return value

    def validate_image(self, upload):
        check_upload_size(upload)
        return upload


class LookupOptionsSerializer(SimilarQuerySerializer):
    image = None


class LocateQuerySerializer(SimilarQuerySerializer):
    all = serializers.BooleanField(required=False, default=False, help_text="Run every source.")


class TextQuerySerializer(LookupOptionsSerializer):
    q = serializers.CharField(max_length=500, help_text="What the photo shows, e.g. 'a cathedral at night'.")


PUBLIC_PHOTO_FIELDS = [
    "id",
    "title",
    "address",
    "latitude",
    "longitude",
    "source",
    "license",
    "image_url",
    "thumbnail_url",
    "width",
    "height",
]


class PublicReferencePhotoSerializer(serializers.ModelSerializer):
    """What anyone allowed to look up may see of an active photo: no notes, hashes, states or errors."""

    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = ReferencePhoto
        fields = PUBLIC_PHOTO_FIELDS
        read_only_fields = PUBLIC_PHOTO_FIELDS

    def get_image_url(self, photo) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(photo.image.url) if request else photo.image.url

    def get_thumbnail_url(self, photo) -> str | None:
        url = thumbnail_url(photo.image.name)
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request and url else url


class ReferencePhotoSerializer(PublicReferencePhotoSerializer):
    """Everything, for staff: the public fields, the curators' notes and the photo's state."""

    image = serializers.ImageField(write_only=True, required=True)
    # Both left out: the photo's GPS EXIF (similarity/gallery/intake.py)
    latitude = FiniteFloatField(validators=[validate_latitude], required=False)
    longitude = FiniteFloatField(validators=[validate_longitude], required=False)

    class Meta:
        model = ReferencePhoto
        fields = [
            *PUBLIC_PHOTO_FIELDS,
            "image",
            "notes",
            "sha256",
            "is_active",
            "embedding_status",
            "embedding_error",
            "created",
            "updated",
        ]
        read_only_fields = [
            "image_url",
            "thumbnail_url",
            "width",
            "height",
            "sha256",
            "embedding_status",
            "embedding_error",
            "created",
            "updated",
        ]
        # A multipart form that omits the box must not deactivate the photo.
        extra_kwargs = {"is_active": {"default": True}}

    def get_fields(self):
        fields = super().get_fields()
        if (
            self.instance is not None
            and not isinstance(self.instance, (list, tuple))
            and getattr(self.instance, "pk", None)
        ):
            fields["image"].required = False
        return fields

    def validate_image(self, upload):
        check_upload_size(upload)
        return upload

    def validate(self, attrs):
        """A new file goes through the intake's checks (similarity/gallery/intake.py); a replaced one keeps the
        photo's coordinates unless new ones come with it."""
        attrs = super().validate(attrs)
        self._checked = None
        upload = attrs.get("image")
        if upload is None:
            return attrs
        replacing = self.instance if isinstance(self.instance, ReferencePhoto) else None
        latitude = attrs.get("latitude", replacing.latitude if replacing else None)
        longitude = attrs.get("longitude", replacing.longitude if replacing else None)
        try:
            self._checked = check_photo(upload, latitude, longitude, replacing=replacing)
        except Refused as exc:
            raise serializers.ValidationError({exc.field: exc.reason}) from None
        attrs["latitude"], attrs["longitude"] = self._checked.latitude, self._checked.longitude
        return attrs

    def create(self, validated_data):
        upload = validated_data.pop("image")
        added = add_photo(upload, photo=ReferencePhoto(**validated_data), checked=self._checked)
        if added.outcome != ADDED:  # another upload of the same file won the race
            raise serializers.ValidationError({"image": added.reason})
        return added.photo


def _absolute(request, url: str | None) -> str | None:
    return request.build_absolute_uri(url) if url else None


def match_payload(match: Match, request) -> dict:
    photo = match.photo
    return {
        "id": photo.pk,
        "title": photo.title,
        "image_url": request.build_absolute_uri(photo.image.url),
        "thumbnail_url": _absolute(request, thumbnail_url(photo.image.name)),
        "similarity": round(match.similarity, 6),
        "verified": match.verified,
        "inliers": match.inliers,
        "metadata": {"lat": photo.latitude, "lon": photo.longitude, "address": photo.address},
        **({"correspondences": asdict(match.explanation)} if match.explanation else {}),
    }


def search_payload(result: SearchResult, request) -> dict:
    """The response shape the geolocation pipeline expects from /api/similar/ (responses.SimilarResponseSerializer)."""
    best = result.best
    coordinates = None
    estimate, estimate_match = result.estimate, result.estimate_match
    if result.confident and estimate is not None and estimate_match is not None:
        coordinates = {
            "latitude": round(estimate.latitude, 7),
            "longitude": round(estimate.longitude, 7),
            "source": "clip_similarity",
            "confidence": estimate.confidence,
            "matched_image": match_payload(estimate_match, request),
            "radius_m": estimate.radius_m,
            "cluster_size": estimate.cluster_size,
            "method": estimate.method,
        }
    payload = {
        "success": True,
        "coordinates": coordinates,
        "reason": result.reason,  # why coordinates is null (null when it is not)
        "prior": result.priors[0].as_dict() if result.priors else None,
        "clip_similarity": {
            "similarity": round(best.similarity, 6) if best else None,
            "threshold": result.threshold,
            "encoder": result.encoder.public_id,
            "all_matches": [match_payload(match, request) for match in result.matches],
        },
    }
    return SimilarResponseSerializer(payload).data


class CoverageQuerySerializer(serializers.Serializer):
    zoom = serializers.IntegerField(min_value=0, max_value=20, help_text="The map's zoom level.")
    bbox = serializers.CharField(
        required=False, help_text="'<south>,<west>,<north>,<east>': the area shown (default: all)."
    )
    state = serializers.ChoiceField(
        choices=["all", "ready", "pending", "failed"], default="all", help_text="Only photos in this embedding state."
    )
    active = serializers.ChoiceField(choices=["all", "yes", "no"], default="all")

    def validate_bbox(self, value):
        try:
            return priors.parse(bbox=value, parse_number=parse_number)
        except priors.PriorError as exc:
            raise serializers.ValidationError(str(exc)) from None


class CoverageCellSerializer(serializers.Serializer):
    zoom = serializers.IntegerField(min_value=0, max_value=22)
    x = serializers.IntegerField(min_value=0)
    y = serializers.IntegerField(min_value=0)
    state = serializers.ChoiceField(choices=["all", "ready", "pending", "failed"], default="all")
    active = serializers.ChoiceField(choices=["all", "yes", "no"], default="all")
