"""Who may do what: lookups are public unless SIMILARITY_PUBLIC_LOOKUPS is off; writes need a staff
account with the model permission for the change (add, change or delete reference photo), as in the admin."""

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission, DjangoModelPermissions


def lookups_allowed(request) -> bool:
    return settings.SIMILARITY_PUBLIC_LOOKUPS or bool(request.user and request.user.is_authenticated)


class LookupAllowed(BasePermission):
    """Searching and reading the gallery (POST to a lookup endpoint included)."""

    message = "Log in (session or token) to look photos up."

    def has_permission(self, request, view):
        return lookups_allowed(request)


class StaffEditsGallery(BasePermission):
    """Reading follows the lookup rule; creating, changing and deleting photos needs staff with that permission."""

    message = (
        "Changing the gallery needs a staff account with the permission to add, change or delete reference photos "
        "(session with CSRF token, or an API token)."
    )
    model_permissions = DjangoModelPermissions()

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return lookups_allowed(request)
        return bool(request.user and request.user.is_staff) and self.model_permissions.has_permission(request, view)


class CuratorsOnly(BasePermission):
    """Staff allowed to see the gallery's photos in the admin."""

    message = "This needs a staff account allowed to view reference photos."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_staff and user.has_perm("similarity.view_referencephoto"))
