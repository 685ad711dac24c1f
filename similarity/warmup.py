"""Load the encoder and the index ahead of the first request (called by server start-up hooks)."""

import logging

from similarity import index
from similarity.geometry import verification
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search import features, shared_index
from similarity.search.vectors import get_encoder

logger = logging.getLogger(__name__)


def warm_up() -> None:
    try:
        encoder = get_encoder().load()
        logger.info("Encoder %s ready on %s (%s, %s)", encoder.id, encoder.device, encoder.runtime, encoder.precision)
    except EncoderUnavailable as exc:  # lookups will answer 503 with the same message
        logger.error("%s", exc)
    if shared_index.enabled():  # a host without the worker's disk: its snapshot, from the media storage
        try:
            logger.info("Shared index: %s", shared_index.fetch_if_newer())
        except Exception:
            logger.exception("Could not fetch the published index; answering from the database meanwhile")
    try:
        index.load_index()
    except index.IndexCorrupt as exc:
        logger.error("%s", exc)
    if features.enabled():
        verification.warm_up()  # OpenCV on the calling threads, the SIFT and matching kernels loaded
