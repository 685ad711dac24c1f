"""Retrieval: from a query photo (or text) to the closest reference photos, with Django.

* ``vectors.py`` -- which encoder the gallery's vectors come from (``auto`` follows the index);
* ``embedding.py`` -- computing and storing the vectors, reading them back for a build;
* ``maintenance.py`` -- keeping the index in step: rebuilds, when to compact, the periodic run;
* ``service.py`` -- the search itself: the FAISS snapshot plus the vectors stored since, with
  location priors, thresholds and geometric verification;
* ``features.py`` -- the local features kept per photo for that verification;
* ``vector_store.py`` -- FAISS or a Milvus server answers vector searches, and Milvus kept in step.

The service's public names are importable from here.
"""

from similarity.search.service import (
    Explanation,
    IndexEncoderMismatch,
    Match,
    SearchResult,
    delta_counts,
    search_image,
    search_similar_to_photo,
    search_text,
    search_vector,
    threshold_for,
)

__all__ = [
    "IndexEncoderMismatch",
    "Explanation",
    "Match",
    "SearchResult",
    "delta_counts",
    "search_image",
    "search_similar_to_photo",
    "search_text",
    "search_vector",
    "threshold_for",
]
