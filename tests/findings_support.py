"""Real DataFusion workloads that provoke each finding kind, captured into a run store."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext

from datafusion_otel import tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from datafusion_otel.diagnostics import DiagnosticsSink
from datafusion_otel.store import ParquetSink

ROWS = 200_000


def context(partitions: int = 4, pool_bytes: int | None = None) -> SessionContext:
    """A session with ``partitions`` target partitions (and a small fair spill pool)."""
    config = SessionConfig().with_target_partitions(partitions)
    if pool_bytes is None:
        return SessionContext(config)
    config = config.set("datafusion.execution.sort_spill_reservation_bytes", "1048576")
    runtime = RuntimeEnvBuilder().with_fair_spill_pool(pool_bytes)
    return SessionContext(config, runtime)


def register_data(ctx: SessionContext, folder: Path) -> None:
    """Register the workload tables.

    * ``skewed``: key 0 holds 95 % of the rows, the rest spread over 5,000 keys (memory).
    * ``pairs_a`` / ``pairs_b``: Parquet, 1,000 rows each, all with key 1 (many-to-many).
      (DataFusion 55's memory scan records no output rows, so joins read files.)
    * ``mem``: 200,000 rows in memory; ``mem_csv`` the same in a CSV file (a CSV scan takes
      no predicate: a filter over it stays above the scan).
    * ``ordered``: Parquet, 10 row groups of 20,000 rows, ``k`` increasing (prunable).
    """
    keys = [0 if i % 20 else 1 + i % 5_000 for i in range(ROWS)]
    values = [(i * 7919) % 100_003 for i in range(ROWS)]
    skewed = pa.table({"k": keys, "v": values})
    ctx.register_record_batches("skewed", [skewed.to_batches(max_chunksize=20_000)])
    for name in ("pairs_a", "pairs_b"):
        pairs_path = folder / f"{name}.parquet"
        if not pairs_path.exists():
            pq.write_table(pa.table({"k": [1] * 1_000, "x": list(range(1_000))}), pairs_path)
        ctx.register_parquet(name, str(pairs_path))
    mem = pa.table({"k": list(range(ROWS)), "v": values})
    ctx.register_record_batches("mem", [mem.to_batches(max_chunksize=8_192)])
    path = folder / "ordered.parquet"
    if not path.exists():
        pq.write_table(mem, path, row_group_size=20_000)
        pacsv.write_csv(mem, folder / "mem.csv")
    ctx.register_parquet("ordered", str(path))
    ctx.register_csv("mem_csv", str(folder / "mem.csv"))


WORKLOADS = {
    # hash repartition on k: partition of key 0 receives 95 % of the rows
    "skew": "SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v) AS n FROM skewed",
    "spill": "SELECT k, v FROM mem ORDER BY v DESC, k",
    "row_explosion": "SELECT a.x, b.x FROM pairs_a a JOIN pairs_b b ON a.k = b.k",
    "filter_drops_most": "SELECT k, v FROM mem_csv WHERE v = 17",
    "slow_operator": "SELECT k, v FROM mem ORDER BY v, k",
    "poor_pruning": "SELECT sum(v) FROM ordered WHERE k >= 0",
    "filter_pushed": "SELECT k, v FROM ordered WHERE v = 17",
    "clean": "SELECT sum(v) FROM ordered WHERE k < 15000",
    # no predicate: DataFusion 55 still reports "10 total -> 10 matched" row groups
    "unfiltered_scan": "SELECT sum(v) FROM ordered",
}


def capture(
    sink: DiagnosticsSink | Path, data: Path, name: str, *, label: str | None = None
) -> str:
    """Run workload ``name`` as a tracked run into ``sink`` (a store folder or a sink).

    The spill workload runs on one partition under a 10 MB fair spill pool (one sort: the
    pool is not shared, so it spills the same way every time).

    Returns:
        The run id.
    """
    pool = 10_000_000 if name == "spill" else None
    ctx = context(1 if pool else 4, pool_bytes=pool)
    register_data(ctx, data)
    owned = ParquetSink(sink) if isinstance(sink, Path) else None
    target = owned if owned is not None else sink
    assert not isinstance(target, Path)
    try:
        with tracked_run(label=label or name, sink=target, metadata={"workload": name}) as run:
            df = sql_to_datafusion(WORKLOADS[name], ctx=ctx, options=DataFusionCompileOptions())
            df.to_arrow_table()
    finally:
        if owned is not None:
            owned.close()
    return run.run_id
