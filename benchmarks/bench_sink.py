"""Rows per second through `ParquetSink` (used by ``benchmarks/overhead.py``).

`measure` writes run rows through a ParquetSink in a temporary store, one ``record_events``
call per run as the span processor makes them, and answers `stats` over them.
"""

from __future__ import annotations

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
