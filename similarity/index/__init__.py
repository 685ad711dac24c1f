"""The vector index: a persisted FAISS snapshot of the stored vectors of one encoder, with no Django.

* ``config.py`` -- the settings it reads (:class:`IndexSettings`) and who provides them;
* ``layout.py`` -- which FAISS index suits a number of vectors (exact or inverted lists, storage);
* ``snapshot.py`` -- writing an index and its manifest (the sentinel saying how it was built) atomically, or
  adopting one built elsewhere;
* ``loaded.py`` -- the index a process searches, verified and reloaded when the manifest changes;
* ``lock.py`` -- one build at a time across processes;
* ``milvus.py`` -- the other backend: the vectors in a Milvus server (imported only where it is used).
"""

from similarity.index.layout import IndexLayout, choose_layout
from similarity.index.loaded import LoadedIndex, SnapshotPositions, forget_loaded_index, load_index, read_index_file
from similarity.index.lock import IndexBuildLock, LockHeld
from similarity.index.snapshot import (
    FORMAT_VERSION,
    IndexCorrupt,
    IndexManifest,
    adopt,
    file_names,
    index_dir,
    last_build_failure,
    manifest_from_json,
    manifest_json,
    manifest_path,
    read_manifest,
    record_build_failure,
    save_index,
    verify_file,
)

__all__ = [
    "FORMAT_VERSION",
    "IndexBuildLock",
    "IndexCorrupt",
    "IndexLayout",
    "IndexManifest",
    "LoadedIndex",
    "LockHeld",
    "SnapshotPositions",
    "adopt",
    "choose_layout",
    "file_names",
    "forget_loaded_index",
    "index_dir",
    "last_build_failure",
    "load_index",
    "manifest_from_json",
    "manifest_json",
    "manifest_path",
    "read_index_file",
    "read_manifest",
    "record_build_failure",
    "save_index",
    "verify_file",
]
