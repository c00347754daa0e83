"""An auto run's row survives the application's attribute count limit.

The instrumentation sets an auto run's ``datafusion.run.*`` attributes when the execution
ends, next to the error attributes of a failing one; with ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=4``
the SDK evicts the oldest of them, ``datafusion.run.id``. The root span is registered as a run
when it starts (`datafusion_otel._processing.span_rows.register_auto_run`), so recognition never depends
on attributes surviving the application's limits.
"""

from __future__ import annotations

import json

import pytest
from datafusion import SessionContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from datafusion_otel import DataFusionInstrumentor, DiagnosticsCollector
from datafusion_otel import attributes as attr
from datafusion_otel._processing.run_metadata import AUTO_RUN, ERROR_TYPE
from otel_state import Handles, handles_fixture  # noqa: F401


class TestAutoRunUnderAttributeCountLimit:
    """A failing auto run keeps its row when its run attributes are evicted."""

    def test_failing_auto_run_with_four_attributes(
        self, handles: Handles, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
        provider = TracerProvider()  # reads the limit from the environment
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        sink = DiagnosticsCollector()
        handles.add(datafusion_otel.configure(tracer_provider=provider, sink=sink))
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(auto_run=True)
        try:
            ctx = SessionContext()
            ctx.from_pydict({"s": ["abc", "1"]}, name="t")
            with pytest.raises(Exception, match="Cannot cast"):
                ctx.sql("SELECT CAST(s AS INT) AS x FROM t").collect()
        finally:
            instrumentor.uninstrument()
        assert datafusion_otel.force_flush(10)
        (span,) = [s for s in exporter.get_finished_spans() if s.parent is None]
        assert attr.RUN_ID not in (span.attributes or {})  # the limit did evict it
        (row,) = sink.events_snapshot()[attr.RUNS_TABLE]
        assert row["run_id"] == format(span.context.trace_id, "032x")
        assert row["status"] == "failed"
        metadata = json.loads(str(row["metadata"]))
        assert metadata[AUTO_RUN] is True
        assert metadata[ERROR_TYPE]
