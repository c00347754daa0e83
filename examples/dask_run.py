"""One run fanned out to Dask worker processes: one trace, one run id, one run row.

    uv run python examples/dask_run.py [STORE_DIR]

The run store defaults to $DATAFUSION_OTEL_HOME or ./.datafusion-otel (as in quickstart.py).
Starts a local Dask cluster (2 worker processes, loopback only), opens a run in this process,
and sends its carrier (`datafusion_otel.run_context`) with each task. Every worker process
configures datafusion-otel once (a Dask worker plugin) with a `ParquetSink` on the same store
folder (file names carry the writer's pid, so processes never collide), runs its DataFusion
query inside `datafusion_otel.attached_run`, and flushes before it returns. The run row is
written once, here; the plan artifacts of every task land under the run id.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datafusion import SessionContext
from distributed import Client, LocalCluster, WorkerPlugin

import datafusion_otel
from datafusion_otel import (
    DataFusionInstrumentor,
    ParquetSink,
    RunStore,
    attached_run,
    run_context,
    tracked_run,
)


class DataFusionOtelPlugin(WorkerPlugin):  # type: ignore[misc]
    """Configure datafusion-otel in each Dask worker process (its own sink, same folder)."""

    def __init__(self, store: str) -> None:
        self.store = store

    def setup(self, worker: Any) -> None:
        datafusion_otel.configure(sink=ParquetSink(self.store))
        DataFusionInstrumentor().instrument(capture_plan_artifacts=True)

    def teardown(self, worker: Any) -> None:
        datafusion_otel.force_flush(5)


def trips_per_city(carrier: dict[str, str], data: str, min_km: int) -> dict[str, Any]:
    """A Dask task: one real DataFusion query, attached to the carrier's run."""
    ctx = SessionContext()
    ctx.register_parquet("trips", data)
    with attached_run(carrier):
        table = ctx.sql(
            f"SELECT city, count(*) AS trips FROM trips WHERE km >= {min_km} "
            "GROUP BY city ORDER BY city"
        ).to_arrow_table()
    datafusion_otel.force_flush(10)  # the worker's rows reach its sink before it moves on
    return {"pid": os.getpid(), "rows": table.to_pylist()}


def main(store_dir: str | None = None) -> None:
    sink = ParquetSink(store_dir)  # None: $DATAFUSION_OTEL_HOME or ./.datafusion-otel
    datafusion_otel.configure(sink=sink)
    store = str(sink.path)
    with tempfile.TemporaryDirectory(prefix="dask-run-") as work:
        data = str(Path(work) / "trips.parquet")
        cities = ["Lima", "Oslo", "Pune"]
        trips = {"city": [cities[i % 3] for i in range(3000)], "km": [i % 40 for i in range(3000)]}
        pq.write_table(pa.table(trips), data)
        fan_out(store, data)


def fan_out(store: str, data: str) -> None:
    """Run the tasks on a local cluster under one run; print what the store holds."""
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(DataFusionOtelPlugin(store))
        with tracked_run(label="dask_fanout") as run:
            carrier = run_context()  # JSON-serializable: traceparent, run_id, label
            futures = [
                client.submit(trips_per_city, carrier, data, km, pure=False)
                for km in (5, 10, 20, 30)
            ]
            results = client.gather(futures)
    datafusion_otel.force_flush(10)

    details = RunStore(store).run(run.run_id)
    pids = sorted({result["pid"] for result in results})
    run_rows = RunStore(store).sql(f"SELECT count(*) AS n FROM runs WHERE run_id = '{run.run_id}'")
    print(f"run {run.run_id}: {run.status}, {len(futures)} tasks on {len(pids)} worker processes")
    print("run rows:", run_rows.column("n")[0].as_py())
    print("plan artifacts under the run:", len(details.plan_artifacts))
    print("operators:", sorted({m["operator_name"] for m in details.operator_metrics}))
    print("trips with km >= 30:", results[-1]["rows"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
