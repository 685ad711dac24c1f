"""Shared setup for bench scripts: a throw-away data dir and SQLite database, then django.setup()."""

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLACES = (ROOT.parent / "shared" / "data" / "places").resolve()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup(encoder: str | None = None) -> Path:
    data_dir = Path(tempfile.mkdtemp(prefix="geolocator-bench-"))
    os.environ["GEOLOCATOR_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    os.environ.setdefault("SIMILARITY_LOG_LEVEL", "WARNING")
    if encoder:
        os.environ["SIMILARITY_ENCODER"] = encoder
    os.environ["DJANGO_SETTINGS_MODULE"] = "geolocator.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return data_dir


def import_places():
    """Import and embed ../shared/data/places; returns {photo id: place label}."""
    import csv
    import hashlib
    import io

    from django.core.management import call_command

    from similarity.gallery.importer import find_images, import_photos, read_manifest_csv

    manifest_path = PLACES / "manifest.csv"
    report = import_photos(find_images(PLACES), read_manifest_csv(manifest_path))
    call_command("build_clip_index", "--no-progress", stdout=io.StringIO())
    place_by_sha = {
        hashlib.sha256((PLACES / row["file"]).read_bytes()).hexdigest(): row["place"]
        for row in csv.DictReader(open(manifest_path))
    }
    return {photo.pk: place_by_sha[photo.sha256] for photo in report.imported}


def same_place_top1(place_of: dict[int, str]) -> dict[str, tuple[int, int]]:
    """Leave-one-out through the API's search: per place, (queries whose top match shows the same place,
    queries), over the photos that have a same-place partner; a query with no match counts as wrong."""
    from collections import Counter

    from similarity.models import ReferencePhoto
    from similarity.search import search_similar_to_photo

    photos_per_place = Counter(place_of.values())
    per_place: dict[str, tuple[int, int]] = {}
    for photo in ReferencePhoto.objects.filter(pk__in=place_of).order_by("pk"):
        place = place_of[photo.pk]
        if photos_per_place[place] < 2:
            continue
        best = search_similar_to_photo(photo, top_k=1).best
        right, queries = per_place.get(place, (0, 0))
        per_place[place] = (right + (best is not None and place_of[best.photo.pk] == place), queries + 1)
    return per_place


def random_clip_weights(directory: Path = Path(tempfile.gettempdir()) / "geolocator-bench") -> str:
    """A ViT-B-32 checkpoint with random weights (fixed seed), as a local-file encoder spec.

    No CLIP weights can be downloaded here; random weights have the same shapes
    and compute, so they measure speed and plumbing, never retrieval quality.
    """
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vit-b-32-random-init.pt"
    if not path.exists():
        import open_clip

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        torch.save(model.state_dict(), path)
    return f"open_clip:ViT-B-32/{path}"


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    """The CPU, its flags that decide the runtime (and any simulated ones), cores and Python."""
    import os
    import platform

    from similarity.runtime.hardware import RELEVANT_FLAGS, detect_cpu

    cpu = detect_cpu()
    line = f"{cpu.model}, {os.cpu_count()} cores, Python {platform.python_version()}; CPU flags: "
    line += " ".join(f"{flag}={'yes' if flag in cpu.flags else 'no'}" for flag in RELEVANT_FLAGS)
    simulated = os.environ.get("SIMILARITY_CPU_FLAGS", "").strip()
    if simulated:
        line += f"; runtime choices made as if the CPU had only: {simulated} (SIMILARITY_CPU_FLAGS)"
    return line


def cpu_class() -> str:
    """'int8-dot' (VNNI or AMX) or 'avx2', as the runtime choice sees the CPU (simulated flags included)."""
    import os

    from similarity.runtime.hardware import detect_cpu

    return "int8-dot" if detect_cpu(os.environ.get("SIMILARITY_CPU_FLAGS")).int8_dot else "avx2"


def prepare_gallery(encoder: str, env: dict | None = None) -> Path:
    """A new data dir with the places gallery imported, embedded and indexed by ``encoder`` (manage.py runs).

    ``build_clip_index`` also makes the runtime choice there once (SIMILARITY_RUNTIME=auto),
    as an operator's first build does, so servers started on the dir reuse it.
    """
    import subprocess

    data_dir = Path(tempfile.mkdtemp(prefix="geolocator-bench-"))
    environment = {
        **os.environ,
        "GEOLOCATOR_DATA_DIR": str(data_dir),
        "SIMILARITY_ENCODER": encoder,
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_SETTINGS_MODULE": "geolocator.settings",
        "SIMILARITY_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    environment.pop("DATABASE_URL", None)
    for command in (
        ["migrate", "--noinput"],
        ["import_photos", str(PLACES), "--manifest", str(PLACES / "manifest.csv")],
        ["build_clip_index", "--no-progress"],
    ):
        done = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=environment, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {command[0]} failed:\n{done.stdout}{done.stderr}")
    return data_dir


class Server:
    """gunicorn serving a bench's data dir and encoder on a loopback port (plain HTTP, budgets lifted unless ``env`` sets them)."""

    def __init__(
        self, data_dir: Path, encoder: str, port: int, env: dict | None = None, workers: int = 1, threads: int = 4
    ):
        self.env = {
            "GEOLOCATOR_DATA_DIR": str(data_dir),
            "SIMILARITY_ENCODER": encoder,
            "DJANGO_SECRET_KEY": "bench",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "SIMILARITY_LOOKUP_RATE": "1000000/minute",
            "SIMILARITY_LARGE_LOOKUP_RATE": "1000000/minute",
            "SIMILARITY_READ_RATE": "1000000/minute",
            "SIMILARITY_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.port, self.workers, self.threads = port, workers, threads
        self.log_path = Path(data_dir) / f"server-{port}.log"  # warnings and tracebacks, appended run after run
        self.process: Any = None  # the gunicorn master, once started

    def __enter__(self):
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        env = {**os.environ, **self.env, "DJANGO_SETTINGS_MODULE": "geolocator.settings"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "geolocator/gunicorn.conf.py",
                "geolocator.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/stats/", timeout=30)
                return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc):
        import os
        import signal

        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)

    def pids(self) -> list[int]:
        import subprocess

        children = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in children]

    def rss_bytes(self) -> int:
        return sum(self.rss_by_pid().values())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far, all their threads included."""
        import os

        ticks = 0
        for pid in self.pids():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_by_pid(self, workers_only: bool = False) -> dict[int, int]:
        """Resident memory of each of the server's processes (only the workers if asked)."""
        sizes = {}
        for pid in self.pids():
            if workers_only and pid == self.process.pid:
                continue
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        sizes[pid] = int(line.split()[1]) * 1024
            except OSError:
                pass
        return sizes


def get_json(port: int, path: str, timeout: float = 60) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return json.loads(response.read())


def post_image(
    port: int,
    path: str,
    data: bytes,
    filename: str = "query.jpg",
    timeout: float = 120,
    headers: dict | None = None,
    request_headers: dict | None = None,
    fields: dict | None = None,
) -> tuple[int, bytes]:
    """POST a multipart form with one image field (and ``fields``, if given); returns (status, body) and fills
    ``headers`` if given."""
    import http.client
    import uuid

    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    )
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **(request_headers or {})}
        )
        response = connection.getresponse()
        if headers is not None:
            headers.update(response.getheaders())
        return response.status, response.read()
    finally:
        connection.close()
