"""An instrumentor given its own ``tracer_provider``: operator spans and rows follow it.

``DataFusionInstrumentor().instrument(tracer_provider=P, capture_plan_artifacts=True)`` with no
``configure()`` (runs then come from a private provider) or with another global SDK provider:
the operator spans of an execution come from P like the execution span itself, and the
diagnostics rows of P's spans reach the sink of the run they belong to, exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from datafusion import SessionContext
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from datafusion_otel import (
    DataFusionInstrumentor,
    DiagnosticsCollector,
    DiagnosticsSpanProcessor,
    bridge,
    tracked_run,
)
from datafusion_otel import attributes as attr
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.instrumentation import DataFusionInstrumentationWarning
from otel_state import Handles, handles_fixture  # noqa: F401

QUERY = "SELECT b, count(*) AS n FROM t GROUP BY b ORDER BY b"


@dataclass
class Provider:
    """An SDK provider exporting to memory."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    def finished(self) -> list[ReadableSpan]:
        """Finished spans, once the capture worker has attached every pending capture."""
        assert _capture_queue.drain(30)
        return list(self.exporter.get_finished_spans())

    def names(self) -> list[str]:
        return [s.name for s in self.finished()]

    def operators(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if (s.attributes or {}).get(attr.OPERATOR_DERIVED)]

    def executions(self) -> list[ReadableSpan]:
        return [
            s
            for s in self.finished()
            if (s.attributes or {}).get(attr.DB_SYSTEM_NAME) == attr.DB_SYSTEM_VALUE
        ]


def _provider() -> Provider:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Provider(provider, exporter)


@pytest.fixture
def mine(handles: Handles) -> Iterator[Provider]:
    """The instrumentor's own provider P; no configure(), no global provider (fresh state)."""
    p = _provider()
    yield p
    if DataFusionInstrumentor().is_instrumented_by_opentelemetry:
        DataFusionInstrumentor().uninstrument()
    p.provider.shutdown()


def _context() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict({"a": [1, 2, 3, 4], "b": ["x", "y", "x", "z"]}, name="t")
    return ctx


def _assert_tree_on(p: Provider) -> None:
    (execution,) = p.executions()
    operators = p.operators()
    assert operators, p.names()
    for span in operators:  # the operator tree hangs under the execution span, in P
        assert span.context.trace_id == execution.context.trace_id
    ids = {s.context.span_id for s in operators} | {execution.context.span_id}
    assert all(s.parent is not None and s.parent.span_id in ids for s in operators)


@pytest.mark.parametrize("global_provider", ["none", "other-sdk"])
def test_operator_spans_come_from_the_execution_spans_provider(
    mine: Provider, global_provider: str
) -> None:
    other = _provider()
    if global_provider == "other-sdk":
        trace.set_tracer_provider(other.provider)
    DataFusionInstrumentor().instrument(tracer_provider=mine.provider, capture_plan_artifacts=True)
    with mine.provider.get_tracer("app").start_as_current_span("app-request"):
        _context().sql(QUERY).collect()
    _assert_tree_on(mine)
    assert other.operators() == []
    assert other.names() == []


def test_operator_spans_of_an_auto_run_come_from_the_instrumentors_provider(
    mine: Provider,
) -> None:
    other = _provider()
    trace.set_tracer_provider(other.provider)
    DataFusionInstrumentor().instrument(tracer_provider=mine.provider, capture_plan_artifacts=True)
    _context().sql(QUERY).collect()  # no run, no span: the execution is a run of its own
    _assert_tree_on(mine)
    assert other.names() == []


def test_operator_spans_of_a_compiled_frame_come_from_the_instrumentors_provider(
    mine: Provider,
) -> None:
    DataFusionInstrumentor().instrument(tracer_provider=mine.provider)
    with mine.provider.get_tracer("app").start_as_current_span("app-request"):
        df = sql_to_datafusion(QUERY, ctx=_context(), options=DataFusionCompileOptions())
        df.collect()
    _assert_tree_on(mine)


