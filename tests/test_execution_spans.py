"""Execution spans are ordinary, current OpenTelemetry spans (issue 11, item 1).

Read as an application's own test would: a ``SimpleSpanProcessor`` with an in-memory exporter,
no flush anywhere. The span is in the exporter the moment the call returns (streams: when
they end), it is current on the calling thread while DataFusion works, and the user's span
processors see its start on the calling thread, in the caller's context.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from datafusion import SessionConfig, SessionContext, udf
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

import datafusion_otel
from datafusion_otel import attributes as attr
from datafusion_otel import tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from instrumentation_support import Traced, instrumented, make_context
from test_instrumentation_paths import PATHS


@pytest.fixture(params=[False, True], ids=["span-only", "capture"])
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    with instrumented(capture_plan_artifacts=request.param) as t:
        yield t


def finished_executions(t: Traced) -> list[ReadableSpan]:
    """Execution spans in the exporter right now: no flush of any kind."""
    return [
        s
        for s in t.exporter.get_finished_spans()
        if (s.attributes or {}).get(attr.DB_SYSTEM_NAME) == attr.DB_SYSTEM_VALUE
    ]


@pytest.mark.parametrize("method", list(PATHS))
def test_one_finished_span_the_moment_the_call_returns(
    traced: Traced, tmp_path: Path, method: str
) -> None:
    """Every path: exactly one finished execution span when the call returns, under the run."""
    df = make_context().sql("SELECT a, b FROM t WHERE a > 1")
    call, _ = PATHS[method]
    with tracked_run(label="pipeline") as run:
        result = call(df, tmp_path)  # streams are read to their end by these calls
        (span,) = finished_executions(traced)
    assert span.attributes is not None
    assert span.attributes[attr.DATAFUSION_METHOD] == f"DataFrame.{method}"
    assert run.span is not None
    assert span.parent is not None
    assert span.parent.span_id == run.span.get_span_context().span_id
    del result


def test_a_closed_stream_ends_its_span_at_close(traced: Traced) -> None:
    df = make_context().sql("SELECT a FROM t")
    stream = df.execute_stream()
    assert finished_executions(traced) == []  # open while it can still be read
    stream.close()
    (span,) = finished_executions(traced)
    assert span.attributes is not None
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False


def test_eager_sql_and_context_execute_end_when_they_return(traced: Traced) -> None:
    ctx = make_context()
    ctx.sql("CREATE VIEW v AS SELECT a FROM t")
    assert [s.name for s in finished_executions(traced)] == ["CREATE v t"]
    plan = ctx.sql("SELECT a FROM t").execution_plan()
    list(ctx.execute(plan, 0))
    assert [s.name for s in finished_executions(traced)] == ["CREATE v t", "EXECUTE"]


def _single_partition_context() -> SessionContext:
    """One input partition: DataFusion runs the plan (and its UDFs) on the calling thread."""
    ctx = SessionContext(SessionConfig().with_target_partitions(1))
    ctx.register_record_batches("t", [[pa.record_batch({"a": [1, 2, 3]})]])
    return ctx


def _probe(seen: list[tuple[int, trace.Span]], tracer: trace.Tracer | None = None) -> Any:
    def probe(values: pa.Array) -> pa.Array:
        seen.append((threading.get_ident(), trace.get_current_span()))
        if tracer is not None:
            with tracer.start_as_current_span("udf work"):
                logging.getLogger("app.udf").warning("inside the UDF")
        return values

    return udf(probe, [pa.int64()], pa.int64(), "volatile", name="probe")


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_udf_on_the_calling_thread_nests_its_span_and_logs_under_the_execution() -> None:
    logs = InMemoryLogRecordExporter()
    log_provider = LoggerProvider()
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=log_provider)
    app_logger = logging.getLogger("app.udf")
    app_logger.addHandler(handler)
    seen: list[tuple[int, trace.Span]] = []
    try:
        with instrumented() as t:
            ctx = _single_partition_context()
            ctx.register_udf(_probe(seen, t.provider.get_tracer("app")))
            with tracked_run(label="udf"):
                ctx.sql("SELECT probe(a) AS a FROM t").to_pydict()
            (execution,) = finished_executions(t)
            (udf_span,) = [s for s in t.exporter.get_finished_spans() if s.name == "udf work"]
    finally:
        app_logger.removeHandler(handler)
    assert seen
    assert {thread for thread, _ in seen} == {threading.get_ident()}
    for _, current in seen:  # trace.get_current_span() inside the UDF is the execution span
        assert current.get_span_context().span_id == execution.context.span_id
    assert udf_span.parent is not None
    assert udf_span.parent.span_id == execution.context.span_id
    (record,) = logs.get_finished_logs()
    assert record.log_record.span_id == udf_span.context.span_id
    assert record.log_record.trace_id == execution.context.trace_id


def test_udf_while_a_stream_is_read_sees_the_execution_span() -> None:
    seen: list[tuple[int, trace.Span]] = []
    with instrumented() as t:
        ctx = _single_partition_context()
        ctx.register_udf(_probe(seen))
        with tracked_run(label="udf"):
            for _ in ctx.sql("SELECT probe(a) AS a FROM t").execute_stream():
                pass
        (execution,) = finished_executions(t)
    assert seen
    assert all(s.get_span_context().span_id == execution.context.span_id for _, s in seen)


def test_udf_on_datafusion_worker_threads_sees_no_span() -> None:
    """Several input partitions: DataFusion polls them on its own (tokio) worker threads.

    Those threads carry no OpenTelemetry context at all: a UDF there sees the invalid span,
    neither the execution span nor the run (documented in the README).
    """
    seen: list[tuple[int, trace.Span]] = []
    with instrumented():
        ctx = SessionContext(SessionConfig().with_target_partitions(4))
        batches = [[pa.record_batch({"a": [i, i + 1]})] for i in range(0, 16, 2)]
        ctx.register_record_batches("t", batches)  # 8 partitions
        ctx.register_udf(_probe(seen))
        with tracked_run(label="udf"):
            ctx.sql("SELECT probe(a) AS a FROM t").collect()
    assert seen
    assert threading.get_ident() not in {thread for thread, _ in seen}
    assert all(not span.get_span_context().is_valid for _, span in seen)


class _StartRecorder(SpanProcessor):
    """A user's processor that records where and in which context spans start."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int, object, object]] = []

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        self.starts.append(
            (
                span.name,
                threading.get_ident(),
                baggage.get_baggage("tenant", parent_context),
                baggage.get_baggage("tenant"),  # the current context
            )
        )


