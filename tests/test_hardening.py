"""The audit's attacks (issue 13), each reproduced against the service: it must hold.

Every test here failed on the code the audit examined.
"""

import os
import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from similarity import tasks
from similarity.models import RequestCounter
from similarity.search import maintenance
from tests.conftest import ROOT, make_image_bytes, upload


def manage_py_shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``manage.py shell -c script`` in another process, with ``env`` and the project's own settings."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "DJANGO_SETTINGS_MODULE": "geolocator.settings", "DJANGO_SECRET_KEY": "x"},
    )


@pytest.fixture
def budgets(monkeypatch):
    """Small per-client budgets, counted afresh."""

    from similarity.api import throttles

    def set_rates(**rates):
        for throttle in (throttles.LookupThrottle, throttles.LargeImageThrottle, throttles.ReadThrottle):
            monkeypatch.setattr(
                throttle,
                "THROTTLE_RATES",
                {"lookup": "1000/minute", "lookup_large": "1000/minute", "read": "1000/minute", **rates},
            )
        RequestCounter.objects.all().delete()

    return set_rates


def similar(client, seed=1, **headers):
    return client.post("/api/similar/", {"image": upload(make_image_bytes(seed))}, format="multipart", **headers)


# --- 3. throttles: the real client address, shared counters, every lookup, the admin login ---------------


