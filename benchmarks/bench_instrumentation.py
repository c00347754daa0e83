"""Cost of DataFusionInstrumentor in span-only mode, against a bare SDK span around the same query.

Usage:
    uv run python benchmarks/bench_instrumentation.py [--rounds 300] [--block 20]
        [--scale 0.01] [--tpch-rounds 30] [--no-tpch] [--resamples 2000] [--seed 0]

What is measured, per execution (one ``DataFrame.collect()``), in one process, interleaved:

* ``plain``: the query, uninstrumented;
* ``control``: the same again (plain vs. plain: the procedure's own bias and noise);
* ``bare``: the query inside a bare SDK span made by hand, the way an application would:
  ``with tracer.start_as_current_span(name, kind=CLIENT, attributes=...)`` around the call,
  then the result attributes (``db.response.returned_rows``, ``datafusion.partition_count``)
  set on it; the same name and the same attributes as the instrumentor's span;
* ``bare_raw``: the same span made with the cheapest SDK calls there are
  (``tracer.start_span``, ``context.attach`` / ``detach``, ``span.end``), no context manager;
* ``instrumented``: the query with ``DataFusionInstrumentor().instrument()`` (span-only).

Two figures per arm, as added cost over ``plain``: wall time (``perf_counter_ns``) and process
CPU time, all threads (``process_time_ns``: the query's DataFusion worker threads, the batch
span processor's thread, everything). Every arm runs inside one ``tracked_run`` (opened and
closed outside the timed region), so both spans are children of a run with the same
attributes; spans go to an SDK TracerProvider with a BatchSpanProcessor whose exporter drops
them, plus the package's DiagnosticsSpanProcessor (what ``datafusion_otel.configure`` sets up).

Method. A round measures every arm once, in an order rotated from round to round; one
measurement is a block of ``--block`` calls of ``collect()`` on DataFrames made before the
timer starts (``ctx.sql`` is not timed; with the instrumentor on they are made outside the run,
so no planning span is made either), after the arm's toggle and one untimed call. Deltas are
paired within a round (arm minus ``plain`` of the same round), divided by the block size.
Reported: the median delta over the rounds with a 95 % percentile-bootstrap interval
(``--resamples`` resamples of the rounds, fixed ``--seed``), and the ratio
instrumented / bare of the medians with its interval from the same resamples. Target: the ratio
at most 1.25 on both figures.

Workloads: a one-row query, a 1,000-row query (``SELECT a, b FROM thousand WHERE a >= 0``),
and, unless ``--no-tpch``, the TPC-H queries at ``--scale`` (data made with ``tpchgen-cli``,
cached under ``benchmarks/.data``; q15, three statements, is left out), a block of one call
each, summarized as the median over the queries of each query's median delta.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datafusion import DataFrame, SessionContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from datafusion_otel import DataFusionInstrumentor, configure, tpch, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel.instrumentation._execution import start_attributes
from datafusion_otel.sanitize import query_summary

HERE = Path(__file__).resolve().parent
ARMS = ("plain", "control", "bare", "bare_raw", "instrumented")
COMPARED = ("control", "bare", "bare_raw", "instrumented")
TARGET_RATIO = 1.25


class DropExporter(SpanExporter):
    """Accepts spans and drops them (the export path runs, nothing is kept)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Workload:
    """One query measured on every arm."""

    name: str
    ctx: SessionContext
    sql: str
    block: int
    samples: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Arm -> (wall ns, cpu ns) per block, one per round."""

    def frames(self) -> list[DataFrame]:
        return [self.ctx.sql(self.sql) for _ in range(self.block)]


@contextmanager
def arm_mode(arm: str) -> Iterator[None]:
    instrumentor = DataFusionInstrumentor()
    if arm == "instrumented":
        instrumentor.instrument(capture_plan_artifacts=False, skip_dep_check=True)
    try:
        yield
    finally:
        if arm == "instrumented":
            instrumentor.uninstrument()


def measure(work: Workload, arm: str, tracer: object) -> tuple[int, int]:
    """(wall ns, process CPU ns) of one block of ``collect()`` calls on ``arm``."""
    with arm_mode(arm):
        frames = work.frames()  # untimed; outside the run: no planning span
        warm = work.frames()[0]
        with tracked_run(label="bench"):
            call = (
                bare_call(work, tracer, raw=arm == "bare_raw")
                if arm.startswith("bare")
                else (DataFrame.collect)
            )
            call(warm)
            cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
            for df in frames:
                call(df)
            wall, cpu = time.perf_counter_ns() - wall0, time.process_time_ns() - cpu0
        del frames, warm  # dropped outside the timed region
    return wall, cpu


def bare_call(work: Workload, tracer: object, *, raw: bool) -> Callable[[DataFrame], object]:
    """A hand-made span with the instrumentor's name and attributes around ``collect()``."""
    summary = query_summary(work.sql)
    name, attributes = start_attributes(
        "DataFrame.collect", summary, work.sql, work.ctx.session_id(), "sanitized"
    )
    start_as_current_span = tracer.start_as_current_span  # type: ignore[attr-defined]
    start_span = tracer.start_span  # type: ignore[attr-defined]

    def call_raw(df: DataFrame) -> object:
        span = start_span(name, None, SpanKind.CLIENT, attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            batches = df.collect()
        finally:
            otel_context.detach(token)
        span.set_attributes(
            {
                attr.DB_RESPONSE_RETURNED_ROWS: sum(b.num_rows for b in batches),
                attr.DATAFUSION_PARTITION_COUNT: df.execution_plan().partition_count,
            }
        )
        span.end()
        return batches

    def call(df: DataFrame) -> object:
        with start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
            batches = df.collect()
            span.set_attributes(
                {
                    attr.DB_RESPONSE_RETURNED_ROWS: sum(b.num_rows for b in batches),
                    attr.DATAFUSION_PARTITION_COUNT: df.execution_plan().partition_count,
                }
            )
        return batches

    return call_raw if raw else call


def run(works: list[Workload], rounds: int, tracer: object) -> None:
    for work in works:  # warm-up, discarded
        for arm in ARMS:
            measure(work, arm, tracer)
        work.samples = {arm: [] for arm in ARMS}
    for index in range(rounds):
        shift = index % len(ARMS)
        order = ARMS[shift:] + ARMS[:shift]
        for work in works:
            for arm in order:
                work.samples[arm].append(measure(work, arm, tracer))


def deltas(work: Workload, arm: str, which: int) -> list[float]:
    """Microseconds per execution added by ``arm`` over plain, one per round."""
    return [
        (sample[which] - base[which]) / work.block / 1e3
        for sample, base in zip(work.samples[arm], work.samples["plain"], strict=True)
    ]


@dataclass
class Summary:
    median: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]


