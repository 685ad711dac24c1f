"""The reference photos in the admin: list, edit with a map and near-duplicate warnings, bulk upload, coverage."""

from django.conf import settings
from django.contrib import admin, messages
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from similarity import search
from similarity.admin.forms import BulkUploadForm, ReferencePhotoForm
from similarity.gallery.images import ImageRejected, open_image
from similarity.gallery.intake import ADDED, add_photo
from similarity.gallery.thumbnails import thumbnail_url
from similarity.models import (
    DuplicatePhoto,
    EmbeddingStatus,
    ReferencePhoto,
)
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search.vectors import get_encoder
from similarity.tasks import enqueue_embedding


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
