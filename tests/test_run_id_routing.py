"""Plan rows reach the run named by ``DataFusionCompileOptions(run_id=...)`` wherever the query
executes: a worker thread with no context copied, an asyncio task with an empty context, a
thread where another run is current. After the run ended they go to the hook, counted."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from datafusion import SessionContext
from opentelemetry.sdk.trace import ReadableSpan

import datafusion_otel
from capture_support import artifact_events, settle
from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel._spans import emit as _emit
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from instrumentation_support import instrumented

SQL = "SELECT k, sum(v) AS total FROM t WHERE v > 15 GROUP BY k"


def _ctx() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    return ctx


def _rows(sink: DiagnosticsCollector) -> tuple[list[Any], list[Any]]:
    datafusion_otel.force_flush()
    events = sink.events_snapshot()
    return (
        events.get(attr.PLAN_ARTIFACTS_TABLE, []),
        events.get(attr.OPERATOR_METRICS_TABLE, []),
    )


def _assert_rows_under(sink: DiagnosticsCollector, run_id: str, queries: int = 1) -> None:
    artifacts, operators = _rows(sink)
    assert len(artifacts) == queries
    assert {r["run_id"] for r in artifacts} == {run_id}
    assert operators and {r["run_id"] for r in operators} == {run_id}


def test_run_id_must_be_32_lowercase_hex() -> None:
    for bad in ("abc", "A" * 32, "g" * 32, "0" * 31, "0" * 33, 12):
        with pytest.raises(ValueError, match="run_id"):
            DataFusionCompileOptions(run_id=bad)  # type: ignore[arg-type]
    assert DataFusionCompileOptions(run_id="0123456789abcdef" * 2).run_id == "0123456789abcdef" * 2


def test_worker_thread_without_context_reaches_the_run(configured) -> None:
    sink = DiagnosticsCollector()
    ctx = _ctx()
    with tracked_run(label="threaded", sink=sink) as run:
        df = sql_to_datafusion(SQL, ctx=ctx, options=DataFusionCompileOptions(run_id=run.run_id))
        with ThreadPoolExecutor(1) as pool:  # no context copied into the worker
            table = pool.submit(df.to_arrow_table).result()
    assert table.num_rows == 2
    _assert_rows_under(sink, run.run_id)
    spans = configured.exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "threaded")
    assert artifact_events(spans, root)
    ops = [s for s in spans if (s.attributes or {}).get(attr.OPERATOR_DERIVED)]
    assert ops and all(s.context.trace_id == root.context.trace_id for s in ops)


def test_explicit_run_wins_over_the_threads_own_run(configured) -> None:
    mine, other = DiagnosticsCollector(), DiagnosticsCollector()
    ctx = _ctx()
    with tracked_run(label="mine", sink=mine) as run:
        df = sql_to_datafusion(SQL, ctx=ctx, options=DataFusionCompileOptions(run_id=run.run_id))

        def work() -> None:
            with tracked_run(label="other", sink=other):
                df.collect()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    _assert_rows_under(mine, run.run_id)
    artifacts, operators = _rows(other)
    assert artifacts == [] and operators == []


def test_asyncio_task_with_empty_context_reaches_the_run(configured) -> None:
    sink = DiagnosticsCollector()
    _async_executions(sink)


def test_instrumented_asyncio_executions_are_children_of_the_run() -> None:
    sink = DiagnosticsCollector()
    with instrumented() as traced:
        run_id = _async_executions(sink)
        datafusion_otel.force_flush()
        spans: list[ReadableSpan] = traced.spans()
    root = next(s for s in spans if s.name == "async")
    executions = [s for s in spans if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)]
    assert len(executions) == 2
    for execution in executions:
        assert execution.parent is not None
        assert execution.parent.span_id == root.context.span_id
    assert format(root.context.trace_id, "032x") == run_id


def _async_executions(sink: DiagnosticsCollector) -> str:
    """A stream read in a task with an empty context and a collect on an executor thread."""
    ctx = _ctx()
    with tracked_run(label="async", sink=sink) as run:
        options = DataFusionCompileOptions(run_id=run.run_id)
        streamed = sql_to_datafusion(SQL, ctx=ctx, options=options)
        collected = sql_to_datafusion(SQL, ctx=ctx, options=options)

        async def read_stream() -> int:
            return sum(batch.to_pyarrow().num_rows for batch in [b async for b in streamed])

        async def main() -> tuple[int, int]:
            loop = asyncio.get_running_loop()
            # a task started in an empty context, and an executor thread (no context copied)
            task = loop.create_task(read_stream(), context=contextvars.Context())
            rows = await task
            batches = await loop.run_in_executor(None, collected.collect)
            return rows, sum(b.num_rows for b in batches)

        assert asyncio.run(main()) == (2, 2)
    _assert_rows_under(sink, run.run_id, queries=2)
    return run.run_id


def test_instrumented_worker_execution_span_is_a_child_of_the_run() -> None:
    sink = DiagnosticsCollector()
    with instrumented() as traced:
        ctx = _ctx()
        with tracked_run(label="instrumented", sink=sink) as run:
            df = sql_to_datafusion(
                SQL, ctx=ctx, options=DataFusionCompileOptions(run_id=run.run_id)
            )
            with ThreadPoolExecutor(1) as pool:
                pool.submit(df.collect).result()
        datafusion_otel.force_flush()
        spans: list[ReadableSpan] = traced.spans()
    root = next(s for s in spans if s.name == "instrumented")
    executions = [s for s in spans if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)]
    collect = [s for s in executions if s.attributes[attr.DATAFUSION_METHOD] == "DataFrame.collect"]
    assert len(collect) == 1
    execution = collect[0]
    assert execution.parent is not None and execution.parent.span_id == root.context.span_id
    assert artifact_events(spans, execution)
    ops = [s for s in spans if (s.attributes or {}).get(attr.OPERATOR_DERIVED)]
    assert ops and all(s.context.trace_id == root.context.trace_id for s in ops)
    assert all(s.parent is not None for s in executions)  # no auto run was made in the worker
    _assert_rows_under(sink, run.run_id)


def test_instrumented_worker_iteration_is_a_child_of_the_run() -> None:
    """``for batch in df`` on a worker thread: the instrumentor's stream execution span (and
    the artifacts on it) belong to the run named in the options."""
    sink = DiagnosticsCollector()
    with instrumented() as traced:
        ctx = _ctx()
        with tracked_run(label="iterated", sink=sink) as run:
            df = sql_to_datafusion(
                SQL, ctx=ctx, options=DataFusionCompileOptions(run_id=run.run_id)
            )
            with ThreadPoolExecutor(1) as pool:
                batches = pool.submit(lambda: list(df)).result()
        datafusion_otel.force_flush()
        spans: list[ReadableSpan] = traced.spans()
    assert sum(b.to_pyarrow().num_rows for b in batches) == 2
    root = next(s for s in spans if s.name == "iterated")
    executions = [s for s in spans if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)]
    assert len(executions) == 1
    assert executions[0].parent is not None
    assert executions[0].parent.span_id == root.context.span_id
    _assert_rows_under(sink, run.run_id)


def test_after_the_run_ended_rows_go_to_the_hook_and_are_counted(configured, caplog) -> None:
    sink = DiagnosticsCollector()
    received: list[Mapping[str, object]] = []
    ctx = _ctx()
    with tracked_run(label="ended", sink=sink) as run:
        with_hook = sql_to_datafusion(
            SQL,
            ctx=ctx,
            options=DataFusionCompileOptions(
                run_id=run.run_id, plan_artifacts_hook=received.append
            ),
        )
        without_hook = sql_to_datafusion(
            SQL, ctx=ctx, options=DataFusionCompileOptions(run_id=run.run_id)
        )
    before = _emit.run_ended_count()
    with caplog.at_level(logging.WARNING, logger="datafusion_otel"):
        with ThreadPoolExecutor(1) as pool:
            pool.submit(with_hook.collect).result()
            pool.submit(without_hook.collect).result()
        settle()
    assert len(received) == 1 and received[0]["run_id"] == run.run_id
    assert _emit.run_ended_count() == before + 2
    artifacts, operators = _rows(sink)
    assert artifacts == [] and operators == []  # nothing after the run's end
    spans = configured.exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "ended")
    assert not artifact_events(spans, root)
    if before == 0:
        assert "after that run ended" in caplog.text
