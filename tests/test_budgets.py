"""What one client may cost the service (issue 26, items 2-4): budgets priced by what a lookup costs, a bound on
the verified lookups a worker runs at once, proposals the service makes by itself counted against the client,
and clients counted per network, for the budgets and the admin login alike.

Each test failed on the code the second audit examined (9093a7d).
"""

import os
import threading

import pytest
from rest_framework.test import APIClient

from similarity import priority, tasks
from similarity.api import pricing
from similarity.models import Candidate, RequestCounter
from similarity.search import features
from tests.conftest import gps_exif, make_image_bytes, upload
from tests.test_hardening import similar
from tests.test_review import PARIS, re_encoded


@pytest.fixture
def budgets(monkeypatch):
    """Per-client budgets of these sizes (the others unlimited), counted afresh."""
    from similarity.api import throttles

    def set_rates(**rates):
        unlimited = {scope: "100000/minute" for scope in ("lookup", "lookup_large", "read", "propose")}
        for throttle in (
            throttles.LookupThrottle,
            throttles.LargeImageThrottle,
            throttles.ReadThrottle,
            throttles.ProposalThrottle,
            throttles.ProposalStorageThrottle,
        ):
            monkeypatch.setattr(
                throttle, "THROTTLE_RATES", {**unlimited, "proposal_storage": "100000000/minute", **rates}
            )
        RequestCounter.objects.all().delete()

    return set_rates


@pytest.fixture
def verifying(settings, make_photo):
    """Verification on, and a stored photo with neighbours to verify against."""
    settings.SIMILARITY_VERIFY = "all"
    features.forget_cached()
    photos = [make_photo(seed) for seed in range(3)]
    for photo in photos:
        tasks.embed_photo(photo.pk)
    return photos[0]


# --- 2. budgets priced by cost ----------------------------------------------------------------------------


def test_a_lookups_price_follows_the_verification_it_asks_for(settings):
    settings.SIMILARITY_VERIFY = "all"
    assert pricing.price(pricing.UPLOAD, verify="off").units == 1
    assert pricing.price(pricing.UPLOAD).units == 1 + 4 + 4  # the query's features, and 20 pairs
    assert pricing.price(pricing.STORED, top_k=50, verify="all").units == 1 + 10  # 50 pairs, features stored
    assert pricing.price(pricing.TEXT, verify="all").units == 1
    settings.SIMILARITY_VERIFY = "off"
    assert pricing.price(pricing.UPLOAD).units == 1


def test_a_verified_lookup_takes_more_of_a_budget_than_a_plain_one(verifying, budgets):
    budgets(lookup="20/minute")
    client = APIClient()
    url = f"/api/photos/{verifying.pk}/similar/"
    assert client.get(url, {"verify": "all", "top_k": 50}).status_code == 200  # 11 units
    refused = client.get(url, {"verify": "all", "top_k": 50})
    assert refused.status_code == 429 and "Retry-After" in refused
    assert [client.get(url, {"verify": "off"}).status_code for _ in range(10)] == [200] * 9 + [429]


@pytest.fixture
def held_verification(monkeypatch):
    """Verified lookups stop inside verification until ``release`` is set; ``inside`` counts those waiting
    there and ``background`` records whether each ran as background work."""
    inside = threading.Semaphore(0)
    release = threading.Event()
    background: list[bool] = []
    verify = features.verify_matches

    def held(matches, query, mode, explain=False):
        background.append(priority.in_background())
        inside.release()
        assert release.wait(timeout=120)
        return verify(matches, query, mode, explain)

    monkeypatch.setattr(features, "verify_matches", held)
    yield inside, release, background
    release.set()


def in_thread(function, *args, **kwargs):
    """Run ``function`` on a thread; the returned list holds its result once the thread is joined."""
    from django.db import connection

    result: list = []

    def run():
        try:
            result.append(function(*args, **kwargs))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.django_db(transaction=True)
def test_a_worker_bounds_the_verified_lookups_it_runs_at_once(verifying, held_verification, settings):
    inside, release, _ = held_verification
    settings.SIMILARITY_MAX_PARALLEL_VERIFICATIONS = 1
    settings.SIMILARITY_VERIFY_QUEUE_SECONDS = 0.5
    url = f"/api/photos/{verifying.pk}/similar/"
    thread, first = in_thread(APIClient().get, url, REMOTE_ADDR="192.0.2.1")
    assert inside.acquire(timeout=120)  # the first lookup holds the process's one slot
    busy = APIClient().get(url, REMOTE_ADDR="192.0.2.2")
    plain = APIClient().get(url, {"verify": "off"}, REMOTE_ADDR="192.0.2.2")
    release.set()
    thread.join(timeout=120)
    assert busy.status_code == 503 and busy["Retry-After"] == "5"
    assert "busy with other verified lookups" in busy.json()["error"]
    assert plain.status_code == 200  # lookups without verification are not held back
    assert first[0].status_code == 200
    assert RequestCounter.objects.get(key="throttle_lookup_192.0.2.2").count == 1  # the refused one is not charged


