"""REST endpoints for batches: POST many photos (or zips) to /api/batches/, then read progress and results.

Signed-in clients only. A batch is answered 202 with its id and located in
the background (similarity/batches.py); ``GET /api/batches/<id>/`` reports
progress and the result rows so far, as JSON, or as a CSV or GeoJSON download
(``?format=csv`` / ``?format=geojson``, or the Accept header). A client sees
and deletes its own batches; staff allowed to view batches see everyone's.
"""

from __future__ import annotations

import json

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from similarity import access, batches
from similarity.api import pricing
from similarity.api.serializers import LookupOptionsSerializer
from similarity.api.throttles import BatchThrottle, ReadThrottle
from similarity.locate.batch import COLUMNS, csv_text, geojson
from similarity.models import LocateBatch


class BatchOptionsSerializer(LookupOptionsSerializer):
    """A batch's lookup options: top_k, threshold and verify apply to every photo."""

    near = radius_km = bbox = explain = None


class BatchCreateSerializer(BatchOptionsSerializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        allow_empty=False,
        help_text="The photos: image files, or zip files of them (each part named 'files').",
    )


class ResultsRenderer(BaseRenderer):
    """A batch's result rows in a download format (``rows_as``); anything else (an error) as JSON text."""

    charset = "utf-8"

    def rows_as(self, rows: list[dict]) -> str:
        raise NotImplementedError

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict) and "results" in data:
            return self.rows_as(data["results"]).encode()
        return json.dumps(data).encode()


class CsvResultsRenderer(ResultsRenderer):
    """The rows as CSV (locate/batch.py COLUMNS)."""

    media_type = "text/csv"
    format = "csv"

    def rows_as(self, rows: list[dict]) -> str:
        return csv_text(rows)


class GeoJsonResultsRenderer(ResultsRenderer):
    """The rows as a GeoJSON FeatureCollection."""

    media_type = "application/geo+json"
    format = "geojson"

    def rows_as(self, rows: list[dict]) -> str:
        return json.dumps(geojson(rows), ensure_ascii=False)


def batch_summary(batch: LocateBatch, request) -> dict:
    url = request.build_absolute_uri(reverse("batch", args=[batch.pk]))
    return {
        "id": str(batch.pk),
        "status": batch.status,
        "total": batch.total,
        "done": batch.done,
        "created": batch.created.isoformat(),
        "finished": batch.finished.isoformat() if batch.finished else None,
        "options": batch.options,
        "cost": batch.cost,
        "url": url,
        "downloads": {"csv": f"{url}?format=csv", "geojson": f"{url}?format=geojson"},
    }


def visible_batches(request):
    batches_seen = LocateBatch.objects.all()
    return batches_seen if access.sees_all_batches(request.user) else batches_seen.filter(owner=request.user)


class BatchListView(APIView):
    """POST photos to locate them in the background (202); GET your batches, newest first."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [ReadThrottle]

    def get_throttles(self):
        return [] if self.request.method == "POST" else super().get_throttles()  # a batch is charged by its photos

    @extend_schema(request={"multipart/form-data": BatchCreateSerializer}, responses={202: dict})
    def post(self, request):
        query = BatchCreateSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        options = {
            key: query.validated_data[key] for key in ("top_k", "threshold", "verify") if key in query.validated_data
        }
        try:
            batches.check_open_batches(request.user)
            photos = batches.plan_batch(query.validated_data["files"])
        except batches.BatchRefused as exc:
            raise _as_api_error(exc) from None
        per_photo = pricing.price(pricing.UPLOAD, top_k=options.get("top_k"), verify=options.get("verify")).units
        charge = BatchThrottle().charge_units(request, self, per_photo * len(photos))
        try:
            batch = batches.create_batch(request.user, photos, options, per_photo * len(photos))
        except BaseException as exc:
            if charge is not None:
                charge.refund()  # nothing was stored: nothing is owed
            if isinstance(exc, batches.BatchRefused):
                raise _as_api_error(exc) from None
            raise
        return Response(batch_summary(batch, request), status=status.HTTP_202_ACCEPTED)

    @extend_schema(operation_id="batches_list", responses={200: dict})
    def get(self, request):
        listed = visible_batches(request).order_by("-created")[:50]
        return Response({"batches": [batch_summary(batch, request) for batch in listed]})


class BatchView(APIView):
    """GET a batch's progress and results (JSON, CSV or GeoJSON); DELETE it, its results and files."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [ReadThrottle]
    renderer_classes = [JSONRenderer, CsvResultsRenderer, GeoJsonResultsRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "csv", "geojson"], description="Results format.")],
        responses={200: dict},
    )
    def get(self, request, batch_id):
        batch = get_object_or_404(visible_batches(request), pk=batch_id)
        body = {**batch_summary(batch, request), "columns": COLUMNS, "results": batches.results(batch)}
        response = Response(body)
        format_ = request.accepted_renderer.format
        if format_ in ("csv", "geojson"):
            response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.{format_}"'
        return response

    @extend_schema(responses={204: None})
    def delete(self, request, batch_id):
        batch = get_object_or_404(visible_batches(request), pk=batch_id)
        batches.delete_batch(batch)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _as_api_error(exc: batches.BatchRefused):
    if exc.status == 429:
        return Throttled(wait=exc.wait, detail=str(exc))
    return ValidationError({"files": [str(exc)]})
