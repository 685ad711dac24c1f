import os
import signal
import socket
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from similarity import index
from similarity.index import IndexBuildLock
from similarity.models import PhotoEmbedding
from similarity.search.vectors import get_encoder
from tests.conftest import ROOT


def build(*args) -> str:
    out = StringIO()
    call_command("build_clip_index", "--no-progress", *args, stdout=out)
    return out.getvalue()


def test_build_embeds_the_gallery_and_prints_statistics(make_photo):
    for seed in range(3):
        make_photo(seed)
    output = build()
    assert "Embedded 3 photo(s), 0 failed" in output
    assert "Total images in index: 3" in output
    assert "Embedding dimension:   1280" in output
    assert "Model:                 efficientnet_lite0@384" in output
    assert "Device:                cpu" in output
    assert f"Index file:            {index.read_manifest().path}" in output
    assert PhotoEmbedding.objects.count() == 3


def test_a_second_build_with_nothing_changed_embeds_nothing(make_photo):
    make_photo(1)
    build()
    vector_before = PhotoEmbedding.objects.get().updated
    output = build()
    assert "0 photo(s) to embed" in output and "Embedded 0 photo(s)" in output
    assert PhotoEmbedding.objects.get().updated == vector_before


def test_recompute_embeds_every_photo_again(make_photo):
    make_photo(1), make_photo(2)
    build()
    assert "Embedded 2 photo(s)" in build("--recompute")


def test_a_replaced_file_is_re_embedded(make_photo):
    from tests.conftest import make_image_bytes, upload

    photo = make_photo(1)
    make_photo(2)
    build()
    photo.image = upload(make_image_bytes(9))
    photo.save()
    assert "Encoder efficientnet_lite0@384: 1 photo(s) to embed" in build()
    assert PhotoEmbedding.objects.get(photo=photo).source_sha256 == photo.sha256


def test_an_unreadable_photo_is_marked_failed_and_the_rest_indexed(make_photo):
    make_photo(1)
    bad = make_photo(2)
    with open(bad.image.path, "wb") as handle:
        handle.write(b"garbage")
    output = build()
    assert "Embedded 1 photo(s), 1 failed" in output
    bad.refresh_from_db()
    assert bad.embedding_status == "failed" and "not an image" in bad.embedding_error
    assert index.read_manifest().count == 1


def test_an_unavailable_encoder_is_one_readable_error(db, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CommandError, match="not available"):
        build("--encoder", "open_clip:ViT-B-32/no-such-file.pt")


def test_a_batch_size_below_one_is_refused(db):
    with pytest.raises(CommandError, match="--batch-size"):
        build("--batch-size", "0")


def test_only_one_build_runs_at_a_time(make_photo):
    make_photo(1)
    with IndexBuildLock():
        with pytest.raises(CommandError, match="Another index build is running"):
            build()


def test_auto_says_once_in_the_build_output_and_in_stats_that_it_fell_back(
    make_photo, fresh_auto_choice, no_clip_weights
):
    from rest_framework.test import APIClient

    make_photo(1)
    output = build()
    assert "Using the offline encoder efficientnet_lite0@384." in output
    assert "Model:                 efficientnet_lite0@384" in output
    stats = APIClient().get("/api/stats/").json()
    assert "Using the offline encoder" in stats["encoder_note"]


def evaluate(*args) -> str:
    out = StringIO()
    call_command("evaluate_similarity", *map(str, args), stdout=out)
    return out.getvalue()


def test_evaluate_leave_one_out_prints_every_metric(sample_gallery):
    output = evaluate("--leave-one-out")
    assert "Encoder efficientnet_lite0@384, 10 queries (leave-one-out), correct within 25 m" in output
    assert "Recall within radius:  @1" in output and "@5" in output and "@10" in output
    for level in ("1km", "25km", "200km", "750km", "2500km"):
        assert level in output
    assert "Median error: top-1" in output and "estimate" in output
    assert "Threshold  coverage  precision" in output
    assert "Recommended threshold" in output or "No threshold reaches" in output


