"""A run opened in a trace UI is a tree: run -> execution span -> operator spans, nested as in
the executed physical plan, timed by DataFusion's own start/end metrics (real TPC-H queries,
real DataFusion, real SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datafusion import SessionContext
from opentelemetry.sdk.trace import ReadableSpan

import datafusion_otel
from capture_support import capture_span_of
from datafusion_otel import DiagnosticsCollector, tpch, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import (
    DEFAULT_ARTIFACTS,
    DEFAULT_MAX_OPERATOR_SPANS,
    DataFusionCompileOptions,
)
from instrumentation_support import Traced, instrumented


def _operator_names(plan: Any) -> dict[str, str]:
    """Path -> name of every operator of the executed ``plan``, walked here independently of
    the package (``children()`` order gives the paths)."""
    found: dict[str, str] = {}

    def visit(node: Any, path: str) -> None:
        found[path] = node.display().split(":", 1)[0].strip()
        for index, child in enumerate(node.children()):
            visit(child, f"{path}.{index}")

    visit(plan, "0")
    return found


def _timed_operators(plan: Any, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Path -> name of every operator that recorded a start and an end time.

    The times are those of the captured operator-metrics rows (``rows``: one per operator and
    partition), not the plan read again now: a LIMIT query (q18) returns while cancelled
    partitions still record their times, so the plan's metrics can change after the capture.
    """
    names = _operator_names(plan)
    started = {r["operator_path"] for r in rows if r["start_time_unix_ns"] is not None}
    ended = {r["operator_path"] for r in rows if r["end_time_unix_ns"] is not None}
    assert set(names) == {r["operator_path"] for r in rows}  # a row for every operator
    return {p: n for p, n in names.items() if p in started and p in ended}


def _all_paths(plan: Any) -> list[str]:
    paths: list[str] = []

    def visit(node: Any, path: str) -> None:
        paths.append(path)
        for index, child in enumerate(node.children()):
            visit(child, f"{path}.{index}")

    visit(plan, "0")
    return paths


def _nearest_timed_ancestor(path: str, timed: dict[str, str]) -> str | None:
    while "." in path:
        path = path.rsplit(".", 1)[0]
        if path in timed:
            return path
    return None


def _operator_children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """Operator spans below ``parent``, at any depth."""
    by_parent: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            by_parent.setdefault(span.parent.span_id, []).append(span)
    out: list[ReadableSpan] = []
    stack = [parent]
    while stack:
        for child in by_parent.get(stack.pop().context.span_id, []):
            if (child.attributes or {}).get(attr.OPERATOR_DERIVED):
                out.append(child)
                stack.append(child)
    return out


def _rows_of(sink: DiagnosticsCollector, span: ReadableSpan) -> list[dict[str, Any]]:
    datafusion_otel.force_flush()
    rows = sink.events_snapshot().get(attr.OPERATOR_METRICS_TABLE, [])
    return [r for r in rows if r["span_id"] == format(span.context.span_id, "016x")]


def _check_tree(
    spans: list[ReadableSpan], execution: ReadableSpan, plan: Any, rows: list[dict[str, Any]]
) -> tuple[int, int]:
    """Assert the operator spans under ``execution`` are exactly the plan's timed operators,
    nested as in the plan; return (operator spans, untimed operators)."""
    timed = _timed_operators(plan, rows)
    ops = _operator_children(spans, execution)
    by_path = {str(s.attributes[attr.OPERATOR_PATH]): s for s in ops}
    assert len(by_path) == len(ops)  # one span per operator
    assert {p: s.name for p, s in by_path.items()} == timed
    for path, span in by_path.items():
        ancestor = _nearest_timed_ancestor(path, timed)
        expected_parent = by_path[ancestor] if ancestor is not None else execution
        assert span.parent is not None
        assert span.parent.span_id == expected_parent.context.span_id, path
        assert span.context.trace_id == execution.context.trace_id
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.attributes[attr.OPERATOR_DERIVED] is True
    untimed = len(_all_paths(plan)) - len(timed)
    assert capture_span_of(spans, execution).attributes[attr.OPERATOR_SPANS_COUNT] == len(ops)
    assert capture_span_of(spans, execution).attributes[attr.OPERATOR_SPANS_UNTIMED] == untimed
    assert capture_span_of(spans, execution).attributes[attr.OPERATOR_SPANS_DROPPED] == 0
    return len(ops), untimed


def _spans(traced: Traced) -> list[ReadableSpan]:
    datafusion_otel.force_flush()
    return traced.spans()


def test_operator_spans_are_in_the_default_set():
    assert "operator_spans" in DEFAULT_ARTIFACTS
    assert DataFusionCompileOptions().wants("operator_spans")
    assert DataFusionCompileOptions().max_operator_spans == DEFAULT_MAX_OPERATOR_SPANS == 200


@pytest.mark.parametrize("number", list(range(1, 23)))
def test_tpch_run_execution_operator_tree(tpch_dir: Path, number: int) -> None:
    """Every TPC-H query under the instrumentor, default options: run -> execution ->
    one operator span per timed operator of the executed plan, nested as in the plan."""
    with instrumented(capture_plan_artifacts=True) as traced:
        ctx = SessionContext()
        tpch.register_tables(ctx, tpch_dir)
        frames = []
        sink = DiagnosticsCollector()
        with tracked_run(label=f"q{number}", sink=sink) as run:
            for statement in tpch.query_statements(number):
                df = ctx.sql(statement)
                df.collect()
                frames.append(df)
        spans = _spans(traced)
    root = next(s for s in spans if s.name == f"q{number}")
    assert format(root.context.trace_id, "032x") == run.run_id
    executions = [
        s
        for s in spans
        if (s.attributes or {}).get(attr.DB_SYSTEM_NAME)
        and (s.attributes or {}).get(attr.DATAFUSION_METHOD) == "DataFrame.collect"
    ]
    assert len(executions) == len(frames)
    made = 0
    for execution, df in zip(
        sorted(executions, key=lambda s: s.start_time or 0), frames, strict=True
    ):
        assert execution.parent is not None and execution.parent.span_id == root.context.span_id
        assert execution.name == execution.attributes[attr.DB_QUERY_SUMMARY]
        rows = _rows_of(sink, execution)
        count, _untimed = _check_tree(spans, execution, df.execution_plan(), rows)
        made += count
    assert made > 0  # each TPC-H query has timed operators


