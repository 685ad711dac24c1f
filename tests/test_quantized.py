"""The int8 ONNX Runtime copy of CLIP's image tower (similarity/quantized.py).

Built once for this module from a ViT-B-32 weights file with random weights
(the same export, quantisation and compute as real CLIP; fidelity here is
numerical, not retrieval quality). Building takes tens of seconds.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from django.test import override_settings

from similarity import quantized
from similarity.encoders import EncoderUnavailable, OpenClipEncoder
from similarity.images import open_image
from tests.conftest import SAMPLE_GALLERY

pytestmark = pytest.mark.skipif(not quantized.runtime_installed(), reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, random_clip):
    import torch

    random_clip.load()
    path = tmp_path_factory.mktemp("weights") / "vit-b-32-random.pt"
    torch.save({key: value.float() for key, value in random_clip._model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def int8_clip(weights_file, cache_dir):
    with override_settings(SIMILARITY_MODEL_CACHE_DIR=cache_dir, SIMILARITY_RUNTIME="onnx-int8"):
        return OpenClipEncoder("ViT-B-32", str(weights_file), device="cpu").load()


@pytest.fixture(scope="module")
def fp32_clip(weights_file):
    return OpenClipEncoder("ViT-B-32", str(weights_file), device="cpu", precision="fp32", runtime="torch").load()


@pytest.fixture
def use_cache(settings, cache_dir):
    settings.SIMILARITY_MODEL_CACHE_DIR = cache_dir
    return cache_dir


def sample_photos(count=6):
    paths = sorted((SAMPLE_GALLERY / "photos").rglob("*.jpg"))[:count]
    return [open_image(path) for path in paths]


def test_the_int8_copy_runs_in_onnxruntime(int8_clip):
    assert int8_clip.precision == "int8" and int8_clip.runtime == "onnxruntime"


def test_int8_embeddings_stay_within_cosine_0999_of_fp32_on_real_photos(int8_clip, fp32_clip):
    photos = sample_photos()
    cosines = np.sum(int8_clip.embed_images(photos) * fp32_clip.embed_images(photos), axis=1)
    assert cosines.min() >= 0.999


def test_the_verdict_beside_the_copy_records_its_fidelity(int8_clip, cache_dir):
    (verdict_path,) = Path(cache_dir).glob("*.json")
    verdict = json.loads(verdict_path.read_text())
    assert verdict["format"] == quantized.FORMAT_VERSION
    assert verdict["min_cosine"] == pytest.approx(int8_clip._int8.min_cosine) and verdict["min_cosine"] >= 0.999
    assert verdict_path.with_suffix("").with_suffix(".int8.onnx").is_file()


def test_a_second_process_reuses_the_cached_copy_without_exporting(int8_clip, weights_file, use_cache, settings, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("the cached copy should have been used")

    monkeypatch.setattr(quantized, "_export", no_export)
    settings.SIMILARITY_RUNTIME = "auto"
    monkeypatch.setattr(quantized, "cpu_has_int8_dot", lambda: True)
    again = OpenClipEncoder("ViT-B-32", str(weights_file), device="cpu").load()
    photos = sample_photos(2)
    assert again.precision == "int8"
    assert np.allclose(again.embed_images(photos), int8_clip.embed_images(photos), atol=1e-6)


def test_text_is_still_embedded_by_the_fp32_model(int8_clip, fp32_clip):
    assert np.allclose(int8_clip.embed_text(["a cathedral"]), fp32_clip.embed_text(["a cathedral"]), atol=1e-5)


def test_a_copy_below_the_fidelity_bar_leaves_auto_on_pytorch_with_a_note(
    int8_clip, weights_file, use_cache, settings, monkeypatch
):
    settings.SIMILARITY_RUNTIME = "auto"
    settings.SIMILARITY_INT8_MIN_COSINE = 1.0  # no int8 copy is that faithful
    monkeypatch.setattr(quantized, "cpu_has_int8_dot", lambda: True)
    encoder = OpenClipEncoder("ViT-B-32", str(weights_file), device="cpu").load()
    assert encoder.runtime == "torch" and encoder.precision in ("float32", "bfloat16")  # bf16 where the CPU has it
    assert "no int8 copy" in encoder.runtime_note and "SIMILARITY_INT8_MIN_COSINE=1.0" in encoder.runtime_note


def test_asking_for_int8_explicitly_fails_clearly_when_the_copy_is_not_faithful(int8_clip, weights_file, use_cache, settings):
    settings.SIMILARITY_RUNTIME = "onnx-int8"
    settings.SIMILARITY_INT8_MIN_COSINE = 1.0
    with pytest.raises(EncoderUnavailable, match="SIMILARITY_RUNTIME=onnx-int8 cannot run .* cosine"):
        OpenClipEncoder("ViT-B-32", str(weights_file), device="cpu").load()


def test_replacing_the_weights_file_names_a_new_copy(weights_file, tmp_path):
    import os

    other = tmp_path / "other.pt"
    other.write_bytes(weights_file.read_bytes())
    assert quantized.cache_key("ViT-B-32", str(other)) != quantized.cache_key("ViT-B-32", str(weights_file))
    before = quantized.cache_key("ViT-B-32", str(other))
    os.utime(other, ns=(1, 1))
    assert quantized.cache_key("ViT-B-32", str(other)) != before


def test_an_unreadable_verdict_counts_as_no_copy(tmp_path):
    verdict = tmp_path / "x.json"
    verdict.write_text("{not json")
    assert quantized._read_verdict(verdict) is None
    verdict.write_text(json.dumps({"format": quantized.FORMAT_VERSION - 1, "min_cosine": 0.9999}))
    assert quantized._read_verdict(verdict) is None


def test_a_model_that_cannot_be_exported_stays_on_pytorch_and_is_not_retried(
    weights_file, use_cache, settings, monkeypatch, tmp_path
):
    calls = []

    def failing_export(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(quantized, "_export", failing_export)
    monkeypatch.setattr(quantized, "cpu_has_int8_dot", lambda: True)
    settings.SIMILARITY_RUNTIME = "auto"
    other_weights = tmp_path / "other.pt"  # a key with no cached copy
    other_weights.write_bytes(weights_file.read_bytes())
    first = OpenClipEncoder("ViT-B-32", str(other_weights), device="cpu").load()
    assert first.runtime == "torch"
    assert "building it failed (RuntimeError: unsupported operator)" in first.runtime_note
    second = OpenClipEncoder("ViT-B-32", str(other_weights), device="cpu").load()
    assert second.runtime == "torch" and len(calls) == 1


def test_bulk_batches_give_the_vectors_of_the_latency_path(int8_clip):
    import torch

    inputs = [int8_clip.preprocess(photo) for photo in sample_photos(4)]
    assert int8_clip.bulk_parallelism == torch.get_num_threads()
    futures = [int8_clip.embed_tensors_async(inputs[:2], bulk=True), int8_clip.embed_tensors_async(inputs[2:], bulk=True)]
    bulk = np.vstack([future.result() for future in futures])
    # the same batches give the same vectors, on one thread or several
    assert np.allclose(bulk[:2], int8_clip.embed_tensors(inputs[:2]), atol=1e-5)
    # dynamic quantisation scales activations per batch: other batch-mates move a vector only slightly
    assert np.sum(bulk * int8_clip.embed_tensors(inputs), axis=1).min() >= 0.999
