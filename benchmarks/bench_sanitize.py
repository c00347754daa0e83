"""Cost of sanitizing a query with many literals: IN lists of strings and integers.

For IN lists of 100 / 1,000 / 3,000 strings plus as many integers, measured alternately in
one process: the plain query (``ctx.sql(q).to_arrow_table()``) and the same query through
``sql_to_datafusion`` in a run with the default capture set (plans captured and sanitized).
Each captured query text is new (no cache hit). Prints the times and their ratio.

    uv run python benchmarks/bench_sanitize.py --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datafusion import SessionContext

from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions


def _query(size: int, salt: int) -> str:
    names = ",".join(f"'zq{salt}v{i:05d}x'" for i in range(size))
    ids = ",".join(str(10**9 + salt * 10**6 + i) for i in range(size))
    return f"SELECT id FROM t WHERE name IN ({names}) OR id IN ({ids})"


def main() -> None:
    """Print capture time against plain time per IN-list size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-sanitize-"))
    table = pa.table({"id": list(range(10_000)), "name": [f"n{i}" for i in range(10_000)]})
    pq.write_table(table, folder / "t.parquet")
    ctx = SessionContext()
    ctx.register_parquet("t", str(folder / "t.parquet"))
    ctx.sql(_query(10, 0)).to_arrow_table()  # warm up imports and the tokenizer
    with tracked_run(label="warm", sink=DiagnosticsCollector()):
        sql_to_datafusion(_query(10, 0), ctx=ctx, options=DataFusionCompileOptions())
    print(f"{'values':>8} {'plain ms':>10} {'captured ms':>12} {'ratio':>7}")
    salt = 1
    for size in (100, 1000, 3000):
        plain: list[float] = []
        captured: list[float] = []
        for _ in range(args.reps):
            salt += 1
            query = _query(size, salt)
            start = time.perf_counter()
            ctx.sql(query).to_arrow_table()
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            with tracked_run(label="bench", sink=DiagnosticsCollector()):
                options = DataFusionCompileOptions()
                sql_to_datafusion(query, ctx=ctx, options=options).to_arrow_table()
            captured.append(time.perf_counter() - start)
        base, cost = statistics.median(plain), statistics.median(captured)
        print(f"{2 * size:>8} {base * 1000:>10.1f} {cost * 1000:>12.1f} {cost / base:>7.1f}")


if __name__ == "__main__":
    main()
