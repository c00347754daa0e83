"""A real S3-compatible server for tests: moto's standalone server on 127.0.0.1.

`moto_server` (session-scoped; import ``moto_server_fixture`` to use it) starts ``python -m moto.server`` as its own process on a free
loopback port, waits until it answers and stops it (by its pid) at the end. `s3_store`
gives each test a fresh bucket and sets the standard ``AWS_*`` environment variables, so
``ParquetSink``/``RunStore``/the CLI and child processes reach it (import
``s3_store_fixture``).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

_buckets = itertools.count()


def free_port() -> int:
    """Return a free port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """A running moto server."""

    process: subprocess.Popen[bytes]
    endpoint: str

    def env(self) -> dict[str, str]:
        """The AWS environment variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass


def start_moto() -> MotoServer:
    """Start moto's server on a free loopback port; return once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return MotoServer(process, endpoint)
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


@pytest.fixture(scope="session", name="moto_server")
def moto_server_fixture() -> Iterator[MotoServer]:
    """A moto S3 server for the whole session (stopped by its pid at the end)."""
    server = start_moto()
    try:
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)


@pytest.fixture(name="s3_store")
def s3_store_fixture(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``s3://bucket/runs`` store URI, with the AWS variables set for this test."""
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"store-{os.getpid()}-{next(_buckets)}"
    moto_server.create_bucket(bucket)
    return f"s3://{bucket}/runs"
