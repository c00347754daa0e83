"""A program that records runs under stress, for the soak test (tests/test_soak.py).

``python tests/soak_app.py app OUT_JSON DEAD_PORT SECONDS``: threads and asyncio tasks run tracked
runs (each with real DataFusion queries, traced by the instrumentor) for SECONDS, their sinks
alternating between a raising sink, a slow sink and none; every run also reaches the sink given
to ``configure``, whose OTLP endpoint is dead. Writes the counts to OUT_JSON.

``python tests/soak_app.py writer STORE BATCH_ROWS``: records runs into a ParquetSink as fast as
it can and prints each finished run's id and the sink's ``dropped_rows`` so far (flushed) until
it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from datafusion import SessionContext

import datafusion_otel
from datafusion_otel import DataFusionInstrumentor, DiagnosticsCollector, ParquetSink, tracked_run


class RaisingSink:
    """Raises on every record (its rows are lost by design, and counted by the package)."""

    def __init__(self) -> None:
        self.calls = 0

    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        self.calls += 1
        raise RuntimeError("sink is broken")

    def record_artifact(self, name: str, payload: Mapping[str, object]) -> None:
        raise RuntimeError("sink is broken")


class SlowSink(DiagnosticsCollector):
    """Takes 1 ms per record, off the query path (blocking sink)."""

    nonblocking = False  # type: ignore[misc]

    def record_events(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        time.sleep(0.001)
        super().record_events(name, rows)


def _query(ctx: SessionContext, i: int) -> int:
    batches = ctx.sql(f"SELECT k, sum(v) AS s FROM t WHERE v > {i % 7} GROUP BY k").collect()
    return sum(b.num_rows for b in batches)


def app(out: str, dead_port: int, seconds: float) -> None:
    collector = DiagnosticsCollector()
    datafusion_otel.configure(sink=collector, endpoint=f"http://127.0.0.1:{dead_port}", timeout=1)
    DataFusionInstrumentor().instrument()
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 3, 1, 2], "v": [1, 5, 9, 12, 3]}, name="t")
    raising, slow = RaisingSink(), SlowSink()
    started: list[str] = []
    to_slow: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one(i: int) -> None:
        sink = (raising, slow, None)[i % 3]
        with tracked_run(label=f"soak-{i % 5}", sink=sink, metadata={"i": i}) as run:
            with lock:
                started.append(run.run_id)
                if sink is slow:
                    to_slow.append(run.run_id)
            _query(ctx, i)

    def thread_body(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            one(i)
            i += 4

    async def task_body(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            one(i)
            i += 4
            await asyncio.sleep(0)

    async def tasks() -> None:
        await asyncio.gather(task_body(2), task_body(3))

    threads = [threading.Thread(target=thread_body, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join()
    flushed = datafusion_otel.force_flush(30)
    rows = collector.events_snapshot().get("datafusion_runs_v1", [])
    slow_rows = slow.events_snapshot().get("datafusion_runs_v1", [])
    result = {
        "started": len(started),
        "distinct_started": len(set(started)),
        "run_rows": len(rows),
        "run_ids_match": sorted(str(r["run_id"]) for r in rows) == sorted(started),
        "slow_rows": len(slow_rows),
        "slow_ids_match": sorted(str(r["run_id"]) for r in slow_rows) == sorted(to_slow),
        "raising_calls": raising.calls,
        "force_flush": flushed,
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def writer(store: str, batch_rows: int) -> None:
    sink = ParquetSink(store, batch_rows=batch_rows)
    i = 0
    while True:
        with tracked_run(label="writer", sink=sink, metadata={"i": i}) as run:
            pass
        sys.stdout.write(f"{run.run_id} {sink.dropped_rows}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    if sys.argv[1] == "app":
        app(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        writer(sys.argv[2], int(sys.argv[3]))
