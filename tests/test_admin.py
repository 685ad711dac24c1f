from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.search.embedding import embed_photos
from similarity.search.vectors import get_encoder


def test_the_list_shows_thumbnails_coordinates_and_state(admin_client, make_photo):
    photo = make_photo(1, title="Cathedral", latitude=52.51891, longitude=13.40029)
    page = admin_client.get("/admin/similarity/referencephoto/").content.decode()
    assert "Cathedral" in page and "52.51891, 13.40029" in page and "Pending" in page
    assert '<img src="/media/thumbnails/small/' in page
    thumbnail = page.split('<img src="/media/')[1].split('"')[0]
    assert admin_client.get(f"/media/{thumbnail}").status_code == 200
    assert thumbnail == f"thumbnails/small/{photo.image.name}.jpg"  # whose preview it is: the media view's rule


def test_the_list_can_be_searched_and_filtered_by_state(admin_client, make_photo):
    make_photo(1, title="Cathedral")
    make_photo(2, title="Harbour")
    page = admin_client.get("/admin/similarity/referencephoto/", {"q": "harb"}).content.decode()
    assert "Harbour" in page and "Cathedral" not in page
    page = admin_client.get("/admin/similarity/referencephoto/", {"embedding_status__exact": "ready"}).content.decode()
    assert "Harbour" not in page and "0 reference photos" in page


def test_the_change_page_previews_the_image(admin_client, make_photo):
    photo = make_photo(1)
    page = admin_client.get(f"/admin/similarity/referencephoto/{photo.pk}/change/").content.decode()
    assert '<img src="/media/thumbnails/medium/' in page


def test_re_embed_action_recomputes_the_vector(admin_client, make_photo):
    photo = make_photo(1)
    embed_photos([photo], get_encoder())
    before = PhotoEmbedding.objects.get(photo=photo).updated
    response = admin_client.post(
        "/admin/similarity/referencephoto/", {"action": "reembed", "_selected_action": [photo.pk]}, follow=True
    )
    assert "Queued 1 photo(s)" in response.content.decode()
    after = PhotoEmbedding.objects.get(photo=photo)  # tests run tasks synchronously
    assert after.updated > before
    assert ReferencePhoto.objects.get().embedding_status == "ready"


from tests.conftest import gps_exif, make_image_bytes, upload  # noqa: E402

ADD_URL = "/admin/similarity/referencephoto/add/"


def add_form(**fields):
    data = {
        "title": "",
        "address": "",
        "latitude": "",
        "longitude": "",
        "notes": "",
        "source": "",
        "license": "",
        "is_active": "on",
        "_save": "Save",
    }
    data.update(fields)
    return data


def test_coordinates_left_empty_come_from_gps_exif(admin_client):
    image = upload(make_image_bytes(1, exif=gps_exif(41.8902, 12.4922)), "rome.jpg")
    response = admin_client.post(ADD_URL, add_form(image=image, title="Colosseum"), follow=True)
    assert "taken from the photo" in response.content.decode()
    photo = ReferencePhoto.objects.get(title="Colosseum")
    assert (round(photo.latitude, 4), round(photo.longitude, 4)) == (41.8902, 12.4922)


def test_empty_coordinates_without_gps_exif_are_refused(admin_client):
    response = admin_client.post(ADD_URL, add_form(image=upload(make_image_bytes(1))))
    assert "the photo has no usable GPS EXIF" in response.content.decode()
    assert not ReferencePhoto.objects.exists()


def test_typed_coordinates_win_over_exif(admin_client):
    image = upload(make_image_bytes(1, exif=gps_exif(41.8902, 12.4922)), "rome.jpg")
    admin_client.post(ADD_URL, add_form(image=image, latitude="10", longitude="20"))
    assert ReferencePhoto.objects.get().latitude == 10


def test_nan_coordinates_are_refused_in_the_admin(admin_client):
    response = admin_client.post(ADD_URL, add_form(image=upload(make_image_bytes(1)), latitude="nan", longitude="1"))
    assert response.status_code == 200 and not ReferencePhoto.objects.exists()


def test_a_near_duplicate_upload_warns_naming_the_existing_photo(admin_client, make_photo):
    from similarity.tasks import embed_photo

    original = make_photo(5, title="Original shot")
    embed_photo(original.pk)
    # the same picture re-encoded: different bytes, same content
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.open(BytesIO(make_image_bytes(5))).save(buffer, "JPEG", quality=80)
    response = admin_client.post(
        ADD_URL, add_form(image=upload(buffer.getvalue()), latitude="1", longitude="2"), follow=True
    )
    page = response.content.decode()
    assert "near-duplicate" in page and f"photo {original.pk}" in page and "Original shot" in page


def test_bulk_upload_stores_photos_with_exif_and_lists_the_rest(admin_client, django_capture_on_commit_callbacks):
    files = [
        upload(make_image_bytes(1, exif=gps_exif(1.5, 2.5)), "one.jpg"),
        upload(make_image_bytes(2, exif=gps_exif(-3.5, 4.5)), "two.jpg"),
        upload(make_image_bytes(3), "nowhere.jpg"),
        upload(b"not an image", "junk.jpg"),
    ]
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            "/admin/similarity/referencephoto/bulk-upload/", {"images": files, "source": "field trip"}, follow=True
        )
    page = response.content.decode()
    assert "Added 2 photo(s); their embeddings are queued." in page
    assert "Skipped nowhere.jpg: No coordinates: none were given and the photo has no usable GPS EXIF" in page
    assert "Skipped junk.jpg" in page
    assert sorted(ReferencePhoto.objects.values_list("title", "latitude", "source")) == [
        ("one", 1.5, "field trip"),
        ("two", -3.5, "field trip"),
    ]
    assert len(callbacks) == 2  # queued, not run inside the request
    assert all(p.embedding_status == "pending" for p in ReferencePhoto.objects.all())


def test_each_photo_links_to_find_similar_and_has_a_map(admin_client, make_photo):
    photo = make_photo(1, latitude=48.85, longitude=2.29)
    listing = admin_client.get("/admin/similarity/referencephoto/").content.decode()
    assert f'href="/?photo={photo.pk}"' in listing and "Bulk upload" in listing
    change = admin_client.get(f"/admin/similarity/referencephoto/{photo.pk}/change/").content.decode()
    assert 'class="photo-map" data-lat="48.85" data-lon="2.29"' in change
    assert "/static/leaflet/leaflet.js" in change


def test_thumbnails_are_generated_once_and_cached(make_photo, settings):
    from similarity.gallery.thumbnails import thumbnail_name

    photo = make_photo(1)
    name = thumbnail_name(photo.image.name)
    path = settings.MEDIA_ROOT / name
    first = path.stat().st_mtime_ns
    assert thumbnail_name(photo.image.name) == name
    assert path.stat().st_mtime_ns == first
    from PIL import Image

    assert max(Image.open(path).size) == 160


def test_deleting_a_photo_removes_its_thumbnails(make_photo, settings, django_capture_on_commit_callbacks):
    from similarity.gallery.thumbnails import thumbnail_name

    photo = make_photo(1)
    path = settings.MEDIA_ROOT / thumbnail_name(photo.image.name)
    with django_capture_on_commit_callbacks(execute=True):
        photo.delete()
    assert not path.exists()