def test_scan_spans_carry_rows_bytes_and_processing_time(tpch_dir: Path) -> None:
    with instrumented(capture_plan_artifacts=True) as traced:
        ctx = SessionContext()
        tpch.register_tables(ctx, tpch_dir)
        with tracked_run(label="q1"):
            ctx.sql(tpch.query_text(1)).collect()
        spans = _spans(traced)
    scans = [s for s in spans if s.name == "DataSourceExec"]
    assert scans
    scan = scans[0].attributes
    # Parquet scans record no elapsed_compute: their processing time stands in, said so
    assert scan[attr.OPERATOR_ELAPSED_COMPUTE_METRIC] == "time_elapsed_processing"
    assert scan[attr.OPERATOR_ELAPSED_COMPUTE_NS] > 0
    assert scan[attr.OPERATOR_BYTES_SCANNED] > 0
    assert scan[attr.OPERATOR_OUTPUT_ROWS] > 0
    aggregate = next(s for s in spans if s.name == "AggregateExec").attributes
    assert aggregate[attr.OPERATOR_ELAPSED_COMPUTE_METRIC] == "elapsed_compute"
    assert aggregate[attr.OPERATOR_SPILL_COUNT] == 0
    assert aggregate[attr.OPERATOR_SPILLED_BYTES] == 0
    assert aggregate[attr.OPERATOR_OUTPUT_BYTES] > 0


def test_in_memory_scan_gets_no_span_and_is_counted(sdk) -> None:
    datafusion_otel.configure(tracer_provider=sdk.provider)
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    sink = DiagnosticsCollector()
    with tracked_run(label="mem", sink=sink):
        df = sql_to_datafusion("SELECT k, sum(v) FROM t GROUP BY k", ctx=ctx)
        df.collect()
    datafusion_otel.force_flush()
    spans = list(sdk.exporter.get_finished_spans())
    root = next(s for s in spans if s.name == "mem")
    plan = df.execution_plan()
    rows = _rows_of(sink, root)
    timed = _timed_operators(plan, rows)
    assert "DataSourceExec" in _operator_names(plan).values()
    assert "DataSourceExec" not in timed.values()  # the in-memory scan records no times
    made, untimed = _check_tree(spans, root, plan, rows)
    assert made == len(timed) > 0
    assert untimed >= 1
    assert not [s for s in spans if s.name == "DataSourceExec"]


def test_operator_span_cap_counts_the_rest(tpch_dir: Path, sdk) -> None:
    datafusion_otel.configure(tracer_provider=sdk.provider)
    ctx = SessionContext()
    tpch.register_tables(ctx, tpch_dir)
    options = DataFusionCompileOptions(max_operator_spans=3)
    sink = DiagnosticsCollector()
    with tracked_run(label="capped", sink=sink):
        df = sql_to_datafusion(tpch.query_text(5), ctx=ctx, options=options)
        df.collect()
    datafusion_otel.force_flush()
    spans = list(sdk.exporter.get_finished_spans())
    root = next(s for s in spans if s.name == "capped")
    timed = _timed_operators(df.execution_plan(), _rows_of(sink, root))
    ops = _operator_children(spans, root)
    assert len(timed) > 3
    assert len(ops) == 3
    # pre-order: the plan's root operator and its first descendants are kept
    assert {s.attributes[attr.OPERATOR_PATH] for s in ops} == set(sorted(timed)[:3])
    assert capture_span_of(spans, root).attributes[attr.OPERATOR_SPANS_COUNT] == 3
    assert capture_span_of(spans, root).attributes[attr.OPERATOR_SPANS_DROPPED] == len(timed) - 3


def test_max_operator_spans_validated() -> None:
    with pytest.raises(ValueError, match="max_operator_spans"):
        DataFusionCompileOptions(max_operator_spans=-1)
    assert DataFusionCompileOptions(max_operator_spans=0).max_operator_spans == 0


def test_default_cap_is_200_operator_spans(tmp_path: Path, sdk) -> None:
    """A plan of 241 timed operators (80 UNION ALL branches over Parquet): 200 spans, 41
    counted as dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": list(range(100))}), tmp_path / "p.parquet")
    datafusion_otel.configure(tracer_provider=sdk.provider)
    ctx = SessionContext()
    ctx.register_parquet("p", str(tmp_path / "p.parquet"))
    sql = " UNION ALL ".join(f"SELECT a FROM p WHERE a > {i}" for i in range(80))
    sink = DiagnosticsCollector()
    with tracked_run(label="wide", sink=sink):
        df = sql_to_datafusion(sql, ctx=ctx)
        df.collect()
    datafusion_otel.force_flush()
    spans = list(sdk.exporter.get_finished_spans())
    root = next(s for s in spans if s.name == "wide")
    timed = _timed_operators(df.execution_plan(), _rows_of(sink, root))
    assert len(timed) > 200
    assert len(_operator_children(spans, root)) == 200
    assert capture_span_of(spans, root).attributes[attr.OPERATOR_SPANS_COUNT] == 200
    assert capture_span_of(spans, root).attributes[attr.OPERATOR_SPANS_DROPPED] == len(timed) - 200
