"""The owning process's side of the run-context tests: data, setup and the one-run checks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, RunStore


def write_data(folder: Path, rows: int = 20_000) -> str:
    """A real Parquet file ``t(g, v)`` in ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "t.parquet"
    table = pa.table({"g": [f"g{i % 5}" for i in range(rows)], "v": [i % 11 for i in range(rows)]})
    pq.write_table(table, path, row_group_size=rows // 4)
    return str(path)


@dataclass
class Owner:
    """The owning process: its provider (spans to memory) and the run's sink."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    sink: DiagnosticsCollector


def configure_owner() -> Owner:
    """Configure this (the owning) process: SDK provider exporting to memory, a collector."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = DiagnosticsCollector()
    datafusion_otel.configure(tracer_provider=provider, sink=sink)
    return Owner(provider, exporter, sink)


def worker_tables(stores: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of the workers' stores, per SQL table (read with `RunStore`)."""
    out: dict[str, list[dict[str, Any]]] = {
        "runs": [],
        "plan_artifacts": [],
        "operator_metrics": [],
    }
    for store_path in sorted(set(stores)):
        store = RunStore(store_path, must_exist=True)
        for table in out:
            out[table] += store.sql(f"SELECT * FROM {table}").to_pylist()
    return out


def check_one_run(
    run_id: str,
    results: list[dict[str, Any]],
    dispatchers: dict[int, str],
    owner: Owner,
    *,
    expect_own_span: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Assert the fan-out was ONE run: one trace, spans under their dispatchers, one run row.

    Args:
        run_id: The run.
        results: What each task returned (`run_context_workers.query_task`), in task order.
        dispatchers: Task index -> span id of the span that dispatched it.
        owner: The owning process's setup.
        expect_own_span: Whether `attached_run` opened a span of its own in the workers.

    Returns:
        The workers' rows per table.
    """
    assert len(results) == len(dispatchers)
    for index, result in enumerate(results):
        assert result["flushed"] is True
        assert result["run_id"] == run_id
        assert result["groups"] == 5
        assert result["count"] > 0
        assert result["own_span"] is expect_own_span
        spans = result["spans"]
        assert spans, "the worker recorded no span"
        assert {s["trace_id"] for s in spans} == {run_id}  # one trace: the run's
        # the instrumentation's spans: planning (SessionContext.sql) and execution spans
        traced = [s for s in spans if s["method"] is not None]
        executions = [s for s in traced if s["method"].startswith("DataFrame.")]
        assert len(executions) == 2  # the instrumented query and the bridge query
        remote_children = [s for s in spans if s["parent_remote"]]
        if expect_own_span:
            (own,) = remote_children
            assert own["name"] == "datafusion.run.attached"
            assert own["parent_span_id"] == dispatchers[index]
            assert {s["parent_span_id"] for s in traced} == {own["span_id"]}
        else:
            assert remote_children == traced
            for span in traced:  # a child of the span that dispatched it, remotely
                assert span["parent_span_id"] == dispatchers[index]
        roots = [s for s in spans if s["parent_span_id"] is None]
        assert roots == []  # nothing in a worker is a trace root: no run of its own
    assert len({r["pid"] for r in results}) >= 2  # the work really was in other processes

    rows = worker_tables(r["store"] for r in results)
    assert rows["runs"] == []  # the run row is the owning process's alone
    assert len(rows["plan_artifacts"]) == 2 * len(results)
    assert {r["run_id"] for r in rows["plan_artifacts"]} == {run_id}
    assert rows["operator_metrics"]
    assert {r["run_id"] for r in rows["operator_metrics"]} == {run_id}

    (run_row,) = owner.sink.events_snapshot()["datafusion_runs_v1"]
    assert run_row["run_id"] == run_id and run_row["status"] == "completed"
    owner_spans = owner.exporter.get_finished_spans()
    assert {s.context.trace_id for s in owner_spans} == {int(run_id, 16)}
    assert [s.name for s in owner_spans if s.parent is None] == ["fanout"]
    assert set(dispatchers.values()) <= {f"{s.context.span_id:016x}" for s in owner_spans}
    return rows
