"""Runs exported to a real backend (Arize Phoenix) and read back by trace id.

OTLP/HTTP goes straight to Phoenix; gRPC goes through rotel (app -> collector -> backend).
"""

from __future__ import annotations

import hashlib

import pytest
from datafusion import SessionContext
from opentelemetry import trace

import datafusion_otel
from backends import Phoenix, Rotel, phoenix_fixture, rotel_fixture  # noqa: F401
from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel._spans.payloads import add_payload_event
from otel_state import Handles, handles_fixture  # noqa: F401

pytestmark = pytest.mark.usefixtures("handles")

PREVIEW_LIMIT = 2048
QUERY = "SELECT k, sum(v) AS total FROM t GROUP BY k ORDER BY k"


def _preview_attributes(kind: str, text: str) -> dict[str, object]:
    data = text.encode()
    return {
        f"datafusion.plan.{kind}": data[:PREVIEW_LIMIT].decode(errors="ignore"),
        f"datafusion.plan.{kind}.sha256": hashlib.sha256(data).hexdigest(),
        f"datafusion.plan.{kind}.size_bytes": len(data),
        f"datafusion.plan.{kind}.truncated": len(data) > PREVIEW_LIMIT,
    }


def _tracked_query(label: str) -> tuple[str, dict[str, object], str]:
    """Run a real query in a run, with a child span carrying a plan-artifacts event."""
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 2, 3], "v": [10, 20, 30, 40]}, name="t")
    tracer = trace.get_tracer(attr.TRACER_NAME)
    with (
        tracked_run(label=label, metadata={"suite": "phoenix"}) as run,
        tracer.start_as_current_span("datafusion.query") as span,
    ):
        df = ctx.sql(QUERY)
        table = df.to_arrow_table()
        logical = df.logical_plan().display_indent()
        # a long physical plan text, so the preview is cut at the limit
        physical = df.execution_plan().display_indent() * 40
        attributes = {
            **_preview_attributes("logical", logical),
            **_preview_attributes("physical", physical),
        }
        assert add_payload_event(
            span,
            attr.PLAN_ARTIFACTS_EVENT,
            attributes,  # type: ignore[arg-type]
            table=attr.PLAN_ARTIFACTS_TABLE,
            rows=[{"logical_plan": logical, "physical_plan": physical}],
        )
    assert table.num_rows == 3
    return run.run_id, attributes, physical


def _check_run_in_phoenix(
    phoenix: Phoenix, run_id: str, label: str, attributes: dict[str, object], physical: str
) -> None:
    spans = phoenix.spans(run_id, expect=2)
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {label, "datafusion.query"}
    root, child = by_name[label], by_name["datafusion.query"]
    assert root["context"]["trace_id"] == run_id  # the run id IS the trace id
    assert root["parent_id"] is None
    assert child["parent_id"] == root["context"]["span_id"]
    assert root["attributes"][attr.RUN_ID] == run_id
    assert root["attributes"][attr.RUN_LABEL] == label
    assert root["attributes"][attr.RUN_STATUS] == "completed"
    assert root["attributes"][attr.RUN_EXPORTED] is True
    (event,) = child["events"]
    assert event["name"] == attr.PLAN_ARTIFACTS_EVENT
    got = event["attributes"]
    preview = got["datafusion.plan.physical"]
    assert len(preview.encode()) <= 2048
    assert physical.startswith(preview)
    assert got["datafusion.plan.physical.truncated"] is True
    assert got["datafusion.plan.physical.size_bytes"] == len(physical.encode())
    assert got["datafusion.plan.physical.sha256"] == hashlib.sha256(physical.encode()).hexdigest()
    assert got["datafusion.plan.logical"] == attributes["datafusion.plan.logical"]
    assert got["datafusion.plan.logical.truncated"] is False


