import json
import threading
from datetime import datetime, timezone

import numpy as np
import pytest

from similarity import index

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_a_saved_index_loads_back_and_finds_each_vector_first(unit_vectors):
    vectors = unit_vectors(20)
    ids = np.arange(100, 120)
    index.save_index(ids, vectors, encoder="enc-a", built_at=NOW)
    loaded = index.load_index()
    scores, found = loaded.search(vectors, 3)
    assert list(found[:, 0]) == list(ids)
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_the_manifest_records_how_the_index_was_built(unit_vectors):
    manifest = index.save_index(np.arange(5), unit_vectors(5, dim=16), encoder="enc-a", built_at=NOW)
    on_disk = json.loads(index.manifest_path().read_text())
    assert on_disk["encoder"] == "enc-a"
    assert on_disk["dim"] == 16 and on_disk["count"] == 5
    assert on_disk["index_type"] == "flat-float32"
    assert datetime.fromisoformat(on_disk["built_at"]) == NOW
    assert on_disk["checksum"] == manifest.checksum and len(manifest.checksum) == 64
    assert manifest.path.is_file()


def test_no_index_before_the_first_build():
    assert index.read_manifest() is None
    assert index.load_index() is None


def test_a_rebuild_replaces_the_index_and_removes_the_old_file(unit_vectors):
    first = index.save_index(np.arange(3), unit_vectors(3), encoder="enc-a", built_at=NOW)
    assert index.load_index().manifest.count == 3
    second = index.save_index(np.arange(7), unit_vectors(7, seed=1), encoder="enc-a", built_at=NOW)
    assert index.load_index().manifest.build_id == second.build_id
    assert index.load_index().manifest.count == 7
    assert not first.path.exists()
    assert [p.name for p in index.index_dir().glob("*.faiss")] == [second.file]


def test_writes_leave_no_temporary_files_behind(unit_vectors):
    index.save_index(np.arange(3), unit_vectors(3), encoder="enc-a", built_at=NOW)
    assert sorted(p.name for p in index.index_dir().iterdir()) == sorted(["manifest.json", index.read_manifest().file])


def test_a_failed_write_keeps_the_previous_index(unit_vectors, monkeypatch):
    index.save_index(np.arange(3), unit_vectors(3), encoder="enc-a", built_at=NOW)
    before = index.read_manifest()

    def explode(*args):
        raise OSError("disk full")

    monkeypatch.setattr("faiss.write_index", explode)
    with pytest.raises(OSError):
        index.save_index(np.arange(9), unit_vectors(9), encoder="enc-a", built_at=NOW)
    assert index.read_manifest() == before
    index.forget_loaded_index()
    assert index.load_index().manifest.count == 3
    assert not list(index.index_dir().glob(".*tmp"))


def test_readers_never_see_a_partial_index_during_rebuilds(unit_vectors):
    index.save_index(np.arange(50), unit_vectors(50), encoder="enc-a", built_at=NOW)
    errors = []
    stop = threading.Event()

    def read_repeatedly():
        while not stop.is_set():
            try:
                index.forget_loaded_index()
                loaded = index.load_index()
                assert loaded.manifest.count in (50, 60)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    for round_ in range(15):
        n = 50 if round_ % 2 else 60
        index.save_index(np.arange(n), unit_vectors(n, seed=round_), encoder="enc-a", built_at=NOW)
    stop.set()
    reader.join()
    assert errors == []


def test_a_truncated_index_file_is_detected_by_its_checksum(unit_vectors):
    manifest = index.save_index(np.arange(10), unit_vectors(10), encoder="enc-a", built_at=NOW)
    data = manifest.path.read_bytes()
    manifest.path.write_bytes(data[: len(data) // 2])
    index.forget_loaded_index()
    with pytest.raises(index.IndexCorrupt, match="checksum"):
        index.load_index()


def test_an_empty_gallery_gives_an_empty_index(unit_vectors):
    manifest = index.save_index(np.zeros(0, dtype=np.int64), np.zeros((0, 8), np.float32), encoder="e", built_at=NOW)
    assert manifest.count == 0
    assert index.load_index().faiss_index.ntotal == 0


def clustered(n: int, dim: int = 32, centres: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    vectors = means[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_layout_is_exact_below_the_limit_and_inverted_lists_above(settings):
    settings.SIMILARITY_EXACT_LIMIT = 1000
    assert index.choose_layout(999).kind == "flat"
    above = index.choose_layout(10_000)
    assert above.kind == "ivf" and above.nlist == 400 and above.nprobe == settings.SIMILARITY_IVF_NPROBE


def test_auto_storage_keeps_float32_for_exact_search_and_fp16_in_inverted_lists(settings):
    settings.SIMILARITY_EXACT_LIMIT = 1000
    settings.SIMILARITY_INDEX_STORAGE = "auto"
    assert index.choose_layout(999).storage == "float32"
    assert index.choose_layout(10_000).storage == "fp16"
    settings.SIMILARITY_INDEX_STORAGE = "sq8"
    assert index.choose_layout(10_000).storage == "sq8"


def test_an_unknown_layout_setting_is_refused(settings):
    settings.SIMILARITY_INDEX_STORAGE = "zip"
    with pytest.raises(ValueError, match="SIMILARITY_INDEX_STORAGE"):
        index.choose_layout(10)


@pytest.mark.parametrize("storage", ["float32", "fp16", "sq8", "pq"])
def test_every_storage_option_saves_loads_and_finds_neighbours(storage):
    vectors = clustered(3000)
    layout = index.IndexLayout("flat", storage)
    manifest = index.save_index(np.arange(3000), vectors, encoder="e", built_at=NOW, layout=layout)
    assert manifest.index_type == f"flat-{storage}"
    _, found = index.load_index().search(vectors[:50], 10)
    found_itself = np.mean([i in row for i, row in enumerate(found)])
    assert found_itself >= {"float32": 1.0, "fp16": 1.0, "sq8": 0.95, "pq": 0.6}[storage]  # PQ is lossy by design
    # dim 32: code bytes + an 8-byte id each (+ a header; PQ also stores its 32 KB of codebooks)
    assert manifest.bytes_per_vector <= {"float32": 137, "fp16": 73, "sq8": 41, "pq": 24}[storage]


def test_inverted_lists_keep_recall_at_10_against_exact_search():
    vectors = clustered(20_000, seed=1)
    queries = clustered(200, seed=2)
    exact = index.save_index(
        np.arange(20_000), vectors, encoder="e", built_at=NOW, layout=index.IndexLayout("flat", "float32")
    )
    _, truth = index.read_index_file(exact).search(queries, 10)
    layout = index.choose_layout(20_000, kind="ivf")
    index.save_index(np.arange(20_000), vectors, encoder="e", built_at=NOW, layout=layout)
    loaded = index.load_index()
    assert (
        loaded.manifest.index_type == f"ivf{layout.nlist}-{layout.storage}" and loaded.manifest.nprobe == layout.nprobe
    )
    _, found = loaded.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall >= 0.95


def test_too_few_vectors_for_inverted_lists_fall_back_to_exact(unit_vectors):
    manifest = index.save_index(
        np.arange(10), unit_vectors(10), encoder="e", built_at=NOW, layout=index.choose_layout(10, kind="ivf")
    )
    assert manifest.index_type == "flat-float32"
