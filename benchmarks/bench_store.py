"""Benchmark: write 100,000 run rows through ParquetSink, then answer `stats` over them.

Run: ``uv run python benchmarks/bench_store.py [ROWS]``. Prints the figures.
`measure` returns them (``benchmarks/overhead.py`` reports its rows per second).
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from datafusion_otel import attributes as attr
from datafusion_otel.store import ParquetSink, RunStore


def measure(count: int = 100_000) -> dict[str, float]:
    """Write ``count`` run rows through a ParquetSink in a temporary store; return timings (s)."""
    rng = np.random.default_rng(0)
    labels = [f"pipeline-{i}" for i in range(20)]
    starts = 1_700_000_000_000 + rng.integers(0, 30 * 86_400_000, count)
    durations = rng.lognormal(5, 1, count).astype(int)
    failed = rng.random(count) < 0.05
    rows = [
        {
            "run_id": f"{i:032x}",
            "label": labels[i % len(labels)],
            "start_time_unix_ms": int(starts[i]),
            "end_time_unix_ms": int(starts[i] + durations[i]),
            "status": "failed" if failed[i] else "completed",
            "duration_ms": int(durations[i]),
            "metadata": "{}",
        }
        for i in range(count)
    ]
    with tempfile.TemporaryDirectory() as home:
        sink = ParquetSink(home, batch_rows=10_000)
        started = time.perf_counter()
        for row in rows:  # one call per run, as the span processor does
            sink.record_events(attr.RUNS_TABLE, [row])
        recorded = time.perf_counter() - started
        assert sink.close(60)
        written = time.perf_counter() - started

        started = time.perf_counter()
        store = RunStore(home)
        stats = store.stats_by_label()
        first_stats = time.perf_counter() - started
        started = time.perf_counter()
        store.stats_by_label()
        second_stats = time.perf_counter() - started
        started = time.perf_counter()
        store.recent_runs(20)
        recent = time.perf_counter() - started

    return {
        "rows": count,
        "recorded_s": recorded,
        "written_s": written,
        "files_written": sink.files_written,
        "first_stats_s": first_stats,
        "labels": stats.num_rows,
        "second_stats_s": second_stats,
        "recent_runs_s": recent,
    }


def main(count: int = 100_000) -> None:
    m = measure(count)
    recorded, written = m["recorded_s"], m["written_s"]
    print(f"rows                          {count:>10,}")
    per_row = recorded / count * 1e6
    print(f"record_events (query thread)  {recorded:>10.3f} s  ({per_row:.2f} us/row)")
    print(f"recorded + written to disk    {written:>10.3f} s  ({m['files_written']:.0f} files)")
    first, labels = m["first_stats_s"], m["labels"]
    print(f"open store + stats            {first:>10.3f} s  ({labels:.0f} labels)")
    print(f"stats again                   {m['second_stats_s']:>10.3f} s")
    print(f"recent_runs(20)               {m['recent_runs_s']:>10.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
