"""Benchmark: the HTML run profile of one run holding the 22 TPC-H queries (scale 0.01).

Captures one tracked run of the 22 queries into a fresh run store (ParquetSink), then times
``report`` in-process (open the store, read the run, render, write the file; best of 5) and as
the ``datafusion-otel report`` command (a new interpreter, imports included), and prints the
file's size; and what recording the findings at the run's end costs (hold the rows, compute).
The issue's target: < 1 s and < 2 MB.

Run: ``uv run python benchmarks/bench_report.py [SCALE]`` (needs ``tpchgen-cli``, installed
with the project's dev dependencies).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datafusion import SessionContext

from datafusion_otel import attributes as attr
from datafusion_otel import force_flush, tpch, tracked_run
from datafusion_otel._processing.run_findings import FindingsRecorder
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.report import render
from datafusion_otel.store import ParquetSink, RunStore


def capture_tpch_run(store: Path, data: Path) -> str:
    """Run the 22 TPC-H queries of ``data`` as one tracked run into ``store``; its run id."""
    ctx = SessionContext()
    tpch.register_tables(ctx, data)
    with ParquetSink(store) as sink:
        with tracked_run(label="tpch-22", sink=sink, metadata={"scale": "0.01"}) as run:
            for number in tpch.QUERY_NUMBERS:
                for statement in tpch.query_statements(number):
                    sql_to_datafusion(
                        statement, ctx=ctx, options=DataFusionCompileOptions()
                    ).to_arrow_table()
        force_flush(timeout=30)
    return run.run_id


def main(scale: float = 0.01) -> None:
    with tempfile.TemporaryDirectory() as home:
        data = tpch.generate(scale, Path(home) / "tpch")
        store = Path(home) / "store"
        run_id = capture_tpch_run(store, data)
        target = Path(home) / "report.html"
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            text = render(run_id, store=RunStore(store, must_exist=True))
            target.write_text(text, encoding="utf-8")
            timings.append(time.perf_counter() - started)
        size = target.stat().st_size
        details = RunStore(store).run(run_id)
        queries = len(
            {
                (r["span_id"], r["plan_hash"], r["event_time_unix_ms"])
                for r in details.operator_metrics
            }
        )
        sections = text.count('<section class="query"')
        tables = [
            (attr.OPERATOR_METRICS_TABLE, details.operator_metrics),
            (attr.PLAN_ARTIFACTS_TABLE, details.plan_artifacts),
        ]
        recorder = FindingsRecorder()
        started = time.perf_counter()
        recorder.add(run_id, tables)  # what the processor does as spans end
        held = time.perf_counter() - started
        started = time.perf_counter()
        found = recorder.finish(run_id) or []  # what it does when the run's root ends
        computed = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "datafusion_otel.cli", "report", "--store", str(store),
             run_id, "-o", str(Path(home) / "cli.html")],
            check=True, capture_output=True,
        )  # fmt: skip
        command = time.perf_counter() - started

    print(f"TPC-H scale {scale}: one run, {queries} executions, {sections} query sections")
    print(f"operator-metrics rows           {len(details.operator_metrics):>10,}")
    print(f"report in-process (best of 5)   {min(timings):>10.3f} s  (target < 1 s)")
    print(f"report in-process (worst of 5)  {max(timings):>10.3f} s")
    print(
        f"datafusion-otel report command  {command:>10.3f} s  (new interpreter, imports included)"
    )
    print(f"findings recorder: hold rows    {held:>10.4f} s  (processor, as spans end)")
    print(
        f"findings recorder: compute      {computed:>10.4f} s  ({len(found)} findings, at run end)"
    )
    print(f"HTML file                       {size:>10,} bytes  (target < 2,000,000)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.01)