def test_evaluate_json_with_a_manifest_of_gallery_photos_finds_each_exactly(sample_gallery):
    import json

    from tests.conftest import SAMPLE_GALLERY

    report = json.loads(evaluate("--manifest", SAMPLE_GALLERY / "manifest.csv", "--json", "--radius-m", "1"))
    assert report["queries"] == 10 and report["mode"].endswith("manifest.csv")
    assert report["recall"]["@1"] == 1.0
    assert report["median_error_m"] == {"top1": 0.0, "estimate": pytest.approx(0.0, abs=1.0)}
    assert report["within_km"]["estimate"]["1km"] == 1.0
    assert report["recommended_threshold"] is not None


def test_evaluate_needs_an_embedded_gallery(db):
    with pytest.raises(CommandError, match="Nothing to evaluate"):
        evaluate("--leave-one-out")


@pytest.mark.parametrize("args, message", [(["--radius-m", "0"], "--radius-m"), (["--top-k", "99"], "--top-k")])
def test_evaluate_refuses_bad_options(db, args, message):
    with pytest.raises(CommandError, match=message):
        evaluate("--leave-one-out", *args)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_environment(data_dir, settings, **variables: str) -> dict:
    """The environment for the service's own processes on this test's data dir and SQLite database, with the
    tests' encoder and the runtime choice this process measured (loaded here first, so they reuse it)."""
    get_encoder().load()
    environment = {
        **os.environ,
        "GEOLOCATOR_DATA_DIR": str(data_dir),
        "SIMILARITY_ENCODER": settings.SIMILARITY_ENCODER,
        "SIMILARITY_RUNTIME": settings.SIMILARITY_RUNTIME,
        "SIMILARITY_MODEL_CACHE_DIR": str(settings.SIMILARITY_MODEL_CACHE_DIR),
        "PYTHONUNBUFFERED": "1",
        **variables,
    }
    environment.pop("DATABASE_URL", None)
    return environment


def output_until_ready(process: subprocess.Popen) -> str:
    """What the process printed until the web server said it serves (or until it ended)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Quit the server with" in line:
            break
    return "".join(lines)


def test_runserver_loads_the_encoder_before_it_says_it_is_ready(tmp_path, settings):
    environment = service_environment(
        tmp_path,
        settings,
        DJANGO_SETTINGS_MODULE="geolocator.settings",
        DJANGO_DEBUG="1",
        SIMILARITY_LOG_LEVEL="info",
    )
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=environment, capture_output=True
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{free_port()}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = output_until_ready(server)
    finally:
        server.kill()
        server.wait(timeout=30)

    assert "Quit the server with" in output, output
    ready = output.index("Starting development server")
    assert output.index("Loading the encoder and the index") < output.index(" ready on ") < ready, output


def test_sigterm_to_make_run_stops_the_web_server_and_the_worker(tmp_path, settings):
    """As a supervisor or `timeout` stops it: SIGTERM to make alone, and nothing of it is left running."""
    make = subprocess.Popen(
        ["make", "run", f"VENV={sys.prefix}", f"PORT={free_port()}"],
        cwd=ROOT,
        env=service_environment(tmp_path, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own session: what is left of it can be found afterwards
    )
    output = output_until_ready(make)
    assert "Quit the server with" in output, output[-3000:]

    make.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 300  # a ceiling for a loaded machine: the worker stops its own processes first
    left = ["?"]
    while left and time.monotonic() < deadline:
        make.poll()  # reaps make once it exits (a zombie would still be listed)
        left = subprocess.run(["pgrep", "-s", str(make.pid)], capture_output=True, text=True).stdout.split()
        time.sleep(0.2)
    subprocess.run(["pkill", "-KILL", "-s", str(make.pid)])  # whatever failed to stop, so the suite goes on
    make.wait(timeout=60)
    assert not left, f"still running after SIGTERM to make: {left}"
