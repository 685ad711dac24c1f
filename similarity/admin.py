"""Curators' admin for the reference gallery."""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from similarity import review, search
from similarity.encoders import EncoderUnavailable, get_encoder
from similarity.images import ACCEPT_ATTRIBUTE, ImageRejected, open_image
from similarity.intake import ADDED, Refused, add_photo, check_photo
from similarity.models import (
    Candidate,
    DuplicatePhoto,
    EmbeddingStatus,
    ReferencePhoto,
    parse_number,
)
from similarity.tasks import enqueue_embedding
from similarity.thumbnails import thumbnail_url


class CoordinateField(forms.FloatField):
    """A plain decimal number: what float() stretches to read ('1_0', full-width digits) is refused."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return parse_number(value)
        except ValueError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class ReferencePhotoForm(forms.ModelForm):
    """Coordinates may be left empty when the photo carries GPS EXIF."""

    class Meta:
        model = ReferencePhoto
        fields = "__all__"
        field_classes = {"latitude": CoordinateField, "longitude": CoordinateField}
        widgets = {"image": forms.ClearableFileInput(attrs={"accept": ACCEPT_ATTRIBUTE})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("latitude", "longitude"):
            self.fields[name].required = False
            self.fields[name].help_text = "Leave empty to use the photo's GPS EXIF."

    def clean(self):
        """The intake's own checks (similarity/intake.py), reported on the form."""
        cleaned = super().clean()
        upload = cleaned.get("image")
        self.checked = None
        if not upload or not hasattr(upload, "content_type"):  # no file, or the stored one kept
            return cleaned
        try:
            self.checked = check_photo(
                upload,
                cleaned.get("latitude"),
                cleaned.get("longitude"),
                replacing=self.instance if self.instance.pk else None,
            )
        except Refused as exc:
            raise ValidationError({"image": exc.reason} if exc.field == "image" else exc.reason) from None
        cleaned["latitude"], cleaned["longitude"] = self.checked.latitude, self.checked.longitude
        self.instance.latitude, self.instance.longitude = self.checked.latitude, self.checked.longitude
        self.coordinates_from_exif = self.checked.coordinates_from_exif
        if (
            not self.instance.pk
        ):  # hashed once: the model's own validation reuses it (a replaced file is hashed on save)
            self.instance.sha256 = self.checked.sha256
        return cleaned


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ACCEPT_ATTRIBUTE}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data]
        return [super(MultipleImageField, self).clean(item, initial) for item in files if item] or super().clean(None)


class BulkUploadForm(forms.Form):
    images = MultipleImageField(help_text="Many photos at once; coordinates come from each photo's GPS EXIF.")
    source = forms.CharField(max_length=300, required=False)
    license = forms.CharField(max_length=200, required=False)


def near_duplicates(photo: ReferencePhoto, image) -> list[search.Match]:
    """Existing photos whose similarity to ``image`` reaches SIMILARITY_NEAR_DUPLICATE."""
    encoder = get_encoder()
    vector = encoder.embed_images([image])[0]
    matches = search.search_vector(vector, encoder, 3, exclude_ids={photo.pk})
    return [match for match in matches if match.similarity >= settings.SIMILARITY_NEAR_DUPLICATE]


