"""One benchmark for the README's Performance table: the cost of observing DataFusion queries.

Usage:
    uv run python benchmarks/overhead.py [--scale 0.1] [--rounds 10] [--json PATH] [--smoke]

Prints the Performance table (markdown rows, targets met / not met from the measured figures)
and the per-query figures; writes them as JSON to ``--json`` (default
``benchmarks/overhead_output.json``) and the printed text beside it (same name, ``.txt``).
``--smoke`` (CI): SF 0.01, 2 rounds, two queries, data and output in a temporary folder.

Setup. One process. Spans go to ``datafusion_otel.configure(span_exporters=[exporter])``: an
SDK TracerProvider with the package's DiagnosticsSpanProcessor and its batching export
processor, whose exporter (`overhead_backends.EncodingDropExporter`) encodes every batch to OTLP
protobuf, as the OTLP exporter does, and drops the bytes. Not a real OTLP/HTTP exporter here:
with a flush after every query it would send one HTTP request per query (measured: ~2.5-3 ms of
CPU each with the SDK's exporter), which batching amortizes in production; the real receiver is
used in the backend section. Every measurement ends with ``datafusion_otel.force_flush()`` (in
every arm, plain included): process CPU is taken over the call and that flush, so work the
package does on other threads (export, capture moved off the query thread) is counted; wall time
is the call alone, on the calling thread.

TPC-H arms (data from tpchgen-cli, cached under ``benchmarks/.data``; q15, three statements, is
left out), each call is ``ctx.sql(q).collect()`` unless said otherwise:

* ``plain``: no instrumentation; ``control``: the same again (plain vs. plain: noise and bias);
* ``span``: ``DataFusionInstrumentor().instrument(capture_plan_artifacts=False)``;
* ``default``: ``instrument(capture_plan_artifacts=True)`` (the DEFAULT_ARTIFACTS set);
* ``full``: ALL_ARTIFACTS: ``instrument(capture_plan_artifacts=True, artifacts=ALL_ARTIFACTS)``
  when the instrumentor takes ``artifacts``; otherwise the same instrumentor and the query
  compiled by ``bridge.sql_to_datafusion(q, ctx=ctx,
  options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS))`` (the printed setup says which);
* ``naive``: no instrumentation; the query, then a real ``EXPLAIN ANALYZE`` of it.

``instrument()`` / ``uninstrument()`` toggle outside the timed region. A round runs every arm
(in an order rotated from round to round, so drift cancels) over every query; one untimed round
first. Per query and arm: the median over rounds of the ratio to ``plain`` of the same round;
over queries: their geometric mean with a 95 % bootstrap interval (rounds resampled).

Tiny query (a filter + aggregate over a 1,000-row in-memory table, ~1 ms): blocks of
``--tiny-block`` calls, a flush after each block; ms added per call over plain (median over
rounds): span only, default capture, default capture with ``capture_min_duration_ms`` (when the
package has that option; else "n/a (option not available)").

Backend down vs. up (``overhead_backends``): span only and default capture, the tiny query, each
arm on its own TracerProvider from ``configure(tracer_provider=..., endpoint=...)`` pointing at
the real receiver (up, twice: the second is the control), a refusing port, or a listener that
accepts and never answers; wall time per block, ratio down / up of the same round. No flush
inside a measurement (a down backend would make it wait its timeout); after every block,
untimed, the up backend's exporter is flushed so its export does not run into the next block.

ParquetSink: rows per second written through it (``bench_sink.measure``).

Targets (issue 15), judged on the measured point figures: default capture <= 3 % (SF < 1) or
<= 1 % (SF >= 1) geometric mean, wall and CPU; on the tiny query <= 0.2 ms added, wall and CPU;
backend down / up <= 1.02. Span only and full capture are reported without a target. A verdict
adds "too noisy to judge" when the plain-vs-plain control is itself off by more than the
target's margin. The load average is printed at the start, after each section and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_sink  # the script's folder is on sys.path: these are its siblings
import overhead_report
from datafusion import SessionContext
from overhead_arms import (
    TINY_ARMS,
    TINY_SQL,
    TPCH_ARMS,
    arm_available,
    armed,
    describe_arms,
    measure,
    rotated,
)
from overhead_backends import EncodingDropExporter
from overhead_stats import Sample

import datafusion_otel
from datafusion_otel import configure, tpch

HERE = Path(__file__).resolve().parent


def run_tpch(
    ctx: SessionContext, queries: dict[str, str], rounds: int
) -> dict[str, dict[str, list[Sample]]]:
    """Samples per query per arm, one per round (after one untimed round)."""
    samples: dict[str, dict[str, list[Sample]]] = {q: {a: [] for a in TPCH_ARMS} for q in queries}
    for index in range(-1, rounds):
        for arm in rotated(TPCH_ARMS, max(index, 0)):
            with armed(arm) as call:
                for name, sql in queries.items():
                    sample = measure(call, ctx, sql, 1, flush=True)
                    if index >= 0:
                        samples[name][arm].append(sample)
    return samples


def tiny_context() -> SessionContext:
    """A context with the 1,000-row table ``thousand`` (a: 0..999, b: a % 10)."""
    ctx = SessionContext()
    ctx.from_pydict({"a": list(range(1000)), "b": [i % 10 for i in range(1000)]}, name="thousand")
    return ctx


def run_tiny(ctx: SessionContext, rounds: int, block: int) -> dict[str, list[Sample]]:
    """Samples per arm: blocks of ``block`` calls of the tiny query, one block per round."""
    arms = tuple(a for a in TINY_ARMS if arm_available(a))
    samples: dict[str, list[Sample]] = {a: [] for a in arms}
    for index in range(-1, rounds):
        for arm in rotated(arms, max(index, 0)):
            with armed(arm) as call:
                call(ctx, TINY_SQL)  # untimed, after the toggle
                sample = measure(call, ctx, TINY_SQL, block, flush=True)
            if index >= 0:
                samples[arm].append(sample)
    return samples


def tpch_queries(only: list[int] | None) -> dict[str, str]:
    """Single-statement TPC-H queries (q15 has three statements and is left out)."""
    numbers = only or list(tpch.QUERY_NUMBERS)
    found = {}
    for number in numbers:
        stmts = tpch.query_statements(number)
        if len(stmts) == 1:
            found[f"q{number}"] = stmts[0]
    return found


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--queries", help="comma-separated TPC-H numbers (default: all but 15)")
    parser.add_argument("--tiny-rounds", type=int, default=30)
    parser.add_argument("--tiny-block", type=int, default=50)
    parser.add_argument("--backend-rounds", type=int, default=20)
    parser.add_argument("--sink-rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path, help="TPC-H cache (default benchmarks/.data)")
    parser.add_argument("--json", type=Path, help="default benchmarks/overhead_output.json")
    parser.add_argument("--smoke", action="store_true", help="tiny and fast; nothing in the repo")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="dfo-overhead-")) if args.smoke else None
    if args.smoke and scratch is not None:
        args.scale, args.rounds = 0.01, 2
        args.queries = args.queries or "1,6"
        args.tiny_rounds, args.tiny_block, args.backend_rounds = 2, 5, 2
        args.sink_rows, args.resamples = 2_000, 50
        args.data_dir = args.data_dir or Path(tempfile.gettempdir()) / "datafusion-otel-bench"
        args.json = args.json or scratch / "overhead_output.json"
        os.environ.setdefault("DATAFUSION_OTEL_HOME", str(scratch / "home"))
    data_root = args.data_dir or HERE / ".data"
    json_path: Path = args.json or HERE / "overhead_output.json"
    only = [int(q) for q in args.queries.split(",")] if args.queries else None
    rng = random.Random(0)

    started = time.perf_counter()
    result: dict[str, Any] = {
        "argv": sys.argv[1:],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "scale": args.scale,
        "rounds": args.rounds,
        "load_start": load(),
        "arms": describe_arms(TPCH_ARMS) + describe_arms(("default_min",)),
    }
    ctx = SessionContext()
    tpch.register_tables(ctx, tpch.generate(args.scale, data_root / f"tpch-sf{args.scale}"))
    queries = tpch_queries(only)
    exporter = EncodingDropExporter()
    configure(span_exporters=[exporter])
    tpch_samples = run_tpch(ctx, queries, args.rounds)
    result["load_after_tpch"] = load()
    tiny = tiny_context()
    tiny_samples = run_tiny(tiny, args.tiny_rounds, args.tiny_block)
    result["load_after_tiny"] = load()
    datafusion_otel.force_flush()
    result["encoded"] = {"spans": exporter.spans, "bytes": exporter.bytes}
    sink = bench_sink.measure(args.sink_rows)
    backend = overhead_report.run_backends(tiny, args.backend_rounds, args.tiny_block, armed)
    result["load_end"] = load()
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = overhead_report.build(
        result, tpch_samples, tiny_samples, backend, sink, args, rng, json_path
    )
    print(text)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    json_path.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwrote {json_path} and {json_path.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
