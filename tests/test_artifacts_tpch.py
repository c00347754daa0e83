"""Plan artifacts of the 22 TPC-H queries, captured through the bridge."""

from __future__ import annotations

import json

import pyarrow.ipc as ipc
import pytest
from datafusion import SessionContext

from datafusion_otel import DiagnosticsCollector, datafusion_plan_artifacts_table, tpch, tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions
from datafusion_otel.schema_registry import datafusion_operator_metrics_table

# artifact column -> the error key that explains its absence
_ARTIFACT_COLUMNS = {
    "plan_hash": "logical_plan",
    "logical_plan": "logical_plan",
    "optimized_plan": "optimized_plan",
    "physical_plan": "physical_plan",
    "graphviz": "graphviz",
    "physical_graphviz": "physical_graphviz",
    "partition_count": "partition_count",
    "join_operators": "physical_plan",
    "substrait_validation_status": "substrait",
    "unparsed_sql": "unparsed_sql",
    "explain_rows_artifact_path": "explain",
    "explain_analyze_artifact_path": "explain_analyze",
    "normalized_sql": "sql",
}


@pytest.fixture(scope="module")
def tpch_ctx(tpch_dir) -> SessionContext:
    ctx = SessionContext()
    tpch.register_tables(ctx, tpch_dir)
    return ctx


def statements(number: int) -> list[str]:
    return tpch.query_statements(number)


def _run_query(ctx: SessionContext, number: int, options: DataFusionCompileOptions):
    sink = DiagnosticsCollector()
    with tracked_run(label=f"q{number}", sink=sink) as run:
        for statement in statements(number):
            sql_to_datafusion(statement, ctx=ctx, options=options).to_arrow_table()
    return run, sink


@pytest.mark.parametrize("number", range(1, 23))
def test_every_artifact_filled_or_explained(tpch_ctx, tmp_path, number):
    options = DataFusionCompileOptions(
        artifacts=ALL_ARTIFACTS, explain_analyze=True, artifact_dir=tmp_path, sql_text="raw"
    )
    run, sink = _run_query(tpch_ctx, number, options)
    events = sink.events_snapshot()
    rows = events["datafusion_plan_artifacts_v1"]
    assert len(rows) == len(statements(number))
    datafusion_plan_artifacts_table(rows)  # schema-valid
    select_rows = [r for r in rows if r["sql"].lstrip().lower().startswith("select")]
    assert len(select_rows) == 1
    row = select_rows[0]
    assert row["run_id"] == run.run_id
    errors = json.loads(row["artifact_errors"]) if row["artifact_errors"] else {}
    for column, error_key in _ARTIFACT_COLUMNS.items():
        assert row[column] is not None or error_key in errors, (column, errors)
    assert row["substrait_validation_status"] == "ok" or row[
        "substrait_validation_status"
    ].startswith("unsupported:"), row["substrait_validation_status"]
    assert row["substrait_b64"]
    assert row["plan_executed"] is True
    assert row["explain_analyze_source"] == "metrics"
    explain = ipc.open_file(row["explain_rows_artifact_path"]).read_all().to_pydict()
    assert explain["plan_type"] == ["logical_plan", "physical_plan"]
    analyzed = ipc.open_file(row["explain_analyze_artifact_path"]).read_all().to_pydict()
    assert "output_rows=" in analyzed["plan"][0]
    metrics = events["datafusion_operator_metrics_v1"]
    table = datafusion_operator_metrics_table(metrics)
    assert table.num_rows > 0
    assert {m["run_id"] for m in metrics} == {run.run_id}
    root = [m for m in metrics if m["operator_path"] == "0"]
    assert root and all(m["span_id"] == row["span_id"] for m in metrics)


def test_substrait_ok_on_every_supported_query(tpch_ctx, tmp_path):
    statuses = {}
    for number in range(1, 23):
        options = DataFusionCompileOptions(artifacts=frozenset({"substrait"}), sql_text="raw")
        _, sink = _run_query(tpch_ctx, number, options)
        for row in sink.events_snapshot()["datafusion_plan_artifacts_v1"]:
            if row["sql"].lstrip().lower().startswith("select"):
                statuses[number] = row["substrait_validation_status"]
    assert len(statuses) == 22
    bad = {n: s for n, s in statuses.items() if s != "ok" and not s.startswith("unsupported:")}
    assert not bad
    assert sum(s == "ok" for s in statuses.values()) >= 20


def test_default_capture_has_cheap_set_and_no_files(tpch_ctx, tmp_path):
    options = DataFusionCompileOptions(artifact_dir=tmp_path)
    _run, sink = _run_query(tpch_ctx, 3, options)
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    for column in ("logical_plan", "physical_plan", "plan_hash", "plan_shape_hash"):
        assert row[column]
    assert row["optimized_plan"] is None  # re-runs the optimizer: in ALL_ARTIFACTS only
    assert row["join_operators"] == ["HashJoinExec", "HashJoinExec"]
    assert row["substrait_validation_status"] is None
    assert row["explain_rows_artifact_path"] is None
    assert not list(tmp_path.iterdir())
