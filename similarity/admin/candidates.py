"""The review queue in the admin: proposed photos, corrected, approved or rejected."""

import json

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from similarity.gallery import review
from similarity.gallery.thumbnails import thumbnail_url
from similarity.models import (
    Candidate,
    ReferencePhoto,
)


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
