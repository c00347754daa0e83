"""``datafusion-otel demo``: the 22 TPC-H queries as tracked runs, written to the run store."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from datafusion import SessionContext

from datafusion_otel import tpch
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.cache_state import record_cache_state
from datafusion_otel.commands.render import print_json, print_table
from datafusion_otel.runs import tracked_run
from datafusion_otel.store import ParquetSink, RunStore, StoreError

__all__ = ["demo", "execute_sql"]

_QUERY_STARTS = ("select", "with")


def execute_sql(ctx: SessionContext, sql: str) -> pa.Table:
    """Run one statement with the default plan-artifact capture and return its result."""
    return sql_to_datafusion(sql, ctx=ctx).to_arrow_table()


def _run_query(ctx: SessionContext, number: int) -> pa.Table:
    result: pa.Table | None = None
    for statement in tpch.query_statements(number):
        table = execute_sql(ctx, statement)
        if statement.lstrip().lower().startswith(_QUERY_STARTS):
            result = table
    return result if result is not None else pa.table({})


def _selected(spec: str | None) -> list[int]:
    if not spec:
        return list(tpch.QUERY_NUMBERS)
    try:
        numbers = [int(part.strip().lstrip("qQ")) for part in spec.split(",") if part.strip()]
    except ValueError as exc:
        raise tpch.TpchError(f"--queries takes numbers like 1,3,15; got {spec!r}") from exc
    bad = [n for n in numbers if n not in tpch.QUERY_NUMBERS]
    if bad or not numbers:
        raise tpch.TpchError(f"TPC-H queries are numbered 1-22; got {spec!r}")
    return numbers


def _open_sink(store: str | None) -> ParquetSink:
    """Open the demo's store, or raise `StoreError` with one line saying why it cannot be."""
    try:
        return ParquetSink(store)
    except ValueError as exc:  # a URI scheme the store does not support yet
        raise StoreError(str(exc)) from exc
    except OSError as exc:
        reason = "it is a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror
        where = exc.filename or store or "the default store folder"
        raise StoreError(f"cannot use {where} as the run store: {reason or exc}") from exc


def demo(args: argparse.Namespace, configure_telemetry: Callable[[ParquetSink], object]) -> int:
    """Generate TPC-H data, run the queries as tracked runs, print a summary.

    Args:
        args: Parsed arguments (``store``, ``scale``, ``data_dir``, ``queries``, ``json``).
        configure_telemetry: Called once with the sink before the first run (sets up
            OpenTelemetry; exports over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set).

    Returns:
        0 when every query completed, 1 otherwise.
    """
    numbers = _selected(args.queries)
    log = sys.stderr if args.json else sys.stdout
    sink = _open_sink(args.store)
    data_dir = Path(args.data_dir) if args.data_dir else sink.path / "tpch" / f"sf{args.scale}"
    if not tpch.data_complete(data_dir):
        print(f"generating TPC-H data at scale factor {args.scale} in {data_dir} ...", file=log)
    tpch.generate(args.scale, data_dir)
    ctx = SessionContext()
    tpch.register_tables(ctx, data_dir)
    configure_telemetry(sink)
    summary: list[dict[str, object]] = []
    try:
        for index, number in enumerate(numbers, start=1):
            label = f"tpch-q{number:02d}"
            started = time.perf_counter()
            run_id, status, rows = "", "completed", None
            try:
                meta = {"query": f"q{number}", "scale_factor": args.scale}
                with tracked_run(label=label, sink=sink, metadata=meta) as run:
                    run_id = run.run_id
                    record_cache_state(ctx, run=run)
                    table = _run_query(ctx, number)
                    rows = table.num_rows
                    run.metadata["output_rows"] = rows
            except Exception as exc:  # a failing query is part of the demo's output
                status = f"failed: {type(exc).__name__}"
            elapsed = (time.perf_counter() - started) * 1000
            shown = "-" if rows is None else rows
            print(
                f"[{index:2d}/{len(numbers)}] {label}  {status:<10} {elapsed:8.1f} ms"
                f"  {shown} rows",
                file=log,
                flush=True,
            )
            summary.append(
                {"label": label, "run_id": run_id, "status": status, "rows": rows,
                 "duration_ms": round(elapsed, 1)}
            )  # fmt: skip
    finally:
        sink.close()
    failed = sum(1 for item in summary if item["status"] != "completed")
    if args.json:
        print_json({"store": str(sink.path), "runs": summary, "failed": failed})
    else:
        print()
        print_table(RunStore(sink.path).stats_by_label().to_pylist(),
                    ["label", "count", "error_rate", "p50_ms", "p95_ms", "p99_ms"])  # fmt: skip
        print(f"\n{len(summary) - failed}/{len(summary)} queries completed; store: {sink.path}")
        print("browse it: datafusion-otel runs | show RUN_ID | stats | sql 'SELECT ...'")
    return 0 if failed == 0 else 1
