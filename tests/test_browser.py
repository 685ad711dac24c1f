"""The web page and the admin in a real headless Chromium (Debian's /usr/bin/chromium via Playwright).

Screenshots of the page after a lookup are left in test-artifacts/screenshots/ (git-ignored).
"""

import base64
import csv
import io
import os
import shutil

import pytest

from similarity.models import ReferencePhoto
from tests.conftest import ROOT, SAMPLE_GALLERY, gps_exif, make_image_bytes

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not shutil.which(CHROMIUM), reason=f"Chromium not installed at {CHROMIUM} (.ci/run installs it)"
    ),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the
    # test's own database calls are still synchronous, which Django must allow.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    # No network beyond this machine: tile requests to the internet are answered empty at once.
    context.route("https://**/*", lambda route: route.fulfill(status=204, body=""))
    page = context.new_page()
    yield page
    context.close()


def marker_shown_inside(page, map_selector, marker_selector) -> bool:
    """Whether the map has a size on the page and the marker lies within it (so it is seen, not clipped)."""
    area, marker = page.locator(map_selector).bounding_box(), page.locator(marker_selector).first.bounding_box()
    return (
        area is not None
        and marker is not None
        and area["width"] > 100
        and area["height"] > 100
        and area["x"] <= marker["x"] <= area["x"] + area["width"]
        and area["y"] <= marker["y"] <= area["y"] + area["height"]
    )


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_uploading_a_photo_shows_sources_final_answer_matches_and_map(page, live_server, sample_gallery, tmp_path):
    query = tmp_path / "query.jpg"
    query.write_bytes((SAMPLE_GALLERY / "photos/sacre_coeur/02928139_3448003521.jpg").read_bytes())
    page.goto(live_server.url + "/")
    page.set_input_files("#photo-input", str(query))
    page.wait_for_selector("body[data-state=located]", timeout=60_000)

    cards = page.locator(".source-card")
    assert cards.count() == 2
    assert "no usable GPS EXIF" in page.locator('.source-card[data-source="exif_gps"]').inner_text()
    similarity_card = page.locator('.source-card[data-source="clip_similarity"]')
    assert "success" in similarity_card.get_attribute("class")
    assert "Confidence" in similarity_card.inner_text() and "%" in similarity_card.inner_text()

    final = page.locator("#final").inner_text()
    assert "Final answer: clip_similarity" in final
    assert "48.88671, 2.34310" in final and "Confidence" in final

    thumbnails = page.locator(".match img")
    assert thumbnails.count() == 5
    first_thumbnail = thumbnails.first.get_attribute("src")
    assert "/media/thumbnails/small/" in first_thumbnail
    assert page.evaluate("(img) => img.naturalWidth", thumbnails.first.element_handle()) > 0
    assert "from the estimate" in page.locator(".match").first.inner_text()

    assert page.locator("path.match-marker").count() == 5
    assert page.locator("path.final-marker").count() == 1
    screenshot(page, "locate-sacre-coeur")