@pytest.mark.django_db(transaction=True)
def test_a_client_that_spent_most_of_its_budget_verifies_in_the_background_one_lookup_at_a_time(
    verifying, held_verification, budgets
):
    inside, release, background = held_verification
    budgets(lookup="20/minute")
    url = f"/api/photos/{verifying.pk}/similar/"
    busy_client = {"REMOTE_ADDR": "192.0.2.7"}
    thread, first = in_thread(APIClient().get, url, {"top_k": 50}, **busy_client)  # 11 of 20 units
    assert inside.acquire(timeout=120)
    second = APIClient().get(url, {"top_k": 5}, **busy_client)  # 5 more would fit the budget
    other = in_thread(APIClient().get, url, REMOTE_ADDR="192.0.2.8")
    assert inside.acquire(timeout=120)
    release.set()
    for running in (thread, other[0]):
        running.join(timeout=120)
    assert first[0].status_code == 200 and other[1][0].status_code == 200
    assert second.status_code == 429 and second["Retry-After"] == "5" and "has to wait" in second.json()["error"]
    assert background == [True, False]  # the client at most of its budget, then another client
    assert RequestCounter.objects.get(key="throttle_lookup_192.0.2.7").count == 11


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_verified_lookups_from_one_client_runs_one_in_the_foreground(verifying, held_verification):
    inside, release, background = held_verification
    url = f"/api/photos/{verifying.pk}/similar/"
    burst = {"REMOTE_ADDR": "192.0.2.40"}  # far from spending half of its budget
    running = [in_thread(APIClient().get, url, **burst)]
    assert inside.acquire(timeout=120)
    running.append(in_thread(APIClient().get, url, **burst))
    assert inside.acquire(timeout=120)
    third = APIClient().get(url, **burst)
    release.set()
    for thread, _ in running:
        thread.join(timeout=120)
    assert background == [False, True]  # the second ran in the background while the first ran
    assert third.status_code == 429 and third["Retry-After"] == "5"
    assert [result[0].status_code for _, result in running] == [200, 200]


@pytest.mark.django_db(transaction=True)
def test_one_busy_client_does_not_keep_another_from_verifying_in_the_background(verifying, held_verification, budgets):
    inside, release, background = held_verification
    budgets(lookup="20/minute")
    url = f"/api/photos/{verifying.pk}/similar/"
    running = [in_thread(APIClient().get, url, {"top_k": 50}, REMOTE_ADDR=f"192.0.2.{n}") for n in (30, 31)]
    for _ in running:
        assert inside.acquire(timeout=120)  # both are inside verification at once
    release.set()
    for thread, _ in running:
        thread.join(timeout=120)
    assert [result[0].status_code for _, result in running] == [200, 200] and background == [True, True]


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities are a POSIX feature")
def test_background_verification_runs_on_threads_of_a_lower_os_priority():
    from similarity.geometry import verification

    def niceness():
        return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux, the calling thread's

    normal = verification.threads().submit(niceness).result()
    background = verification.threads(background=True).submit(niceness).result()
    assert background == min(19, normal + verification.BACKGROUND_NICENESS) and normal == os.getpriority(
        os.PRIO_PROCESS, 0
    )


# --- 3. proposals the service makes by itself ----------------------------------------------------------------


@pytest.fixture
def suggesting(sample_gallery, settings):
    settings.SIMILARITY_SUGGEST_CONFIDENCE = 0.5
    return sample_gallery


def test_automatic_suggestions_count_against_the_clients_proposal_budget(suggesting, budgets):
    budgets(propose="2/hour")
    client = APIClient()
    statuses = [
        client.post("/api/similar/", {"image": upload(re_encoded(PARIS, quality))}, format="multipart").status_code
        for quality in (60, 70, 80, 90)
    ]
    assert statuses == [200] * 4  # the lookups are answered; only two of them are kept
    assert Candidate.objects.filter(automatic=True).count() == 2


