"""Curators' admin for the reference gallery: ``photos.py`` (reference photos, bulk upload,
coverage), ``candidates.py`` (the review queue), ``forms.py`` (their forms)."""

from similarity.admin import candidates, photos  # noqa: F401  (register the model admins)
