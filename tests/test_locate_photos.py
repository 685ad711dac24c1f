"""locate_photos: many photos located as /api/locate/ locates them, written to resumable CSV and GeoJSON,
with geotagged copies that leave the originals alone."""

import csv
import hashlib
import io
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from similarity.gallery.images import read_gps
from similarity.locate import batch
from tests.conftest import SAMPLE_GALLERY, gps_exif, make_image_bytes, upload

GALLERY_PHOTOS = ["berlin/01.jpg", "lund/02.jpg", "sacre_coeur/10265353_3838484249.jpg", "tuscany/DSCN0025.jpg"]


def without_exif(data: bytes) -> bytes:
    """The same picture re-encoded without metadata, so only the similarity source can place it."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture
def photo_folder(tmp_path):
    """Gallery scenes without GPS, one photo with GPS, one picture of nowhere, and a file that is no image."""
    folder = tmp_path / "to-locate"
    for name in GALLERY_PHOTOS:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(without_exif((SAMPLE_GALLERY / "photos" / name).read_bytes()))
    (folder / "with-gps.jpg").write_bytes(make_image_bytes(3, exif=gps_exif(-33.8568, 151.2153)))
    (folder / "nowhere.png").write_bytes(make_image_bytes(4, fmt="PNG"))
    (folder / "broken.jpg").write_bytes(b"this is no photo")
    return folder


def run(*args) -> str:
    """The command, one photo at a time unless asked (its pool threads would not see the test's transaction)."""
    out = StringIO()
    workers = () if "--workers" in args else ("--workers", "1")
    call_command("locate_photos", *map(str, args), *workers, "--no-progress", stdout=out)
    return out.getvalue()


def read_csv(path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def located_by_the_api(client, path) -> dict:
    response = client.post("/api/locate/", {"image": upload(path.read_bytes(), path.name)})
    assert response.status_code == 200, response.content
    return response.json()


def matched_ids(body: dict) -> list[int]:
    for source in body["sources"]:
        if source["result"] and "matches" in source["result"]:
            return [match["id"] for match in source["result"]["matches"]]
    return []


def test_the_answers_in_csv_and_geojson_equal_the_apis(sample_gallery, photo_folder, tmp_path, client):
    run(photo_folder, "--out", tmp_path / "r.csv", "--out", tmp_path / "r.geojson")
    rows = {row["file"]: row for row in read_csv(tmp_path / "r.csv")}
    features = {f["properties"]["file"]: f for f in json.loads((tmp_path / "r.geojson").read_text())["features"]}
    images = sorted(p for p in photo_folder.rglob("*") if p.suffix in (".jpg", ".png") and p.name != "broken.jpg")
    assert len(rows) == len(features) == len(images) + 1
    answered = 0
    for path in images:
        name = str(photo_folder / path.relative_to(photo_folder))
        body = located_by_the_api(client, path)
        row, feature = rows[name], features[name]
        assert [int(i) for i in row["matched_ids"].split()] == feature["properties"]["matched_ids"] == matched_ids(body)
        final = body["final"]
        if final is None:
            assert row["latitude"] == "" and feature["geometry"] is None and row["reason"]
            continue
        answered += 1
        assert (float(row["latitude"]), float(row["longitude"])) == (final["latitude"], final["longitude"])
        assert feature["geometry"]["coordinates"] == [final["longitude"], final["latitude"]]
        assert float(row["confidence"]) == feature["properties"]["confidence"] == final["confidence"]
        assert float(row["radius_m"]) == final["radius_m"] and row["source"] == final["source"]
    assert answered >= 4  # the GPS photo and the gallery's scenes


def test_a_file_that_is_no_image_gets_its_reason(sample_gallery, photo_folder, tmp_path):
    run(photo_folder / "broken.jpg", "--out", tmp_path / "r.csv")
    (row,) = read_csv(tmp_path / "r.csv")
    assert row["latitude"] == "" and "not" in row["reason"].lower()


def test_photos_run_on_every_core_give_the_answers_of_one_at_a_time(
    sample_gallery, photo_folder, tmp_path, transactional_db
):
    run(photo_folder, "--out", tmp_path / "one.csv")
    run(photo_folder, "--out", tmp_path / "many.csv", "--workers", "3")
    assert read_csv(tmp_path / "one.csv") == read_csv(tmp_path / "many.csv")


def test_a_run_stopped_half_way_resumes_without_redoing_finished_photos(
    sample_gallery, photo_folder, tmp_path, monkeypatch
):
    located = []
    real_locate = batch.locate_photo

    def stops_after_three(name, data, **kwargs):
        if len(located) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the fourth photo
        located.append(name)
        return real_locate(name, data, **kwargs)

    monkeypatch.setattr("similarity.management.commands.locate_photos.locate_photo", stops_after_three)
    outputs = ("--out", tmp_path / "r.csv", "--out", tmp_path / "r.geojson")
    with pytest.raises(KeyboardInterrupt):
        run(photo_folder, *outputs)
    assert [row["file"] for row in read_csv(tmp_path / "r.csv")] == located
    first_run = list(located)

    located.clear()
    monkeypatch.setattr(
        "similarity.management.commands.locate_photos.locate_photo",
        lambda name, data, **kwargs: located.append(name) or real_locate(name, data, **kwargs),
    )
    output = run(photo_folder, *outputs)
    assert "3 were already in" in output
    assert not set(located) & set(first_run) and len(located) == 7 - 3
    files = [row["file"] for row in read_csv(tmp_path / "r.csv")]
    features = json.loads((tmp_path / "r.geojson").read_text())["features"]
    assert sorted(files) == sorted(f["properties"]["file"] for f in features) and len(set(files)) == len(files) == 7


def test_a_row_cut_off_by_a_kill_is_located_again(sample_gallery, photo_folder, tmp_path):
    results = tmp_path / "r.csv"
    run(photo_folder, "--out", results)
    complete = results.read_text()
    results.write_text(complete[: len(complete) - 10])  # killed while writing the last row
    output = run(photo_folder, "--out", results)
    assert "Located 1 of 1 photos" in output and "6 were already in" in output
    assert results.read_text() == complete


def test_a_results_file_that_is_not_ours_is_refused_and_left_alone(sample_gallery, photo_folder, tmp_path):
    theirs = tmp_path / "accounts.csv"
    theirs.write_text("name,amount\nrent,1200\n")
    with pytest.raises(CommandError, match="not a locate_photos CSV"):
        run(photo_folder, "--out", theirs)
    assert theirs.read_text() == "name,amount\nrent,1200\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (("missing-folder", "--out", "r.csv"), "does not exist"),
        ((".", "--out", "r.txt"), "must end in .csv or .geojson"),
        ((".", "--out", "r.csv", "--near", "48.8,2.3"), "radius_km"),
        ((".", "--out", "r.csv", "--workers", "0"), "at least 1"),
    ],
)
def test_bad_arguments_stop_with_one_line(db, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match=message) as error:
        run(*args)
    assert "\n" not in str(error.value)


