"""What runs the image models (similarity/runtime/): candidates, the measured choice, its cache.

Three kinds of tests:

* the candidates for fake CPU descriptions, so every branch of the choice is
  decided on every machine;
* the measurement itself on a tiny real model (real export, real ONNX Runtime
  quantisation, real fidelity check), also on fake CPU descriptions;
* ViT-B-32 (random weights saved to a file: the compute of real CLIP) and
  EfficientNet-Lite0 on *this* CPU, asserting what this CPU should do: each
  copy is used and faithful on real photos, or rejected with its reason while
  the service runs a faithful runtime. SIMILARITY_CPU_FLAGS (e.g. ``avx2``)
  makes the whole suite decide as if on another CPU.
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.test import override_settings

from similarity.gallery.images import open_image
from similarity.runtime import choice as runtime_choice
from similarity.runtime.encoders import EfficientNetLite0Encoder, EncoderUnavailable, OpenClipEncoder
from similarity.runtime.hardware import CpuInfo, detect_cpu, read_cpuinfo
from similarity.runtime.runners import OnnxModel
from similarity.runtime.variants import RuntimeSettings, RuntimeUnavailable, candidates
from tests.conftest import SAMPLE_GALLERY

AVX2_ONLY = CpuInfo("Fake AVX2 CPU", frozenset({"avx2"}), simulated=True)
VNNI = CpuInfo("Fake VNNI CPU", frozenset({"avx2", "avx512f", "avx512_vnni"}), simulated=True)
AMX = CpuInfo(
    "Fake AMX CPU", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}), True
)
MATMULS = ("MatMul", "Gemm")


def names(variants):
    return [variant.name for variant in variants]


# --- which candidates, on which CPU -------------------------------------------------------------


@pytest.mark.parametrize(
    "cpu, runtime, precision, int8_ops, expected",
    [
        (AVX2_ONLY, "auto", "auto", MATMULS, ["torch-fp32", "onnx-fp32", "onnx-int8-rr", "onnx-int8-pc-rr"]),
        (VNNI, "auto", "auto", MATMULS, ["torch-fp32", "onnx-fp32", "onnx-int8"]),
        (AMX, "auto", "auto", MATMULS, ["torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"]),
        (AVX2_ONLY, "auto", "auto", (), ["torch-fp32", "onnx-fp32"]),
        (AMX, "torch", "auto", MATMULS, ["torch-fp32", "torch-bf16"]),
        (AVX2_ONLY, "torch", "auto", MATMULS, ["torch-fp32"]),
        (VNNI, "onnx", "auto", MATMULS, ["onnx-fp32"]),
        (AVX2_ONLY, "onnx-int8", "auto", MATMULS, ["onnx-int8-rr", "onnx-int8-pc-rr"]),
        (AMX, "onnx-int8", "auto", MATMULS, ["onnx-int8"]),
        (AMX, "auto", "fp32", MATMULS, ["torch-fp32"]),
        (AVX2_ONLY, "torch", "bf16", MATMULS, ["torch-bf16"]),
    ],
)
def test_the_settings_and_the_cpu_decide_the_candidates(cpu, runtime, precision, int8_ops, expected):
    wanted = RuntimeSettings(runtime=runtime, precision=precision)
    assert names(candidates(cpu, "cpu", wanted, int8_ops=int8_ops, onnx=True)) == expected


def test_without_onnxruntime_auto_keeps_to_pytorch_and_an_explicit_onnx_runtime_is_refused():
    assert names(candidates(AMX, "cpu", RuntimeSettings(), int8_ops=MATMULS, onnx=False)) == [
        "torch-fp32",
        "torch-bf16",
    ]
    with pytest.raises(RuntimeUnavailable, match="needs onnxruntime"):
        candidates(AMX, "cpu", RuntimeSettings(runtime="onnx-int8"), int8_ops=MATMULS, onnx=False)


def test_on_cuda_pytorch_runs_in_fp16_unless_a_precision_is_named():
    assert names(candidates(VNNI, "cuda", RuntimeSettings(), int8_ops=MATMULS, onnx=True)) == ["torch-fp16"]
    fp32 = RuntimeSettings(precision="fp32")
    assert names(candidates(VNNI, "cuda", fp32, int8_ops=MATMULS, onnx=True)) == ["torch-fp32"]


@pytest.mark.parametrize(
    "wanted, device, int8_ops, message",
    [
        (RuntimeSettings(runtime="tensorrt"), "cpu", MATMULS, "SIMILARITY_RUNTIME must be one of"),
        (RuntimeSettings(precision="int4"), "cpu", MATMULS, "SIMILARITY_PRECISION must be one of"),
        (RuntimeSettings(runtime="onnx-int8"), "cuda", MATMULS, "runs on the CPU"),
        (RuntimeSettings(runtime="onnx", precision="bf16"), "cpu", MATMULS, "is a PyTorch precision"),
        (RuntimeSettings(runtime="onnx-int8"), "cpu", (), "no int8 form"),
    ],
)
def test_settings_that_cannot_be_honoured_are_refused_clearly(wanted, device, int8_ops, message):
    with pytest.raises(RuntimeUnavailable, match=message):
        candidates(VNNI, device, wanted, int8_ops=int8_ops, onnx=True)


def test_simulated_cpu_flags_replace_this_cpus_own():
    cpu = detect_cpu("avx2")
    assert cpu.simulated and cpu.flags == {"avx2"} and not cpu.int8_dot and not cpu.bf16
    assert "simulated" in cpu.describe()
    assert detect_cpu("avx2, avx512_vnni").int8_dot and detect_cpu("amx_bf16").bf16
    assert not detect_cpu("").simulated


def test_the_model_name_and_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
    )
    model, flags = read_cpuinfo(cpuinfo)
    assert model == "AMD EPYC 9R14" and {"avx2", "avx512f", "avx512_bf16"} <= flags
    assert read_cpuinfo(tmp_path / "absent") == ("unknown CPU", frozenset())


# --- the measured choice, on a tiny real model ------------------------------------------------------------


def tiny_tower():
    import torch

    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, kernel_size=8, stride=8)
            self.fc = torch.nn.Linear(16 * 16, 64)

        def forward(self, pixels):
            return self.fc(torch.relu(self.conv(pixels)).flatten(1))

    return Tiny().eval()


def tiny_transform(image):
    array = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


@pytest.fixture
def weights(tmp_path):
    import torch

    path = tmp_path / "tiny.pt"
    torch.save(tiny_tower().state_dict(), path)
    return path


def choose(cpu, tmp_path, weights=None, **settings):
    return runtime_choice.choose_runtime(
        tiny_tower(),
        tiny_transform,
        model_id="tiny",
        weights=str(weights) if weights else None,
        device="cpu",
        cpu=cpu,
        threads=1,
        settings=RuntimeSettings(cache_dir=tmp_path / "models", **settings),
        int8_ops=MATMULS,
    )


@pytest.mark.parametrize("cpu", [AVX2_ONLY, VNNI], ids=["avx2-only", "vnni"])
def test_every_candidate_is_measured_and_the_fastest_faithful_one_runs(cpu, tmp_path, weights):
    choice = choose(cpu, tmp_path, weights)
    measured = {m.variant: m for m in choice.measurements}
    assert list(measured) == names(candidates(cpu, "cpu", RuntimeSettings(), int8_ops=MATMULS))
    for m in measured.values():
        assert m.ms_per_image > 0 and -1.0 <= m.cosine <= 1.0 + 1e-6
        assert m.accepted == (m.cosine >= 0.999) and (m.reason == "") == m.accepted
    fastest = min((m for m in measured.values() if m.accepted), key=lambda m: m.ms_per_image)
    assert choice.variant.name == fastest.variant
    assert cpu.describe() in choice.note and fastest.label in choice.note
    import torch

    from tests.conftest import make_image_bytes

    unseen = np.stack([tiny_transform(open_image(io.BytesIO(make_image_bytes(seed)))) for seed in range(3)])
    with torch.inference_mode():
        reference = tiny_tower()(torch.from_numpy(unseen)).numpy()
    ours = choice.model.run(unseen)
    cosines = np.sum(ours * reference, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.99  # a faithful runtime on images it was not checked on


def test_the_choice_and_its_copy_are_kept_and_reused_without_measuring_again(tmp_path, weights):
    first = choose(VNNI, tmp_path, weights, runtime="onnx")  # one ONNX candidate, so a copy is kept
    assert not first.cached and first.variant.name == "onnx-fp32"
    (record,) = (tmp_path / "models").glob("*.json")
    assert json.loads(record.read_text())["format"] == runtime_choice.FORMAT_VERSION
    assert record.with_suffix(".onnx").is_file()

    again = choose(VNNI, tmp_path, weights, runtime="onnx")
    assert again.cached and again.variant.name == "onnx-fp32"
    # measured again, the timings would differ; the record's are returned as they were
    assert [m.ms_per_image for m in again.measurements] == [m.ms_per_image for m in first.measurements]


def test_copies_below_the_bar_leave_auto_on_a_faithful_runtime_with_the_reason(tmp_path, weights):
    choice = choose(AVX2_ONLY, tmp_path, weights, min_cosine=0.9999999)  # no int8 copy is that faithful
    assert choice.variant.name in ("torch-fp32", "onnx-fp32")
    rejected = {m.variant: m.reason for m in choice.measurements if not m.accepted}
    assert {"onnx-int8-rr", "onnx-int8-pc-rr"} <= set(rejected)
    assert all("below 0.9999999" in reason for reason in rejected.values())
    assert "Not used:" in choice.note and "below 0.9999999" in choice.note


def test_an_explicit_int8_runtime_without_a_faithful_copy_fails_naming_the_cosines(tmp_path, weights):
    with pytest.raises(RuntimeUnavailable, match=r"SIMILARITY_RUNTIME=onnx-int8 has no faithful runtime.*cosine"):
        choose(AVX2_ONLY, tmp_path, weights, runtime="onnx-int8", min_cosine=0.9999999)


def test_a_model_that_cannot_be_exported_stays_on_pytorch_and_is_not_retried(tmp_path, weights, monkeypatch):
    calls = []

    def failing_export(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(runtime_choice, "export_onnx", failing_export)
    first = choose(VNNI, tmp_path, weights)
    assert first.variant.name == "torch-fp32"
    assert all("export failed (RuntimeError: unsupported operator)" in m.reason for m in first.measurements[1:])
    second = choose(VNNI, tmp_path, weights)
    assert second.cached and second.variant.name == "torch-fp32" and len(calls) == 1


def test_weights_that_exist_only_in_memory_are_measured_and_nothing_is_kept(tmp_path):
    choice = choose(VNNI, tmp_path, weights=None, runtime="onnx")
    assert choice.variant.name == "onnx-fp32" and isinstance(choice.model.model, bytes)
    assert not (tmp_path / "models").exists()


def test_an_unreadable_record_is_measured_again(tmp_path, weights):
    choose(VNNI, tmp_path, weights, runtime="onnx")
    (record,) = (tmp_path / "models").glob("*.json")
    record.write_text("{not json")
    assert not choose(VNNI, tmp_path, weights, runtime="onnx").cached
    record.write_text(json.dumps({"format": runtime_choice.FORMAT_VERSION - 1, "measurements": []}))
    assert not choose(VNNI, tmp_path, weights, runtime="onnx").cached


def test_the_cache_key_names_the_weights_file_the_cpu_and_the_settings(tmp_path, weights):
    import os

    allowed = candidates(VNNI, "cpu", RuntimeSettings(), int8_ops=MATMULS, onnx=True)
    key = runtime_choice.cache_key("tiny", str(weights), VNNI, 2, allowed, 0.999)
    other = tmp_path / "copy.pt"
    other.write_bytes(weights.read_bytes())
    assert runtime_choice.cache_key("tiny", str(other), VNNI, 2, allowed, 0.999) != key
    assert runtime_choice.cache_key("tiny", str(weights), AVX2_ONLY, 2, allowed, 0.999) != key
    assert runtime_choice.cache_key("tiny", str(weights), VNNI, 4, allowed, 0.999) != key
    assert runtime_choice.cache_key("tiny", str(weights), VNNI, 2, allowed[:1], 0.999) != key
    assert runtime_choice.cache_key("tiny", str(weights), VNNI, 2, allowed, 0.99) != key
    os.utime(weights, ns=(1, 1))
    assert runtime_choice.cache_key("tiny", str(weights), VNNI, 2, allowed, 0.999) != key


# --- the real models on this CPU ---------------------------------------------------------------------------


def this_cpu():
    from django.conf import settings

    return detect_cpu(settings.SIMILARITY_CPU_FLAGS)


def int8_variants_for_this_cpu():
    return ["onnx-int8"] if this_cpu().int8_dot else ["onnx-int8-rr", "onnx-int8-pc-rr"]


def sample_photos(count=6):
    paths = sorted((SAMPLE_GALLERY / "photos").rglob("*.jpg"))[:count]
    return [open_image(path) for path in paths]


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory, random_clip):
    import torch

    random_clip.load()
    path = tmp_path_factory.mktemp("weights") / "vit-b-32-random.pt"
    torch.save({key: value.float() for key, value in random_clip._model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def fp32_clip(clip_weights):
    return OpenClipEncoder("ViT-B-32", str(clip_weights), device="cpu", precision="fp32").load()


@pytest.fixture(scope="module")
def auto_clip(clip_weights, model_cache):
    with override_settings(SIMILARITY_MODEL_CACHE_DIR=model_cache, SIMILARITY_RUNTIME="auto"):
        return OpenClipEncoder("ViT-B-32", str(clip_weights), device="cpu").load()


@pytest.fixture(scope="module")
def int8_clip(clip_weights, model_cache):
    """The int8 copy for this CPU, or the reason it is refused."""
    with override_settings(SIMILARITY_MODEL_CACHE_DIR=model_cache, SIMILARITY_RUNTIME="onnx-int8"):
        try:
            return OpenClipEncoder("ViT-B-32", str(clip_weights), device="cpu").load()
        except EncoderUnavailable as exc:
            return exc


def test_clip_on_this_cpu_measures_the_int8_copies_this_cpu_calls_for(auto_clip):
    measured = {m["variant"]: m for m in auto_clip.runtime_report()["candidates"]}
    expected = (
        ["torch-fp32"] + (["torch-bf16"] if this_cpu().bf16 else []) + ["onnx-fp32"] + int8_variants_for_this_cpu()
    )
    assert list(measured) == expected
    for m in measured.values():
        assert m["accepted"] or "below 0.999" in m["reason"] or m["error"]
    assert measured[auto_clip.runtime_variant]["accepted"]
    assert this_cpu().describe() in auto_clip.runtime_note


def test_clip_on_this_cpu_runs_a_runtime_that_stays_within_cosine_0999_of_fp32_on_real_photos(auto_clip, fp32_clip):
    photos = sample_photos()
    cosines = np.sum(auto_clip.embed_images(photos) * fp32_clip.embed_images(photos), axis=1)
    assert cosines.min() >= 0.999, (auto_clip.runtime_variant, cosines.min())


def test_the_int8_copy_for_this_cpu_is_faithful_on_real_photos_or_refused_with_the_cosine(int8_clip, fp32_clip):
    if isinstance(int8_clip, EncoderUnavailable):  # e.g. plain s8 weights on a CPU without VNNI
        assert "has no faithful runtime" in str(int8_clip) and "below 0.999" in str(int8_clip)
        return
    assert int8_clip.precision == "int8" and int8_clip.runtime_variant in int8_variants_for_this_cpu()
    photos = sample_photos()
    one_at_a_time = np.vstack([int8_clip.embed_images([photo]) for photo in photos])
    batched = int8_clip.embed_images(photos)
    reference = fp32_clip.embed_images(photos)
    assert min(np.sum(one_at_a_time * reference, axis=1).min(), np.sum(batched * reference, axis=1).min()) >= 0.999


def test_text_is_embedded_by_the_fp32_model_whatever_runs_the_images(auto_clip, fp32_clip):
    assert np.allclose(auto_clip.embed_text(["a cathedral"]), fp32_clip.embed_text(["a cathedral"]), atol=1e-5)


def test_bulk_embedding_gives_the_vectors_of_the_latency_path(auto_clip):
    inputs = [auto_clip.preprocess(photo) for photo in sample_photos(5)]
    futures = [
        auto_clip.embed_tensors_async(inputs[:3], bulk=True),
        auto_clip.embed_tensors_async(inputs[3:], bulk=True),
    ]
    bulk = np.vstack([future.result() for future in futures])
    one_at_a_time = np.vstack([auto_clip.embed_tensors([tensor]) for tensor in inputs])
    # row by row, in the inputs' order; int8 activation scales follow a call's images, so only nearly equal
    assert np.sum(bulk * one_at_a_time, axis=1).min() >= 0.999


def test_the_same_call_gives_the_same_vectors_in_a_build_as_in_a_lookup(auto_clip, monkeypatch):
    inputs = [auto_clip.preprocess(photo) for photo in sample_photos(2)]
    monkeypatch.setattr(auto_clip, "bulk_call_size", len(inputs))  # one call of the two, as the lookup makes
    bulk = auto_clip.embed_tensors_async(inputs, bulk=True).result()
    # on one thread (a build's call) or several (a lookup's), the same images give the same vectors
    assert np.allclose(bulk, auto_clip.embed_tensors(inputs), atol=1e-4)


def test_a_build_cuts_each_batch_into_calls_that_keep_every_core_busy(auto_clip, monkeypatch):
    if auto_clip.runtime != "onnxruntime":
        pytest.skip(f"this CPU runs {auto_clip.runtime_variant}: its batches go whole to the inference thread")
    import torch

    assert auto_clip.bulk_parallelism == torch.get_num_threads()
    call_sizes = []
    run_bulk = OnnxModel.run_bulk

    def recording(model, batch):
        call_sizes.append(len(batch))
        return run_bulk(model, batch)

    monkeypatch.setattr(OnnxModel, "run_bulk", recording)
    inputs = [auto_clip.preprocess(photo) for photo in sample_photos(5)]
    auto_clip.embed_tensors_async(inputs, bulk=True).result()
    share = -(-5 // auto_clip.bulk_parallelism)  # an even share per core
    assert sum(call_sizes) == 5 and max(call_sizes) == share and len(call_sizes) == -(-5 // share)

    call_sizes.clear()
    monkeypatch.setattr(auto_clip, "bulk_call_size", 1)  # EfficientNet-Lite0's: one photo per call
    auto_clip.embed_tensors_async(inputs, bulk=True).result()
    assert call_sizes == [1] * 5


def test_onnx_runtimes_threads_sleep_when_out_of_work_instead_of_spinning():
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [value("x", TensorProto.FLOAT, [1])],
        [value("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)

    options = OnnxModel(model.SerializeToString(), threads=2).session.get_session_options()

    # spinning threads kept a lookup's feature extraction, beside the model, off the cores
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_second_process_reuses_the_measured_choice(auto_clip, clip_weights, model_cache, settings):
    settings.SIMILARITY_MODEL_CACHE_DIR = model_cache
    settings.SIMILARITY_RUNTIME = "auto"

    again = OpenClipEncoder("ViT-B-32", str(clip_weights), device="cpu").load()
    assert again.runtime_variant == auto_clip.runtime_variant and again.runtime_report()["reused_from_cache"]
    photos = sample_photos(2)
    assert np.allclose(again.embed_images(photos), auto_clip.embed_images(photos), atol=1e-5)


def test_efficientnet_on_this_cpu_runs_a_faithful_runtime_and_keeps_its_top_1(settings, tmp_path):
    settings.SIMILARITY_MODEL_CACHE_DIR = tmp_path / "models"
    settings.SIMILARITY_RUNTIME = "auto"
    chosen = EfficientNetLite0Encoder(device="cpu").load()
    reference = EfficientNetLite0Encoder(device="cpu", precision="fp32").load()
    measured = {m["variant"]: m for m in chosen.runtime_report()["candidates"]}
    assert "onnx-fp32" in measured and set(int8_variants_for_this_cpu()) <= set(measured)
    assert measured["onnx-fp32"]["cosine"] >= 0.9999  # an exact copy
    photos = sample_photos(8)
    ours, theirs = chosen.embed_images(photos), reference.embed_images(photos)
    assert np.sum(ours * theirs, axis=1).min() >= 0.999
    top1 = lambda vectors: np.argsort(-(vectors @ vectors.T), axis=1)[:, 1]  # noqa: E731
    assert (top1(ours) == top1(theirs)).all()


def test_the_runtime_and_its_reason_are_in_the_stats(client, admin_client):
    from similarity.search.vectors import get_encoder

    get_encoder().load()
    body = client.get("/api/stats/").json()
    assert body["runtime_variant"] == get_encoder().runtime_variant
    assert body["runtime_note"] and body["runtime_note"] == get_encoder().runtime_note
    assert "runtime_candidates" not in body  # build errors may quote the machine
    candidates = admin_client.get("/api/stats/").json()["runtime_candidates"]
    assert isinstance(candidates, list) and candidates


def test_the_record_beside_a_copy_holds_every_candidates_figures(auto_clip, model_cache):
    records = [json.loads(path.read_text()) for path in Path(model_cache).glob("*.json")]
    auto_record = next(r for r in records if len(r["measurements"]) > 1)
    for m in auto_record["measurements"]:
        assert set(m) >= {"variant", "label", "ms_per_image", "cosine", "error"}