def test_runs_exported_over_http_are_readable_by_run_id(phoenix: Phoenix, handles: Handles) -> None:
    sink = DiagnosticsCollector()
    telemetry = handles.add(
        datafusion_otel.configure(endpoint=phoenix.url, service_name="df-otel-tests", sink=sink)
    )
    run_id, attributes, physical = _tracked_query("phoenix_http_run")
    assert telemetry.force_flush(10) is True
    stats = telemetry.delivery_stats().exporters["otlp"]
    assert (stats.exported, stats.failed, stats.dropped) == (2, 0, 0)
    _check_run_in_phoenix(phoenix, run_id, "phoenix_http_run", attributes, physical)
    # the local tables got the full rows (not the previews)
    assert datafusion_otel.force_flush(5)
    (row,) = sink.events_snapshot()[attr.PLAN_ARTIFACTS_TABLE]
    assert row["physical_plan"] == physical


def test_runs_exported_over_grpc_through_rotel(
    phoenix: Phoenix, rotel_to_phoenix: Rotel, handles: Handles
) -> None:
    telemetry = handles.add(
        datafusion_otel.configure(
            endpoint=f"http://127.0.0.1:{rotel_to_phoenix.grpc_port}",
            protocol="grpc",
            compression="gzip",
        )
    )
    run_id, attributes, physical = _tracked_query("phoenix_grpc_run")
    assert telemetry.force_flush(10) is True
    assert telemetry.delivery_stats().exporters["otlp"].exported == 2
    _check_run_in_phoenix(phoenix, run_id, "phoenix_grpc_run", attributes, physical)


def test_sampled_out_runs_do_not_reach_phoenix(phoenix: Phoenix, handles: Handles) -> None:
    sink = DiagnosticsCollector()
    telemetry = handles.add(datafusion_otel.configure(endpoint=phoenix.url, sampler=0.0, sink=sink))
    dropped_id, _, _ = _tracked_query("phoenix_sampled_out")
    assert telemetry.force_flush(10) is True
    assert telemetry.delivery_stats().exporters["otlp"].queued == 0
    assert datafusion_otel.force_flush(5)
    assert [r["run_id"] for r in sink.events_snapshot()[attr.RUNS_TABLE]] == [dropped_id]
    assert phoenix.spans(dropped_id, timeout=3) == []


def test_demo_runs_are_trees_in_phoenix(phoenix: Phoenix, tpch_dir, tmp_path) -> None:
    """The demo, exporting to Phoenix: each run reads run -> execution -> operator spans."""
    import os
    import subprocess
    import sys

    from datafusion_otel.store import RunStore

    store = tmp_path / "store"
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.url)
    argv = [sys.executable, "-m", "datafusion_otel.cli", "demo", "--store", str(store),
            "--data-dir", str(tpch_dir), "--queries", "3,6"]  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = RunStore(store)
    timed = runs.ctx.sql(
        "SELECT run_id, count(DISTINCT operator_path) AS n FROM operator_metrics "
        "WHERE start_time_unix_ns IS NOT NULL GROUP BY run_id"
    ).to_pylist()
    assert len(timed) == 2
    for row in timed:
        run_id, operators = row["run_id"], row["n"]
        spans = phoenix.spans(run_id, expect=2 + operators)  # run, execution(s), operators
        ids = {span["context"]["span_id"]: span for span in spans}
        (root,) = [span for span in spans if span["parent_id"] is None]
        assert root["context"]["trace_id"] == run_id
        executions = [s for s in spans if s["attributes"].get(attr.DB_SYSTEM_NAME) == "datafusion"
                      and attr.OPERATOR_PATH not in s["attributes"]]  # fmt: skip
        assert executions
        assert all(e["parent_id"] == root["context"]["span_id"] for e in executions)
        operator_spans = [s for s in spans if attr.OPERATOR_PATH in s["attributes"]]
        assert len(operator_spans) == operators
        for span in operator_spans:  # each reaches an execution span through operator parents
            parent = ids[span["parent_id"]]
            while attr.OPERATOR_PATH in parent["attributes"]:
                parent = ids[parent["parent_id"]]
            assert parent in executions
