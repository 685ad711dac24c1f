"""Batches in the admin: who sent how many photos, how far they are, and their results (read only)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from similarity import batches
from similarity.models import BatchPhoto, LocateBatch


class BatchPhotoInline(admin.TabularInline):
    model = BatchPhoto
    fields = ["position", "name", "answer", "reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="Answer")
    def answer(self, photo):
        row = photo.result or {}
        if row.get("latitude") is None:
            return "—" if photo.result else "waiting"
        return f"{row['latitude']:.6f}, {row['longitude']:.6f} ({row['source']}, confidence {row['confidence']:.2f})"

    @admin.display(description="Why no answer")
    def reason(self, photo):
        return (photo.result or {}).get("reason") or ""

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(LocateBatch)
class LocateBatchAdmin(admin.ModelAdmin):
    """Batches sent to /api/batches/ (or the page): read only; deleting one drops its files and results."""

    list_display = ["id", "owner", "status", "progress", "cost", "created", "finished"]
    list_filter = ["status"]
    search_fields = ["owner__username"]
    readonly_fields = [
        "id",
        "owner",
        "status",
        "progress",
        "options",
        "bytes",
        "cost",
        "created",
        "finished",
        "downloads",
    ]
    fields = readonly_fields
    inlines = [BatchPhotoInline]

    @admin.display(description="Located")
    def progress(self, batch):
        return f"{batch.done} of {batch.total}"

    @admin.display(description="Results")
    def downloads(self, batch):
        url = reverse("batch", args=[batch.pk])
        return format_html('<a href="{}?format=csv">CSV</a> · <a href="{}?format=geojson">GeoJSON</a>', url, url)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        batches.delete_batch(obj)

    def delete_queryset(self, request, queryset):
        for batch in queryset:
            batches.delete_batch(batch)
