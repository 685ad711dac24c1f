from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.tasks import embed_photos
from similarity.encoders import get_encoder


def test_the_list_shows_thumbnails_coordinates_and_state(admin_client, make_photo):
    photo = make_photo(1, title="Cathedral", latitude=52.51891, longitude=13.40029)
    page = admin_client.get("/admin/similarity/referencephoto/").content.decode()
    assert "Cathedral" in page and "52.51891, 13.40029" in page and "Pending" in page
    assert '<img src="/media/thumbnails/small/' in page
    thumbnail = page.split('<img src="/media/')[1].split('"')[0]
    assert admin_client.get(f"/media/{thumbnail}").status_code == 200
    assert photo.image.name not in thumbnail


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
    before = PhotoEmbedding.objects.get(photo=photo).pk
    response = admin_client.post(
        "/admin/similarity/referencephoto/", {"action": "reembed", "_selected_action": [photo.pk]}, follow=True
    )
    assert "Queued 1 photo(s)" in response.content.decode()
    after = PhotoEmbedding.objects.get(photo=photo)  # tests run tasks synchronously
    assert after.pk != before
    assert ReferencePhoto.objects.get().embedding_status == "ready"
