"""Vectors in a Milvus server: one collection per encoder, each vector with its photo's latitude and longitude.

The distributed alternative to the FAISS snapshot (SIMILARITY_VECTOR_BACKEND=milvus), for galleries that
outgrow one process's memory or web hosts without a shared disk. No Django here: the search service hands
in the settings (:class:`MilvusSettings`) and the rows; the database stays the source of truth, and the
service checks every hit against it (a photo deleted or deactivated a moment ago is never answered).

* searches run at Milvus's Bounded consistency (they may miss the last few seconds of writes: a Strong read
  waits for the server's next time tick, 200 ms here), so the caller adds the vectors written in the last
  seconds itself (``vector_store.py``); counts and listings, which must see every change, run Strong;
* a location prior is a filter expression on the latitude and longitude of each vector, applied by Milvus
  inside its search (a circle is searched as its bounding box, then checked exactly by the caller);
* the index is HNSW on inner product (vectors are unit length), M 16, efConstruction 128, searched with ef
  256, or 1024 under a filter (an HNSW graph searched through a filter that keeps a few percent of its nodes
  needs a wider beam for the same recall: ``bench/search_scale.py --milvus``).

pymilvus is imported on first use, so installations on the FAISS backend never load it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

PREFIX = "geolocator_"
HNSW = {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 16, "efConstruction": 128}}
EF, FILTERED_EF = 256, 1024
WRITE_STEP = 1000  # rows per insert or upsert call (Milvus caps a message's size)


class MilvusUnavailable(RuntimeError):
    """The Milvus server cannot be reached or answered with an error; the message says which and where."""


@dataclass(frozen=True)
class MilvusSettings:
    uri: str = "http://127.0.0.1:19530"
    token: str = ""
    db_name: str = "default"


def collection_name(encoder_id: str) -> str:
    """A Milvus collection name (letters, digits, underscores) for an encoder id, e.g. 'efficientnet_lite0@384'."""
    return PREFIX + re.sub(r"[^0-9A-Za-z_]", "_", encoder_id)[:200]


def box_expression(boxes: Sequence[tuple[float, float, float, float]]) -> str:
    """A filter expression for vectors inside every (south, west, north, east) box (west > east crosses the
    antimeridian)."""
    parts = []
    for south, west, north, east in boxes:
        latitude = f"(latitude >= {float(south)!r} and latitude <= {float(north)!r})"
        if west > east:
            longitude = f"(longitude >= {float(west)!r} or longitude <= {float(east)!r})"
        else:
            longitude = f"(longitude >= {float(west)!r} and longitude <= {float(east)!r})"
        parts.append(f"({latitude} and {longitude})")
    return " and ".join(parts)


class MilvusVectors:
    """One connection to a Milvus server (made on first use, per process) and its collections."""

    def __init__(self, settings: MilvusSettings):
        self.settings = settings
        self._alias = f"geolocator-{id(self)}"
        self._lock = threading.Lock()
        self._connected = False
        self._loaded: dict[str, object] = {}

    def _pymilvus(self):
        try:
            import pymilvus
        except ImportError as exc:  # pragma: no cover - the requirements install it
            raise MilvusUnavailable(f"pymilvus is not installed ({exc}): pip install -r requirements.txt") from None
        return pymilvus

    def _connect(self):
        pymilvus = self._pymilvus()
        with self._lock:
            if not self._connected:
                try:
                    pymilvus.connections.connect(
                        alias=self._alias,
                        uri=self.settings.uri,
                        token=self.settings.token or "",
                        db_name=self.settings.db_name,
                        timeout=10,
                    )
                except Exception as exc:
                    raise MilvusUnavailable(f"Cannot reach Milvus at {self.settings.uri}: {exc}") from None
                self._connected = True
        return pymilvus

    def close(self) -> None:
        with self._lock:
            if self._connected:
                self._pymilvus().connections.disconnect(self._alias)
            self._connected = False
            self._loaded.clear()

    def _collection(self, encoder_id: str, dim: int | None = None, *, create: bool = False):
        """The encoder's collection, loaded for search; made (with its index) when ``create`` and missing."""
        name = collection_name(encoder_id)
        known = self._loaded.get(name)
        if known is not None:
            return known
        pymilvus = self._connect()
        try:
            if not pymilvus.utility.has_collection(name, using=self._alias):
                if not create or dim is None:
                    return None
                collection = self._new_collection(pymilvus, encoder_id, dim)
                collection.create_index("vector", HNSW)
            else:
                collection = pymilvus.Collection(name, using=self._alias)
            collection.load()
        except MilvusUnavailable:
            raise
        except Exception as exc:
            raise MilvusUnavailable(f"Milvus at {self.settings.uri} refused collection {name}: {exc}") from None
        self._loaded[name] = collection
        return collection

    def _new_collection(self, pymilvus, encoder_id: str, dim: int):
        schema = pymilvus.CollectionSchema(
            [
                pymilvus.FieldSchema("id", pymilvus.DataType.INT64, is_primary=True),
                pymilvus.FieldSchema("vector", pymilvus.DataType.FLOAT_VECTOR, dim=int(dim)),
                pymilvus.FieldSchema("latitude", pymilvus.DataType.DOUBLE),
                pymilvus.FieldSchema("longitude", pymilvus.DataType.DOUBLE),
            ],
            description=f"geolocator vectors of encoder {encoder_id}",
        )
        return pymilvus.Collection(collection_name(encoder_id), schema, using=self._alias, consistency_level="Strong")

    def replace_all(self, encoder_id: str, batches: Iterable[tuple]) -> int:
        """The encoder's collection written afresh from (ids, vectors, latitudes, longitudes) batches: made
        without an index, every vector inserted and sealed, then indexed and loaded. (Upserted into an
        already indexed collection, 200k vectors searched through a 1 % filter found 0.845 of their true
        neighbours; indexed once over sealed data, 1.000: ``bench/RESULTS.md``.)"""
        self.drop(encoder_id)
        pymilvus = self._connect()
        collection, written = None, 0
        for ids, vectors, latitudes, longitudes in batches:
            vectors = np.asarray(vectors, dtype=np.float32)
            if collection is None:
                collection = self._call(
                    "create a collection", self._new_collection, pymilvus, encoder_id, vectors.shape[1]
                )
            for start in range(0, len(ids), WRITE_STEP):
                end = start + WRITE_STEP
                rows = [
                    [int(i) for i in ids[start:end]],
                    vectors[start:end],
                    [float(v) for v in latitudes[start:end]],
                    [float(v) for v in longitudes[start:end]],
                ]
                self._call("store vectors", collection.insert, rows)
            written += len(ids)
        if collection is None:
            return 0
        self._call("flush", collection.flush)
        self._call("index", collection.create_index, "vector", HNSW)
        self._call("index", pymilvus.utility.wait_for_index_building_complete, collection.name, using=self._alias)
        self._call("load", collection.load)
        self._loaded[collection.name] = collection
        return written

    def _call(self, what: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            raise MilvusUnavailable(f"Milvus at {self.settings.uri} failed to {what}: {exc}") from None

    def upsert(self, encoder_id: str, ids, vectors: np.ndarray, latitudes, longitudes) -> None:
        """Write (or replace) these photos' vectors with their positions."""
        if not len(ids):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        collection = self._collection(encoder_id, vectors.shape[1], create=True)
        for start in range(0, len(ids), WRITE_STEP):
            end = start + WRITE_STEP
            rows = [
                [int(i) for i in ids[start:end]],
                vectors[start:end].tolist(),
                [float(v) for v in latitudes[start:end]],
                [float(v) for v in longitudes[start:end]],
            ]
            self._call("store vectors", collection.upsert, rows)

    def delete(self, encoder_id: str, ids) -> None:
        """Remove these photos' vectors (those it has)."""
        collection = self._collection(encoder_id)
        if collection is None or not len(ids):
            return
        for start in range(0, len(ids), WRITE_STEP):
            chunk = ", ".join(str(int(i)) for i in ids[start : start + WRITE_STEP])
            self._call("delete vectors", collection.delete, f"id in [{chunk}]")

    def drop(self, encoder_id: str) -> None:
        """The encoder's whole collection (a rebuild writes it again)."""
        pymilvus = self._connect()
        name = collection_name(encoder_id)
        self._loaded.pop(name, None)
        if self._call("look up a collection", pymilvus.utility.has_collection, name, using=self._alias):
            self._call("drop a collection", pymilvus.utility.drop_collection, name, using=self._alias)

    def search(self, encoder_id: str, query: np.ndarray, k: int, boxes=()) -> list[tuple[int, float]]:
        """The ``k`` nearest vectors by inner product, inside every box, as (photo id, score), best first."""
        collection = self._collection(encoder_id)
        if collection is None or k <= 0:
            return []
        expression = box_expression(boxes) if boxes else ""
        results = self._call(
            "search",
            collection.search,
            [np.asarray(query, dtype=np.float32).reshape(-1).tolist()],
            "vector",
            {"metric_type": "IP", "params": {"ef": max(FILTERED_EF if expression else EF, k)}},
            limit=min(int(k), 16384),
            expr=expression or None,
            consistency_level="Bounded",
        )
        return [(int(hit.id), float(hit.distance)) for hit in results[0]]

    def ids(self, encoder_id: str) -> Iterator[int]:
        """Every photo id the encoder's collection holds."""
        collection = self._collection(encoder_id)
        if collection is None:
            return
        iterator = self._call(
            "list vectors",
            collection.query_iterator,
            batch_size=5000,
            expr="id >= 0",
            output_fields=["id"],
            consistency_level="Strong",
        )
        try:
            while batch := self._call("list vectors", iterator.next):
                for row in batch:
                    yield int(row["id"])
        finally:
            iterator.close()

    def count(self, encoder_id: str) -> int:
        collection = self._collection(encoder_id)
        if collection is None:
            return 0
        rows = self._call(
            "count vectors", collection.query, expr="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    def health(self) -> str:
        """The server's version (MilvusUnavailable when it does not answer)."""
        pymilvus = self._connect()
        return str(self._call("answer", pymilvus.utility.get_server_version, using=self._alias))
