"""Overhead of DataFusionInstrumentor in span-only mode (no artifact capture).

Usage:
    uv run python benchmarks/bench_instrumentation.py [--scale 0.1] [--rounds 15] [--in-run]

For each TPC-H query (data made with ``tpchgen-cli`` at the given scale factor, cached under
``benchmarks/.data``), the query runs alternately uninstrumented and instrumented in the same
process, ``--rounds`` times each (the order alternates too); the script prints per query the
median time of both and the median paired delta (traced minus plain within a round) per
execution (a query file may hold several statements: q15 creates and drops a view), then the
median of the per-query deltas. Query times vary by a few percent from run to run, so
a per-query delta is noisy; the fixed cost per execution is measured precisely at the end on a
one-row query over thousands of alternating iterations.

Spans go to an SDK TracerProvider with a BatchSpanProcessor and an exporter that drops them,
plus the package's DiagnosticsSpanProcessor (what ``datafusion_otel.configure`` sets up).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from datafusion import SessionContext
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from datafusion_otel import DataFusionInstrumentor, configure, tpch, tracked_run

HERE = Path(__file__).resolve().parent


class DropExporter(SpanExporter):
    """Accepts spans and drops them (the export path runs, nothing is kept)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def ensure_data(scale: float) -> Path:
    return tpch.generate(scale, HERE / ".data" / f"tpch-sf{scale}")


def run_query(ctx: SessionContext, stmts: list[str]) -> None:
    for stmt in stmts:
        ctx.sql(stmt).collect()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def alternate(fn: Callable[[], object], rounds: int, in_run: bool) -> tuple[float, float, float]:
    """Median ms of ``fn`` uninstrumented and instrumented, and the median paired delta.

    Rounds alternate the order (plain first, then traced first), and each round runs ``fn``
    once untimed in each mode first, so that what is timed is the steady state. The paired
    delta (traced minus plain within one round) cancels slow drift of the machine.
    """
    instrumentor = DataFusionInstrumentor()
    plain: list[float] = []
    traced: list[float] = []

    def measure(on: bool) -> float:
        if on:
            instrumentor.instrument()
        try:
            if in_run:
                with tracked_run(label="bench"):
                    fn()
                    return timed(fn)
            fn()
            return timed(fn)
        finally:
            if on:
                instrumentor.uninstrument()

    deltas: list[float] = []
    for i in range(rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        times = {on: measure(on) for on in order}
        plain.append(times[False])
        traced.append(times[True])
        deltas.append(times[True] - times[False])
    return statistics.median(plain), statistics.median(traced), statistics.median(deltas)


def fixed_cost(ctx: SessionContext, iterations: int, in_run: bool) -> float:
    """Median extra ms per execution on a one-row query (blocks of 50 calls, alternating)."""
    instrumentor = DataFusionInstrumentor()
    deltas: list[float] = []
    block = 50

    def run_block() -> float:
        start = time.perf_counter_ns()
        for _ in range(block):
            ctx.sql("SELECT a FROM one").collect()
        return (time.perf_counter_ns() - start) / 1e6 / block

    for _ in range(iterations // block):
        plain = run_block()
        instrumentor.instrument()
        try:
            if in_run:
                with tracked_run(label="bench"):
                    traced = run_block()
            else:
                traced = run_block()
        finally:
            instrumentor.uninstrument()
        deltas.append(traced - plain)
    return statistics.median(deltas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--fixed-iterations", type=int, default=4000)
    parser.add_argument("--in-run", action="store_true", help="inside tracked_run, no auto run")
    args = parser.parse_args()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    configure(tracer_provider=provider)

    data = ensure_data(args.scale)
    ctx = SessionContext()
    tpch.register_tables(ctx, data)
    ctx.from_pydict({"a": [1]}, name="one")
    mode = "inside tracked_run" if args.in_run else "auto_run (each execution is a run)"
    print(f"span-only overhead, TPC-H SF {args.scale}, {args.rounds} rounds, {mode}")
    print(f"{'query':>5} {'plain ms':>10} {'traced ms':>10} {'paired delta ms/exec':>21}")
    deltas: list[float] = []
    for number in tpch.QUERY_NUMBERS:
        stmts = tpch.query_statements(number)
        run_query(ctx, stmts)  # warm up caches
        plain, traced, paired = alternate(
            lambda s=stmts: run_query(ctx, s), args.rounds, args.in_run
        )
        delta = paired / len(stmts)
        deltas.append(delta)
        print(f"{'q' + str(number):>5} {plain:10.2f} {traced:10.2f} {delta:21.3f}")
    print(f"median delta over {len(deltas)} TPC-H queries: {statistics.median(deltas):.3f} ms")
    fixed = fixed_cost(ctx, args.fixed_iterations, args.in_run)
    calls = args.fixed_iterations
    print(f"fixed cost per execution (one-row query, {calls} calls): {fixed:.3f} ms")
    provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
