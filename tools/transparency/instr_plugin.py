"""Run datafusion-python's own tests with DataFusionInstrumentor on (DFOTEL_MODE=span|capture)."""

import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MODE = os.environ.get("DFOTEL_MODE", "plain")


class OpenSpans(SpanProcessor):
    def __init__(self):
        self.open = {}
        self.lock = threading.Lock()
        self.started = 0

    def on_start(self, span, parent_context=None):
        with self.lock:
            self.started += 1
            self.open[span.context.span_id] = span.name

    def on_end(self, span):
        with self.lock:
            self.open.pop(span.context.span_id, None)


TRACKER = OpenSpans()
EXPORTER = InMemorySpanExporter()


def pytest_configure(config):
    if MODE == "plain":
        return
    provider = TracerProvider()
    provider.add_span_processor(TRACKER)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    from datafusion_otel import DataFusionInstrumentor

    DataFusionInstrumentor().instrument(
        tracer_provider=provider, capture_plan_artifacts=(MODE == "capture")
    )


def pytest_sessionfinish(session, exitstatus):
    if MODE == "plain":
        return
    import gc

    gc.collect()
    import datafusion_otel

    datafusion_otel.force_flush(10)
    gc.collect()
    with TRACKER.lock:
        left = dict(TRACKER.open)
    print(
        f"\n[dfotel] mode={MODE} spans started={TRACKER.started}",
        f"still open={len(left)} {sorted(set(left.values()))[:10]}",
    )