@pytest.mark.parametrize("in_run", [True, False], ids=["in-run", "auto-run"])
def test_user_processors_start_spans_on_the_calling_thread_in_the_callers_context(
    in_run: bool,
) -> None:
    recorder = _StartRecorder()
    with instrumented() as t:
        t.provider.add_span_processor(recorder)
        df = make_context().sql("SELECT a FROM t")
        token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            if in_run:
                with tracked_run(label="r"):
                    df.collect()
            else:
                df.collect()
        finally:
            otel_context.detach(token)
    (start,) = [s for s in recorder.starts if s[0] == "SELECT t"]
    assert start[1:] == (threading.get_ident(), "acme", "acme")


def test_planning_is_a_span_beside_the_execution_under_the_run() -> None:
    with instrumented() as t:
        ctx = make_context()
        with tracked_run(label="r") as run:
            df = ctx.sql("SELECT a FROM t WHERE a > 1")
            df.collect()
        spans = {s.name: s for s in t.exporter.get_finished_spans()}
    plan, execution = spans["plan SELECT t"], spans["SELECT t"]
    assert run.span is not None
    run_span_id = run.span.get_span_context().span_id
    assert plan.parent is not None and execution.parent is not None
    assert plan.parent.span_id == execution.parent.span_id == run_span_id  # siblings
    assert plan.attributes is not None
    assert plan.attributes[attr.DATAFUSION_PHASE] == attr.PHASE_PLAN
    assert plan.attributes[attr.DATAFUSION_METHOD] == "SessionContext.sql"
    assert attr.DB_SYSTEM_NAME not in plan.attributes  # not an execution
    assert plan.end_time is not None and execution.start_time is not None
    assert plan.end_time <= execution.start_time


