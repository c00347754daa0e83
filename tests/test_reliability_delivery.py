"""Flushing, exit and the sink queue: one flush for everything, a bounded exit, bounded memory.

Real OTLP receivers in their own process, real subprocesses for exit, the real SDK.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from datafusion_otel import tracked_run
from datafusion_otel._processing.delivery import SinkDispatcher, dispatcher
from datafusion_otel.export import BatchOptions
from datafusion_otel.store import ParquetSink, RunStore
from listeners import ReceiverProcess, SilentServer
from otel_state import Handles, handles_fixture  # noqa: F401

SLOW_BATCH = BatchOptions(schedule_delay=60.0)  # spans wait for a flush, not for a timer


@pytest.fixture
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    process.start()
    yield process
    process.kill()


class TestForceFlush:
    """`datafusion_otel.force_flush()` flushes the exporters `configure` attached, too."""

    def test_module_force_flush_exports_queued_spans(
        self, handles: Handles, receiver: ReceiverProcess
    ) -> None:
        handles.add(datafusion_otel.configure(endpoint=receiver.endpoint, batch=SLOW_BATCH))
        ids = set()
        for index in range(5):
            with tracked_run(label=f"flushed-{index}") as run:
                ids.add(run.run_id)
        assert datafusion_otel.force_flush(10) is True
        assert receiver.trace_ids() >= ids  # there at once: no wait for the 60 s timer

    def test_module_force_flush_writes_parquet_sink_buffers(
        self, handles: Handles, tmp_path: Path
    ) -> None:
        configured = ParquetSink(tmp_path / "configured", flush_interval=60)
        per_run = ParquetSink(tmp_path / "per-run", flush_interval=60)
        handles.add(datafusion_otel.configure(sink=configured))
        for index in range(3):
            with tracked_run(label=f"stored-{index}"):
                pass
        with tracked_run(label="own-sink", sink=per_run):
            pass
        assert datafusion_otel.force_flush(10) is True
        assert RunStore(tmp_path / "configured").run_count() == 4  # it receives every run
        assert RunStore(tmp_path / "per-run").run_count() == 1
        configured.close()
        per_run.close()

    def test_a_sink_whose_flush_fails_or_hangs_makes_it_false(self, handles: Handles) -> None:
        class _FlushingSink:
            def __init__(self, result: bool | None) -> None:
                self.result = result
                self.release = threading.Event()
                self.calls: list[float] = []

            def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
                pass

            def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
                pass

            def force_flush(self, timeout: float) -> bool:
                self.calls.append(timeout)
                if self.result is None:  # stuck until released
                    self.release.wait()
                    return True
                return self.result

        good, failing, stuck = _FlushingSink(True), _FlushingSink(False), _FlushingSink(None)
        for sink in (good, failing, stuck):
            with tracked_run(label="flushing", sink=sink):
                pass
        try:
            assert datafusion_otel.force_flush(0.5) is False
            assert good.calls and failing.calls and stuck.calls  # each was asked, in parallel
            assert all(timeout <= 0.5 for timeout in good.calls + failing.calls + stuck.calls)
        finally:
            stuck.release.set()
        failing.result = True
        assert datafusion_otel.force_flush(10) is True  # all sinks flushed fine this time


class TestConfigureTwice:
    """A second `configure` with the same endpoint does not export twice."""

    def test_same_endpoint_exports_each_span_once(
        self, handles: Handles, receiver: ReceiverProcess
    ) -> None:
        first = handles.add(datafusion_otel.configure(endpoint=receiver.endpoint))
        second = handles.add(datafusion_otel.configure(endpoint=receiver.endpoint))
        assert second.exporters == first.exporters
        with tracked_run(label="once") as run:
            pass
        assert datafusion_otel.force_flush(10) is True
        spans = [s for s in receiver.spans() if s["trace_id"] == run.run_id]
        assert len(spans) == 1

    def test_endpoint_the_application_already_exports_to_is_not_added_again(
        self, handles: Handles, receiver: ReceiverProcess, caplog: pytest.LogCaptureFixture
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        app = TracerProvider()  # the usual opentelemetry-instrument setup, then an endpoint
        app.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces"))
        )
        trace.set_tracer_provider(app)
        try:
            with caplog.at_level(logging.WARNING, logger="datafusion_otel.config"):
                handles.add(datafusion_otel.configure(endpoint=f"{receiver.endpoint}/"))
            assert any("already exports" in r.getMessage() for r in caplog.records)
            with tracked_run(label="app-exports") as run:
                pass
            assert app.force_flush(10_000)
            assert receiver.wait_for({run.run_id}) == {run.run_id}
            spans = [s for s in receiver.spans() if s["trace_id"] == run.run_id]
            assert len(spans) == 1  # not twice
        finally:
            app.shutdown()

    def test_same_exporter_object_is_attached_once(self, handles: Handles) -> None:
        exporter = InMemorySpanExporter()
        handles.add(datafusion_otel.configure(span_exporters=[exporter]))
        handles.add(datafusion_otel.configure(span_exporters=[exporter]))
        with tracked_run(label="object-once") as run:
            pass
        assert datafusion_otel.force_flush(10) is True
        ids = [s.context.trace_id for s in exporter.get_finished_spans()]
        assert ids.count(int(run.run_id, 16)) == 1

    def test_other_endpoint_adds_an_exporter_with_a_warning(
        self, handles: Handles, receiver: ReceiverProcess, caplog: pytest.LogCaptureFixture
    ) -> None:
        other = ReceiverProcess()
        other.start()
        try:
            handles.add(datafusion_otel.configure(endpoint=receiver.endpoint))
            with caplog.at_level(logging.WARNING, logger="datafusion_otel.config"):
                handles.add(datafusion_otel.configure(endpoint=other.endpoint))
            assert any("second" in r.getMessage() or "#2" in r.getMessage() for r in caplog.records)
            with tracked_run(label="both") as run:
                pass
            assert datafusion_otel.force_flush(10) is True
            assert run.run_id in receiver.trace_ids()
            assert run.run_id in other.trace_ids()
        finally:
            other.kill()


_STUCK_PROGRAM = """
    import sys, threading
    import datafusion_otel
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class StuckSink:
        def record_events(self, name, rows):
            threading.Event().wait()
        def record_artifact(self, name, payload):
            threading.Event().wait()
        def force_flush(self, timeout):
            threading.Event().wait()

    class StuckExporter(SpanExporter):
        def export(self, spans):
            threading.Event().wait()
            return SpanExportResult.SUCCESS
        def force_flush(self, timeout_millis=30000):
            threading.Event().wait()
        def shutdown(self):
            threading.Event().wait()

    # a backend that accepts connections and never answers, two stuck exporters, stuck sinks
    datafusion_otel.configure(
        endpoint=sys.argv[1],
        span_exporters=[StuckExporter(), StuckExporter()],
        sink=StuckSink(),
    )
    for index in range(3):
        with datafusion_otel.tracked_run(label=f"stuck-{index}", sink=StuckSink()):
            pass
    # the OTLP exporter is now waiting for the silent backend's answer; this flush gives up
    print("main flushed", datafusion_otel.force_flush(0.5), flush=True)
    print("main done", flush=True)
