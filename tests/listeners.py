"""Real listeners on 127.0.0.1 for export fault tests: refusing, silent, killable receiver."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

_RECEIVER = Path(__file__).with_name("otlp_receiver.py")


def closed_port() -> int:
    """Return a port on 127.0.0.1 nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never reads nor answers."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._held:
            conn.close()


class ReceiverProcess:
    """The receiver of ``otlp_receiver.py`` in its own process: killable, restartable."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else closed_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(_RECEIVER), str(self.port)], stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def spans(self) -> list[dict[str, object]]:
        with urllib.request.urlopen(f"{self.endpoint}/spans", timeout=5) as response:
            spans: list[dict[str, object]] = json.loads(response.read())
            return spans

    def trace_ids(self) -> set[str]:
        return {str(span["trace_id"]) for span in self.spans()}

    def wait_for(self, trace_ids: set[str], timeout: float = 10.0) -> set[str]:
        """Wait until every id in ``trace_ids`` arrived; return the ids that did."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.trace_ids() & trace_ids
            if seen == trace_ids or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)
