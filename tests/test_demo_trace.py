"""The demo's exported trace: every run is the tree run -> execution spans -> operator spans.

The demo runs as a user would run it (its own process, ``OTEL_EXPORTER_OTLP_ENDPOINT`` set) and
exports to a real OTLP/HTTP receiver on 127.0.0.1. The expected operators come from the run
store the same demo wrote: every (execution span, operator) whose metrics carry DataFusion's
start/end timestamps must have exactly one operator span, nested under its execution span.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from datafusion_otel import attributes as attr
from datafusion_otel import tpch
from datafusion_otel.store import RunStore
from listeners import ReceiverProcess, closed_port


def _run_demo(
    store: Path, tpch_dir: Path, queries: str, endpoint: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="2000",
        DATAFUSION_OTEL_TRACE_URL="http://127.0.0.1:16686/trace/{run_id}",
    )
    argv = [sys.executable, "-m", "datafusion_otel.cli", "demo", "--store", str(store),
            "--data-dir", str(tpch_dir), "--queries", queries]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory: pytest.TempPathFactory, tpch_dir: Path):
    receiver = ReceiverProcess()
    receiver.start()
    try:
        store = tmp_path_factory.mktemp("demo-store")
        every = ",".join(str(n) for n in tpch.QUERY_NUMBERS)
        result = _run_demo(store, tpch_dir, every, receiver.endpoint)
        yield result, receiver.spans(), RunStore(store), receiver.endpoint
    finally:
        receiver.kill()


def test_demo_reports_delivery_and_links(demo_trace) -> None:
    result, spans, store, endpoint = demo_trace
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"exported {len(spans)} spans to {re.escape(endpoint)}/v1/traces, 0 failed",
                     result.stdout), result.stdout  # fmt: skip
    run_ids = [row["run_id"] for row in store.recent_runs(100).to_pylist()]
    assert len(run_ids) == len(tpch.QUERY_NUMBERS)
    for run_id in run_ids:  # each run's line shows its id and its link
        assert f"{run_id}" in result.stdout
        assert f"http://127.0.0.1:16686/trace/{run_id}" in result.stdout
    assert "uv run datafusion-otel runs" in result.stdout  # the tests run inside the repository


def test_every_run_is_a_tree_of_executions_and_operators(demo_trace) -> None:
    result, spans, store, _ = demo_trace
    assert result.returncode == 0, result.stdout + result.stderr
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    timed = store.ctx.sql(
        "SELECT DISTINCT run_id, span_id, operator_path FROM operator_metrics "
        "WHERE start_time_unix_ns IS NOT NULL AND end_time_unix_ns IS NOT NULL"
    ).to_pylist()
    expected: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in timed:
        expected[(row["run_id"], row["span_id"])].add(row["operator_path"])
    runs = store.recent_runs(100).to_pylist()
    assert len(runs) == 22
    for run in runs:
        run_id = run["run_id"]
        trace_spans = by_trace[run_id]
        ids = {s["span_id"]: s for s in trace_spans}
        roots = [s for s in trace_spans if not s["parent_span_id"]]
        assert len(roots) == 1, (run["label"], [s["name"] for s in roots])
        root = roots[0]
        assert root["name"] == run["label"]
        executions = [s for s in trace_spans
                      if s["attributes"].get(attr.DB_SYSTEM_NAME) == "datafusion"
                      and attr.OPERATOR_PATH not in s["attributes"]]  # fmt: skip
        assert executions, run["label"]
        for execution in executions:
            assert execution["parent_span_id"] == root["span_id"], run["label"]
            summary = execution["attributes"].get(attr.DB_QUERY_SUMMARY)
            assert summary and execution["name"] == summary
        execution_ids = {e["span_id"] for e in executions}
        operators = [s for s in trace_spans if attr.OPERATOR_PATH in s["attributes"]]
        seen: dict[str, set[str]] = defaultdict(set)
        for operator in operators:
            parent = ids[operator["parent_span_id"]]
            # nested as in the plan: under its parent operator, the root operator under its execution
            while attr.OPERATOR_PATH in parent["attributes"]:
                assert operator["attributes"][attr.OPERATOR_PATH].startswith(
                    parent["attributes"][attr.OPERATOR_PATH] + "."
                )
                parent = ids[parent["parent_span_id"]]
            assert parent["span_id"] in execution_ids
            assert operator["start_unix_nano"] <= operator["end_unix_nano"]
            seen[parent["span_id"]].add(operator["attributes"][attr.OPERATOR_PATH])
        wanted = {span_id: paths for (rid, span_id), paths in expected.items() if rid == run_id}
        assert wanted, f"{run['label']}: no operator recorded start/end timestamps"
        assert dict(seen) == wanted, run["label"]
        assert sum(len(p) for p in seen.values()) == len(operators)  # one span per operator


def test_lost_spans_make_the_demo_fail_loudly(tmp_path: Path, tpch_dir: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = _run_demo(tmp_path / "store", tpch_dir, "6", endpoint)
    assert result.returncode == 1
    assert re.search(rf"exported 0 spans to {re.escape(endpoint)}/v1/traces, [1-9]\d* failed",
                     result.stdout), result.stdout  # fmt: skip
    assert "did not reach" in result.stdout
    assert "1/1 queries completed" in result.stdout  # the runs themselves are in the store
