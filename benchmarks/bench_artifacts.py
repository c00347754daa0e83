"""Overhead of plan-artifact capture on the TPC-H queries (issue: plan artifacts).

For each query, measured alternately in one process: the plain query
(``ctx.sql(q).to_arrow_table()``), the same query through ``sql_to_datafusion`` with the
default capture set, and (once per query) the cost of the EXPLAIN ANALYZE equivalent built
from metrics against a real ``EXPLAIN ANALYZE``. Prints a table and the geometric means.

    uv run python benchmarks/bench_artifacts.py --scale 1 --reps 5

The README's Performance table comes from ``benchmarks/overhead.py``, which measures these arms
with spans exported, the process CPU and more variants; this script stays for its
EXPLAIN-ANALYZE-from-metrics figure.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from datafusion import SessionContext

from datafusion_otel import tpch
from datafusion_otel.bridge import collect_plan_artifacts, sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _plain(ctx: SessionContext, query: str) -> None:
    ctx.sql(query).to_arrow_table()


def _captured(ctx: SessionContext, query: str, options: DataFusionCompileOptions) -> None:
    sql_to_datafusion(query, ctx=ctx, options=options).to_arrow_table()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    ctx = SessionContext()
    data = Path(tempfile.gettempdir()) / "datafusion-otel-bench" / f"tpch-sf{args.scale}"
    tpch.register_tables(ctx, tpch.generate(args.scale, data))
    default = DataFusionCompileOptions()
    analyze_dir = tempfile.mkdtemp(prefix="dfo-bench-")
    analyze_opts = DataFusionCompileOptions(explain_analyze=True, artifact_dir=analyze_dir)
    print(f"TPC-H SF {args.scale}, {args.reps} alternating repetitions, medians")
    print(
        f"{'query':>5} {'plain ms':>9} {'capture ms':>10} {'ratio':>6} "
        f"{'ea-metrics ms':>13} {'real EA ms':>10}"
    )
    ratios: list[float] = []
    ea_extra: list[float] = []
    ea_real_ratio: list[float] = []
    for number in range(1, 23):
        stmts = tpch.query_statements(number)
        setup, query, teardown = stmts[:-2], stmts[-2] if len(stmts) > 1 else stmts[0], stmts[-1:]
        if len(stmts) == 1:
            setup, query, teardown = [], stmts[0], []
        for s in setup:
            ctx.sql(s).collect()
        ctx.sql(query).to_arrow_table()  # warm up
        plain, captured = [], []
        for _ in range(args.reps):
            plain.append(_timed(_plain, ctx, query))
            captured.append(_timed(_captured, ctx, query, default))
        # EXPLAIN ANALYZE equivalent: default capture with and without it, on an executed plan
        df = ctx.sql(query)
        df.to_arrow_table()
        without, with_ea = [], []
        for _ in range(args.reps):
            without.append(
                _timed(
                    collect_plan_artifacts, df, ctx=ctx, sql=query, options=default, executed=True
                )
            )
            with_ea.append(
                _timed(
                    collect_plan_artifacts,
                    df,
                    ctx=ctx,
                    sql=query,
                    options=analyze_opts,
                    executed=True,
                )
            )
        ea = max(0.0, statistics.median(with_ea) - statistics.median(without))
        real = _timed(lambda q=query: ctx.sql("EXPLAIN ANALYZE " + q).collect())
        for s in teardown:
            ctx.sql(s).collect()
        p, c = statistics.median(plain), statistics.median(captured)
        ratios.append(c / p)
        ea_extra.append(ea)
        ea_real_ratio.append(real / p)
        print(
            f"{'q' + str(number):>5} {p * 1000:9.1f} {c * 1000:10.1f} {c / p:6.3f} "
            f"{ea * 1000:13.2f} {real * 1000:10.1f}"
        )
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(
        f"geometric-mean ratio, default capture / plain: {geo:.4f} "
        f"(overhead {100 * (geo - 1):.1f} %, target <= 3 %)"
    )
    print(
        f"EXPLAIN ANALYZE from metrics: median {statistics.median(ea_extra) * 1000:.2f} ms extra "
        f"per query (target < 1 ms); a real EXPLAIN ANALYZE costs "
        f"{100 * statistics.median(ea_real_ratio):.0f} % of the plain query (it runs it again)"
    )


if __name__ == "__main__":
    main()
