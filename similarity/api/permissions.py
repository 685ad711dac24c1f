"""Who may do what: lookups are public unless SIMILARITY_PUBLIC_LOOKUPS is off; writes need staff."""

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission


def lookups_allowed(request) -> bool:
    return settings.SIMILARITY_PUBLIC_LOOKUPS or bool(request.user and request.user.is_authenticated)


class LookupAllowed(BasePermission):
    """Searching and reading the gallery (POST to a lookup endpoint included)."""

    message = "Log in (session or token) to look photos up."

    def has_permission(self, request, view):
        return lookups_allowed(request)


class StaffEditsGallery(BasePermission):
    """Reading follows the lookup rule; creating, changing and deleting photos needs staff."""

    message = "Changing the gallery needs a staff account (session with CSRF token, or an API token)."

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return lookups_allowed(request)
        return bool(request.user and request.user.is_staff)
