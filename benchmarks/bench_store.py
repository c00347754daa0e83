"""Benchmark the run store: writer throughput, and `runs` / `stats` on 1,000,000 runs.

Run: ``uv run python benchmarks/bench_store.py [RUNS] [WRITER_RUNS]`` (defaults 1,000,000
and 50,000). Starts moto's S3 server on 127.0.0.1 for the object-storage figures. Prints:

1. Writer throughput of one process (`ParquetSink`, each run = its run row and its two
   artifacts, one ``record_*`` call each as the span processor makes them; default
   ``batch_rows``, a buffer cap that holds the burst), to a local folder and to the S3
   server: runs per second recorded, and until everything is written.
2. ``datafusion-otel runs`` and ``stats`` (in-process, a fresh `RunStore` each, as the CLI
   opens it) on RUNS runs spread over 30 days, written as 1,000-row files (what writers
   with the default ``batch_rows`` leave), before and after ``compact``, local and S3.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datafusion_otel import DATAFUSION_RUNS_V1
from datafusion_otel import attributes as attr
from datafusion_otel.cli import main as cli
from datafusion_otel.store import ParquetSink, compact_store
from datafusion_otel.store._fs import StoreFS, open_location, resolve_location
from datafusion_otel.store._layout import FORMAT_KEY, day_of, format_document, new_data_key

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3_support import MotoServer, start_moto

_FILE_ROWS = 1_000


def _runs_table(count: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    starts = 1_790_000_000_000 + rng.integers(0, 30 * 86_400_000, count)
    durations = rng.lognormal(5, 1, count).astype(np.int64)
    labels = np.array([f"pipeline-{i}" for i in range(20)])[rng.integers(0, 20, count)]
    status = np.where(rng.random(count) < 0.05, "failed", "completed")
    return pa.table(
        {
            "run_id": [f"{i:032x}" for i in range(count)],
            "label": labels,
            "start_time_unix_ms": starts,
            "end_time_unix_ms": starts + durations,
            "status": status,
            "duration_ms": durations,
            "metadata": pa.array(["{}"] * count),
        },
        schema=DATAFUSION_RUNS_V1,
    )


def _fill(fs: StoreFS, count: int) -> int:
    """Write ``count`` runs as 1,000-row files in their day folders; return the files."""
    table = _runs_table(count).sort_by("start_time_unix_ms")
    fs.put_new(FORMAT_KEY, format_document())
    files = 0
    for offset in range(0, count, _FILE_ROWS):
        chunk = table.slice(offset, _FILE_ROWS)
        days = [day_of(v) for v in chunk.column("start_time_unix_ms").to_pylist()]
        for day in sorted(set(days)):
            mask = pa.array([d == day for d in days])
            buffer = io.BytesIO()
            pq.write_table(chunk.filter(mask), buffer, compression="zstd")
            fs.put(new_data_key(f"{attr.RUNS_TABLE}/", day), buffer.getvalue())
            files += 1
    return files


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _cli(*args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(list(args))
    if code != 0:
        raise RuntimeError(f"datafusion-otel {' '.join(args)} exited {code}")


def writer_throughput(uri: str, runs: int) -> tuple[float, float, int]:
    """Return (seconds recording, seconds until all is written, files) for ``runs`` runs."""
    # a buffer that holds the whole burst: the figure is how fast rows reach storage
    sink = ParquetSink(uri, max_buffer_rows=2 * runs)
    started = time.perf_counter()
    for i in range(runs):
        run_id = f"{i:032x}"
        start = 1_790_000_000_000 + i
        sink.record_artifact(
            attr.RUN_STARTED_ARTIFACT, {"run_id": run_id, "start_time_unix_ms": start}
        )
        sink.record_events(attr.RUNS_TABLE, [{
            "run_id": run_id, "label": "bench", "start_time_unix_ms": start,
            "end_time_unix_ms": start + 5, "status": "completed", "duration_ms": 5,
            "metadata": "{}",
        }])  # fmt: skip
        sink.record_artifact(attr.RUN_FINISHED_ARTIFACT, {"run_id": run_id})
    recorded = time.perf_counter() - started
    sink.close(600)
    written = time.perf_counter() - started
    if sink.dropped_rows:
        print(f"  (dropped {sink.dropped_rows} rows over the buffer cap)")
    return recorded, written, sink.files_written


def read_side(name: str, uri: str, runs: int) -> None:
    """Print ``runs``/``stats`` before and after compaction for the store at ``uri``."""
    fs = open_location(resolve_location(uri))
    fill = _timed(lambda: print(f"{name}: {runs:,} runs in {_fill(fs, runs):,} files"))
    print(f"  write the files                  {fill:8.2f} s")
    for phase in ("before compaction", "after compaction"):
        if phase == "after compaction":
            started = time.perf_counter()
            report = compact_store(uri)
            seconds = time.perf_counter() - started
            print(f"  compact                          {seconds:8.2f} s  ({report})")
        for command in ("runs", "stats"):
            seconds = min(_timed(lambda c=command: _cli(c, "--store", uri)) for _ in range(3))
            print(f"  {command:<5} {phase:<26} {seconds:8.2f} s  (best of 3)")


def main(runs: int = 1_000_000, writer_runs: int = 50_000) -> None:
    """Run both parts against a local folder and the moto S3 server."""
    server: MotoServer = start_moto()
    try:
        os.environ.update(server.env())
        server.create_bucket("bench")
        with tempfile.TemporaryDirectory() as home:
            print(f"writer throughput, one process, {writer_runs:,} runs (1 run row + 2 artifacts)")
            for name, uri in (("local", f"{home}/writer"), ("s3 (moto)", "s3://bench/writer")):
                recorded, written, files = writer_throughput(uri, writer_runs)
                print(f"  {name:<10} recorded {writer_runs / recorded:10,.0f} runs/s; "
                      f"written {writer_runs / written:10,.0f} runs/s ({files} files)")  # fmt: skip
            read_side("local folder", f"{home}/big", runs)
            read_side("s3 (moto)", "s3://bench/big", runs)
    finally:
        server.process.terminate()
        server.process.wait(30)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