def test_a_list_names_the_photos_relative_to_itself(sample_gallery, photo_folder, tmp_path):
    listing = photo_folder / "list.csv"
    listing.write_text("file,notes\nwith-gps.jpg,from the field\nberlin/01.jpg,\n")
    run(listing, "--out", tmp_path / "r.csv")
    rows = read_csv(tmp_path / "r.csv")
    assert [row["file"] for row in rows] == [str(photo_folder / "with-gps.jpg"), str(photo_folder / "berlin/01.jpg")]
    assert float(rows[0]["latitude"]) == pytest.approx(-33.8568, abs=1e-4)


def test_text_a_spreadsheet_would_run_is_written_as_text_and_read_back(sample_gallery, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "=HYPERLINK(1).jpg").write_bytes(make_image_bytes(5))
    run("=HYPERLINK(1).jpg", "--out", "r.csv")
    assert read_csv(tmp_path / "r.csv")[0]["file"] == "'=HYPERLINK(1).jpg"
    assert "1 were already in" in run("=HYPERLINK(1).jpg", "--out", "r.csv")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_data(data: bytes) -> bytes:
    """A JPEG's bytes from its first start-of-scan marker: the compressed pixels."""
    return data[data.index(b"\xff\xda") :]


def test_geotagged_copies_carry_gps_and_the_originals_are_untouched(sample_gallery, photo_folder, tmp_path):
    originals = {path: sha256(path) for path in photo_folder.rglob("*") if path.is_file()}
    copies = tmp_path / "geotagged"
    output = run(photo_folder, "--out", tmp_path / "r.csv", "--write-exif", copies, "--min-confidence", "0.3")
    assert {path: sha256(path) for path in photo_folder.rglob("*") if path.is_file()} == originals
    rows = {row["file"]: row for row in read_csv(tmp_path / "r.csv")}
    written = 0
    for path in originals:
        row = rows.get(str(photo_folder / path.relative_to(photo_folder)))
        copy = copies / path.relative_to(photo_folder)
        if row is None or not row["confidence"] or float(row["confidence"]) < 0.3:
            assert not copy.exists()
            continue
        written += 1
        position = read_gps(copy)
        assert position.latitude == pytest.approx(float(row["latitude"]), abs=1e-6)
        assert position.longitude == pytest.approx(float(row["longitude"]), abs=1e-6)
        if path.suffix == ".jpg":
            assert image_data(copy.read_bytes()) == image_data(path.read_bytes())
    assert written >= 4 and f"{written} written" in output