def drop_files(page, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drop files on an element as a person dragging them from a file manager would: a drop event whose
    DataTransfer holds them."""
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, type, encoded] of files) {
                const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type }));
            }
            return transfer;
        }""",
        [[name, kind, base64.b64encode(data).decode()] for name, kind, data in files],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_several_photos_dropped_on_the_page_are_listed_mapped_and_downloadable(page, live_server, sample_gallery):
    photos = [
        ("cathedral.jpg", "image/jpeg", (SAMPLE_GALLERY / "photos/berlin/01.jpg").read_bytes()),
        ("street.jpg", "image/jpeg", (SAMPLE_GALLERY / "photos/lund/02.jpg").read_bytes()),
        ("sacre-coeur.jpg", "image/jpeg", (SAMPLE_GALLERY / "photos/sacre_coeur/02928139_3448003521.jpg").read_bytes()),
        ("town.jpg", "image/jpeg", (SAMPLE_GALLERY / "photos/tuscany/DSCN0010.jpg").read_bytes()),
        ("<b>nowhere</b>.png", "image/png", make_image_bytes(77, fmt="PNG")),
    ]
    page.goto(live_server.url + "/")
    drop_files(page, "#upload-form", photos)
    page.wait_for_selector("body[data-state=located-many]", timeout=120_000)

    items = page.locator(".many-item")
    assert items.count() == 5
    assert page.locator(".many-item.found").count() == 4
    assert "No answer" in items.nth(4).inner_text() and "<b>nowhere</b>.png" in items.nth(4).inner_text()
    assert page.locator("#many-list b").count() == 0  # a file name is shown as text
    assert page.locator("path.many-marker").count() == 4
    assert all(marker_shown_inside(page, "#many-map", f"path.many-marker >> nth={i}") for i in range(4))
    assert page.locator("#results").is_hidden()
    assert "Done: 4 of 5 photos located." in page.locator("#many-summary").inner_text()
    with page.expect_download() as download:
        page.click("#download-csv")
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert [row["file"] for row in rows] == [name for name, _, _ in photos]
    assert float(rows[2]["latitude"]) == pytest.approx(48.8867, abs=1e-3) and rows[2]["source"] == "clip_similarity"
    screenshot(page, "locate-several-photos")


def proof_lines(page) -> int:
    """How many correspondence lines the page drew for its first verified match, once it has drawn them."""
    canvas = page.locator(".proof canvas[data-drawn]").first
    canvas.wait_for(timeout=60_000)
    return int(canvas.get_attribute("data-drawn"))


def test_a_verified_match_is_shown_beside_the_query_with_its_matching_points(
    page, live_server, verified_gallery, tmp_path
):
    from PIL import Image

    query = tmp_path / "lund-crop.jpg"
    with Image.open(SAMPLE_GALLERY / "photos/lund/01.jpg") as image:
        image.crop((80, 60, 940, 700)).save(query, "JPEG", quality=88)
    page.goto(live_server.url + "/")
    page.set_input_files("#photo-input", str(query))
    page.wait_for_selector("body[data-state=located]", timeout=60_000)

    assert proof_lines(page) >= 20
    caption = page.locator(".proof figcaption").first.inner_text()
    assert "Street in Lund (01" in caption and "points agree on one camera geometry" in caption
    assert "Verified:" in page.locator(".match").first.inner_text()
    screenshot(page, "locate-verified-correspondences")


def test_find_similar_from_the_admin_shows_the_matching_points_of_a_verified_match(page, live_server, verified_gallery):
    lund = next(photo for photo in verified_gallery if photo.title.startswith("Street in Lund (01"))
    page.goto(f"{live_server.url}/?photo={lund.pk}")
    page.wait_for_selector("body[data-state=located]", timeout=60_000)

    assert proof_lines(page) >= 20
    assert "Street in Lund (02" in page.locator(".proof figcaption").first.inner_text()
    screenshot(page, "find-similar-verified-correspondences")


def test_a_file_that_is_not_an_image_gets_a_clear_message(page, live_server, db, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"these are not pixels")
    page.goto(live_server.url + "/")
    page.set_input_files("#photo-input", str(bad))
    page.wait_for_selector(".status.error", timeout=30_000)
    assert "not an image" in page.locator("#status").inner_text()


def test_an_empty_gallery_is_explained(page, live_server, db, tmp_path):
    query = tmp_path / "query.png"
    query.write_bytes(make_image_bytes(1, fmt="PNG"))
    page.goto(live_server.url + "/")
    page.set_input_files("#photo-input", str(query))
    page.wait_for_selector("body[data-state=located]", timeout=60_000)
    assert "no embedded photos yet" in page.locator('.source-card[data-source="clip_similarity"]').inner_text()
    assert "No reference photos to compare with yet" in page.locator("#matches").inner_text()
    screenshot(page, "locate-empty-gallery")


def test_a_curator_uploads_a_photo_with_gps_exif_without_typing_coordinates(
    page, live_server, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("curator", "curator@example.com", "correct horse battery")
    photo = tmp_path / "rome.jpg"
    photo.write_bytes(make_image_bytes(21, exif=gps_exif(41.8902, 12.4922)))

    page.goto(live_server.url + "/admin/login/?next=/admin/similarity/referencephoto/add/")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#id_image")
    page.set_input_files("#id_image", str(photo))
    page.fill("#id_title", "Colosseum")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist", timeout=30_000)

    saved = ReferencePhoto.objects.get(title="Colosseum")
    assert saved.latitude == pytest.approx(41.8902, abs=1e-5)
    assert saved.longitude == pytest.approx(12.4922, abs=1e-5)
    assert "Colosseum" in page.locator("#result_list").inner_text()
    screenshot(page, "admin-after-upload")


PAYLOAD = '<img src=x onerror="window.__xss = 1">'


@pytest.fixture
def csp_violations(page):
    """Content-Security-Policy violations the browser reports on this page."""
    seen = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def test_a_title_with_markup_is_shown_as_text_on_the_map_and_runs_nothing(
    page, live_server, sample_gallery, tmp_path, csp_violations
):
    ReferencePhoto.objects.update(title=PAYLOAD)  # a hostile curator, API client, CSV or file name
    query = tmp_path / "query.jpg"
    query.write_bytes((SAMPLE_GALLERY / "photos/sacre_coeur/02928139_3448003521.jpg").read_bytes())
    response = page.goto(live_server.url + "/")
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    page.set_input_files("#photo-input", str(query))
    page.wait_for_selector("body[data-state=located]", timeout=60_000)

    page.locator("path.match-marker").first.dispatch_event("mouseover")  # the pointer on that marker
    tooltip = page.wait_for_selector(".leaflet-tooltip", timeout=10_000)
    assert PAYLOAD in tooltip.inner_text()  # the title, as text
    assert tooltip.query_selector("img") is None
    assert page.evaluate("window.__xss") is None
    assert page.locator(".match .title").first.inner_text() == PAYLOAD
    assert not csp_violations, csp_violations
    screenshot(page, "locate-hostile-title")


def test_the_admin_works_under_the_content_security_policy(
    page, live_server, django_user_model, sample_gallery, csp_violations
):
    django_user_model.objects.create_superuser("curator", "curator@example.com", "correct horse battery")
    ReferencePhoto.objects.update(title=PAYLOAD)
    photo = ReferencePhoto.objects.first()
    page.goto(live_server.url + f"/admin/login/?next=/admin/similarity/referencephoto/{photo.pk}/change/")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_selector(".photo-map .leaflet-interactive", timeout=30_000)  # the map drew its marker
    assert page.evaluate("window.__xss") is None
    page.goto(live_server.url + "/admin/similarity/referencephoto/")
    page.wait_for_selector("#result_list")
    assert PAYLOAD in page.locator("#result_list").inner_text()
    assert page.evaluate("window.__xss") is None
    assert not csp_violations, csp_violations


def admin_login(page, live_server, django_user_model, next_url):
    django_user_model.objects.create_superuser("curator", "curator@example.com", "correct horse battery")
    page.goto(f"{live_server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")


def test_a_located_photo_is_proposed_approved_in_the_admin_and_then_found(
    page, live_server, sample_gallery, django_user_model, tmp_path, csp_violations
):
    import io
    import json
    import urllib.request

    from PIL import Image

    from similarity.models import Candidate
    from tests.conftest import upload  # noqa: F401  (the multipart body is built below)

    buffer = io.BytesIO()
    Image.open(SAMPLE_GALLERY / "photos/sacre_coeur/10265353_3838484249.jpg").convert("RGB").save(
        buffer, "JPEG", quality=80
    )
    query = tmp_path / "my-paris-photo.jpg"
    query.write_bytes(buffer.getvalue())

    page.goto(live_server.url + "/")
    page.set_input_files("#photo-input", str(query))
    page.wait_for_selector("body[data-state=located]", timeout=60_000)
    page.click("#propose")
    page.wait_for_selector("body[data-proposed]", timeout=60_000)
    assert "waiting for a curator" in page.locator("#propose-status").inner_text()
    candidate = Candidate.objects.get()

    admin_login(page, live_server, django_user_model, f"/admin/similarity/candidate/{candidate.pk}/change/")
    page.wait_for_selector(".candidate-map .photo-marker", timeout=30_000)
    assert marker_shown_inside(page, ".candidate-map", ".candidate-map .photo-marker")  # tiles or not
    screenshot(page, "admin-candidate")
    page.click("input[name=_approve]")
    page.wait_for_selector(".messagelist", timeout=60_000)
    assert "is now" in page.locator(".messagelist").inner_text()
    photo = Candidate.objects.get().photo

    boundary = "x0x0x0"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n\r\n').encode()
    body += query.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{live_server.url}/api/similar/",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    best = answer["clip_similarity"]["all_matches"][0]
    assert best["id"] == photo.pk and best["similarity"] > 0.999
    assert not csp_violations, csp_violations


def test_the_coverage_map_shows_the_cell_counts_of_the_database(
    page, live_server, sample_gallery, django_user_model, csp_violations
):
    from similarity.gallery import coverage

    admin_login(
        page,
        live_server,
        django_user_model,
        "/admin/similarity/referencephoto/coverage/%3Flat%3D50%26lon%3D8%26zoom%3D5",
    )
    page.wait_for_selector(".coverage[data-state=drawn]", timeout=30_000)
    labels = sorted(int(text) for text in page.locator(".leaflet-tooltip.coverage-count").all_inner_texts())
    zoom = int(page.locator(".coverage").get_attribute("data-cell-zoom"))
    expected = sorted(cell.count for cell in coverage.cells(ReferencePhoto.objects.all(), zoom, 40, -10, 60, 25))
    assert len(labels) >= 3 and labels == expected and sum(labels) == ReferencePhoto.objects.count() == 10
    assert "10 photo(s) in the area shown" in page.locator(".coverage-total").inner_text()
    page.locator("path.coverage-cell-area").first.dispatch_event("click")  # cells come largest first
    page.wait_for_selector(".coverage[data-cell-shown]", timeout=30_000)
    shown = int(page.locator(".coverage").get_attribute("data-cell-shown"))
    assert shown == labels[-1] and page.locator(".coverage-photos li").count() == shown  # the largest cell
    screenshot(page, "admin-coverage")
    assert not csp_violations, csp_violations
