"""Curators' admin for the reference gallery."""

from django.contrib import admin, messages
from django.utils.html import format_html
from django_q.tasks import async_task

from similarity.models import EmbeddingStatus, PhotoEmbedding, ReferencePhoto
from similarity.thumbnails import thumbnail_url


@admin.register(ReferencePhoto)
class ReferencePhotoAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "title", "coordinates", "embedding_status", "is_active", "created"]
    list_display_links = ["thumbnail", "title"]
    list_filter = ["embedding_status", "is_active", "embeddings__encoder", "created"]
    search_fields = ["title", "address", "notes", "source", "sha256"]
    readonly_fields = ["preview", "width", "height", "sha256", "embedding_status", "embedding_error", "created", "updated"]
    fieldsets = [
        (None, {"fields": ["image", "preview", "title", "address", ("latitude", "longitude")]}),
        ("Provenance", {"fields": ["source", "license", "notes"]}),
        ("State", {"fields": ["is_active", "embedding_status", "embedding_error", "sha256", ("width", "height"), "created", "updated"]}),
    ]
    actions = ["reembed", "deactivate"]

    @admin.display(description="")
    def thumbnail(self, photo):
        url = thumbnail_url(photo.image.name, "small") if photo.image else None
        return format_html('<img src="{}" alt="" style="max-height:60px;max-width:90px">', url) if url else "—"

    @admin.display(description="Coordinates")
    def coordinates(self, photo):
        return f"{photo.latitude:.5f}, {photo.longitude:.5f}"

    @admin.display(description="Preview")
    def preview(self, photo):
        url = thumbnail_url(photo.image.name, "medium") if photo.pk and photo.image else None
        if not url:
            return "—"
        return format_html('<a href="{}"><img src="{}" alt="" style="max-width:480px"></a>', photo.image.url, url)

    @admin.action(description="Re-embed selected photos")
    def reembed(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        PhotoEmbedding.objects.filter(photo_id__in=ids).delete()
        queryset.update(embedding_status=EmbeddingStatus.PENDING, embedding_error="")
        for photo_id in ids:
            async_task("similarity.tasks.embed_photo", photo_id, task_name=f"embed photo {photo_id}")
        self.message_user(request, f"Queued {len(ids)} photo(s) for embedding.", messages.SUCCESS)

    @admin.action(description="Deactivate selected photos (hide from searches)")
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(request, f"Deactivated {count} photo(s).", messages.SUCCESS)
