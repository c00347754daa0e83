"""OTLP backends for ``overhead.py``: a real receiver, a refusing port, a silent listener.

And `EncodingDropExporter`, the exporter of the main measurements: it encodes every batch to
OTLP protobuf bytes, as the OTLP exporter does, and drops them.

Every listener runs in its own process (bound to 127.0.0.1), so its CPU is not counted in the
benchmark's process CPU:

* `Receiver`: ``tests/otlp_receiver.py`` (a real OTLP/HTTP receiver answering 200);
* `SilentListener`: accepts every connection and reads forever, never answers;
* `refusing_endpoint`: a port nothing listens on (connections are refused).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parent.parent
RECEIVER = ROOT / "tests" / "otlp_receiver.py"

_SILENT = """
import socket, sys, threading
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)
def drain(conn):
    while conn.recv(65536):
        pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""


class EncodingDropExporter(SpanExporter):
    """Encodes each batch to an OTLP ExportTraceServiceRequest, then drops the bytes.

    The CPU an OTLP exporter spends per span, without the HTTP request per flush (batching
    amortizes that in production; a flush after every query would not).
    """

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.bytes += len(encode_spans(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refusing_endpoint() -> str:
    """An OTLP/HTTP endpoint whose connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


class _Process:
    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().strip()
        if not self.first_line:
            self.close()
            raise RuntimeError(f"{argv[1:]} did not start")

    def close(self) -> None:
        """Stop the process (it is ours: terminate, then kill)."""
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()


class Receiver(_Process):
    """``tests/otlp_receiver.py`` in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__([sys.executable, str(RECEIVER), str(self.port)])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class SilentListener(_Process):
    """Accepts connections and reads them forever; never answers."""

    def __init__(self) -> None:
        super().__init__([sys.executable, "-c", _SILENT])
        self.port = int(self.first_line)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"
