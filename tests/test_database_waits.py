"""A database that goes silent on connections already open (a frozen proxy): requests answer 503 within the
documented bound, and the same worker answers normally once the database is back (issue 26, item 1)."""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import ROOT, make_image_bytes
from tests.relay import FreezableRelay

pytestmark = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="needs PostgreSQL (DATABASE_URL=postgres://...): the waits bounded here are psycopg2's",
)


@pytest.fixture
def relay():
    """A freezable relay in front of the test database's server."""
    db = connection.settings_dict
    proxy = FreezableRelay(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    yield proxy
    proxy.close()


def test_a_warm_connection_that_goes_silent_ends_its_wait_and_is_closed(relay):
    """The wait on an established connection raises at its deadline; the thread is free, not deadlocked."""
    import psycopg2

    from similarity.database import bound_waits

    db = connection.settings_dict
    bound_waits(connect_timeout_seconds=2, statement_timeout_seconds=1)
    try:
        warm = psycopg2.connect(host="127.0.0.1", port=relay.port, user=db["USER"], dbname=db["NAME"])
        warm.cursor().execute("SELECT 1")
        relay.freeze()
        outcome: list = []

        def query():
            try:
                warm.cursor().execute("SELECT 2")
                outcome.append("answered")
            except psycopg2.OperationalError as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=query, daemon=True)
        waiting.start()
        waiting.join(timeout=60)  # the bound is 3 s; a deadlocked thread never ends
        assert not waiting.is_alive(), "the thread is stuck inside psycopg2"
        assert isinstance(outcome[0], psycopg2.OperationalError) and warm.closed
        with pytest.raises(psycopg2.OperationalError, match="not connecting again yet"):  # no second wait at once
            psycopg2.connect(host="127.0.0.1", port=relay.port, user=db["USER"], dbname=db["NAME"])
        relay.thaw()
        deadline = time.monotonic() + 10
        while True:  # the pause after a silence is the connect timeout (2 s here)
            try:
                again = psycopg2.connect(host="127.0.0.1", port=relay.port, user=db["USER"], dbname=db["NAME"])
                break
            except psycopg2.OperationalError:
                assert time.monotonic() < deadline, "no connection within 10 s of the database coming back"
                time.sleep(0.2)
        cursor = again.cursor()
        cursor.execute("SELECT 3")
        assert cursor.fetchone() == (3,)
        again.close()
    finally:
        bound_waits(settings.DATABASE_CONNECT_TIMEOUT, settings.DATABASE_STATEMENT_TIMEOUT)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, float]:
    """(status, seconds) of one request; a status of 0 means no answer within two minutes."""
    started = time.monotonic()
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, time.monotonic() - started


def multipart(data: bytes) -> tuple[bytes, dict]:
    boundary = "frozenproxyboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture
def gunicorn_behind_relay(relay, data_dir, transactional_db):
    """One gunicorn worker (4 threads) whose database connections all go through the relay."""
    from tests.servers import database_url

    port = 8000 + os.getpid() % 1000 + 100
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        "DJANGO_SECRET_KEY": "frozen-proxy-test",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": database_url().replace(f":{db['PORT'] or 5432}/", f":{relay.port}/"),
        "DATABASE_CONN_MAX_AGE": "60",
        "DATABASE_STATEMENT_TIMEOUT": "2",
        "GEOLOCATOR_DATA_DIR": str(data_dir),
        "SIMILARITY_ENCODER": settings.SIMILARITY_ENCODER,
        "SIMILARITY_RUNTIME": settings.SIMILARITY_RUNTIME,
        "SIMILARITY_MODEL_CACHE_DIR": str(settings.SIMILARITY_MODEL_CACHE_DIR),
        "SIMILARITY_VERIFY": "off",
        "HF_HUB_OFFLINE": "1",
    }
    log = open(data_dir / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "geolocator/gunicorn.conf.py", "geolocator.wsgi"]
        + ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a cold start loads the model; generous on a busy machine
    while http("GET", base + "/api/stats/")[0] != 200:
        assert server.poll() is None and time.monotonic() < deadline, (data_dir / "gunicorn.log").read_text()[-3000:]
        time.sleep(0.5)
    yield base, server
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def worker_pids(server: subprocess.Popen) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    return {int(pid) for pid in found}


def test_requests_on_warm_connections_get_a_503_in_time_and_the_worker_recovers(
    gunicorn_behind_relay, relay, make_photo
):
    base, server = gunicorn_behind_relay
    photo = make_photo(1)
    body, headers = multipart(make_image_bytes(1))
    requests = [
        ("GET", base + "/api/stats/", None, {}),
        ("GET", base + f"/api/photos/{photo.pk}/", None, {}),
        ("POST", base + "/api/similar/", body, headers),
        ("GET", base + "/api/photos/", None, {}),
    ]
    with ThreadPoolExecutor(8) as pool:  # every request thread opens its connection
        for _ in range(3):
            warm = list(pool.map(lambda request: http(*request)[0], requests * 2))
            assert set(warm) == {200}, warm
        workers = worker_pids(server)
        relay.freeze()
        frozen = list(pool.map(lambda request: http(*request), requests))
    assert [status for status, _ in frozen] == [503] * len(requests), frozen
    assert max(seconds for _, seconds in frozen) < 2 + 5, frozen  # the server's DATABASE_STATEMENT_TIMEOUT + 5 s

    relay.thaw()
    deadline = time.monotonic() + 10
    while http("GET", base + "/api/stats/")[0] != 200:
        assert time.monotonic() < deadline, "the worker did not answer within 10 s of the database coming back"
        time.sleep(0.2)
    assert [http(*request)[0] for request in requests] == [200] * len(requests)
    assert http("GET", base + "/")[0] == 200
    assert worker_pids(server) == workers  # the same worker, not a replacement
