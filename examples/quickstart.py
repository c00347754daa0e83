"""Quickstart: a tracked run, a query compiled with plan-artifact capture, rows on disk.

    uv run python examples/quickstart.py [STORE_DIR]

Writes the run to a run store (default ./.datafusion-otel) and prints what was recorded.
"""

from __future__ import annotations

import sys

from datafusion import SessionContext

import datafusion_otel
from datafusion_otel import ParquetSink, RunStore, tracked_run
from datafusion_otel.bridge import sql_to_datafusion


def main(store_dir: str | None = None) -> None:
    sink = ParquetSink(store_dir)  # None: $DATAFUSION_OTEL_HOME or ./.datafusion-otel
    datafusion_otel.configure(sink=sink, set_global=False)  # OTLP too if OTEL_* is set

    ctx = SessionContext()
    ctx.from_pydict(
        {"id": [1, 2, 3], "email": ["a@example.com", "b@example.com", "c@example.com"]},
        name="users",
    )
    with tracked_run(label="quickstart", metadata={"owner": "examples"}) as run:
        table = sql_to_datafusion(
            "SELECT email FROM users WHERE id >= 2 ORDER BY id", ctx=ctx
        ).to_arrow_table()
    sink.force_flush(timeout=5)

    store = RunStore(sink.path)
    print(f"run {run.run_id}: {run.status} in {run.duration_ms} ms, {table.num_rows} rows")
    detail = store.run(run.run_id)
    artifacts = detail.plan_artifacts
    print("sql stored:", artifacts[0]["sql"])  # literals are ? by default
    print("plan hash:", artifacts[0]["plan_hash"])
    print("operators:", sorted({m["operator_name"] for m in detail.operator_metrics}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