"""


class TestBoundedExit:
    """Stuck sinks, stuck exporters and a silent backend delay exit by one ceiling in total."""

    CEILING_S = 1.0
    SLACK_S = 6.0  # interpreter start and imports on a shared machine; each stuck wait is 5 s+

    def test_process_with_stuck_sinks_exporters_and_backend_exits_within_the_ceiling(
        self,
    ) -> None:
        silent = SilentServer()
        env = {"DATAFUSION_OTEL_EXIT_TIMEOUT": str(self.CEILING_S), "PATH": ""}
        try:
            started = time.monotonic()
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    textwrap.dedent(_STUCK_PROGRAM),
                    f"http://127.0.0.1:{silent.port}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                check=False,
            )
            elapsed = time.monotonic() - started
        finally:
            silent.close()
        assert result.returncode == 0, result.stderr
        assert "main flushed False" in result.stdout  # stuck: the flush says so in time
        assert "main done" in result.stdout
        assert silent.accepted >= 1  # the exporter did reach the silent backend
        assert elapsed < self.CEILING_S + self.SLACK_S, (elapsed, result.stderr)


class _BlockedSink:
    """A sink whose first call blocks until released: everything after it queues."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        self.calls += 1
        self.release.wait(30)

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        self.calls += 1
        self.release.wait(30)