def _rows_of_one_run(sink: DiagnosticsCollector) -> dict[str, list[dict[str, object]]]:
    assert datafusion_otel.force_flush(10)
    return sink.events_snapshot()


@pytest.mark.parametrize("runs_from", ["private-fallback", "global-sdk", "same-provider"])
def test_rows_of_the_instrumentors_spans_reach_the_runs_sink_once(
    mine: Provider, runs_from: str
) -> None:
    """The run span on another provider (or the same one): every row arrives exactly once."""
    if runs_from == "global-sdk":
        trace.set_tracer_provider(_provider().provider)
    elif runs_from == "same-provider":
        datafusion_otel.configure(tracer_provider=mine.provider)
    # a processor the user added on P with a sink of their own must not double the run's rows
    own = DiagnosticsCollector()
    mine.provider.add_span_processor(DiagnosticsSpanProcessor(own))
    DataFusionInstrumentor().instrument(tracer_provider=mine.provider, capture_plan_artifacts=True)
    sink = DiagnosticsCollector()
    with tracked_run(label="r", sink=sink) as run:
        _context().sql(QUERY).collect()
    rows = _rows_of_one_run(sink)
    assert len(rows[attr.RUNS_TABLE]) == 1
    (artifacts,) = rows[attr.PLAN_ARTIFACTS_TABLE]
    assert artifacts["run_id"] == run.run_id
    metrics = rows[attr.OPERATOR_METRICS_TABLE]
    assert metrics
    assert {m["run_id"] for m in metrics} == {run.run_id}
    keys = [(m["operator_path"], m["partition"]) for m in metrics]
    assert len(keys) == len(set(keys))  # each operator's row once
    own_rows = own.events_snapshot()  # the user's processor gets P's rows in its own sink
    assert len(own_rows[attr.OPERATOR_METRICS_TABLE]) == len(metrics)


def test_the_configure_sink_gets_the_rows_of_the_instrumentors_spans(mine: Provider) -> None:
    """configure(sink=S) on the provider of runs, the instrumentor on P: S gets every row once."""
    runs_provider = _provider()
    everything = DiagnosticsCollector()
    datafusion_otel.configure(tracer_provider=runs_provider.provider, sink=everything)
    DataFusionInstrumentor().instrument(tracer_provider=mine.provider, capture_plan_artifacts=True)
    with tracked_run(label="r") as run:
        _context().sql(QUERY).collect()
    rows = _rows_of_one_run(everything)
    assert [r["run_id"] for r in rows[attr.RUNS_TABLE]] == [run.run_id]
    (artifacts,) = rows[attr.PLAN_ARTIFACTS_TABLE]
    assert artifacts["run_id"] == run.run_id
    metrics = rows[attr.OPERATOR_METRICS_TABLE]
    keys = [(m["operator_path"], m["partition"]) for m in metrics]
    assert keys
    assert len(keys) == len(set(keys))


def test_a_provider_that_is_not_an_sdk_provider_is_warned_about(mine: Provider) -> None:
    with pytest.warns(DataFusionInstrumentationWarning, match="not an OpenTelemetry SDK"):
        DataFusionInstrumentor().instrument(
            tracer_provider=trace.NoOpTracerProvider(), capture_plan_artifacts=True
        )
    assert _context().sql(QUERY).collect()  # queries still run


def test_operator_spans_under_an_unknown_providers_span_are_counted_and_warned(
    mine: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """No instrumentor: a compiled frame run under a span of a provider the package never saw."""
    before = bridge.foreign_provider_count()
    with (
        caplog.at_level(logging.WARNING, logger="datafusion_otel.capture"),
        mine.provider.get_tracer("app").start_as_current_span("app-request"),
    ):
        sql_to_datafusion(QUERY, ctx=_context()).collect()
    assert _capture_queue.drain(30)
    assert bridge.foreign_provider_count() == before + 1
    assert mine.operators() == []  # they went to the provider of runs, and that is told
    if before == 0:
        assert "unknown TracerProvider" in caplog.text
