"""Who may see what of the gallery.

Everyone allowed to look photos up sees the public fields of active photos.
Deactivated photos, curators' notes, file hashes and embedding states are
seen by staff accounts allowed to view reference photos (Django's view
permission, or the change permission, which includes it, as in the admin);
the review queue's photos by staff allowed to view candidates. Staff without
those permissions see what anyone sees.
"""

from __future__ import annotations


def _staff_with(user, model: str) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_staff
        and (user.has_perm(f"similarity.view_{model}") or user.has_perm(f"similarity.change_{model}"))
    )


def sees_private_photos(user) -> bool:
    """Inactive reference photos and the private fields of every photo."""
    return _staff_with(user, "referencephoto")


def sees_candidates(user) -> bool:
    """The photos proposed for review."""
    return _staff_with(user, "candidate")


def sees_all_batches(user) -> bool:
    """Every client's batches of photos to locate, not only one's own."""
    return _staff_with(user, "locatebatch")