@admin.register(ReferencePhoto)
class ReferencePhotoAdmin(admin.ModelAdmin):
    form = ReferencePhotoForm
    list_display = ["thumbnail", "title", "coordinates", "embedding_status", "is_active", "created", "find_similar"]
    list_display_links = ["thumbnail", "title"]
    list_filter = ["embedding_status", "is_active", "embeddings__encoder", "created"]
    search_fields = ["title", "address", "notes", "source", "sha256"]
    readonly_fields = [
        "preview",
        "map_preview",
        "width",
        "height",
        "sha256",
        "embedding_status",
        "embedding_error",
        "created",
        "updated",
    ]
    fieldsets = [
        (None, {"fields": ["image", "preview", "title", "address", ("latitude", "longitude"), "map_preview"]}),
        ("Provenance", {"fields": ["source", "license", "notes"]}),
        (
            "State",
            {
                "fields": [
                    "is_active",
                    "embedding_status",
                    "embedding_error",
                    "sha256",
                    ("width", "height"),
                    "created",
                    "updated",
                ]
            },
        ),
    ]
    actions = ["reembed", "deactivate"]
    change_list_template = "admin/similarity/referencephoto/change_list.html"

    class Media:
        css = {"all": ["leaflet/leaflet.css", "similarity/admin.css"]}
        js = ["leaflet/leaflet.js", "similarity/admin_map.js"]

    @admin.display(description="")
    def thumbnail(self, photo):
        url = thumbnail_url(photo.image.name, "small") if photo.image else None
        return format_html('<img src="{}" alt="" class="photo-thumbnail">', url) if url else "—"

    @admin.display(description="Coordinates")
    def coordinates(self, photo):
        return f"{photo.latitude:.5f}, {photo.longitude:.5f}"

    @admin.display(description="")
    def find_similar(self, photo):
        return format_html('<a href="{}?photo={}">Find similar</a>', reverse("locate-page"), photo.pk)

    @admin.display(description="Preview")
    def preview(self, photo):
        url = thumbnail_url(photo.image.name, "medium") if photo.pk and photo.image else None
        if not url:
            return "—"
        return format_html('<a href="{}"><img src="{}" alt="" class="photo-preview"></a>', photo.image.url, url)

    @admin.display(description="Map")
    def map_preview(self, photo):
        if not photo.pk:
            return "Shown once saved."
        return format_html(
            '<div class="photo-map" data-lat="{}" data-lon="{}"></div>',
            photo.latitude,
            photo.longitude,
        )

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DuplicatePhoto as exc:  # the form's own check passed, then another upload of it won the race
            self.message_user(request, exc.messages[0], messages.ERROR)
            return redirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        if change or form.checked is None:
            super().save_model(request, obj, form, change)
        else:  # a new photo: the same intake as every other way in
            added = add_photo(form.cleaned_data["image"], photo=obj, checked=form.checked)
            if added.outcome != ADDED:
                raise DuplicatePhoto(added.photo)  # another upload of it won the race; changeform_view says so
        if getattr(form, "coordinates_from_exif", False):
            self.message_user(
                request,
                f"Coordinates taken from the photo's GPS EXIF: {obj.latitude:.6f}, {obj.longitude:.6f}.",
                messages.INFO,
            )
        if "image" in form.changed_data:
            self._warn_near_duplicates(request, obj)

    def _warn_near_duplicates(self, request, photo):
        try:
            with photo.image.open("rb") as handle:
                image = open_image(handle, draft_size=get_encoder().draft_size)
            duplicates = near_duplicates(photo, image)
        except (EncoderUnavailable, ImageRejected, search.IndexEncoderMismatch) as exc:
            self.message_user(request, f"Could not check for near-duplicates: {exc}", messages.WARNING)
            return
        for match in duplicates:
            url = reverse("admin:similarity_referencephoto_change", args=[match.photo.pk])
            self.message_user(
                request,
                format_html(
                    'This photo looks like a near-duplicate of <a href="{}">photo {} “{}”</a> (similarity {}).',
                    url,
                    match.photo.pk,
                    match.photo,
                    f"{match.similarity:.3f}",
                ),
                messages.WARNING,
            )

    def get_urls(self):
        bulk = path(
            "bulk-upload/",
            self.admin_site.admin_view(self.bulk_upload_view),
            name="similarity_referencephoto_bulk_upload",
        )
        coverage = path(
            "coverage/", self.admin_site.admin_view(self.coverage_view), name="similarity_referencephoto_coverage"
        )
        return [bulk, coverage, *super().get_urls()]

    def coverage_view(self, request):
        """Every reference photo on a map, counted per grid cell: where the gallery is thin."""
        if not self.has_view_permission(request):
            return redirect("admin:index")
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Coverage map"}
        return render(request, "admin/similarity/referencephoto/coverage.html", context)

    def bulk_upload_view(self, request):
        if not self.has_add_permission(request):
            return redirect("admin:index")
        form = BulkUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            created, skipped = self._store_uploads(form.cleaned_data)
            if created:
                self.message_user(
                    request, f"Added {len(created)} photo(s); their embeddings are queued.", messages.SUCCESS
                )
            for name, reason in skipped:
                self.message_user(request, f"Skipped {name}: {reason}", messages.WARNING)
            return redirect("admin:similarity_referencephoto_changelist")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "opts": self.model._meta,
            "title": "Bulk upload",
        }
        return render(request, "admin/similarity/referencephoto/bulk_upload.html", context)

    @staticmethod
    def _store_uploads(data) -> tuple[list[ReferencePhoto], list[tuple[str, str]]]:
        created, skipped = [], []
        for upload in data["images"]:  # coordinates from each photo's GPS EXIF
            added = add_photo(upload, source=data["source"], license=data["license"])
            if added.outcome == ADDED and added.photo is not None:
                created.append(added.photo)
            else:
                skipped.append((upload.name, added.reason))
        return created, skipped

    @admin.action(description="Re-embed selected photos")
    def reembed(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        queryset.update(embedding_status=EmbeddingStatus.PENDING, embedding_error="")
        for photo_id in ids:  # recompute; the current vector stays until the new one is stored
            enqueue_embedding(photo_id, recompute=True)
        self.message_user(
            request,
            f"Queued {len(ids)} photo(s) for embedding; each stays searchable with its current vector meanwhile.",
            messages.SUCCESS,
        )

    @admin.action(description="Deactivate selected photos (hide from searches)")
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(request, f"Deactivated {count} photo(s).", messages.SUCCESS)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    """Photos proposed after a lookup: correct the position if needed, then approve or reject."""

    list_display = [
        "thumbnail",
        "__str__",
        "proposed_point",
        "confidence_shown",
        "similarity_shown",
        "near_duplicate",
        "source",
        "proposer",
        "created",
        "status",
    ]
    list_display_links = ["thumbnail", "__str__"]
    list_filter = ["status", "automatic", "source", ("near_duplicate_of", admin.EmptyFieldListFilter)]
    search_fields = ["title", "address", "notes"]
    readonly_fields = [
        "preview",
        "candidate_map",
        "confidence_shown",
        "radius_m",
        "source",
        "similarity_shown",
        "near_duplicate",
        "matched_photos",
        "proposer",
        "automatic",
        "status",
        "reviewed_by",
        "reviewed_at",
        "photo",
        "created",
    ]
    fieldsets = [
        (None, {"fields": ["preview", "title", "address", ("latitude", "longitude"), "candidate_map", "notes"]}),
        (
            "What the lookup found",
            {
                "fields": [
                    "source",
                    "confidence_shown",
                    "radius_m",
                    "similarity_shown",
                    "near_duplicate",
                    "matched_photos",
                ]
            },
        ),
        ("Review", {"fields": ["proposer", "automatic", "created", "status", "reviewed_by", "reviewed_at", "photo"]}),
    ]
    actions = ["approve_selected", "reject_selected"]
    change_form_template = "admin/similarity/candidate/change_form.html"

    class Media:
        css = {"all": ["leaflet/leaflet.css", "similarity/admin.css"]}
        js = ["leaflet/leaflet.js", "similarity/admin_map.js"]

    def has_add_permission(self, request):
        return False  # candidates come from lookups

    def may_approve(self, request) -> bool:
        return request.user.has_perm("similarity.add_referencephoto") and self.has_change_permission(request)

    @admin.display(description="")
    def thumbnail(self, candidate):
        url = thumbnail_url(candidate.image.name, "small") if candidate.image else None
        return format_html('<img src="{}" alt="" class="photo-thumbnail">', url) if url else "—"

    @admin.display(description="Preview")
    def preview(self, candidate):
        url = thumbnail_url(candidate.image.name, "medium") if candidate.image else None
        return format_html('<img src="{}" alt="" class="photo-preview">', url) if url else "—"

    @admin.display(description="Proposed position")
    def proposed_point(self, candidate):
        return f"{candidate.latitude:.5f}, {candidate.longitude:.5f}"

    @admin.display(description="Confidence")
    def confidence_shown(self, candidate):
        return f"{candidate.confidence:.0%}"

    @admin.display(description="Best similarity")
    def similarity_shown(self, candidate):
        return f"{candidate.best_similarity:.3f}" if candidate.best_similarity is not None else "—"

    @admin.display(description="Near-duplicate of")
    def near_duplicate(self, candidate):
        photo = candidate.near_duplicate_of
        if photo is None:
            return "—"
        url = reverse("admin:similarity_referencephoto_change", args=[photo.pk])
        return format_html('<a href="{}">photo {} “{}”</a>', url, photo.pk, photo)

    @admin.display(description="Matched reference photos")
    def matched_photos(self, candidate):
        if not candidate.matches:
            return "—"
        return format_html_join(
            ", ",
            '<a href="{}">photo {}</a> ({})',
            (
                (reverse("admin:similarity_referencephoto_change", args=[m["id"]]), m["id"], f"{m['similarity']:.3f}")
                for m in candidate.matches
            ),
        )

    @admin.display(description="Proposed by")
    def proposer(self, candidate):
        who = str(candidate.proposed_by) if candidate.proposed_by else f"anonymous ({candidate.proposed_from or '?'})"
        return f"{who}, automatically" if candidate.automatic else who

    @admin.display(description="Map")
    def candidate_map(self, candidate):
        positions = ReferencePhoto.objects.in_bulk([m["id"] for m in candidate.matches])
        matches = [
            {
                "lat": positions[m["id"]].latitude,
                "lon": positions[m["id"]].longitude,
                "id": m["id"],
                "similarity": m["similarity"],
            }
            for m in candidate.matches
            if m["id"] in positions
        ]
        return format_html(
            '<div class="photo-map candidate-map" data-lat="{}" data-lon="{}" data-matches="{}"></div>',
            candidate.latitude,
            candidate.longitude,
            json.dumps(matches),
        )

    def response_change(self, request, candidate):
        if "_approve" in request.POST or "_reject" in request.POST:
            self._review(request, [candidate], approve="_approve" in request.POST)
            return redirect("admin:similarity_candidate_changelist")
        return super().response_change(request, candidate)

    @admin.action(description="Approve selected candidates (they become reference photos)")
    def approve_selected(self, request, queryset):
        self._review(request, list(queryset), approve=True)

    @admin.action(description="Reject selected candidates (their photos are deleted)")
    def reject_selected(self, request, queryset):
        self._review(request, list(queryset), approve=False)

    def _review(self, request, candidates, *, approve: bool):
        if not self.may_approve(request):
            self.message_user(request, "Reviewing needs the permission to add reference photos.", messages.ERROR)
            return
        for candidate in candidates:
            try:
                if approve:
                    photo = review.approve(candidate, request.user)
                    url = reverse("admin:similarity_referencephoto_change", args=[photo.pk])
                    self.message_user(
                        request,
                        format_html(
                            'Candidate {} is now <a href="{}">photo {}</a>; its embedding is queued.',
                            candidate.pk,
                            url,
                            photo.pk,
                        ),
                        messages.SUCCESS,
                    )
                else:
                    review.reject(candidate, request.user)
                    self.message_user(
                        request, f"Candidate {candidate.pk} rejected; its photo is deleted.", messages.SUCCESS
                    )
            except review.ProposalRefused as exc:
                self.message_user(request, str(exc), messages.WARNING)
