"""Curators' admin for the reference gallery: ``photos.py`` (reference photos, bulk upload,
coverage), ``candidates.py`` (the review queue), ``batches.py`` (batches to locate), ``forms.py`` (their forms)."""

from similarity.admin import batches, candidates, photos  # noqa: F401  (register the model admins)
