"""Real trace backends for tests: Arize Phoenix (in a private network namespace) and rotel.

Phoenix runs from its own tool environment (``uvx --from arize-phoenix==...``), never in the
project's. Its gRPC listener binds every interface whatever ``PHOENIX_HOST`` says, so it runs
under ``unshare -n`` (root; CI runs as root): nothing it opens is reachable from outside that
namespace. `relay.py` carries its HTTP port (UI, REST API, OTLP/HTTP) to a free port on the
host's 127.0.0.1 through a Unix socket file, which is all the tests need. rotel (an OTLP
collector shipped on PyPI, a dev dependency) binds exactly 127.0.0.1:<free ports> and forwards
to Phoenix over OTLP/HTTP: the app -> collector -> backend topology, and the gRPC path.

If Phoenix cannot be started, the tests fail with its log; they are never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import rotel

from relay import TcpToUnixRelay

PHOENIX_SPEC = "arize-phoenix==20.26.1"
"""The Phoenix release the tests run (``.ci/run`` fetches the same one)."""
_START_TIMEOUT_S = 180.0
_RELAY = Path(__file__).with_name("relay.py")


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group led by ``process`` (started with start_new_session)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def ensure_phoenix_tool_env() -> None:
    """Make sure the Phoenix tool env is in uv's cache (network only when it is not)."""
    offline = subprocess.run(
        ["uvx", "--offline", "--from", PHOENIX_SPEC, "phoenix", "--help"],
        capture_output=True,
        check=False,
        timeout=600,
    )
    if offline.returncode == 0:
        return
    online = subprocess.run(
        ["uvx", "--from", PHOENIX_SPEC, "phoenix", "--help"],
        capture_output=True,
        check=False,
        timeout=900,
    )
    if online.returncode != 0:
        pytest.fail(f"could not install {PHOENIX_SPEC}: {online.stderr.decode()[-3000:]}")


@dataclass
class Phoenix:
    """A running Phoenix, reachable at ``http://127.0.0.1:{port}`` from the test process."""

    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            data: dict[str, object] = json.loads(response.read())
            return data

    def spans(self, trace_id: str, *, expect: int = 1, timeout: float = 30.0) -> list[dict]:  # type: ignore[type-arg]
        """Poll the REST API until at least ``expect`` spans of ``trace_id`` are stored."""
        deadline = time.monotonic() + timeout
        spans: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            body = self.get_json(f"/v1/projects/default/spans?trace_id={trace_id}&limit=100")
            data = body.get("data")
            spans = list(data) if isinstance(data, list) else []
            if len(spans) >= expect:
                return spans
            time.sleep(0.5)
        return spans


def start_phoenix(workdir: Path) -> tuple[subprocess.Popen[bytes], Phoenix, TcpToUnixRelay]:
    """Start Phoenix under ``unshare -n`` and relay its HTTP port to the host's loopback."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("Phoenix tests need root and unshare(1) to keep Phoenix off the network")
    ensure_phoenix_tool_env()
    sock = workdir / "phoenix.sock"
    log = workdir / "phoenix.log"
    script = (
        "set -e; ip link set lo up; "
        f'"{sys.executable}" "{_RELAY}" "{sock}" 6006 & '
        f'exec uvx --offline --from "{PHOENIX_SPEC}" phoenix serve'
    )
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": "6006",
        "PHOENIX_GRPC_PORT": "4317",
        "PHOENIX_WORKING_DIR": str(workdir / "phoenix"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "-n", "bash", "-c", script],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    relay = TcpToUnixRelay(str(sock))
    phoenix = Phoenix(relay.port, log)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            relay.close()
            pytest.fail(f"Phoenix exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{phoenix.url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process, phoenix, relay
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            _stop_group(process)
            relay.close()
            tail = log.read_text()[-4000:]
            pytest.fail(f"Phoenix not ready in {_START_TIMEOUT_S:.0f} s:\n{tail}")
        time.sleep(0.5)


@pytest.fixture(scope="session", name="phoenix")
def phoenix_fixture() -> Iterator[Phoenix]:
    """A Phoenix for the whole session, stopped (its process group) afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="df-otel-phoenix-"))
    process, instance, relay = start_phoenix(workdir)
    try:
        yield instance
    finally:
        _stop_group(process)
        relay.close()
        shutil.rmtree(workdir, ignore_errors=True)


def rotel_binary() -> Path:
    """Path of the rotel agent binary shipped in the ``rotel`` wheel."""
    path = Path(rotel.__file__).with_name("rotel-agent")
    if not path.exists():
        pytest.fail(f"rotel agent binary missing at {path}")
    return path


@dataclass
class Rotel:
    """A rotel collector on 127.0.0.1 forwarding to Phoenix over OTLP/HTTP."""

    grpc_port: int
    http_port: int
    log: Path


@pytest.fixture(scope="session", name="rotel_to_phoenix")
def rotel_fixture(phoenix: Phoenix) -> Iterator[Rotel]:
    """rotel receiving OTLP (gRPC and HTTP) on 127.0.0.1 and exporting to ``phoenix``."""
    workdir = Path(tempfile.mkdtemp(prefix="df-otel-rotel-"))
    collector = Rotel(free_port(), free_port(), workdir / "rotel.log")
    command = [
        str(rotel_binary()),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{collector.grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{collector.http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-endpoint",
        phoenix.url,
        "--otlp-exporter-protocol",
        "http",
    ]
    with collector.log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"rotel exited:\n{collector.log.read_text()[-4000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", collector.grpc_port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"rotel not listening:\n{collector.log.read_text()[-4000:]}")
            time.sleep(0.05)
        yield collector
    finally:
        _stop_group(process)
        shutil.rmtree(workdir, ignore_errors=True)
