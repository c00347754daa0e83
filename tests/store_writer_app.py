"""A writer process for the object-storage tests: N tracked runs into one store.

Usage: ``python store_writer_app.py STORE RUNS LABEL COUNTER [MAX_BUFFER_ROWS [BATCH_ROWS]]``
(batch_rows default 100; the buffer cap defaults to the sink's, 10 x batch_rows).

Each run executes a real DataFusion query inside ``tracked_run``, so the store gets a run row
and its started/finished artifacts. After each run the number of runs completed and the
sink's ``dropped_rows`` are stored in ``COUNTER`` (a memory-mapped file that survives
SIGKILL). Prints ``ready`` once the sink is open.
"""

from __future__ import annotations

import mmap
import struct
import sys

from datafusion import SessionContext

from datafusion_otel import tracked_run
from datafusion_otel.store import ParquetSink


def main() -> None:
    """Write the runs, then close the sink (flushing everything)."""
    store, runs, label, counter = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    bound = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "-" else None
    batch_rows = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    with open(counter, "r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 16)
    sink = ParquetSink(store, batch_rows=batch_rows, flush_interval=0.2, max_buffer_rows=bound)
    ctx = SessionContext()
    ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'a')").collect()
    print("ready", flush=True)
    for done in range(1, runs + 1):
        with tracked_run(label=label, sink=sink):
            ctx.sql("SELECT column2, count(*) FROM t GROUP BY column2").to_arrow_table()
        struct.pack_into("<qq", shared, 0, done, sink.dropped_rows)
    ok = sink.close(60)
    print(f"closed ok={ok} dropped={sink.dropped_rows}", flush=True)


if __name__ == "__main__":
    main()
