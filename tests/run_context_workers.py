"""Worker-side code of the run-context tests: importable by spawned, forked and Dask workers.

Each worker process configures datafusion-otel once (`configure_worker`): its own SDK provider
exporting to memory (so the test can read back the worker's spans) and its own `ParquetSink`
in ``<out_dir>/worker-<pid>``. A task (`query_task`) attaches to the run of the carrier it was
given, runs real DataFusion queries on the Parquet data (one through the auto-instrumentation,
one compiled by the bridge), flushes, and returns what it recorded as plain JSON-able values.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from datafusion import SessionContext
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

import datafusion_otel
from datafusion_otel import DataFusionInstrumentor, ParquetSink, attached_run
from datafusion_otel.bridge import sql_to_datafusion

GROUPED = "SELECT g, count(*) AS n, sum(v) AS total FROM t WHERE v > 3 GROUP BY g ORDER BY g"
FILTERED = "SELECT count(*) AS n FROM t WHERE v < 5"

_state: dict[str, Any] = {}


def configure_worker(out_dir: str, *, instrument: bool = True) -> None:
    """Configure this process once: memory span exporter, ParquetSink, instrumentor."""
    if _state.get("pid") == os.getpid():
        return
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = ParquetSink(Path(out_dir) / f"worker-{os.getpid()}")
    datafusion_otel.configure(tracer_provider=provider, sink=sink)
    if instrument:
        DataFusionInstrumentor().instrument(capture_plan_artifacts=True)
    _state.update(pid=os.getpid(), exporter=exporter, sink=sink, instrument=instrument)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as JSON-able values."""
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format_trace_id(context.trace_id),
        "span_id": format_span_id(context.span_id),
        "parent_span_id": format_span_id(span.parent.span_id) if span.parent else None,
        "parent_remote": bool(span.parent and span.parent.is_remote),
        "method": (span.attributes or {}).get("datafusion.method"),
        "pid": os.getpid(),
    }


def _finished_spans() -> list[dict[str, Any]]:
    exporter: InMemorySpanExporter = _state["exporter"]
    spans = [span_record(span) for span in exporter.get_finished_spans()]
    exporter.clear()
    return spans


def query_task(
    carrier: dict[str, str],
    data: str,
    out_dir: str,
    *,
    instrument: bool = True,
    crash_after_flush: bool = False,
) -> dict[str, Any]:
    """Attach to the carrier's run, run two real queries, flush, report what was recorded."""
    configure_worker(out_dir, instrument=instrument)
    ctx = SessionContext()
    ctx.register_parquet("t", data)
    with attached_run(carrier) as attached:
        grouped = ctx.sql(GROUPED).to_arrow_table()
        counted = sql_to_datafusion(FILTERED, ctx=ctx).to_pydict()
    flushed = datafusion_otel.force_flush(10)
    if crash_after_flush:  # rows are flushed; a second query's are not, then the worker dies
        with attached_run(carrier):
            ctx.sql(GROUPED).to_arrow_table()
        os.kill(os.getpid(), signal.SIGKILL)
    return {
        "pid": os.getpid(),
        "store": str(_state["sink"].path),
        "groups": grouped.num_rows,
        "count": counted["n"][0],
        "flushed": flushed,
        "run_id": attached.run_id,
        "own_span": attached.span is not None,
        "spans": _finished_spans(),
    }


def queue_task(queue: Any, carrier: dict[str, str], data: str, out_dir: str, **kw: Any) -> None:
    """`query_task` for a `multiprocessing.Process`: the result goes to ``queue``."""
    queue.put(query_task(carrier, data, out_dir, **kw))
