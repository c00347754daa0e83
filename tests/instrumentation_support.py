"""Helpers shared by the instrumentation tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from datafusion import SessionContext
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datafusion_otel import DataFusionInstrumentor, config, configure
from datafusion_otel import attributes as attr
from datafusion_otel._capture import queue as _capture_queue
from datafusion_otel._capture.stream_latch import run_pending


@dataclass
class Traced:
    """An instrumented process: the provider, its in-memory exporter, the instrumentor."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    instrumentor: DataFusionInstrumentor

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, once the spans of garbage-collected streams have ended and every
        capture has landed.

        Other execution spans end on the calling thread and need no flush; a stream dropped
        without being closed ends its span from a worker thread (``force_flush`` waits); plan
        artifacts arrive on ``datafusion.capture`` spans from the capture worker.
        """
        run_pending()
        assert _capture_queue.drain(30)
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def executions(self) -> list[ReadableSpan]:
        """Finished execution spans (spans carrying db.system.name)."""
        return [s for s in self.spans() if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)]

    def only_execution(self) -> ReadableSpan:
        found = self.executions()
        assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in found]
        return found[0]

    def clear(self) -> None:
        """Forget every span so far, pending ones included."""
        self.provider.force_flush()
        self.exporter.clear()


@contextmanager
def instrumented(**options: Any) -> Iterator[Traced]:
    """Instrument with a fresh SDK provider (runs use it too); always uninstrument."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(tracer_provider=provider)
    instrumentor = DataFusionInstrumentor()
    instrumentor.instrument(tracer_provider=provider, **options)
    try:
        yield Traced(provider, exporter, instrumentor)
    finally:
        instrumentor.uninstrument()
        config.reset()
        provider.shutdown()


def make_context() -> SessionContext:
    """A SessionContext with table ``t(a BIGINT, b VARCHAR)`` holding 3 rows."""
    ctx = SessionContext()
    ctx.from_pydict({"a": [1, 2, 3], "b": ["x", "y", "z"]}, name="t")
    return ctx
