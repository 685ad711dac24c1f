"""The FAISS snapshot shared through the media storage, for web hosts without a shared disk.

The worker that builds a snapshot publishes it: its files under
``index/<build id>/``, then ``index/manifest.json`` (SIMILARITY_INDEX_SHARED,
on by default when media are in a bucket). A host compares the published
manifest with its own every SIMILARITY_INDEX_POLL_SECONDS and, when the
published one is newer, downloads it on a background thread and adopts it,
checked against the manifest's checksum. Until then it answers from the
snapshot it has plus the database's newer vectors, or from the database
alone (search/service.py): slower for a while, never a different answer.
A host that finds nothing published asks the worker for a build.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from similarity import index, media

logger = logging.getLogger(__name__)

PREFIX = "index/"
MANIFEST_NAME = PREFIX + "manifest.json"


def enabled() -> bool:
    return settings.SIMILARITY_INDEX_SHARED


def published_manifest() -> index.IndexManifest | None:
    """The manifest of the last published snapshot; None when none was published (or it is unreadable)."""
    try:
        return index.manifest_from_json(media.read_bytes(MANIFEST_NAME))
    except FileNotFoundError:
        return None
    except index.IndexCorrupt as exc:
        logger.error("Ignoring the published index manifest: %s", exc)
        return None


def publish(manifest: index.IndexManifest) -> None:
    """Upload this host's current snapshot, then its manifest (readers follow the manifest), then drop old builds."""
    _publish(manifest, published_manifest())


def _publish(manifest: index.IndexManifest, previous: index.IndexManifest | None) -> None:
    """:func:`publish`, ``previous`` being the manifest published until now (its build is kept one more round)."""
    folder = f"{PREFIX}{manifest.build_id}/"
    for name in index.file_names(manifest):
        if not default_storage.exists(folder + name):
            with open(index.index_dir() / name, "rb") as handle:
                default_storage.save(folder + name, File(handle))
    media.replace(MANIFEST_NAME, index.manifest_json(manifest).encode())
    keep = {manifest.build_id, previous.build_id if previous else ""}  # hosts may still be downloading the previous
    for old in set(default_storage.listdir(PREFIX)[0]) - keep:
        for name in default_storage.listdir(f"{PREFIX}{old}/")[1]:
            default_storage.delete(f"{PREFIX}{old}/{name}")
    logger.info("Published index %s (%d vectors) to the media storage", manifest.build_id, manifest.count)


def publish_if_behind() -> bool:
    """Publish this host's snapshot when it is newer than the published one (the maintenance calls this)."""
    local = index.read_manifest()
    if local is None:
        return False
    published = published_manifest()
    if published is not None and published.built_at_datetime >= local.built_at_datetime:
        return False
    _publish(local, published)
    return True


def fetch_if_newer() -> str:
    """Adopt the published snapshot when it is newer than this host's; what happened, in words."""
    published = published_manifest()
    local = index.read_manifest()
    if published is None:
        if local is None:
            from similarity.search import maintenance

            maintenance.ask_worker_once("build an index to share")
            return "nothing published"
        return "nothing published; keeping this host's"
    if local is not None and local.built_at_datetime >= published.built_at_datetime:
        return "up to date"
    folder = f"{PREFIX}{published.build_id}/"

    def download(name: str, temp_path: str) -> None:
        with default_storage.open(folder + name, "rb") as source, open(temp_path, "wb") as target:
            shutil.copyfileobj(source, target, media.CHUNK_BYTES)

    try:
        with index.IndexBuildLock():  # not while this host writes a snapshot of its own
            index.adopt(published, download)
    except index.LockHeld:
        return "a build is running on this host"
    logger.info("Fetched index %s (%d vectors) from the media storage", published.build_id, published.count)
    return "fetched"


_checked_at = -float("inf")
_lock = threading.Lock()
_fetching = threading.Event()


def refresh_in_background() -> None:
    """Look for a newer published snapshot at most every SIMILARITY_INDEX_POLL_SECONDS, off the request's thread."""
    global _checked_at
    if not enabled():
        return
    with _lock:
        now = time.monotonic()
        if _fetching.is_set() or now - _checked_at < settings.SIMILARITY_INDEX_POLL_SECONDS:
            return
        _checked_at = now
        _fetching.set()
    threading.Thread(target=_fetch_logging_errors, name="index fetch", daemon=True).start()


def _fetch_logging_errors() -> None:
    try:
        fetch_if_newer()
    except Exception:  # the storage being away must not break searches: the next poll tries again
        logger.exception("Could not fetch the published index")
    finally:
        _fetching.clear()
