import csv
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from similarity.models import ReferencePhoto
from tests.conftest import SAMPLE_GALLERY, gps_exif, make_image_bytes


def write_csv(path: Path, rows, columns=("file", "latitude", "longitude", "title", "address")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture
def src(tmp_path):
    """A folder of photos to import (apart from the media folder the photos are copied to)."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


def run_import(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("import_photos", *map(str, args), "--no-progress", stdout=out)
    return out.getvalue()


def test_csv_coordinates_titles_and_addresses_are_imported(db, src):
    (src / "a.jpg").write_bytes(make_image_bytes(1))
    (src / "sub").mkdir()
    (src / "sub" / "b.jpg").write_bytes(make_image_bytes(2))
    manifest = write_csv(
        src / "m.csv", [["a.jpg", "48.1", "11.5", "Marienplatz", "Munich"], ["sub/b.jpg", "-33.9", "151.2", "", ""]]
    )
    output = run_import(src, "--manifest", manifest)
    assert "Imported 2" in output
    first = ReferencePhoto.objects.get(title="Marienplatz")
    assert (first.latitude, first.longitude, first.address) == (48.1, 11.5, "Munich")
    assert ReferencePhoto.objects.get(title="b").latitude == -33.9


def test_gps_exif_gives_coordinates_when_the_csv_has_none(db, src):
    (src / "gps.jpg").write_bytes(make_image_bytes(3, exif=gps_exif(41.9028, 12.4964)))
    run_import(src)
    photo = ReferencePhoto.objects.get()
    assert photo.latitude == pytest.approx(41.9028, abs=1e-5)
    assert photo.longitude == pytest.approx(12.4964, abs=1e-5)


def test_photos_without_coordinates_are_skipped_and_listed(db, src):
    (src / "nowhere.jpg").write_bytes(make_image_bytes(4))
    (src / "gps.jpg").write_bytes(make_image_bytes(5, exif=gps_exif(1, 2)))
    output = run_import(src)
    assert "Imported 1" in output and "skipped 1" in output
    assert "nowhere.jpg: No coordinates" in output
    assert ReferencePhoto.objects.count() == 1


def test_the_same_file_imported_twice_is_not_duplicated(db, src):
    (src / "gps.jpg").write_bytes(make_image_bytes(6, exif=gps_exif(1, 2)))
    run_import(src)
    (src / "copy.jpg").write_bytes((src / "gps.jpg").read_bytes())
    output = run_import(src)
    assert "Imported 0, already present 2" in output
    assert ReferencePhoto.objects.count() == 1


def test_bad_csv_rows_are_skipped_with_the_reason(db, src):
    for name in ("nan.jpg", "far.jpg", "text.jpg"):
        (src / name).write_bytes(make_image_bytes(hash(name) % 1000))
    manifest = write_csv(
        src / "m.csv",
        [["nan.jpg", "nan", "1", "", ""], ["far.jpg", "91", "1", "", ""], ["text.jpg", "north", "1", "", ""]],
    )
    output = run_import(src, "--manifest", manifest)
    assert "Imported 0" in output
    assert "Latitude must be a finite number" in output
    assert "are not numbers" in output
    assert ReferencePhoto.objects.count() == 0


def test_a_file_that_is_not_an_image_is_skipped(db, src):
    (src / "broken.jpg").write_bytes(b"not really a jpeg")
    manifest = write_csv(src / "m.csv", [["broken.jpg", "1", "1", "", ""]])
    output = run_import(src, "--manifest", manifest)
    assert "broken.jpg: The file is not an image" in output


def test_a_csv_without_coordinate_columns_is_refused_in_one_line(db, src):
    (src / "a.jpg").write_bytes(make_image_bytes(1))
    manifest = write_csv(src / "m.csv", [["a.jpg", "1"]], columns=("file", "lat"))
    with pytest.raises(CommandError, match="lacks column\\(s\\): latitude, longitude"):
        run_import(src, "--manifest", manifest)


def test_a_missing_path_is_refused(db, src):
    with pytest.raises(CommandError, match="does not exist"):
        run_import(src / "absent")


def test_the_sample_gallery_imports_cleanly_with_provenance(db):
    output = run_import(SAMPLE_GALLERY / "photos", "--manifest", SAMPLE_GALLERY / "manifest.csv")
    assert "Imported 10, already present 0, skipped 0" in output
    berlin = ReferencePhoto.objects.get(title__startswith="Berlin Cathedral")
    assert berlin.license == "BSD-2-Clause"
    assert "OpenSfM" in berlin.source


def test_importing_queues_an_embedding_per_photo_after_commit(db, src, django_capture_on_commit_callbacks):
    (src / "gps.jpg").write_bytes(make_image_bytes(8, exif=gps_exif(1, 2)))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run_import(src)
    assert len(callbacks) == 1
    assert ReferencePhoto.objects.get().embedding_status == "ready"  # tests run tasks synchronously
