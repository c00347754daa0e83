"""A program that fans one run out to forked worker processes (run by the tests as a subprocess).

    python tests/run_context_fork_app.py OUT_DIR DATA_PATH

The owning process configures datafusion-otel with a `ParquetSink` in ``OUT_DIR/owner`` (also
the run's sink, so it holds buffered rows when the workers are forked), forks two workers
before it uses DataFusion itself (DataFusion's async runtime does not survive a fork), then
runs a query of its own in the run. It prints one JSON line: the run id, each dispatching
span id, each worker's result and the owner's spans.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path

from datafusion import SessionContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
import run_context_workers as workers
from datafusion_otel import ParquetSink, run_context, tracked_run
from datafusion_otel.bridge import sql_to_datafusion


def main(out_dir: str, data: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = ParquetSink(Path(out_dir) / "owner", flush_interval=60)  # rows stay buffered
    datafusion_otel.configure(tracer_provider=provider, sink=sink)
    tracer = provider.get_tracer("fork-app")
    fork = multiprocessing.get_context("fork")
    results_queue = fork.Queue()
    dispatchers: dict[int, str] = {}
    processes = []
    with tracked_run(label="fanout", sink=sink) as run:
        for index in range(2):
            with tracer.start_as_current_span(f"dispatch {index}") as dispatch:
                dispatchers[index] = f"{dispatch.get_span_context().span_id:016x}"
                process = fork.Process(
                    target=workers.queue_task,
                    args=(results_queue, run_context(), data, str(Path(out_dir) / "workers")),
                )
                process.start()
                processes.append(process)
        results = [results_queue.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(60)
        ctx = SessionContext()
        ctx.register_parquet("t", data)
        own = sql_to_datafusion(workers.FILTERED, ctx=ctx).to_pydict()["n"][0]
    flushed = datafusion_otel.force_flush(10)
    order = {sid: i for i, sid in dispatchers.items()}
    results.sort(
        key=lambda r: order[next(s["parent_span_id"] for s in r["spans"] if s["parent_remote"])]
    )
    print(
        json.dumps(
            {
                "run_id": run.run_id,
                "dispatchers": dispatchers,
                "results": results,
                "exitcodes": [p.exitcode for p in processes],
                "owner_store": str(sink.path),
                "owner_count": own,
                "owner_flushed": flushed,
                "owner_spans": [workers.span_record(s) for s in exporter.get_finished_spans()],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
