"""Backend faults: refused, silent, killed and restarted. Queries never fail nor wait."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from datafusion import SessionContext

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel._processing.delivery import dispatcher
from datafusion_otel.export import BatchOptions
from listeners import ReceiverProcess, SilentServer, closed_port
from otel_state import Handles, handles_fixture  # noqa: F401

pytestmark = pytest.mark.usefixtures("handles")

FAST = BatchOptions(schedule_delay=0.05)
# A query plus its run bookkeeping takes a few ms here; export work must add nothing visible.
QUERY_BOUND_S = 0.5


def _runs(ctx: SessionContext, count: int, label: str) -> tuple[list[str], float]:
    """Run ``count`` tracked queries; return their run ids and the slowest run's wall time."""
    ids, slowest = [], 0.0
    for i in range(count):
        started = time.perf_counter()
        with tracked_run(label=label, metadata={"i": i}) as run:
            table = ctx.sql("SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k").to_arrow_table()
        slowest = max(slowest, time.perf_counter() - started)
        assert table.num_rows == 3
        ids.append(run.run_id)
    return ids, slowest


@pytest.fixture
def ctx() -> SessionContext:
    context = SessionContext()
    context.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    return context


def _rows(sink: DiagnosticsCollector) -> list[dict[str, object]]:
    # rows only: datafusion_otel.force_flush would also wait for the broken exporter
    assert dispatcher.force_flush(5)
    return sink.events_snapshot().get("datafusion_runs_v1", [])


def test_refused_connection_costs_queries_nothing_and_is_counted(
    ctx: SessionContext, handles: Handles
) -> None:
    sink = DiagnosticsCollector()
    telemetry = handles.add(
        datafusion_otel.configure(
            endpoint=f"http://127.0.0.1:{closed_port()}", timeout=1, sink=sink, batch=FAST
        )
    )
    ids, slowest = _runs(ctx, 20, "refused")
    assert slowest < QUERY_BOUND_S
    started = time.monotonic()
    assert telemetry.force_flush(timeout=5) is False
    assert time.monotonic() - started < 5.5
    stats = telemetry.delivery_stats().exporters["otlp"]
    assert stats.queued == 20
    assert stats.failed == 20
    assert stats.exported == 0
    assert {row["run_id"] for row in _rows(sink)} == set(ids)


def test_grpc_refused_connection_is_counted(ctx: SessionContext, handles: Handles) -> None:
    sink = DiagnosticsCollector()
    telemetry = handles.add(
        datafusion_otel.configure(
            endpoint=f"http://127.0.0.1:{closed_port()}",
            protocol="grpc",
            timeout=1,
            sink=sink,
            batch=FAST,
        )
    )
    _, slowest = _runs(ctx, 10, "refused-grpc")
    assert slowest < QUERY_BOUND_S
    assert telemetry.force_flush(timeout=5) is False
    stats = telemetry.delivery_stats().exporters["otlp"]
    assert (stats.queued, stats.failed, stats.exported) == (10, 10, 0)
    assert len(_rows(sink)) == 10


def test_silent_backend_flush_and_shutdown_keep_their_timeouts(
    ctx: SessionContext, handles: Handles
) -> None:
    silent = SilentServer()
    try:
        sink = DiagnosticsCollector()
        telemetry = handles.add(
            datafusion_otel.configure(
                endpoint=f"http://127.0.0.1:{silent.port}", timeout=30, sink=sink, batch=FAST
            )
        )
        ids, slowest = _runs(ctx, 20, "silent")
        assert slowest < QUERY_BOUND_S
        started = time.monotonic()
        assert telemetry.force_flush(timeout=0.5) is False
        assert time.monotonic() - started < 1.0
        assert silent.accepted >= 1
        started = time.monotonic()
        assert telemetry.shutdown(timeout=0.5) is False
        assert time.monotonic() - started < 1.0
        stats = telemetry.delivery_stats().exporters["otlp"]
        assert stats.exported == 0
        assert stats.queued == 20
        # what was not in the export hanging on the silent backend was dropped at shutdown
        assert stats.dropped + stats.pending == 20
        assert {row["run_id"] for row in _rows(sink)} == set(ids)
    finally:
        silent.close()


def test_full_queue_drops_are_counted_not_blocking(ctx: SessionContext, handles: Handles) -> None:
    silent = SilentServer()
    try:
        sink = DiagnosticsCollector()
        telemetry = handles.add(
            datafusion_otel.configure(
                endpoint=f"http://127.0.0.1:{silent.port}",
                timeout=30,
                sink=sink,
                batch=BatchOptions(max_queue_size=4, max_export_batch_size=2, schedule_delay=0.05),
            )
        )
        _, slowest = _runs(ctx, 30, "burst")
        assert slowest < QUERY_BOUND_S
        stats = telemetry.delivery_stats().exporters["otlp"]
        assert stats.dropped > 0
        assert stats.queued + stats.dropped == 30
        assert len(_rows(sink)) == 30
    finally:
        silent.close()


def test_backend_killed_and_restarted_mid_stream(ctx: SessionContext, handles: Handles) -> None:
    receiver = ReceiverProcess()
    receiver.start()
    try:
        sink = DiagnosticsCollector()
        telemetry = handles.add(
            datafusion_otel.configure(endpoint=receiver.endpoint, timeout=1, sink=sink, batch=FAST)
        )
        before, _ = _runs(ctx, 10, "before")
        assert telemetry.force_flush(timeout=5) is True
        assert receiver.trace_ids() >= set(before)

        receiver.kill()
        during, slowest_during = _runs(ctx, 10, "during")
        assert slowest_during < QUERY_BOUND_S
        assert telemetry.force_flush(timeout=5) is False
        lost = telemetry.delivery_stats().exporters["otlp"]
        assert lost.failed == 10
        assert lost.exported == 10

        receiver.start()
        after, slowest_after = _runs(ctx, 10, "after")
        assert slowest_after < QUERY_BOUND_S
        assert telemetry.force_flush(timeout=5) is True
        assert receiver.wait_for(set(after)) == set(after)
        assert not receiver.trace_ids() & set(during)  # the lost runs were not invented
        stats = telemetry.delivery_stats().exporters["otlp"]
        assert (stats.queued, stats.exported, stats.failed, stats.dropped) == (30, 20, 10, 0)
        assert {row["run_id"] for row in _rows(sink)} == set(before + during + after)
    finally:
        receiver.kill()


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    from datafusion import SessionContext
    import datafusion_otel
    datafusion_otel.configure(endpoint=sys.argv[1], protocol=sys.argv[2])
    ctx = SessionContext()
    for _ in range(50):
        with datafusion_otel.tracked_run(label="exit"):
            ctx.sql("SELECT 1").to_arrow_table()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("backend", ["refused", "silent"])
def test_process_exit_is_bounded_with_a_dead_backend(protocol: str, backend: str) -> None:
    silent = SilentServer() if backend == "silent" else None
    port = silent.port if silent is not None else closed_port()
    try:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, f"http://127.0.0.1:{port}", protocol],
            capture_output=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        if silent is not None:
            silent.close()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"done" in result.stdout
    # the default exit timeout is 3 s; interpreter start and imports take ~2 s here
    assert elapsed < 12, f"exit took {elapsed:.1f} s"