def summarize(groups: list[dict[str, list[float]]], resamples: int, rng: random.Random) -> Summary:
    """Median (over groups) of per-group median deltas, its bootstrap CI, and the ratio's."""

    def headline(picks: list[dict[str, list[float]]]) -> dict[str, float]:
        out = {arm: statistics.median(statistics.median(g[arm]) for g in picks) for arm in COMPARED}
        for base in ("bare", "bare_raw"):
            ratio = out["instrumented"] / out[base] if out[base] > 0 else float("nan")
            out[f"ratio_{base}"] = ratio
        return out

    point = headline(groups)
    boot: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples):
        picks = []
        for g in groups:
            n = len(g["bare"])
            idx = [rng.randrange(n) for _ in range(n)]
            picks.append({arm: [g[arm][i] for i in idx] for arm in g})
        for key, value in headline(picks).items():
            boot[key].append(value)
    # a ratio is undefined (nan) in a resample whose baseline cost is <= 0: then the interval is
    # undefined too (sorting nans gives a meaningless order), and so is any verdict on it
    undefined = {k for k, v in boot.items() if any(math.isnan(x) for x in v)}
    low = {
        k: math.nan if k in undefined else sorted(v)[int(0.025 * len(v))] for k, v in boot.items()
    }
    high = {
        k: math.nan if k in undefined else sorted(v)[int(0.975 * len(v)) - 1]
        for k, v in boot.items()
    }
    return Summary(point, low, high)


def report(title: str, works: list[Workload], resamples: int, seed: int) -> None:
    print(f"\n{title}")
    for which, label in ((0, "wall time"), (1, "process CPU (all threads)")):
        groups = [{arm: deltas(w, arm, which) for arm in COMPARED} for w in works]
        s = summarize(groups, resamples, random.Random(seed))
        print(f"  {label}, us added per execution over plain (median, 95 % CI):")
        for key in COMPARED:
            print(f"    {key:<13} {s.median[key]:8.1f}  [{s.low[key]:7.1f}, {s.high[key]:7.1f}]")
        for base in ("bare", "bare_raw"):
            key = f"ratio_{base}"
            if math.isnan(s.low[key]) or math.isnan(s.median[key]):
                verdict = f"not shown (the {base} span's cost is not resolved from noise)"
            elif s.high[key] <= TARGET_RATIO:
                verdict = "met"
            else:
                verdict = "not met" if s.low[key] > TARGET_RATIO else "not shown"
            print(
                f"    ratio instrumented / {base}: {s.median[key]:.2f}  "
                f"[{s.low[key]:.2f}, {s.high[key]:.2f}]  target <= {TARGET_RATIO}: {verdict}"
            )
    plain_ms = statistics.median(
        statistics.median(s[0] for s in w.samples["plain"]) / w.block / 1e6 for w in works
    )
    print(f"  plain query: {plain_ms:.3f} ms per execution (median)")


def small_workloads(block: int) -> list[Workload]:
    ctx = SessionContext()
    ctx.from_pydict({"a": [1]}, name="one")
    ctx.from_pydict({"a": list(range(1000)), "b": [str(i) for i in range(1000)]}, name="thousand")
    return [
        Workload("one-row", ctx, "SELECT a FROM one", block),
        Workload("1,000-row", ctx, "SELECT a, b FROM thousand WHERE a >= 0", block),
    ]


def tpch_workloads(scale: float) -> list[Workload]:
    data = tpch.generate(scale, HERE / ".data" / f"tpch-sf{scale}")
    ctx = SessionContext()
    tpch.register_tables(ctx, data)
    works = []
    for number in tpch.QUERY_NUMBERS:
        stmts = tpch.query_statements(number)
        if len(stmts) == 1:
            works.append(Workload(f"q{number}", ctx, stmts[0], 1))
    return works


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--tpch-rounds", type=int, default=30)
    parser.add_argument("--no-tpch", action="store_true")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    configure(tracer_provider=provider)
    tracer = provider.get_tracer("bench")
    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}; arms {', '.join(ARMS)}; span-only mode")
    small = small_workloads(args.block)
    run(small, args.rounds, tracer)
    for work in small:
        report(f"{work.name} query ({args.rounds} rounds x {args.block} calls)", [work],
               args.resamples, args.seed)  # fmt: skip
    if not args.no_tpch:
        works = tpch_workloads(args.scale)
        run(works, args.tpch_rounds, tracer)
        report(
            f"TPC-H SF {args.scale}, {len(works)} queries (in situ; {args.tpch_rounds} rounds), "
            "median over the queries",
            works,
            args.resamples,
            args.seed,
        )
    provider.shutdown()
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
