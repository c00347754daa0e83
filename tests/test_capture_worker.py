"""Capture off the query's thread (issue: capture cost): what the query's thread does, the
bounded queue, ``capture_min_duration_ms``, a run's end, auto-run findings, fork and exit."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from datafusion import SessionContext

import datafusion_otel
from capture_support import artifact_events, capture_span_of, settle
from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.instrumentation import DataFusionInstrumentor
from findings_support import WORKLOADS, context, register_data
from instrumentation_support import instrumented

SQL = "SELECT k, count(*) AS n FROM t WHERE v > 1 GROUP BY k"


def _ctx() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 2, 3] * 50, "v": list(range(200))}, name="t")
    return ctx


@pytest.fixture
def blocked_worker() -> Iterator[threading.Event]:
    """The capture worker stuck on a job until the event is set (a slow capture)."""
    release = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(60)

    assert _capture_queue.submit(0, stuck)
    assert started.wait(10)
    try:
        yield release
    finally:
        release.set()
        settle()


class TestOffTheQueryThread:
    def test_the_span_ends_at_return_and_the_artifacts_follow(
        self, blocked_worker: threading.Event
    ) -> None:
        """With the worker stuck, the query returns and its execution span is exported
        without its artifacts: nothing of the capture ran on the query's thread."""
        with instrumented(capture_plan_artifacts=True) as t:
            sink = DiagnosticsCollector()
            datafusion_otel.configure(tracer_provider=t.provider, sink=sink)
            ctx = _ctx()
            with tracked_run(label="r"):
                assert ctx.sql(SQL).to_arrow_table().num_rows == 3
                (execution,) = [
                    s
                    for s in t.exporter.get_finished_spans()
                    if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)
                ]  # visible the moment the call returned
                names = [s.name for s in t.exporter.get_finished_spans()]
                assert attr.CAPTURE_SPAN not in names
                assert _capture_queue.pending(execution.context.trace_id) == 1
                blocked_worker.set()
            spans = t.spans()
            capture = capture_span_of(spans, execution)
            assert capture.start_time is not None and execution.end_time is not None
            assert capture.start_time >= execution.end_time - 1_000_000  # handed over at end
            assert capture.attributes[attr.DATAFUSION_PLAN_HASH]
            (event,) = artifact_events(spans, execution)
            assert "physical_plan" in str(dict(event.attributes or {}))
            datafusion_otel.force_flush()
            (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
            assert row["span_id"] == format(execution.context.span_id, "016x")  # as before

    def test_the_runs_end_waits_for_its_captures(self, blocked_worker: threading.Event) -> None:
        sink = DiagnosticsCollector()
        ctx = _ctx()
        timer = threading.Timer(0.3, blocked_worker.set)  # the worker frees up later
        timer.start()
        with tracked_run(label="waits", sink=sink) as run:
            sql_to_datafusion(SQL, ctx=ctx).collect()
        timer.join()
        # no flush: the run's own rows arrived before its root span ended
        (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
        assert row["run_id"] == run.run_id
        assert sink.events_snapshot()[attr.RUNS_TABLE][0]["run_id"] == run.run_id

    def test_a_runs_end_waits_no_longer_than_the_bound(
        self, blocked_worker: threading.Event, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(_capture_queue.WAIT_ENV, "0.2")
        sink = DiagnosticsCollector()
        with tracked_run(label="bounded", sink=sink) as run:
            sql_to_datafusion(SQL, ctx=_ctx()).collect()
        assert run.status == "completed"
        assert attr.PLAN_ARTIFACTS_TABLE not in sink.events_snapshot()  # still pending
        blocked_worker.set()
        datafusion_otel.force_flush()
        (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]  # late, not lost
        assert row["run_id"] == run.run_id


class TestBoundedQueue:
    def test_a_full_queue_skips_counts_and_marks_the_span(
        self, blocked_worker: threading.Event, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_capture_queue._state, "capacity", 2)
        before = _capture_queue.skipped_count()
        datafusion_otel.force_flush(timeout=0)  # reset the "since the last flush" mark
        with instrumented(capture_plan_artifacts=True) as t:
            ctx = _ctx()
            results = [ctx.sql(SQL).to_arrow_table().num_rows for _ in range(5)]
            assert results == [3] * 5  # every query ran; none waited for the worker
            executions = [
                s
                for s in t.exporter.get_finished_spans()
                if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)
            ]
            skipped = [s for s in executions if (s.attributes or {}).get(attr.CAPTURE_SKIPPED)]
            assert len(executions) == 5 and len(skipped) == 3
            assert _capture_queue.skipped_count() == before + 3
            blocked_worker.set()
            assert datafusion_otel.force_flush() is False  # a capture was skipped since
            spans = t.spans()
            assert sum(1 for s in spans if s.name == attr.CAPTURE_SPAN) == 2
            assert datafusion_otel.force_flush() is True


class TestMinDuration:
    def test_options_are_validated(self) -> None:
        for bad in (-1, math.nan, math.inf, True, "5"):
            with pytest.raises(ValueError, match="capture_min_duration_ms"):
                DataFusionCompileOptions(capture_min_duration_ms=bad)  # type: ignore[arg-type]
        assert DataFusionCompileOptions(capture_min_duration_ms=0).capture_min_duration_ms == 0
        with pytest.raises(ValueError, match="capture_min_duration_ms"):
            DataFusionInstrumentor().instrument(capture_min_duration_ms=-2)
        assert not DataFusionInstrumentor().is_instrumented_by_opentelemetry

    def test_env_var_is_read_and_validated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from datafusion_otel.instrumentation._options import resolve_options

        monkeypatch.setenv("DATAFUSION_OTEL_CAPTURE_MIN_DURATION_MS", "12.5")
        assert resolve_options().capture_min_duration_ms == 12.5
        monkeypatch.setenv("DATAFUSION_OTEL_CAPTURE_MIN_DURATION_MS", "fast")
        with pytest.raises(ValueError, match="DATAFUSION_OTEL_CAPTURE_MIN_DURATION_MS"):
            resolve_options()

    @pytest.mark.parametrize("path", ["instrumentor", "bridge"])
    def test_fast_queries_are_left_out_and_counted(self, path: str) -> None:
        sink = DiagnosticsCollector()
        before = _capture_queue.below_threshold_count()
        with instrumented(
            capture_plan_artifacts=True, capture_min_duration_ms=60_000
        ) as t:  # a minute: every query here is faster
            datafusion_otel.configure(tracer_provider=t.provider, sink=sink)
            ctx = _ctx()
            with tracked_run(label="fast"):
                if path == "instrumentor":
                    ctx.sql(SQL).collect()
                else:
                    options = DataFusionCompileOptions(capture_min_duration_ms=60_000)
                    sql_to_datafusion(SQL, ctx=ctx, options=options).collect()
            datafusion_otel.force_flush()
            assert attr.PLAN_ARTIFACTS_TABLE not in sink.events_snapshot()
            assert not [s for s in t.spans() if s.name == attr.CAPTURE_SPAN]
        assert _capture_queue.below_threshold_count() == before + 1

    def test_a_zero_threshold_captures_everything(self) -> None:
        sink = DiagnosticsCollector()
        with tracked_run(label="all", sink=sink):
            options = DataFusionCompileOptions(capture_min_duration_ms=0)
            sql_to_datafusion(SQL, ctx=_ctx(), options=options).collect()
        assert len(sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]) == 1

    def test_a_failed_query_is_captured_whatever_its_duration(self) -> None:
        sink = DiagnosticsCollector()
        options = DataFusionCompileOptions(capture_min_duration_ms=60_000)
        ctx = _ctx()
        with pytest.raises(Exception, match="Cast"), tracked_run(label="fails", sink=sink):
            sql_to_datafusion(
                "SELECT CAST('x' || k AS INT) FROM t", ctx=ctx, options=options
            ).collect()
        (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
        assert "execution" in (row["artifact_errors"] or "")


def test_auto_run_findings_are_recorded_once_its_capture_landed(tmp_path: Path) -> None:
    """An auto run's root is its execution span, which ends before its capture: its findings
    are computed once the capture landed, from the same rows."""
    ctx = context(1, pool_bytes=10_000_000)
    register_data(ctx, tmp_path)
    sink = DiagnosticsCollector()
    with instrumented(capture_plan_artifacts=True) as t:
        datafusion_otel.configure(tracer_provider=t.provider, sink=sink)
        ctx.sql(WORKLOADS["spill"]).to_arrow_table()  # outside any run: an auto run
        datafusion_otel.force_flush()
    events = sink.events_snapshot()
    (run_row,) = events[attr.RUNS_TABLE]
    kinds = {r["kind"] for r in events.get(attr.FINDINGS_TABLE, [])}
    assert "spill" in kinds
    assert {r["run_id"] for r in events[attr.FINDINGS_TABLE]} == {run_row["run_id"]}


FORK_SCRIPT = textwrap.dedent(
    """
    import os, threading, time
    from datafusion_otel import DiagnosticsCollector, tracked_run
    from datafusion_otel._capture import queue as _capture_queue
    from datafusion_otel import attributes as attr

    release = threading.Event()
    _capture_queue.submit(0, lambda: release.wait(60))  # the parent's worker: busy
    pid = os.fork()  # DataFusion must not have run in the parent before a fork
    if pid == 0:
        from datafusion import SessionContext
        from datafusion_otel.bridge import sql_to_datafusion
        ctx = SessionContext()
        ctx.from_pydict({"k": [1, 2, 3]}, name="t")
        sink = DiagnosticsCollector()
        with tracked_run(label="forked", sink=sink):
            sql_to_datafusion("SELECT k FROM t WHERE k > 1", ctx=ctx).collect()
        rows = sink.events_snapshot().get(attr.PLAN_ARTIFACTS_TABLE, [])
        flushed = _capture_queue.drain(5)  # the parent's busy job is not the child's
        os._exit(0 if len(rows) == 1 and flushed else 3)
    _, status = os.waitpid(pid, 0)
    release.set()
    print("child", os.waitstatus_to_exitcode(status), "parent pending", _capture_queue.pending())
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_captures_with_its_own_worker() -> None:
    """Forked while the parent's worker is busy: the child starts with an empty queue and
    its own worker, so its run's end does not wait for the parent's job."""
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "child 0 parent pending" in done.stdout, done.stdout


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from datafusion import SessionContext
    import datafusion_otel
    from datafusion_otel._capture import queue as _capture_queue
    from datafusion_otel.store import ParquetSink
    from datafusion_otel.instrumentation import DataFusionInstrumentor

    datafusion_otel.configure(sink=ParquetSink(sys.argv[1]))
    DataFusionInstrumentor().instrument(capture_plan_artifacts=True)
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 3]}, name="t")
    if sys.argv[2] == "stuck":
        _capture_queue.submit(0, lambda: time.sleep(600))
    ctx.sql("SELECT k FROM t WHERE k > 1").collect()
    print("queued", _capture_queue.pending(), flush=True)
    """
)


@pytest.mark.parametrize("mode", ["normal", "stuck"])
def test_exit_lands_pending_captures_within_the_exit_budget(tmp_path: Path, mode: str) -> None:
    """A program that ends right after its query: the capture still reaches the store; a
    stuck capture holds exit no longer than DATAFUSION_OTEL_EXIT_TIMEOUT."""
    from datafusion_otel.store import RunStore

    env = {**os.environ, "DATAFUSION_OTEL_EXIT_TIMEOUT": "3"}
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(tmp_path / "store"), mode],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    store = RunStore(tmp_path / "store")
    assert store.run_count() == 1  # the auto run's row, written when its span ended
    artifacts = store.sql("SELECT count(*) AS n FROM plan_artifacts").to_pylist()[0]["n"]
    assert artifacts == (1 if mode == "normal" else 0)


def test_a_trace_dropped_upstream_costs_no_capture() -> None:
    """A query run under a span nobody records (an upstream caller's unsampled trace, no
    instrumentor): nothing could carry its artifacts, so no capture runs, unless a hook wants
    them."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    upstream = NonRecordingSpan(
        SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )
    ctx = _ctx()
    settle()
    before = _capture_queue.captured_count()
    with trace.use_span(upstream):
        sql_to_datafusion(SQL, ctx=ctx).collect()
    settle()
    assert _capture_queue.captured_count() == before
    received: list[object] = []
    options = DataFusionCompileOptions(plan_artifacts_hook=received.append)
    with trace.use_span(upstream):
        sql_to_datafusion(SQL, ctx=ctx, options=options).collect()
    settle()
    assert len(received) == 1 and _capture_queue.captured_count() == before + 1


class TestReviewFindings:
    """Defects a review found in the capture worker, each reproduced first."""

    def test_a_cached_redactor_never_hides_another_sessions_folded_constant(self) -> None:
        """The same SQL and logical plan in two sessions whose immutable UDF folds to a
        different secret: the second physical plan must not show its secret."""
        import pyarrow as pa
        from datafusion import udf

        sink = DiagnosticsCollector()
        for secret in ("tokenAAAA1111", "tokenBBBB2222"):
            ctx = SessionContext()
            ctx.from_pydict({"s": ["x", "tokenAAAA1111"]}, name="t")
            tok = udf(
                lambda n, value=secret: pa.array([value] * len(n)),
                [pa.int64()],
                pa.string(),
                "immutable",
                name="tok",
            )
            ctx.register_udf(tok)
            with tracked_run(label="udf", sink=sink):
                sql_to_datafusion("SELECT s FROM t WHERE s = tok(1)", ctx=ctx).collect()
        plans = [r["physical_plan"] for r in sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]]
        assert len(plans) == 2 and all(plans)
        assert not any("tokenAAAA1111" in p or "tokenBBBB2222" in p for p in plans), plans

    def test_an_interrupt_while_the_run_waits_still_finishes_the_run(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from datafusion_otel.runs import current_run

        def interrupted(trace_id: int, timeout: float) -> bool:
            raise KeyboardInterrupt

        monkeypatch.setattr(_capture_queue, "wait_trace", interrupted)
        sink = DiagnosticsCollector()
        with pytest.raises(KeyboardInterrupt), tracked_run(label="ctrl-c", sink=sink) as run:
            pass
        assert run.status == "completed" and current_run() is None
        datafusion_otel.force_flush()
        (row,) = sink.events_snapshot()[attr.RUNS_TABLE]
        assert row["run_id"] == run.run_id

    def test_a_hook_raising_system_exit_costs_one_capture_not_the_worker(self) -> None:
        def hook(payload: object) -> None:
            raise SystemExit(3)

        settle()
        datafusion_otel.force_flush(timeout=5)  # reset the "since the last flush" mark
        failed = _capture_queue.failed_count()
        ctx = _ctx()
        with tracked_run(label="exit-hook"):
            options = DataFusionCompileOptions(plan_artifacts_hook=hook)
            sql_to_datafusion(SQL, ctx=ctx, options=options).collect()
        assert datafusion_otel.force_flush(timeout=10) is False  # one capture was lost
        assert _capture_queue.failed_count() == failed + 1
        sink = DiagnosticsCollector()
        with tracked_run(label="after", sink=sink):
            sql_to_datafusion(SQL, ctx=ctx).collect()
        assert len(sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]) == 1  # worker alive
        assert datafusion_otel.force_flush(timeout=10) is True

    def test_drain_waits_only_for_what_was_queued_before_it(self) -> None:
        stop = threading.Event()

        def feed() -> None:  # another thread keeps queueing captures all along
            while not stop.is_set():
                if _capture_queue.pending() < 50:  # never a full queue (that would skip)
                    _capture_queue.submit(7, lambda: stop.wait(0.002))
                stop.wait(0.0005)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            assert _capture_queue.drain(30) is True
        finally:
            stop.set()
            feeder.join()
        settle()

    def test_out_of_range_environment_values_fall_back_to_defaults(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for value in ("inf", "nan", "1e30", "-1"):
            monkeypatch.setenv(_capture_queue.WAIT_ENV, value)
            assert _capture_queue.capture_wait_seconds() == 5.0
            monkeypatch.setenv(_capture_queue.QUEUE_ENV, value)
            assert _capture_queue._State().capacity == 256
        assert _capture_queue.drain(math.inf) is True  # no OverflowError


def test_capture_stats_gathers_the_counters(blocked_worker: threading.Event) -> None:
    """One public call tells what happened to captures: a skip shows up there."""
    before = datafusion_otel.capture_stats()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_capture_queue._state, "capacity", 1)
        with tracked_run(label="stats"):
            ctx = _ctx()
            for _ in range(3):
                sql_to_datafusion(SQL, ctx=ctx).collect()  # one queued, two skipped
            during = datafusion_otel.capture_stats()
            blocked_worker.set()
    assert during.skipped_queue_full == before.skipped_queue_full + 2
    assert during.pending >= 1
    settle()
    datafusion_otel.force_flush(timeout=10)  # absorb the skips for later flushes
    after = datafusion_otel.capture_stats()
    assert after.captured >= before.captured + 2  # the stuck job and the queued capture
    assert after.pending == 0


class TestInstrumentorArtifacts:
    def test_all_artifacts_through_the_instrumentor(self) -> None:
        from datafusion_otel.compile_options import ALL_ARTIFACTS

        sink = DiagnosticsCollector()
        with instrumented(capture_plan_artifacts=True, artifacts=ALL_ARTIFACTS) as t:
            datafusion_otel.configure(tracer_provider=t.provider, sink=sink)
            with tracked_run(label="all"):
                _ctx().sql(SQL).collect()
            datafusion_otel.force_flush()
        (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
        assert row["optimized_plan"] and row["unparsed_sql"] and row["graphviz"]
        assert row["substrait_validation_status"]

    def test_a_subset_and_bad_names(self) -> None:
        sink = DiagnosticsCollector()
        with instrumented(capture_plan_artifacts=True, artifacts={"physical_plan"}) as t:
            datafusion_otel.configure(tracer_provider=t.provider, sink=sink)
            with tracked_run(label="subset"):
                _ctx().sql(SQL).collect()
            datafusion_otel.force_flush()
        (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
        assert row["physical_plan"] and row["logical_plan"] is None
        for bad in ({"physical_plan", "nope"}, "physical_plan"):
            with pytest.raises(ValueError, match="artifact"):
                DataFusionInstrumentor().instrument(artifacts=bad)  # type: ignore[arg-type]
            assert not DataFusionInstrumentor().is_instrumented_by_opentelemetry