class TestQueueBytes:
    """The worker queue is capped in estimated bytes as well as in records."""

    def test_blocked_sink_queue_stops_at_the_byte_cap(self) -> None:
        queue = SinkDispatcher(max_queue=100_000, max_queue_bytes=1_000_000)
        sink = _BlockedSink()
        row = {"run_id": "a" * 32, "sql": "x" * 10_000}
        try:
            for _ in range(1_000):  # ~10 MB offered
                queue.record_events(sink, "datafusion_plan_artifacts_v1", [row])
            stats = queue.stats()
            assert stats.pending_bytes <= 1_000_000
            assert stats.pending < 110
            assert stats.dropped >= 890  # dropped and counted, never silently
        finally:
            sink.release.set()
            queue.shutdown(10)

    def test_default_cap_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATAFUSION_OTEL_QUEUE_BYTES", "50000")
        queue = SinkDispatcher()
        sink = _BlockedSink()
        try:
            for _ in range(100):
                queue.record_artifact(sink, "big", {"blob": "y" * 5_000})
            assert queue.stats().pending_bytes <= 50_000
            assert queue.stats().dropped >= 85
        finally:
            sink.release.set()
            queue.shutdown(10)


class _LeakySink:
    """Raises with a message quoting a row's value, as a real sink's error might."""

    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        raise ValueError(f"cannot store {rows[0]['label']!r}")

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        raise ValueError(f"cannot store {payload['label']!r}")


class TestSinkErrorLog:
    """A failing sink's ERROR log names sink, table, type and frames, never row values."""

    def test_log_has_no_row_values(
        self, configured: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        secret = "customer-4242-secret"
        caplog.set_level(logging.DEBUG)
        with tracked_run(label=secret, sink=_LeakySink()):
            pass
        dispatcher.force_flush(5)
        records = [r for r in caplog.records if r.name == "datafusion_otel.delivery"]
        assert records
        for record in records:
            text = record.getMessage()
            assert "_LeakySink" in text
            assert "ValueError" in text
            assert secret not in text
            assert record.exc_info is None  # a handler would print the message with it


class TestSlowInlineWarning:
    """Only a user's sink is told to remove ``nonblocking``; the package's own sinks cannot."""

    ROWS = 200_000  # a batch big enough that buffering it takes well over 50 ms anywhere

    def test_parquet_sink_is_not_warned_a_user_sink_is(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        class _SlowUserSink:
            nonblocking = True

            def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
                time.sleep(0.1)  # really slow: I/O on the query's thread

            def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
                pass

        own = SinkDispatcher()
        store = ParquetSink(tmp_path, flush_interval=60, max_buffer_rows=1_000)
        rows = [
            {"run_id": f"{i:032x}", "label": "x", "start_time_unix_ms": 1, "status": "completed"}
            for i in range(self.ROWS)
        ]
        with caplog.at_level(logging.WARNING, logger="datafusion_otel.delivery"):
            started = time.monotonic()
            own.record_events(store, "datafusion_runs_v1", rows)
            parquet_seconds = time.monotonic() - started
            own.record_events(_SlowUserSink(), "datafusion_runs_v1", rows[:1])
        warned = [r.getMessage() for r in caplog.records if "nonblocking" in r.getMessage()]
        if parquet_seconds <= 0.05:  # pragma: no cover - a machine too fast for the batch
            pytest.fail(f"buffering {self.ROWS} rows took {parquet_seconds:.3f} s only")
        assert len(warned) == 1, warned
        assert "_SlowUserSink" in warned[0]
        store.close()
