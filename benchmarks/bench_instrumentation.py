"""Overhead of DataFusionInstrumentor in span-only mode (no artifact capture).

Usage:
    uv run python benchmarks/bench_instrumentation.py [--scale 0.1] [--rounds 56] [--in-run]
        [--control | --no-control] [--fixed-iterations 4000] [--resamples 1000] [--seed 0]
        [--direct-rounds 24] [--background-rounds 4]

Default: a direct pass (the time the wrappers add around each call, in situ), an instrumented
pass (end to end, traced against plain), an A/A control pass, then the fixed cost on a
one-row query; about 5 minutes at SF 0.1 on a 2-core machine. ``--no-control`` skips the
control pass, ``--control`` runs only the control pass (and an A/A fixed cost);
``--direct-rounds 0`` skips the direct pass.

Direct pass (the headline). The end-to-end paired delta below cannot resolve 0.1 ms at SF 0.1
on a shared 2-core machine: one 10-40 ms query varies by 1-8 ms from run to run, so even 1232
pairs leave a +-0.13 ms interval. The direct pass removes the query's own variance: it times
each call of ``SessionContext.sql`` and ``DataFrame.collect`` from outside the instrumented
method (an outer shim) and from inside it, around the original DataFusion call the wrapper
makes (an inner shim, installed before ``instrument()`` so that the wrapper calls it as the
original), and keeps the difference: the time spent in the wrappers, on the query path, in
situ (right after and before real TPC-H queries, caches as cold as they really are). The plain
side runs the same two shims with no instrumentation between them, so what the shims cost
themselves cancels in the paired delta. Same rounds, rotation, alternation, warm-up and
statistics as below. It does not see effects on the query itself (the background span
creation competing for the CPU: see "Background CPU"); the end-to-end pass bounds those.

Method. TPC-H data is made with ``tpchgen-cli`` at the given scale factor (cached under
``benchmarks/.data``); before the first round every query is measured once on each side and
the result discarded (warm-up). A pass is ``--rounds`` rounds; a round goes over the 22
queries once, starting at query ``round % 22`` (rotated), and measures each query on both
sides back to back: side A (plain, uninstrumented) and side B (traced), A first when
``round + query index`` is even, B first when it is odd. One measurement calls
``instrument(capture_plan_artifacts=False, auto_run=True)`` for side B (``uninstrument()``
after it), runs the query's statements once untimed in that mode, then once timed with
``perf_counter_ns``; the toggles and the untimed run are outside the timed region. Every
DataFrame a run creates is kept alive until the timer stops, on both sides: dropping an
executed DataFrame frees its physical plan (0.1-0.2 ms on TPC-H), and where that happens must
not bias the comparison. With
``--in-run`` both runs of a measurement (on both sides) are inside one ``tracked_run``, opened
and closed outside the timed region; without it the instrumentor's ``auto_run`` makes each
traced execution its own run. A query file may hold several statements (q15 creates and drops
a view): times are divided by the number of statements, giving ms per execution.

Statistics, in ms per execution. Paired delta = B minus A of the same query in the same round
(this cancels the machine's slow drift). Per query: the median paired delta over the rounds.
Headline: the median over the 22 queries of those per-query medians. Its 95% confidence
interval is a percentile bootstrap: each of ``--resamples`` resamples draws, independently per
query, as many rounds as were run, with replacement, and recomputes the headline; the interval
runs from the 2.5th to the 97.5th percentile of the resampled headlines (fixed ``--seed``).
The pooled median of all paired deltas (22 x rounds) is printed as a cross-check. Verdict on
the target (at most 0.1 ms per execution): "met" if the CI's upper end is <= 0.1 ms, "not met"
if its lower end is > 0.1 ms, else "not shown". With fewer than 20 rounds the bootstrap
interval is too narrow to trust (the output says so).

A/A control: the same pass with both sides uninstrumented (B is not instrumented either); the
true difference is zero, so its headline shows the procedure's own bias and its CI the noise
floor of the measurement.

Fixed cost: on a one-row query, pairs of blocks of 50 timed calls, one block per side, the
order alternating from pair to pair; each block is preceded by the toggle and one untimed call.
The median paired block delta is the cost per execution that does not depend on query work.

Background CPU: the execution spans themselves are created off the query path, by a worker
thread (``datafusion_otel._deferred``), and for the traced side of the passes above mostly by
``uninstrument()``, after the timer stops. That work is not in the paired deltas, so it is
reported on its own, from a sustained session (one instrumentation session running every
query ``--background-rounds`` times back to back, the worker creating spans as it does in a
real program): the thread CPU time spent creating the spans (span start and end, every span
processor's ``on_start``/``on_end``), divided by the spans created. It is taken from the
program only when its cores are all busy. The export thread of
the BatchSpanProcessor is not included (here it drops the spans; with a real exporter it
serializes them, as for any OpenTelemetry instrumentation).

Spans go to an SDK TracerProvider with a BatchSpanProcessor and an exporter that drops them,
plus the package's DiagnosticsSpanProcessor (what ``datafusion_otel.configure`` sets up).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from datafusion import DataFrame, SessionContext
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from datafusion_otel import DataFusionInstrumentor, _deferred, configure, tpch, tracked_run

HERE = Path(__file__).resolve().parent
TARGET_MS = 0.1
MIN_ROUNDS_FOR_CI = 20
FIXED_BLOCK = 50
ONE_ROW = "SELECT a FROM one"
SKIP_DEP_CHECK = True
"""``instrument(skip_dep_check=True)`` in every toggle: a program instruments once, at start,
but the benchmark toggles before every traced measurement, and BaseInstrumentor's dependency
check (parsing installed packages' metadata) would leave its allocations and cache misses in
the runs that follow, charging a start-up cost to every execution."""


class DropExporter(SpanExporter):
    """Accepts spans and drops them (the export path runs, nothing is kept)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def ensure_data(scale: float) -> Path:
    return tpch.generate(scale, HERE / ".data" / f"tpch-sf{scale}")


def run_query(ctx: SessionContext, stmts: Sequence[str]) -> list[DataFrame]:
    """Run the statements; return their DataFrames (the caller drops them after timing)."""
    frames: list[DataFrame] = []
    for stmt in stmts:
        df = ctx.sql(stmt)
        df.collect()
        frames.append(df)
    return frames


@dataclass
class Side:
    """How one side of a pair is measured: instrumented or not, inside a run or not."""

    instrumented: bool
    in_run: bool

    @contextmanager
    def mode(self) -> Iterator[None]:
        """Instrument (if this side is traced) and open the run (if ``--in-run``), untimed."""
        instrumentor = DataFusionInstrumentor()
        if self.instrumented:
            instrumentor.instrument(
                capture_plan_artifacts=False, auto_run=True, skip_dep_check=SKIP_DEP_CHECK
            )
        try:
            run: AbstractContextManager[object] = (
                tracked_run(label="bench") if self.in_run else nullcontext()
            )
            with run:
                yield
        finally:
            if self.instrumented:
                instrumentor.uninstrument()

    def measure(self, fn: Callable[[], object]) -> int:
        """Ns of one timed call of ``fn`` in this side's mode, after one untimed call."""
        with self.mode():
            kept = fn()
            del kept
            start = time.perf_counter_ns()
            kept = fn()
            elapsed = time.perf_counter_ns() - start
            del kept  # dropped outside the timed region (see the module docstring)
            return elapsed


@dataclass
class PassResult:
    """Ms per execution of each query on each side, one value per round."""

    a: dict[int, list[float]] = field(default_factory=dict)
    b: dict[int, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def deltas(self, number: int) -> list[float]:
        return [b - a for a, b in zip(self.a[number], self.b[number], strict=True)]


@dataclass
class Shims:
    """Outer/inner timing shims around ``SessionContext.sql`` and ``DataFrame.collect``."""

    instrumentor: DataFusionInstrumentor
    outer_ns: int = 0
    inner_ns: int = 0
    originals: dict[tuple[type, str], Callable[..., object]] = field(default_factory=dict)

    TARGETS: tuple[tuple[type, str], ...] = ((SessionContext, "sql"), (DataFrame, "collect"))

    def _shim(self, fn: Callable[..., object], *, outer: bool) -> Callable[..., object]:
        clock = time.perf_counter_ns

        def shim(*args: object, **kwargs: object) -> object:
            start = clock()
            result = fn(*args, **kwargs)
            elapsed = clock() - start
            if outer:
                self.outer_ns += elapsed
            else:
                self.inner_ns += elapsed
            return result

        return shim

    @contextmanager
    def installed(self, traced: bool) -> Iterator[None]:
        """Inner shims, the instrumentation (if ``traced``), outer shims; undone in reverse."""
        for cls, name in self.TARGETS:
            self.originals[(cls, name)] = cls.__dict__[name]
            setattr(cls, name, self._shim(cls.__dict__[name], outer=False))
        if traced:
            self.instrumentor.instrument(capture_plan_artifacts=False, auto_run=True)
        middle = {(cls, name): cls.__dict__[name] for cls, name in self.TARGETS}
        for cls, name in self.TARGETS:
            setattr(cls, name, self._shim(middle[(cls, name)], outer=True))
        try:
            yield
        finally:
            for cls, name in self.TARGETS:
                setattr(cls, name, middle[(cls, name)])
            if traced:
                self.instrumentor.uninstrument()
            for cls, name in self.TARGETS:
                setattr(cls, name, self.originals[(cls, name)])

    def measure(self, ctx: SessionContext, stmts: Sequence[str], traced: bool) -> float:
        """Ms per execution spent between the shims (in the wrappers), after one untimed run."""
        with self.installed(traced):
            kept = run_query(ctx, stmts)
            del kept
            self.outer_ns = self.inner_ns = 0
            kept = run_query(ctx, stmts)
            outside = self.outer_ns - self.inner_ns
            del kept
        return outside / 1e6 / len(stmts)


def direct_pass(ctx: SessionContext, queries: dict[int, list[str]], rounds: int) -> PassResult:
    """Like `run_pass`, timing only what lies between the shims (see the module docstring)."""
    shims = Shims(DataFusionInstrumentor())
    for traced in (False, True):  # warm-up
        for stmts in queries.values():
            shims.measure(ctx, stmts, traced)
    return interleaved(queries, rounds, partial(shims.measure, ctx))


def background_cpu(
    ctx: SessionContext, queries: dict[int, list[str]], rounds: int
) -> tuple[float, int]:
    """Ms of thread CPU per span created in one sustained session; the span count."""
    instrumentor = DataFusionInstrumentor()
    queue = _deferred.queue
    instrumentor.instrument(capture_plan_artifacts=False, auto_run=True)
    try:
        cpu_before, created_before = queue.cpu_ns, queue.created
        for _ in range(rounds):
            for stmts in queries.values():
                del_later = run_query(ctx, stmts)
                del del_later
    finally:
        instrumentor.uninstrument()  # creates the spans the worker has not created yet
    created = queue.created - created_before
    return (queue.cpu_ns - cpu_before) / max(created, 1) / 1e6, created


def run_pass(
    ctx: SessionContext,
    queries: dict[int, list[str]],
    rounds: int,
    side_a: Side,
    side_b: Side,
) -> PassResult:
    """End-to-end ms per execution of every query on both sides (see the module docstring)."""

    def measure(stmts: list[str], is_b: bool) -> float:
        side = side_b if is_b else side_a
        return side.measure(partial(run_query, ctx, stmts)) / 1e6 / len(stmts)

    return interleaved(queries, rounds, measure)


def interleaved(
    queries: dict[int, list[str]], rounds: int, measure: Callable[[list[str], bool], float]
) -> PassResult:
    """Rounds over all queries, start rotating, A/B order alternating; ``measure(stmts, is_b)``."""
    numbers = list(queries)
    result = PassResult({n: [] for n in numbers}, {n: [] for n in numbers})
    start = time.perf_counter()
    for r in range(rounds):
        for k in range(len(numbers)):
            index = (r + k) % len(numbers)
            number = numbers[index]
            order = (False, True) if (r + index) % 2 == 0 else (True, False)
            for is_b in order:
                (result.b if is_b else result.a)[number].append(measure(queries[number], is_b))
        if sys.stderr.isatty():
            print(f"\r  round {r + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)
    result.seconds = time.perf_counter() - start
    return result


def headline(deltas: Sequence[Sequence[float]]) -> float:
    """Median over queries of the per-query median delta."""
    return statistics.median(statistics.median(d) for d in deltas)


def bootstrap_ci(
    deltas: Sequence[Sequence[float]], resamples: int, seed: int
) -> tuple[float, float]:
    """95% percentile interval of `headline`, resampling rounds independently per query."""
    rng = random.Random(seed)
    values = [headline([rng.choices(d, k=len(d)) for d in deltas]) for _ in range(resamples)]
    cuts = statistics.quantiles(values, n=40, method="inclusive")
    return cuts[0], cuts[-1]


def quartile_range(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def report_pass(
    title: str, labels: tuple[str, str], result: PassResult, resamples: int, seed: int
) -> tuple[float, float, float]:
    """Print the per-query table and the summary of one pass; return headline and CI."""
    numbers = list(result.a)
    rounds = len(result.a[numbers[0]])
    print(f"\n{title}: {rounds} rounds, {result.seconds:.0f} s")
    a_label, b_label = labels
    print(
        f"{'query':>5} {a_label + ' ms':>10} {b_label + ' ms':>10}"
        f" {'median delta':>13} {'delta IQR':>10}   (ms per execution)"
    )
    per_query: list[list[float]] = []
    for number in numbers:
        deltas = result.deltas(number)
        per_query.append(deltas)
        a = statistics.median(result.a[number])
        b = statistics.median(result.b[number])
        print(
            f"{'q' + str(number):>5} {a:10.2f} {b:10.2f}"
            f" {statistics.median(deltas):13.3f} {quartile_range(deltas):10.3f}"
        )
    head = headline(per_query)
    low, high = bootstrap_ci(per_query, resamples, seed)
    pooled = statistics.median(d for deltas in per_query for d in deltas)
    count = sum(len(d) for d in per_query)
    print(
        f"headline (median over {len(numbers)} queries of the per-query median delta):"
        f" {head:.3f} ms/exec"
    )
    print(
        f"  95% CI [{low:.3f}, {high:.3f}] ms (bootstrap: {resamples} resamples of the rounds,"
        f" independently per query, seed {seed})"
    )
    print(f"pooled median of all {count} paired deltas: {pooled:.3f} ms/exec")
    if rounds < MIN_ROUNDS_FOR_CI:
        print(f"  (fewer than {MIN_ROUNDS_FOR_CI} rounds: the bootstrap CI is too narrow to trust)")
    return head, low, high


def verdict(low: float, high: float) -> str:
    if high <= TARGET_MS:
        return "met"
    if low > TARGET_MS:
        return "not met"
    return f"not shown (CI straddles {TARGET_MS} ms)"


def fixed_cost(
    ctx: SessionContext, iterations: int, side_a: Side, side_b: Side
) -> tuple[float, float, float, int]:
    """Median ms/exec of A blocks, of B blocks, and median paired block delta; pair count."""
    a_times: list[float] = []
    b_times: list[float] = []
    deltas: list[float] = []

    def block() -> list[DataFrame]:
        frames = []
        for _ in range(FIXED_BLOCK):
            df = ctx.sql(ONE_ROW)
            df.collect()
            frames.append(df)
        return frames

    pairs = max(1, iterations // FIXED_BLOCK)
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        times: dict[bool, float] = {}
        for is_b in order:
            side = side_b if is_b else side_a
            times[is_b] = side.measure(block) / 1e6 / FIXED_BLOCK
        a_times.append(times[False])
        b_times.append(times[True])
        deltas.append(times[True] - times[False])
    return (
        statistics.median(a_times),
        statistics.median(b_times),
        statistics.median(deltas),
        pairs,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=56)
    parser.add_argument("--fixed-iterations", type=int, default=4000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--direct-rounds", type=int, default=24)
    parser.add_argument("--background-rounds", type=int, default=4)
    parser.add_argument("--in-run", action="store_true", help="inside tracked_run, no auto run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--control", action="store_true", help="only the A/A control pass")
    which.add_argument("--no-control", action="store_true", help="skip the A/A control pass")
    args = parser.parse_args()
    started = time.perf_counter()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    configure(tracer_provider=provider)

    data = ensure_data(args.scale)
    ctx = SessionContext()
    tpch.register_tables(ctx, data)
    ctx.from_pydict({"a": [1]}, name="one")
    queries = {n: tpch.query_statements(n) for n in tpch.QUERY_NUMBERS}

    plain = Side(instrumented=False, in_run=args.in_run)
    traced = Side(instrumented=True, in_run=args.in_run)
    for side in (plain, traced):  # warm up caches and the instrumentation's first call
        for stmts in queries.values():
            side.measure(partial(run_query, ctx, stmts))

    mode = "inside tracked_run" if args.in_run else "auto_run (each execution is a run)"
    print(f"span-only overhead, TPC-H SF {args.scale}, {mode}")
    print(
        "paired delta = B - A in the same round; order alternating, start query rotating,"
        " each timed run preceded by an untimed one"
    )
    direct_ci: tuple[float, float, float] | None = None
    if not args.control and args.direct_rounds > 0:
        direct = direct_pass(ctx, queries, args.direct_rounds)
        direct_ci = report_pass(
            "direct pass (time in the wrappers around each call, in situ;"
            " A = plain shims, B = shims around the instrumented methods)",
            ("plain", "traced"),
            direct,
            args.resamples,
            args.seed,
        )
    main_ci: tuple[float, float, float] | None = None
    background: tuple[float, int] | None = None
    if not args.control:
        result = run_pass(ctx, queries, args.rounds, plain, traced)
        main_ci = report_pass(
            "end-to-end pass (A = plain, B = traced)",
            ("plain", "traced"),
            result,
            args.resamples,
            args.seed,
        )
        if args.background_rounds > 0:
            background = background_cpu(ctx, queries, args.background_rounds)
            print(
                f"\nbackground CPU: {background[0]:.3f} ms per execution span, off the query"
                f" path (thread CPU time creating the {background[1]} spans of a sustained"
                f" session: every query {args.background_rounds} times back to back)"
            )
    control_ci: tuple[float, float, float] | None = None
    if not args.no_control:
        result = run_pass(ctx, queries, args.rounds, plain, plain)
        control_ci = report_pass(
            "A/A control pass (both sides uninstrumented, same procedure)",
            ("A", "B"),
            result,
            args.resamples,
            args.seed,
        )
        print(
            "  the true A/A difference is 0: this headline is the measurement's own bias,"
            " its CI the noise floor"
        )

    print(f"\nfixed cost on a one-row query ({ONE_ROW!r}), blocks of {FIXED_BLOCK} calls:")
    if main_ci is not None:
        a, b, delta, pairs = fixed_cost(ctx, args.fixed_iterations, plain, traced)
        print(f"  plain   {a:.3f} ms/exec: median per-call time of {pairs} uninstrumented blocks")
        print(f"  traced  {b:.3f} ms/exec: median per-call time of {pairs} instrumented blocks")
        print(
            f"  delta   {delta:.3f} ms/exec: fixed cost per execution"
            f" (median of {pairs} paired block deltas, traced - plain)"
        )
    if control_ci is not None:
        _, _, delta, pairs = fixed_cost(ctx, args.fixed_iterations, plain, plain)
        print(
            f"  A/A     {delta:.3f} ms/exec: the same with both blocks uninstrumented"
            f" (median of {pairs} paired block deltas, bias of this measurement)"
        )
    provider.shutdown()

    print()
    if direct_ci is not None:
        head, low, high = direct_ci
        print(
            f"query-path time added per execution (direct): {head:.3f} ms,"
            f" 95% CI [{low:.3f}, {high:.3f}] (median over TPC-H queries)"
        )
    if main_ci is not None:
        head, low, high = main_ci
        print(
            f"end-to-end overhead per execution: {head:.3f} ms, 95% CI [{low:.3f}, {high:.3f}]"
            f" (median over TPC-H queries)"
        )
    if control_ci is not None:
        head, low, high = control_ci
        print(f"A/A control (bias/noise floor): {head:.3f} ms, 95% CI [{low:.3f}, {high:.3f}]")
    if background is not None:
        print(f"background CPU per execution span (worker thread): {background[0]:.3f} ms")
    if direct_ci is not None:
        print(f"target <= {TARGET_MS} ms on the query path (direct): {verdict(*direct_ci[1:])}")
    if main_ci is not None:
        print(f"target <= {TARGET_MS} ms end to end: {verdict(main_ci[1], main_ci[2])}")
    print(f"elapsed: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