def test_a_png_copy_keeps_every_chunk_but_its_exif(tmp_path):
    from similarity.locate.geotag import geotagged_copy

    original = make_image_bytes(6, fmt="PNG")
    copy = geotagged_copy(original, 59.3293, 18.0686)
    assert Image.open(io.BytesIO(copy)).tobytes() == Image.open(io.BytesIO(original)).tobytes()
    position = read_gps(io.BytesIO(copy))
    assert (position.latitude, position.longitude) == pytest.approx((59.3293, 18.0686), abs=1e-6)
    assert copy.replace(copy[copy.index(b"eXIf") - 4 : copy.index(b"IDAT") - 4], b"") == original


def test_a_copy_keeps_the_photos_other_exif_tags(tmp_path):
    from similarity.locate.geotag import geotagged_copy

    source = SAMPLE_GALLERY / "photos" / "tuscany" / "DSCN0025.jpg"
    before = Image.open(source).getexif()
    after = Image.open(io.BytesIO(geotagged_copy(source.read_bytes(), 1.5, 2.5))).getexif()
    assert {k: v for k, v in after.items() if k != 0x8825} == {k: v for k, v in before.items() if k != 0x8825}
    pointers = {0xA005}  # the offset of the interoperability IFD moves with the block
    exif_after, exif_before = after.get_ifd(0x8769), before.get_ifd(0x8769)
    assert {k: v for k, v in exif_after.items() if k not in pointers} == {
        k: v for k, v in exif_before.items() if k not in pointers
    }
    assert after.get_ifd(0xA005) == before.get_ifd(0xA005)


def test_copies_that_would_overwrite_the_originals_are_refused_before_any_work(sample_gallery, photo_folder, tmp_path):
    before = {path: sha256(path) for path in photo_folder.rglob("*") if path.is_file()}
    with pytest.raises(CommandError, match="would overwrite the original"):
        run(photo_folder, "--out", tmp_path / "r.csv", "--write-exif", photo_folder)
    assert {path: sha256(path) for path in photo_folder.rglob("*") if path.is_file()} == before
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_killed_with_sigkill_half_way_finishes_on_a_rerun_without_redoing_a_photo(sample_gallery, tmp_path):
    """A real kill: the command runs in its own process, is SIGKILLed once two rows are on disk, and run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from django.conf import settings

    from tests.conftest import ROOT
    from tests.servers import database_url

    folder = tmp_path / "many"
    folder.mkdir()
    for seed in range(30):
        (folder / f"{seed:02d}.jpg").write_bytes(make_image_bytes(200 + seed))
    results = tmp_path / "r.csv"
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        "DATABASE_URL": database_url(),
        "GEOLOCATOR_DATA_DIR": str(settings.MEDIA_ROOT.parent),
        "SIMILARITY_ENCODER": settings.SIMILARITY_ENCODER,
        "SIMILARITY_RUNTIME": settings.SIMILARITY_RUNTIME,
        "SIMILARITY_MODEL_CACHE_DIR": str(settings.SIMILARITY_MODEL_CACHE_DIR),
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "manage.py", "locate_photos", str(folder), "--out", str(results), "--no-progress"]
    command += ["--workers", "1"]
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600  # a ceiling for a loaded machine, not a budget
    while not (results.exists() and results.read_text().count("\n") >= 3):  # the header and two rows
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "no rows within 600 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_run = [row["file"] for row in read_csv(results)]
    assert 2 <= len(first_run) < 30

    rerun = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(first_run)} were already in" in rerun.stdout
    files = [row["file"] for row in read_csv(results)]
    assert files[: len(first_run)] == first_run and sorted(files) == sorted(set(files)) and len(files) == 30
