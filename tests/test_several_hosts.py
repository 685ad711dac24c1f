"""Several machines for real: two web servers (gunicorn) with separate, empty data directories and a worker
(qcluster), all on the test database (PostgreSQL in CI) and on real Milvus and SeaweedFS servers
(tests/servers.py). Nothing is shared through a disk."""

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django_q.models import Task
from rest_framework.authtoken.models import Token

from similarity.index.milvus import MilvusSettings, MilvusVectors
from similarity.models import ReferencePhoto
from similarity.search.vectors import get_encoder
from tests.conftest import ROOT, make_curator, make_image_bytes
from tests.servers import THROWAWAY_GRACE_SECONDS, database_url, free_port, start, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Host:
    """A web server of its own (gunicorn, one process) with a data directory of its own, spoken to over HTTP."""

    def __init__(self, name: str, environment: dict, folder: Path, token: str):
        self.name, self.environment, self.folder, self.token = name, environment, folder, token
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "Host":
        self.folder.mkdir(parents=True, exist_ok=True)
        environment = {**self.environment, "GEOLOCATOR_DATA_DIR": str(self.folder)}
        environment["GUNICORN_BIND"] = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "gunicorn", "-c", "geolocator/gunicorn.conf.py", "geolocator.wsgi"]
        self.process = start_in(command, environment, self.folder.parent / f"{self.name}.log")
        wait_for(lambda: self.answers(), f"web host {self.name} to answer (log: {self.name}.log)")
        return self

    def stop(self, grace_seconds: float = 60) -> None:
        if self.process is not None:
            stop(self.process, grace_seconds)
            self.process = None

    def answers(self) -> bool:
        try:
            return self.request("GET", "/api/stats/")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post_photo(self, fields: dict, data: bytes) -> tuple[int, bytes]:
        body, content_type = multipart(fields, data)
        return self.request("POST", "/api/photos/", body, content_type)

    def finds(self, data: bytes, photo_id: int) -> bool:
        body, content_type = multipart({"top_k": "5"}, data)
        status, answer = self.request("POST", "/api/similar/", body, content_type)
        assert status == 200, answer
        matches = json.loads(answer)["clip_similarity"]["all_matches"]
        return any(match["id"] == photo_id and match["similarity"] > 0.99 for match in matches)


def multipart(fields: dict, image: bytes | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    body = "".join(parts).encode()
    if image is not None:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'.encode()
        body += b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def start_in(command: list[str], environment: dict, log: Path) -> subprocess.Popen:
    return start(command, log, environment, cwd=ROOT)


@pytest.fixture
def cluster(tmp_path, milvus_server, s3_server):
    """The environment every process shares: the database, Milvus, the bucket (a prefix of this test's)."""
    encoder = get_encoder()
    encoder.load()  # measures the runtime choice the processes then reuse (SIMILARITY_MODEL_CACHE_DIR)
    MilvusVectors(MilvusSettings(uri=milvus_server)).drop(encoder.id)  # another test's vectors
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": database_url(),
        "SIMILARITY_VECTOR_BACKEND": "milvus",
        "SIMILARITY_MILVUS_URI": milvus_server,
        **s3_server.environment(f"hosts-{uuid.uuid4().hex[:12]}"),
        "SIMILARITY_ENCODER": settings.SIMILARITY_ENCODER,
        "SIMILARITY_RUNTIME": settings.SIMILARITY_RUNTIME,
        "SIMILARITY_MODEL_CACHE_DIR": str(settings.SIMILARITY_MODEL_CACHE_DIR),
        "HF_HUB_OFFLINE": "1",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
        "Q_WORKERS": "1",
    }
    environment.pop("DJANGO_DEBUG", None)
    processes = []
    token = Token.objects.create(user=make_curator()).key
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    processes.append(
        start_in(
            [sys.executable, "manage.py", "qcluster"],
            {**environment, "GEOLOCATOR_DATA_DIR": str(worker_dir)},
            tmp_path / "worker.log",
        )
    )
    hosts = [Host(name, environment, tmp_path / name, token) for name in ("a", "b")]
    for host in hosts:
        host.start()
    yield hosts
    for host in hosts:  # the test is over and their folders are thrown away: no graceful shutdown to wait for
        host.stop(THROWAWAY_GRACE_SECONDS)
    for process in processes:
        stop(process, THROWAWAY_GRACE_SECONDS)


def test_two_web_hosts_and_a_worker_share_the_database_milvus_and_the_bucket(cluster):
    a, b = cluster
    pictures = {seed: make_image_bytes(seed, size=(480, 360)) for seed in (21, 22, 23)}
    ids = {}
    for seed, data in pictures.items():
        status, body = a.post_photo({"latitude": "59.3293", "longitude": "18.0686", "title": f"photo {seed}"}, data)
        assert status == 201, body
        ids[seed] = int(json.loads(body)["id"])

    # uploaded through A, findable through B once the worker's embedding task has ended: no rebuild, no shared disk
    for seed, photo_id in ids.items():
        wait_for(
            lambda: Task.objects.filter(name=f"embed photo {photo_id}", success=True).exists(),
            f"the worker to embed photo {photo_id}",
        )
        assert b.finds(pictures[seed], photo_id)
    image_name = ReferencePhoto.objects.get(pk=ids[21]).image.name
    assert b.request("GET", f"/media/{image_name}") == (200, pictures[21])  # from the bucket: B never had it

    # deleted on B: gone from A's answers at once (hits are checked against the database)
    assert b.request("DELETE", f"/api/photos/{ids[21]}/")[0] == 204
    assert not a.finds(pictures[21], ids[21])
    # deactivated on B: the same, and its file is no longer served to anyone but staff
    status, body = b.request("PATCH", f"/api/photos/{ids[22]}/", *multipart({"is_active": "false"}))
    assert status == 200, body
    assert not a.finds(pictures[22], ids[22])

    # wiping a host's data directory loses nothing: restarted empty, it answers and serves as before
    a.stop()
    shutil.rmtree(a.folder)
    a.start()
    assert a.finds(pictures[23], ids[23])
    image_name = ReferencePhoto.objects.get(pk=ids[23]).image.name
    assert a.request("GET", f"/media/{image_name}") == (200, pictures[23])
    assert not (a.folder / "media").exists() and not (b.folder / "media").exists()