def test_a_client_cannot_escape_its_budget_by_changing_x_forwarded_for(db, budgets):
    budgets(lookup="2/minute")
    client = APIClient()
    statuses = [similar(client, HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code for n in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client(db, budgets, settings):
    settings.GEOLOCATOR_NUM_PROXIES = 1
    budgets(lookup="1/minute")
    client = APIClient()
    assert similar(client, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 200
    assert similar(client, HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 200  # another client
    # what the client put to the left of the proxy's entry is not trusted
    assert similar(client, HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.1").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_the_counters_live_in_the_database_every_process_shares(budgets):
    from similarity.api import throttles
    from tests.servers import database_url

    budgets(lookup="5/minute")
    assert similar(APIClient()).status_code == 200
    key = throttles.LookupThrottle().cache_format % {"scope": "lookup", "ident": "127.0.0.1"}
    script = f"from similarity.models import RequestCounter; print(RequestCounter.objects.get(key={key!r}).count)"
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    other = manage_py_shell(script, {**env, "DATABASE_URL": database_url()})
    assert other.stdout.strip().splitlines()[-1] == "1", other.stderr[-2000:]


COUNTING_PROCESS = """
import sys, time
import django
django.setup()
from similarity.api.throttles import take
start, key, limit, attempts = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
while time.time() < start:
    time.sleep(0.001)
print(sum(take(key, time.time(), 86400, limit) is None for _ in range(attempts)))
"""


@pytest.mark.django_db(transaction=True)
def test_requests_racing_in_several_processes_get_exactly_the_budget(tmp_path):
    """Four processes take from one budget at the same moment: together they get its size, not more."""
    import time

    from tests.servers import database_url

    script = tmp_path / "count.py"
    script.write_text(COUNTING_PROCESS)
    env = {
        **{key: value for key, value in os.environ.items() if key != "DATABASE_URL"},
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        "DJANGO_SECRET_KEY": "x",
        "PYTHONPATH": str(ROOT),
    }
    start = time.time() + 8  # time enough for every process to set Django up before the race
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), str(start), "throttle_race_1", "30", "15"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-2000:] for _, err in outputs]
    assert sum(int(out.split()[-1]) for out, _ in outputs) == 30
    assert RequestCounter.objects.get(key="throttle_race_1").count == 30


def test_a_budget_refuses_the_request_past_its_size_and_does_not_count_it(db):
    from similarity.api.throttles import take

    assert [take("k", 10.0 + n, 60, 2) for n in range(2)] == [None, None]
    assert take("k", 12.0, 60, 2) > 0
    assert take("k", 13.0, 60, 2) > 0
    assert RequestCounter.objects.get(key="k").count == 2


def test_the_last_windows_requests_weigh_as_much_as_it_still_overlaps_the_period(db):
    from similarity.api.throttles import take

    assert [take("k", 0.0 + n, 60, 2) for n in range(2)] == [None, None]
    # at 60 s the whole of the last window still counts: full; room again once half of it has passed
    assert take("k", 60.0, 60, 2) == pytest.approx(30.0)
    assert take("k", 90.0, 60, 2) is None
    assert take("k", 91.0, 60, 2) > 0
    assert take("k", 240.0, 60, 2) is None  # two windows later nothing of it is left


def test_counters_of_clients_gone_quiet_are_deleted(db, monkeypatch):
    from similarity.api import throttles

    throttles.take("quiet", 0.0, 60, 2)
    throttles.take("busy", 119.0, 60, 2)
    monkeypatch.setattr(throttles, "_next_purge", 0.0)
    throttles.purge_expired(125.0)  # the quiet client's windows (0-60 s, 60-120 s) are over
    assert list(RequestCounter.objects.values_list("key", flat=True)) == ["busy"]


def test_a_stored_photos_neighbours_and_the_statistics_are_throttled_too(make_photo, budgets):
    photo = make_photo(1)
    tasks.embed_photo(photo.pk)
    budgets(lookup="1/minute", read="1/minute")
    client = APIClient()
    assert client.get(f"/api/photos/{photo.pk}/similar/").status_code == 200
    assert client.get(f"/api/photos/{photo.pk}/similar/").status_code == 429
    assert client.get("/api/stats/").status_code == 200
    assert client.get("/api/stats/").status_code == 429


def test_lookups_that_need_a_large_decode_have_a_smaller_budget(db, budgets):
    from PIL import Image

    budgets(lookup_large="1/minute")
    import io

    big = io.BytesIO()
    Image.new("RGB", (2500, 2000), (50, 60, 70)).save(big, "PNG")  # 5 MP decoded in full
    client = APIClient()

    def post(data, name):
        return client.post("/api/similar/", {"image": upload(data, name)}, format="multipart")

    assert post(big.getvalue(), "big.png").status_code == 200
    response = post(big.getvalue(), "big.png")
    assert response.status_code == 429 and response.json()["success"] is False
    assert post(make_image_bytes(3), "phone.jpg").status_code == 200  # ordinary photos keep their budget


@pytest.mark.django_db(transaction=True)
def test_the_admin_login_locks_out_after_repeated_failures(client, django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 3
    django_user_model.objects.create_superuser("curator", "c@example.com", "correct horse battery")
    statuses = [
        client.post("/admin/login/", {"username": "curator", "password": "wrong"}).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]  # the form again with its error, then locked out
    locked = client.post("/admin/login/", {"username": "curator", "password": "correct horse battery"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


# --- 2. memory: decompression bombs inside the header limit ------------------------------------------------


def flat_image(fmt: str, side: int, **options) -> bytes:
    import io

    from PIL import Image

    mode = {"GIF": "P", "PNG": "RGBA"}.get(fmt, "RGB")
    buffer = io.BytesIO()
    Image.new(mode, (side, side), 3 if mode == "P" else (10, 20, 30, 128)[: len(mode)]).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, options", [("WEBP", {"lossless": True}), ("GIF", {}), ("PNG", {"optimize": True})])
def test_a_tiny_file_that_would_decode_to_60_megapixels_is_refused_from_its_header(db, fmt, options):
    data = flat_image(fmt, 7745, **options)
    assert len(data) < 300_000
    response = APIClient().post("/api/similar/", {"image": upload(data, "bomb.img")}, format="multipart")
    assert response.status_code == 400
    assert "a lookup decodes at most 16,000,000 pixels" in response.json()["error"]


def test_a_large_lookup_is_decoded_small_on_the_large_decode_thread(settings, monkeypatch):
    import io
    import threading

    from PIL import ImageFile

    from similarity.gallery.images import open_image

    threads = []
    load = ImageFile.ImageFile.load

    def recording_load(image):
        threads.append(threading.current_thread().name)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    image = open_image(io.BytesIO(flat_image("PNG", 3000, optimize=True)), draft_size=512, lookup=True)
    assert image.size == (600, 600) and image.mode == "RGB"  # reduced by 5, never below 512, before conversion
    assert threads and all(name.startswith("large-decode") for name in threads)
    threads.clear()
    small = open_image(io.BytesIO(make_image_bytes(1)), draft_size=512, lookup=True)
    assert small.size == (320, 240) and threads == [threading.current_thread().name]  # small: decoded in place


def test_workers_are_recycled_and_every_request_is_logged():
    import runpy

    config = runpy.run_path(str(ROOT / "geolocator" / "gunicorn.conf.py"))
    assert config["max_requests"] >= 100 and 0 < config["max_requests_jitter"] < config["max_requests"]
    assert config["accesslog"] == "-"


def _glibc() -> bool:
    """Whether this process runs on glibc, whose malloc the two thresholds tune (elsewhere they are left alone)."""
    import platform

    return platform.libc_ver()[0] == "glibc"


def test_freed_large_buffers_go_back_to_the_system(settings):
    from similarity.memory import set_mmap_threshold

    assert settings.SIMILARITY_MALLOC_MMAP_THRESHOLD == 8 * 1024 * 1024
    assert set_mmap_threshold(settings.SIMILARITY_MALLOC_MMAP_THRESHOLD) is _glibc()
    assert set_mmap_threshold(0) is False


def test_a_lookups_few_megabyte_buffers_stay_for_the_next_one(settings):
    from similarity.memory import set_trim_threshold

    assert settings.SIMILARITY_MALLOC_TRIM_THRESHOLD == 16 * 1024 * 1024
    assert set_trim_threshold(settings.SIMILARITY_MALLOC_TRIM_THRESHOLD) is _glibc()
    assert set_trim_threshold(0) is False


# --- 4. request bodies: refused on their declared size, stopped past the limit ----------------------------


def test_a_body_declared_larger_than_the_limit_is_refused_before_a_byte_is_stored(db, stored_chunks):
    body = (
        b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        + b"0" * 1000
        + b"\r\n--x--\r\n"
    )
    response = APIClient().generic(
        "POST", "/api/similar/", body, content_type="multipart/form-data; boundary=x", CONTENT_LENGTH=str(500 * 2**20)
    )
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "The request is 500 MiB; a lookup takes one photo of at most 20 MiB.",
    }
    assert stored_chunks == []


def test_a_file_past_the_limit_stops_streaming_and_leaves_nothing(db, settings, stored_chunks, tmp_path):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from similarity.models import ReferencePhoto

    settings.SIMILARITY_MAX_UPLOAD_BYTES = 300_000
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    staff = APIClient()
    staff.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=User.objects.create_user('s', is_staff=True, is_superuser=True)).key}"
    )
    big = upload(b"\xff\xd8" + os.urandom(3_000_000), "big.jpg")
    response = staff.post("/api/photos/", {"image": big, "latitude": "1", "longitude": "2"}, format="multipart")
    assert response.status_code == 400 and response.json()["error"] == "The image file is over the limit of 293 KiB."
    assert sum(stored_chunks) <= 300_000 and ReferencePhoto.objects.count() == 0
    assert list(tmp_path.iterdir()) == []


def test_a_photo_is_read_in_quarter_mebibyte_steps(db, stored_chunks):
    photo = make_image_bytes(1, size=(1600, 1200))
    photo += b"\0" * max(0, 1_000_000 - len(photo))  # bytes after the JPEG's end: still a JPEG, 1 MB long
    response = APIClient().post("/api/similar/", {"image": upload(photo)}, format="multipart")
    assert response.status_code in (200, 503)  # the answer is not the point here
    assert max(stored_chunks) == 256 * 1024 and sum(stored_chunks) == len(photo)


def test_a_lookup_carries_one_photo(db):
    response = APIClient().post(
        "/api/similar/",
        {"image": upload(make_image_bytes(1)), "other": upload(make_image_bytes(2))},
        format="multipart",
    )
    assert response.status_code == 400 and response.json()["error"] == (
        "A lookup takes one photo; the request holds more than one file."
    )


def test_djangos_own_request_limits_answer_in_json_under_the_api(db, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 3
    fields = {f"field{n}": "x" for n in range(6)}
    response = APIClient().post("/api/similar/", {"image": upload(make_image_bytes(1)), **fields}, format="multipart")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json() == {"success": False, "error": "The request holds too many form fields."}


# --- 5. what strangers may see: public fields of active photos, no paths, no driver messages --------------

PUBLIC_FIELDS = {
    "id",
    "title",
    "address",
    "latitude",
    "longitude",
    "source",
    "license",
    "image_url",
    "thumbnail_url",
    "width",
    "height",
}


@pytest.fixture
def hidden_photo(make_photo):
    """An active photo with curators' notes, and a deactivated one."""
    shown = make_photo(1, title="Shown", notes="bought from a private archive")
    hidden = make_photo(2, title="Hidden")
    hidden.is_active = False
    hidden.save()
    for photo in (shown, hidden):
        tasks.embed_photo(photo.pk)
    return shown, hidden


def test_strangers_read_the_public_fields_of_active_photos_only(hidden_photo):
    shown, hidden = hidden_photo
    listing = APIClient().get("/api/photos/").json()
    assert [photo["id"] for photo in listing["results"]] == [shown.pk]
    assert set(listing["results"][0]) == PUBLIC_FIELDS
    assert APIClient().get(f"/api/photos/{hidden.pk}/").status_code == 404
    assert APIClient().get(f"/api/photos/{hidden.pk}/similar/").status_code == 404


def test_staff_read_every_photo_and_every_field(hidden_photo, admin_client):
    shown, hidden = hidden_photo
    results = {photo["id"]: photo for photo in admin_client.get("/api/photos/").json()["results"]}
    assert set(results) == {shown.pk, hidden.pk}
    assert results[shown.pk]["notes"] == "bought from a private archive" and results[hidden.pk]["is_active"] is False


def test_a_deactivated_photos_files_are_served_to_staff_only(hidden_photo, admin_client):
    from similarity.gallery.thumbnails import thumbnail_name

    shown, hidden = hidden_photo
    for photo, stranger_status in ((shown, 200), (hidden, 404)):
        for name in (photo.image.name, thumbnail_name(photo.image.name)):
            assert APIClient().get(f"/media/{name}").status_code == stranger_status, name
            assert admin_client.get(f"/media/{name}").status_code == 200, name
    assert APIClient().get("/media/index/manifest.json").status_code == 404  # nothing else under media


def test_media_follow_the_lookup_policy(hidden_photo, settings, admin_client):
    shown, _ = hidden_photo
    settings.SIMILARITY_PUBLIC_LOOKUPS = False
    assert APIClient().get(f"/media/{shown.image.name}").status_code == 403
    assert admin_client.get(f"/media/{shown.image.name}").status_code == 200


def test_no_response_names_a_path_on_the_server(hidden_photo, settings):
    maintenance.rebuild_index()
    stats = APIClient().get("/api/stats/")
    assert (
        str(settings.DATA_DIR) not in stats.content.decode()
        and str(settings.SIMILARITY_INDEX_DIR) not in stats.content.decode()
    )
    assert "/" not in stats.json()["index"]["file"]


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_during_a_locate_is_a_503_without_the_drivers_message(hidden_photo, database_down):
    stop, restore = database_down
    stop()
    response = APIClient().post("/api/locate/", {"image": upload(make_image_bytes(1))}, format="multipart")
    restore()
    assert response.status_code == 503
    assert response.json() == {
        "success": False,
        "error": "The database is unavailable at the moment; nothing was changed. Try again shortly.",
    }


def test_serving_media_elsewhere_while_lookups_need_a_login_is_reported(settings):
    from similarity.checks import media_follow_the_lookup_policy

    settings.GEOLOCATOR_SERVE_MEDIA, settings.SIMILARITY_PUBLIC_LOOKUPS = False, False
    assert [warning.id for warning in media_follow_the_lookup_policy(None)] == ["similarity.W001"]
    settings.GEOLOCATOR_SERVE_MEDIA = True
    assert media_follow_the_lookup_policy(None) == []


# --- 6. API writes follow the model permissions, as the admin does -----------------------------------------


def token_client(user):
    from rest_framework.authtoken.models import Token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_a_staff_account_without_permissions_cannot_change_the_gallery(make_photo, django_user_model):
    from similarity.models import ReferencePhoto

    photo = make_photo(1)
    client = token_client(django_user_model.objects.create_user("intern", is_staff=True))
    new = {"image": upload(make_image_bytes(9)), "latitude": "1", "longitude": "2"}
    assert client.post("/api/photos/", new, format="multipart").status_code == 403
    assert client.patch(f"/api/photos/{photo.pk}/", {"title": "x"}, format="multipart").status_code == 403
    assert client.delete(f"/api/photos/{photo.pk}/").status_code == 403
    assert list(ReferencePhoto.objects.values_list("title", flat=True)) == ["Photo 1"]


def test_each_write_needs_its_own_permission(make_photo, django_user_model):
    from django.contrib.auth.models import Permission

    photo = make_photo(1)
    curator = django_user_model.objects.create_user("curator", is_staff=True)
    curator.user_permissions.add(Permission.objects.get(codename="add_referencephoto"))
    client = token_client(curator)
    new = {"image": upload(make_image_bytes(9)), "latitude": "1", "longitude": "2"}
    assert client.post("/api/photos/", new, format="multipart").status_code == 201
    assert client.delete(f"/api/photos/{photo.pk}/").status_code == 403


# --- 7. a database that accepts connections and never answers ----------------------------------------------


@pytest.fixture
def silent_database():
    """A TCP server that accepts connections and never says a word: (host, port)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_database_that_never_answers_is_given_up_on_within_the_timeouts(db, silent_database):
    import time

    from django.db import OperationalError
    from django.db.backends.postgresql.base import DatabaseWrapper

    from similarity.database import bound_waits

    host, port = silent_database
    bound_waits(connect_timeout_seconds=2, statement_timeout_seconds=1)
    try:
        wrapper = DatabaseWrapper(
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "geolocator",
                "USER": "postgres",
                "PASSWORD": "",
                "HOST": host,
                "PORT": str(port),
                "CONN_MAX_AGE": 0,
                "CONN_HEALTH_CHECKS": False,
                "AUTOCOMMIT": True,
                "ATOMIC_REQUESTS": False,
                "TIME_ZONE": None,
                "OPTIONS": {"connect_timeout": 2},
                "TEST": {},
            },
            alias="silent",
        )
        started = time.monotonic()
        with pytest.raises(OperationalError):
            wrapper.ensure_connection()
        assert time.monotonic() - started < 4
    finally:
        from django.conf import settings

        bound_waits(settings.DATABASE_CONNECT_TIMEOUT, settings.DATABASE_STATEMENT_TIMEOUT)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres") is False, reason="the service's database is SQLite here"
)
def test_requests_answer_503_in_json_while_the_database_never_answers(silent_database):
    import time

    from django.db import connection

    host, port = silent_database
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST=host, PORT=str(port))
    try:
        started = time.monotonic()
        responses = [APIClient().get("/api/stats/"), APIClient().get("/api/photos/")]
        elapsed = time.monotonic() - started
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)
    for response in responses:
        assert response.status_code == 503 and response.json()["success"] is False
    assert elapsed < 2 * (5 + 3)  # two requests, each bounded by the connect timeout (5 s) and a retry


def test_postgresql_connections_carry_connect_and_statement_timeouts(tmp_path):
    script = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_URL"))}
    result = manage_py_shell(
        script, {**env, "GEOLOCATOR_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@db.example:5432/g"}
    )
    options = result.stdout.strip().splitlines()[-1]
    assert "'connect_timeout': 5" in options and "statement_timeout=30000" in options


@pytest.mark.django_db(transaction=True)
def test_an_outage_met_by_a_middleware_is_a_503_too(admin_client, database_down):
    stop, restore = database_down
    stop()  # the admin's session middleware is the first to need the database
    response = admin_client.get("/admin/")
    restore()
    assert response.status_code == 503 and "database is unavailable" in response.content.decode()


# --- 8. concurrent uploads of one new image ----------------------------------------------------------------


def stored_reference_files(settings):
    return sorted(path for path in (settings.MEDIA_ROOT / "reference").rglob("*") if path.is_file())


def test_a_duplicate_that_slips_past_the_checks_is_refused_and_leaves_no_file(db, settings):
    from similarity.models import DuplicatePhoto, ReferencePhoto

    data = make_image_bytes(5)
    first = ReferencePhoto.objects.create(image=upload(data, "a.jpg"), latitude=1, longitude=2)
    with pytest.raises(DuplicatePhoto) as raised:
        ReferencePhoto.objects.create(image=upload(data, "b.jpg"), latitude=1, longitude=2)  # no clean(): as in a race
    assert raised.value.existing == first
    assert stored_reference_files(settings) == [settings.MEDIA_ROOT / first.image.name]


@pytest.mark.django_db(transaction=True)
def test_eight_simultaneous_uploads_of_one_new_image_give_one_photo_and_clear_400s(settings, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from similarity.api.serializers import ReferencePhotoSerializer
    from similarity.models import ReferencePhoto
    from tests.conftest import make_curator

    curator = make_curator()
    everyone_validated = threading.Barrier(8, timeout=30)
    validate = ReferencePhotoSerializer.validate_image

    def validate_then_wait(self, data):  # all eight pass the duplicate check before any saves
        checked = validate(self, data)
        everyone_validated.wait()
        return checked

    monkeypatch.setattr(ReferencePhotoSerializer, "validate_image", validate_then_wait)
    data = make_image_bytes(6)

    def post(_):
        try:
            client = APIClient()
            client.force_authenticate(curator)
            response = client.post(
                "/api/photos/", {"image": upload(data), "latitude": "1", "longitude": "2"}, format="multipart"
            )
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] + [400] * 7, answers
    photo = ReferencePhoto.objects.get()
    for status, body in answers:
        if status == 400:
            assert body["error"] == f"image: This image is already in the gallery as photo {photo.pk}."
    assert stored_reference_files(settings) == [settings.MEDIA_ROOT / photo.image.name]


def test_failed_requests_are_logged(settings):
    assert settings.LOGGING["loggers"]["django.request"]["handlers"] == ["console"]


# --- 9. a damaged index is rebuilt even where the worker holds it in memory --------------------------------


def test_a_rebuild_asked_for_because_of_damage_checks_the_file_not_the_copy_in_memory(make_photo):
    from similarity import index

    for seed in range(3):
        tasks.embed_photo(make_photo(seed).pk)
    manifest = maintenance.rebuild_index()
    index.load_index()  # this process (the worker) holds the build in memory
    manifest.path.write_bytes(manifest.path.read_bytes()[:100])  # then the file is damaged
    assert tasks.maintain_index()["index"] == "up to date"  # the scheduled run trusts what it holds
    rebuilt = tasks.maintain_index(verify_index=True)
    assert rebuilt["index"] == "rebuilt" and rebuilt["reason"].startswith("index unusable")
    rebuilt = index.read_manifest()
    assert rebuilt.build_id != manifest.build_id and index.read_index_file(rebuilt).manifest.count == 3


def test_a_reader_that_finds_the_file_damaged_asks_for_a_verifying_rebuild(make_photo, monkeypatch):
    import io

    from similarity import index, search
    from similarity.gallery.images import open_image

    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, *args, **kwargs: queued.append((func, kwargs)))
    tasks.embed_photo(make_photo(1).pk)
    manifest = maintenance.rebuild_index()
    manifest.path.write_bytes(b"damaged")
    index.forget_loaded_index()
    search.search_image(open_image(io.BytesIO(make_image_bytes(1))), top_k=1)
    assert queued == [("similarity.tasks.maintain_index", {"verify_index": True, "task_name": "rebuild broken index"})]


# --- 10. re-embedding never loses a working vector; a thumbnail is not worth an embedding --------------------


def test_re_embedding_a_photo_whose_file_is_gone_keeps_it_searchable(admin_client, make_photo, settings):
    import io

    from similarity import search
    from similarity.gallery.images import open_image
    from similarity.models import PhotoEmbedding, ReferencePhoto

    photo = make_photo(1)
    tasks.embed_photo(photo.pk)
    (settings.MEDIA_ROOT / photo.image.name).unlink()  # the file is lost (a storage accident)
    admin_client.post("/admin/similarity/referencephoto/", {"action": "reembed", "_selected_action": [photo.pk]})
    assert PhotoEmbedding.objects.filter(photo=photo).exists()
    refreshed = ReferencePhoto.objects.get()
    assert refreshed.embedding_status == "failed" and "Could not read the image file" in refreshed.embedding_error
    result = search.search_image(open_image(io.BytesIO(make_image_bytes(1))), top_k=1)
    assert result.best.photo == photo and result.best.similarity > 0.99


def test_a_thumbnail_that_cannot_be_written_does_not_fail_the_embedding(make_photo, settings, caplog):
    import os

    photo = make_photo(1)
    thumbnails = settings.MEDIA_ROOT / "thumbnails"
    thumbnails.mkdir()
    os.chmod(thumbnails, 0o500)  # read-only
    try:
        if os.access(thumbnails, os.W_OK):  # root writes anyway: make writing fail another way
            thumbnails.rmdir()
            thumbnails.write_text("not a folder")
        assert tasks.embed_photo(photo.pk)["outcome"] == "embedded"
    finally:
        os.chmod(thumbnails, 0o700) if thumbnails.is_dir() else None
    photo.refresh_from_db()
    assert photo.embedding_status == "ready" and "Could not write the thumbnail" in caplog.text


# --- low: numbers float() stretches to read, formats the decoder refuses, build errors, file modes ------------

ODD_NUMBERS = ["1_0", "\uff11\uff10", "nan", "1e999", " 0x10"]


@pytest.mark.parametrize("odd", ODD_NUMBERS)
def test_coordinates_must_be_plain_numbers_in_the_api(db, odd):
    from tests.conftest import make_curator

    client = APIClient()
    client.force_authenticate(make_curator())
    response = client.post(
        "/api/photos/", {"image": upload(make_image_bytes(1)), "latitude": odd, "longitude": "2"}, format="multipart"
    )
    assert response.status_code == 400 and response.json()["error"].startswith("latitude:")


@pytest.mark.parametrize("odd", ODD_NUMBERS)
def test_coordinates_must_be_plain_numbers_in_the_admin_and_the_import(admin_client, odd, tmp_path):
    from similarity.gallery.importer import find_images, import_photos, read_manifest_csv
    from similarity.models import ReferencePhoto
    from tests.test_admin import ADD_URL, add_form

    response = admin_client.post(ADD_URL, add_form(image=upload(make_image_bytes(1)), latitude=odd, longitude="2"))
    assert response.status_code == 200 and "Enter a number" in response.content.decode()
    (tmp_path / "a.jpg").write_bytes(make_image_bytes(2))
    (tmp_path / "m.csv").write_text(f"file,latitude,longitude\na.jpg,{odd},2\n", encoding="utf-8")
    report = import_photos(find_images(tmp_path), read_manifest_csv(tmp_path / "m.csv"))
    assert not report.imported and ("not numbers" in report.skipped[0][1] or "finite" in report.skipped[0][1])
    assert not ReferencePhoto.objects.exists()


def test_a_threshold_must_be_a_plain_number(db):
    response = APIClient().post(
        "/api/similar/", {"image": upload(make_image_bytes(1)), "threshold": "0_5"}, format="multipart"
    )
    assert response.status_code == 400 and response.json()["error"] == "threshold: A valid number is required."


def test_the_extension_check_names_only_the_formats_the_service_decodes(admin_client):
    from tests.test_admin import ADD_URL, add_form

    page = admin_client.post(
        ADD_URL, add_form(image=upload(make_image_bytes(1), "photo.bmp"), latitude="1", longitude="2")
    ).content.decode()
    assert "“bmp” files are not taken; send JPEG, PNG, WebP, GIF (first frame) or HEIC/HEIF." in page
    assert "tiff" not in page


def test_index_files_are_readable_by_a_web_server_running_as_another_user(make_photo, settings):
    import stat

    tasks.embed_photo(make_photo(1).pk)
    manifest = maintenance.rebuild_index()
    for path in (manifest.path, settings.SIMILARITY_INDEX_DIR / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_the_last_index_build_failure_is_in_the_statistics_until_a_build_succeeds(make_photo, monkeypatch):
    tasks.embed_photo(make_photo(1).pk)
    monkeypatch.setattr(
        "similarity.index.snapshot.make_faiss_index", lambda *args: (_ for _ in ()).throw(MemoryError("out of memory"))
    )
    with pytest.raises(MemoryError):
        tasks.maintain_index()
    failure = APIClient().get("/api/stats/").json()["index"]["last_build_error"]
    assert failure["error"] == "MemoryError while building the index (the worker's log has the details)."
    monkeypatch.undo()
    tasks.maintain_index()
    assert APIClient().get("/api/stats/").json()["index"]["last_build_error"] is None


def test_the_schema_types_uploads_as_files(db):
    import yaml

    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    similar = schema["paths"]["/api/similar/"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    name = similar["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][name]["properties"]["image"] == {
        "type": "string",
        "format": "binary",
        "description": "The query photo (JPEG, PNG, WebP, GIF (first frame) or HEIC/HEIF).",
    }