def test_planning_outside_any_span_adds_no_run(traced: Traced) -> None:
    make_context().sql("SELECT a FROM t").collect()
    assert [s.name for s in traced.exporter.get_finished_spans()] == ["SELECT t"]


def test_a_planning_error_is_recorded_on_the_planning_span() -> None:
    with instrumented() as t:
        with tracked_run(label="r"), pytest.raises(Exception, match="missing") as raised:
            make_context().sql("SELECT a FROM missing")
        (plan,) = [s for s in t.exporter.get_finished_spans() if s.name.startswith("plan ")]
    assert plan.status.status_code is StatusCode.ERROR
    assert plan.attributes is not None
    assert plan.attributes[attr.ERROR_TYPE] == raised.type.__qualname__


def test_spans_end_on_the_thread_where_the_stream_ends() -> None:
    ended_on: list[int] = []

    class EndRecorder(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            if span.name == "SELECT t":
                ended_on.append(threading.get_ident())

    with instrumented() as t:
        t.provider.add_span_processor(EndRecorder())
        stream = make_context().sql("SELECT a FROM t").execute_stream()
        reader = threading.Thread(target=lambda: list(stream))
        reader.start()
        reader.join()
    assert ended_on == [reader.ident]


def test_a_garbage_collected_stream_ends_its_span(traced: Traced) -> None:
    stream = make_context().sql("SELECT a FROM t").execute_stream()
    assert finished_executions(traced) == []
    del stream
    gc.collect()
    datafusion_otel.force_flush(5)  # ended from the stream-ends thread, never inside the GC
    assert len(finished_executions(traced)) == 1


def test_an_arrow_reader_dropped_before_any_read_ends_its_span(traced: Traced) -> None:
    """Found by DataFusion's own suite (a test skipped after ``from_stream(df)``)."""
    reader = pa.RecordBatchReader.from_stream(make_context().sql("SELECT a FROM t"))
    assert finished_executions(traced) == []
    del reader
    gc.collect()
    datafusion_otel.force_flush(5)
    (span,) = finished_executions(traced)
    assert span.attributes is not None
    assert span.attributes[attr.DATAFUSION_STREAM_EXHAUSTED] is False


def test_a_stream_collected_inside_a_locked_processor_never_deadlocks() -> None:
    """The collector may run a stream's finalizer inside a span processor holding its lock.

    Found by DataFusion's own suite: a counting processor (a plain ``threading.Lock``) hung
    for 300 s because a stream collected while it held its lock ended its span right there.
    """
    timed_out: list[str] = []

    class LockedCounter(SpanProcessor):
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
            with self.lock:
                gc.collect()  # the collector runs here, as it may at any allocation

        def on_end(self, span: ReadableSpan) -> None:
            if not self.lock.acquire(timeout=2):  # without the fix: held by this very thread
                timed_out.append(span.name)
                return
            self.lock.release()

    with instrumented() as t:
        t.provider.add_span_processor(LockedCounter())
        ctx = make_context()
        stream = ctx.sql("SELECT a FROM t").execute_stream()
        cycle: list[object] = [stream]
        cycle.append(cycle)  # only the cycle collector frees it, inside on_start below
        del stream, cycle
        ctx.sql("SELECT b FROM t").collect()
        datafusion_otel.force_flush(5)
        names = sorted(s.name for s in finished_executions(t))
    assert timed_out == []
    assert names == ["SELECT t", "SELECT t"]


@pytest.mark.parametrize("hook", ["on_start", "on_end"])
def test_a_raising_span_processor_never_reaches_the_query(hook: str) -> None:
    """The SDK passes a processor's exception on; the instrumentor keeps it from the query."""

    class Broken(SpanProcessor):
        def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
            if hook == "on_start" and span.name != "r":
                raise RuntimeError("on_start broke")

        def on_end(self, span: ReadableSpan) -> None:
            if hook == "on_end" and span.name != "r":
                raise RuntimeError("on_end broke")

    with instrumented() as t:
        ctx = make_context()
        with tracked_run(label="r"):
            t.provider.add_span_processor(Broken())
            df = ctx.sql("SELECT a FROM t ORDER BY a")  # a planning span would start here
            assert df.to_pydict() == {"a": [1, 2, 3]}
            assert [b.to_pyarrow().num_rows for b in df.execute_stream()] == [3]


_CONTEXT_CALLS: dict[str, Any] = {
    "collect": lambda df: df.collect(),
    "to_arrow_table": lambda df: df.to_arrow_table(),
    "to_pandas": lambda df: df.to_pandas(),
}


@pytest.mark.parametrize("method", list(_CONTEXT_CALLS))
def test_udf_sees_the_execution_span_with_capture_on(method: str) -> None:
    """Capture mode takes the general path (`_wrappers._traced_dataframe_call`)."""
    seen: list[tuple[int, trace.Span]] = []
    with instrumented(capture_plan_artifacts=True) as t:
        ctx = _single_partition_context()
        ctx.register_udf(_probe(seen))
        with tracked_run(label="udf"):
            _CONTEXT_CALLS[method](ctx.sql("SELECT probe(a) AS a FROM t"))
        (execution,) = finished_executions(t)
    assert seen
    assert {thread for thread, _ in seen} == {threading.get_ident()}
    assert all(s.get_span_context().span_id == execution.context.span_id for _, s in seen)


@pytest.mark.parametrize("capture", [False, True], ids=["span-only", "capture"])
def test_udf_of_a_compiled_frame_sees_the_execution_span(capture: bool) -> None:
    """A frame compiled by the bridge takes the general path whatever the capture mode."""
    seen: list[tuple[int, trace.Span]] = []
    with instrumented(capture_plan_artifacts=capture) as t:
        ctx = _single_partition_context()
        ctx.register_udf(_probe(seen))
        with tracked_run(label="udf"):
            sql_to_datafusion("SELECT probe(a) AS a FROM t", ctx=ctx).collect()
        (execution,) = finished_executions(t)
    assert seen
    assert {thread for thread, _ in seen} == {threading.get_ident()}
    assert all(s.get_span_context().span_id == execution.context.span_id for _, s in seen)


@pytest.mark.parametrize("method", ["tail", "cache", "describe"])
def test_udf_of_a_dataframe_returning_call_sees_the_execution_span(method: str) -> None:
    """``tail``, ``cache`` and ``describe`` execute in span-only mode on the general path."""
    seen: list[tuple[int, trace.Span]] = []
    with instrumented() as t:
        ctx = _single_partition_context()
        ctx.register_udf(_probe(seen))
        df = ctx.sql("SELECT a FROM t WHERE probe(a) > 0")  # tail counts: the filter runs
        with tracked_run(label="udf"):
            getattr(df, method)(2) if method == "tail" else getattr(df, method)()
        (execution,) = finished_executions(t)
    assert execution.attributes is not None
    assert execution.attributes[attr.DATAFUSION_METHOD] == f"DataFrame.{method}"
    assert seen
    assert {thread for thread, _ in seen} == {threading.get_ident()}
    assert all(s.get_span_context().span_id == execution.context.span_id for _, s in seen)
