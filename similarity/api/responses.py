"""Response bodies of the lookup endpoints, as serializers: the views render through them, so the
OpenAPI schema (drf-spectacular) documents exactly the fields a client gets."""

from rest_framework import serializers

from similarity.geometry.estimate import METHOD, VERIFIED_METHOD


class MatchMetadataSerializer(serializers.Serializer):
    lat = serializers.FloatField()
    lon = serializers.FloatField()
    address = serializers.CharField(allow_blank=True)


class CorrespondencesSerializer(serializers.Serializer):
    """Why a match is verified (``explain=1``): points of the query and of the reference photo that show the
    same thing and agree on one camera geometry, pair by pair, each as [x, y] fractions of its photo's width
    and height from the top left corner."""

    query = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2)
    )
    reference = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2)
    )
    total = serializers.IntegerField(help_text="All such pairs (the lists hold at most 100 of them, spread out).")


class MatchSerializer(serializers.Serializer):
    """A reference photo the query resembles."""

    id = serializers.IntegerField()
    title = serializers.CharField(allow_blank=True)
    image_url = serializers.URLField()
    thumbnail_url = serializers.URLField(allow_null=True)
    similarity = serializers.FloatField(help_text="Cosine similarity of the two images' vectors, in [-1, 1].")
    verified = serializers.BooleanField(help_text="Geometric verification found the same scene, point for point.")
    inliers = serializers.IntegerField(
        allow_null=True, help_text="Local feature matches that agree on one camera geometry (null: not checked)."
    )
    metadata = MatchMetadataSerializer()
    correspondences = CorrespondencesSerializer(
        required=False, help_text="Only with explain=1, on verified matches: the inliers' point pairs."
    )


class CoordinatesSerializer(serializers.Serializer):
    """Where the query photo was taken, by the similarity source."""

    latitude = serializers.FloatField()
    longitude = serializers.FloatField()
    source = serializers.CharField()
    confidence = serializers.FloatField(help_text="In [0, 1].")
    matched_image = MatchSerializer()
    radius_m = serializers.FloatField(help_text="Uncertainty radius in metres.")
    cluster_size = serializers.IntegerField(help_text="Matches in the group the estimate comes from.")
    method = serializers.ChoiceField(choices=[METHOD, VERIFIED_METHOD])


class PriorSerializer(serializers.Serializer):
    """A location prior: a box (south, west, north, east) or a circle (latitude, longitude, radius_km)."""

    type = serializers.ChoiceField(choices=["bbox", "near"])
    south = serializers.FloatField(required=False)
    west = serializers.FloatField(required=False)
    north = serializers.FloatField(required=False)
    east = serializers.FloatField(required=False)
    latitude = serializers.FloatField(required=False)
    longitude = serializers.FloatField(required=False)
    radius_km = serializers.FloatField(required=False)


class SimilaritySectionSerializer(serializers.Serializer):
    similarity = serializers.FloatField(allow_null=True, help_text="The best match's similarity (null: no match).")
    threshold = serializers.FloatField()
    encoder = serializers.CharField()
    all_matches = MatchSerializer(many=True)


class SimilarResponseSerializer(serializers.Serializer):
    """What /api/similar/ (and /api/photos/<id>/similar/, /api/similar/text/) answer."""

    success = serializers.BooleanField()
    coordinates = CoordinatesSerializer(allow_null=True, help_text="Null when no match is good enough.")
    reason = serializers.CharField(allow_null=True, help_text="Why coordinates is null (null when it is not).")
    prior = PriorSerializer(allow_null=True)
    clip_similarity = SimilaritySectionSerializer()


class FinalAnswerSerializer(serializers.Serializer):
    source = serializers.CharField()
    latitude = serializers.FloatField()
    longitude = serializers.FloatField()
    confidence = serializers.FloatField()
    radius_m = serializers.FloatField(allow_null=True)
    coarse = serializers.BooleanField(required=False, help_text="Only a coarse answer came (a town, a region).")


class SourceReportSerializer(serializers.Serializer):
    name = serializers.CharField()
    priority = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["success", "coarse", "no_result", "error", "skipped"])
    detail = serializers.CharField(allow_blank=True)
    result = serializers.DictField(allow_null=True, help_text="The source's own answer and details.")
    elapsed_ms = serializers.FloatField()


class LocateResponseSerializer(serializers.Serializer):
    """What /api/locate/ answers: every source's report in priority order, and the final answer."""

    final = FinalAnswerSerializer(allow_null=True)
    prior = PriorSerializer(allow_null=True)
    sources = SourceReportSerializer(many=True)