def test_automatic_suggestions_count_against_the_clients_storage_budget(suggesting, budgets):
    size_kib = -(-len(re_encoded(PARIS, 60)) // 1024)
    budgets(proposal_storage=f"{size_kib + size_kib // 2}/hour")
    client = APIClient()
    for quality in (60, 61):
        client.post("/api/locate/", {"image": upload(re_encoded(PARIS, quality))}, format="multipart")
    assert Candidate.objects.filter(automatic=True).count() == 1
    assert RequestCounter.objects.get(key="throttle_propose_127.0.0.1").count == 1  # the refused one gave it back


def test_a_gps_claim_alone_never_makes_an_automatic_candidate(suggesting):
    noise = make_image_bytes(77, size=(640, 480), exif=gps_exif(52.52, 13.405))
    response = APIClient().post("/api/locate/", {"image": upload(noise)}, format="multipart")
    assert response.status_code == 200 and response.json()["final"]["source"] == "exif_gps"
    assert not Candidate.objects.exists()


def test_a_proposal_counts_its_bytes_against_the_storage_budget(suggesting, budgets):
    data = re_encoded(PARIS, 60)
    budgets(proposal_storage=f"{len(data) // 1024}/hour")  # one KiB short
    response = APIClient().post("/api/candidates/", {"image": upload(data)}, format="multipart")
    assert response.status_code == 429 and not Candidate.objects.exists()


# --- 4. clients are networks ---------------------------------------------------------------------------------


def lookup_from(address: str) -> int:
    return similar(APIClient(), HTTP_X_FORWARDED_FOR=address).status_code


def test_addresses_of_one_ipv6_64_share_one_budget(db, budgets, settings):
    settings.GEOLOCATOR_NUM_PROXIES = 1
    budgets(lookup="1/minute")
    assert lookup_from("2001:db8:1:2::1") == 200
    assert lookup_from("2001:db8:1:2:ffff:ffff:ffff:fffe") == 429  # the same /64
    assert lookup_from("2001:db8:1:3::1") == 200  # the next /64: another client
    assert lookup_from("203.0.113.9") == 200 and lookup_from("203.0.113.10") == 200  # IPv4: per address


def test_the_networks_a_client_is_counted_by_are_settable(db, budgets, settings):
    settings.GEOLOCATOR_NUM_PROXIES = 1
    settings.GEOLOCATOR_CLIENT_IPV4_PREFIX, settings.GEOLOCATOR_CLIENT_IPV6_PREFIX = 24, 128
    budgets(lookup="1/minute")
    assert [lookup_from(address) for address in ("203.0.113.9", "203.0.113.10")] == [200, 429]
    assert [lookup_from(address) for address in ("2001:db8::1", "2001:db8::2")] == [200, 200]


@pytest.mark.parametrize(
    "forwarded",
    ["not-an-address", "1" * 300, "203.0.113.1<script>", "::ffff:999.1.1.1"],
    ids=["word", "300-characters", "markup", "bad-mapped"],
)
@pytest.mark.parametrize("path", ["/api/similar/", "/admin/login/"])
def test_a_forwarded_value_that_is_not_an_address_is_a_400_and_stored_nowhere(db, settings, forwarded, path):
    from axes.models import AccessAttempt

    settings.GEOLOCATOR_NUM_PROXIES = 1
    if path == "/api/similar/":
        response = similar(APIClient(), HTTP_X_FORWARDED_FOR=f"198.51.100.1, {forwarded}")
        assert response.status_code == 400 and response.json() == {
            "success": False,
            "error": "The X-Forwarded-For header does not hold a valid client IP address.",
        }
    else:
        response = APIClient().post(
            path, {"username": "curator", "password": "x"}, HTTP_X_FORWARDED_FOR=forwarded, format="multipart"
        )
        assert response.status_code == 400
    assert not RequestCounter.objects.exists() and not AccessAttempt.objects.exists()


def login(client, address: str, password: str = "wrong"):
    return client.post("/admin/login/", {"username": "curator", "password": password}, HTTP_X_FORWARDED_FOR=address)


@pytest.fixture
def curator_account(django_user_model, settings):
    settings.GEOLOCATOR_NUM_PROXIES = 1
    settings.AXES_FAILURE_LIMIT = 3
    return django_user_model.objects.create_superuser("curator", "c@example.com", "correct horse battery")


@pytest.mark.django_db(transaction=True)
def test_the_login_lockout_counts_per_network(client, curator_account):
    statuses = [login(client, f"2001:db8:5:5::{n}").status_code for n in range(1, 5)]
    assert statuses == [200, 200, 429, 429]  # three failures from one /64 lock it out, whatever the address
    assert login(client, "2001:db8:5:6::1", "correct horse battery").status_code == 302  # another network


@pytest.mark.django_db(transaction=True)
def test_an_account_attacked_from_many_networks_is_locked_out_except_from_where_its_curator_signs_in(
    client, curator_account, settings
):
    settings.GEOLOCATOR_LOGIN_ACCOUNT_FAILURE_LIMIT = 6
    assert login(client, "198.51.100.20", "correct horse battery").status_code == 302  # the curator's network
    client.logout()
    attacker = [login(client, f"203.0.113.{n}").status_code for n in range(1, 10)]  # one guess per network
    assert attacker == [200] * 5 + [429] * 4  # the sixth failure of the account locks it out
    assert login(client, "203.0.113.200", "correct horse battery").status_code == 429  # a new network: locked
    assert login(client, "198.51.100.20", "correct horse battery").status_code == 302  # the curator's own: not
