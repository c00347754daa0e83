"""Bridge behaviour: one execution, stable hashes, isolation, sanitizing, previews."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from datafusion import SessionContext, udf
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import datafusion_otel
from capture_support import artifact_events
from datafusion_otel import DiagnosticsCollector, config, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel.bridge import (
    collect_plan_artifacts,
    ibis_to_datafusion,
    sql_to_datafusion,
)
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions

SECRET_SQL = (
    "SELECT u.email, o.amount FROM users u JOIN orders o ON u.id = o.user_id "
    "WHERE u.email = 'alice@example.com' AND o.user_id = 424242"
)


def _ctx() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict(
        {"id": [424242, 7], "email": ["alice@example.com", "bob@example.com"]}, name="users"
    )
    ctx.from_pydict({"user_id": [424242, 424242, 7], "amount": [10, 20, 30]}, name="orders")
    return ctx


@pytest.fixture
def exporter():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    datafusion_otel.configure(tracer_provider=provider)
    yield memory
    config.reset()


def _counting_udf():
    calls = {"n": 0}

    def plus_one(arr: pa.Array) -> pa.Array:
        calls["n"] += 1
        return pa.compute.add(arr, 1)

    return udf(plus_one, [pa.int64()], pa.int64(), "volatile", "plus_one"), calls


def test_explain_analyze_does_not_run_the_query_twice(tmp_path):
    ctx = _ctx()
    plus_one, calls = _counting_udf()
    ctx.register_udf(plus_one)
    sql = "SELECT plus_one(amount) AS a FROM orders"
    ctx.sql(sql).to_arrow_table()
    plain_calls = calls["n"]
    assert plain_calls > 0
    calls["n"] = 0
    sink = DiagnosticsCollector()
    options = DataFusionCompileOptions(
        explain_analyze=True, artifacts=ALL_ARTIFACTS, artifact_dir=tmp_path
    )
    with tracked_run(label="once", sink=sink):
        sql_to_datafusion(sql, ctx=ctx, options=options).to_arrow_table()
    assert calls["n"] == plain_calls
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert row["explain_analyze_source"] == "metrics"
    assert (
        "output_rows=3"
        in ipc.open_file(row["explain_analyze_artifact_path"]).read_all()["plan"][0].as_py()
    )


def test_real_explain_analyze_only_for_a_query_that_never_ran(tmp_path):
    ctx = _ctx()
    plus_one, calls = _counting_udf()
    ctx.register_udf(plus_one)
    df = ctx.sql("SELECT plus_one(amount) AS a FROM orders")
    options = DataFusionCompileOptions(explain_analyze=True, artifact_dir=tmp_path)
    art = collect_plan_artifacts(
        df, ctx=ctx, sql="SELECT plus_one(amount) AS a FROM orders", options=options
    )
    assert art.explain_analyze_source == "explain_analyze"
    assert calls["n"] > 0  # it ran exactly for the analysis
    assert art.explain_analyze_artifact_path is not None


_HASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from datafusion import SessionContext
    from datafusion_otel.bridge import collect_plan_artifacts
    ctx = SessionContext()
    ctx.from_pydict({"id": [1, 2, 3], "v": [4, 5, 6]}, name="t")
    sql = sys.argv[1]
    print(collect_plan_artifacts(ctx.sql(sql), ctx=ctx, sql=sql).plan_hash)
    """
)


def _hash_in_subprocess(sql: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT, sql], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_plan_hash_stable_across_processes_literal_free_and_sensitive_to_the_statement():
    first = _hash_in_subprocess("SELECT v FROM t WHERE id > 1")
    second = _hash_in_subprocess("SELECT v FROM t WHERE id > 1")
    other_constant = _hash_in_subprocess("SELECT v FROM t WHERE id > 987654")
    other_statement = _hash_in_subprocess("SELECT v FROM t WHERE id < 1")
    other_column = _hash_in_subprocess("SELECT id FROM t WHERE v > 1")
    assert len(first) == 64
    assert first == second
    assert first == other_constant  # a hash cannot tell (or confirm) a literal
    assert len({first, other_statement, other_column}) == 3


def test_concurrent_runs_never_mix_artifacts():
    ctx = _ctx()
    sink = DiagnosticsCollector()
    seen: dict[str, int] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(10):
                with tracked_run(label=f"t{n}", sink=sink) as run:
                    sql_to_datafusion(
                        f"SELECT amount + {n} AS a FROM orders", ctx=ctx
                    ).to_arrow_table()
                seen[run.run_id] = n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = sink.events_snapshot()["datafusion_plan_artifacts_v1"]
    assert len(rows) == 60
    assert sorted(r["run_id"] for r in rows) == sorted(seen)  # one row per run, no strays
    runs = {r["run_id"]: r for r in sink.events_snapshot()["datafusion_runs_v1"]}
    for row in rows:
        assert runs[row["run_id"]]["label"] == f"t{seen[row['run_id']]}"
    raw_sink = DiagnosticsCollector()
    with tracked_run(label="raw", sink=raw_sink) as run:
        sql_to_datafusion(
            "SELECT amount + 5 AS a FROM orders",
            ctx=ctx,
            options=DataFusionCompileOptions(sql_text="raw"),
        ).to_arrow_table()
    raw_rows = raw_sink.events_snapshot()["datafusion_plan_artifacts_v1"]
    assert raw_rows[0]["run_id"] == run.run_id and "Int64(5)" in raw_rows[0]["logical_plan"]


def test_a_failing_artifact_leaves_the_others_intact():
    ctx = SessionContext()
    sql = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) "
        "SELECT x FROM n"
    )
    sink = DiagnosticsCollector()
    options = DataFusionCompileOptions(
        artifacts=frozenset({"unparsed_sql", "logical_plan", "physical_plan", "plan_hash"})
    )
    with tracked_run(label="recursive", sink=sink):
        table = sql_to_datafusion(sql, ctx=ctx, options=options).to_arrow_table()
    assert table.column("x").to_pylist() == [1, 2, 3, 4, 5]
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert row["unparsed_sql"] is None
    assert row["unparse_error"]
    assert "unparsed_sql" in json.loads(row["artifact_errors"])
    assert row["logical_plan"] and row["physical_plan"] and row["plan_hash"]


def test_a_query_failing_at_execution_still_yields_its_row():
    ctx = _ctx()

    def boom(arr: pa.Array) -> pa.Array:
        raise RuntimeError("boom at execution")

    ctx.register_udf(udf(boom, [pa.int64()], pa.int64(), "volatile", "boom"))
    sink = DiagnosticsCollector()
    with pytest.raises(Exception, match="boom at execution"):
        with tracked_run(label="fails", sink=sink):
            sql_to_datafusion("SELECT boom(amount) FROM orders", ctx=ctx).to_arrow_table()
    events = sink.events_snapshot()
    assert events["datafusion_runs_v1"][0]["status"] == "failed"
    row = events["datafusion_plan_artifacts_v1"][0]
    assert row["plan_executed"] is False
    # the error is recorded; its quoted message is a text the sanitizing policy hides
    execution_error = json.loads(row["artifact_errors"])["execution"]
    assert "RuntimeError" in execution_error and "boom at execution" not in execution_error
    assert row["logical_plan"] and row["plan_hash"]


def _everything_text(sink, exporter, tmp_path) -> str:
    parts = [
        json.dumps(sink.events_snapshot(), default=str),
        json.dumps(sink.artifacts_snapshot(), default=str),
    ]
    for span in exporter.get_finished_spans():
        parts.append(span.to_json())
    files = list(tmp_path.rglob("*.arrow"))
    assert len(files) == 2  # EXPLAIN and EXPLAIN ANALYZE
    for path in files:
        parts.append(json.dumps(ipc.open_file(path).read_all().to_pydict(), default=str))
    return "\n".join(parts)


def _secret_run(exporter, tmp_path, policy):
    ctx = _ctx()
    sink = DiagnosticsCollector()
    options = DataFusionCompileOptions(
        artifacts=ALL_ARTIFACTS,
        explain_analyze=True,
        artifact_dir=tmp_path,
        sql_text=policy,
        plan_artifacts_hook=lambda p: sink.record_artifact("datafusion_plan_artifacts_v1", p),
    )
    with tracked_run(label="secret", sink=sink):
        table = sql_to_datafusion(SECRET_SQL, ctx=ctx, options=options).to_arrow_table()
    assert table.num_rows == 2
    return _everything_text(sink, exporter, tmp_path)


def test_error_texts_are_sanitized(exporter):
    ctx = _ctx()

    def boom(arr: pa.Array) -> pa.Array:
        raise RuntimeError("no user 'alice@example.com' with id 424242")

    ctx.register_udf(udf(boom, [pa.int64()], pa.int64(), "volatile", "boom"))
    sink = DiagnosticsCollector()
    with pytest.raises(Exception, match="alice"), tracked_run(label="fails", sink=sink):
        sql_to_datafusion(
            "SELECT boom(amount) FROM orders WHERE user_id = 424242", ctx=ctx
        ).to_arrow_table()
    row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
    errors = json.loads(row["artifact_errors"])
    assert "RuntimeError" in errors["execution"]
    assert "alice@example.com" not in row["artifact_errors"]
    assert "424242" not in row["artifact_errors"]


def test_sanitized_by_default_everywhere(exporter, tmp_path):
    text = _secret_run(exporter, tmp_path, "sanitized")
    assert "datafusion.plan_artifacts" in text
    assert "alice@example.com" not in text
    assert "424242" not in text
    assert "users" in text and "email" in text  # table and column names stay


def test_raw_policy_keeps_literals(exporter, tmp_path):
    text = _secret_run(exporter, tmp_path, "raw")
    assert "alice@example.com" in text and "424242" in text


def test_span_event_previews_are_cut_with_hash_and_size(exporter):
    ctx = _ctx()
    columns = ", ".join(f"amount + {i} AS c{i}" for i in range(300))
    sql = f"SELECT {columns} FROM orders"
    with tracked_run(label="long"):
        sql_to_datafusion(
            sql, ctx=ctx, options=DataFusionCompileOptions(sql_text="raw")
        ).to_arrow_table()
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "long")
    (event,) = artifact_events(spans, root)
    attrs = event.attributes
    full = sql.encode()
    assert len(attrs["datafusion.artifact.sql"].encode()) == 2048
    assert attrs["datafusion.artifact.sql.truncated"] is True
    assert attrs["datafusion.artifact.sql.size"] == len(full)
    import hashlib

    assert attrs["datafusion.artifact.sql.sha256"] == hashlib.sha256(full).hexdigest()
    assert attrs["datafusion.artifact.plan_hash"]


def test_operator_spans_nest_like_the_plan(exporter):
    ctx = _ctx()
    with tracked_run(label="ops") as run:
        sql_to_datafusion(
            SECRET_SQL, ctx=ctx, options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS)
        ).to_arrow_table()
    spans = exporter.get_finished_spans()
    ops = [s for s in spans if s.attributes.get("datafusion.operator.derived_from_metrics")]
    assert ops
    by_id = {s.context.span_id: s for s in spans}
    root = next(s for s in spans if s.name == "ops")
    for span in ops:
        assert format(span.context.trace_id, "032x") == run.run_id
        parent = by_id[span.parent.span_id]
        path = span.attributes["datafusion.operator.path"]
        if path == "0":
            assert parent is root
        else:
            assert parent.attributes["datafusion.operator.path"] == path.rsplit(".", 1)[0]
        assert span.start_time <= span.end_time
    assert any(s.name == "HashJoinExec" for s in ops)


def test_unrecorded_metrics_are_null_not_zero():
    ctx = _ctx()
    sink = DiagnosticsCollector()
    with tracked_run(label="m", sink=sink):
        sql_to_datafusion(SECRET_SQL, ctx=ctx).to_arrow_table()
    rows = sink.events_snapshot()["datafusion_operator_metrics_v1"]
    others = [r["other_metrics"] or {} for r in rows]
    ratio_values = [o[k] for o in others for k in o if k in ("probe_hit_rate", "selectivity")]
    assert ratio_values and all(v is None for v in ratio_values)
    assert any(r["output_rows"] for r in rows)


def test_span_event_limit_warns_and_counts(caplog):
    from opentelemetry.sdk.trace import SpanLimits

    from datafusion_otel._spans.payloads import payload_stats

    memory = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_events=1, max_event_attributes=8))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    sink = DiagnosticsCollector()
    datafusion_otel.configure(tracer_provider=provider)
    try:
        before = payload_stats()
        ctx = _ctx()
        with caplog.at_level(logging.WARNING, logger="datafusion_otel"):
            with tracked_run(label="limits", sink=sink):
                for n in range(3):  # 3 queries x (artifacts + operator metrics) events
                    sql_to_datafusion(f"SELECT {n} AS x{n}", ctx=ctx).to_arrow_table()
        after = payload_stats()
        assert after["event_limit_reached"] >= before["event_limit_reached"] + 3
        assert after["attribute_limit_reached"] > before["attribute_limit_reached"]
        assert "limit" in caplog.text
        spans = memory.get_finished_spans()
        root = next(s for s in spans if s.name == "limits")
        captures = [s for s in spans if s.name == attr.CAPTURE_SPAN]
        assert len(captures) == 3
        assert all(len(s.events) == 1 for s in captures)  # what the SDK exports: the limit
        assert all(s.context.trace_id == root.context.trace_id for s in captures)
        events = sink.events_snapshot()
        assert len(events["datafusion_plan_artifacts_v1"]) == 3  # nothing lost locally
        assert len({r["plan_hash"] for r in events["datafusion_plan_artifacts_v1"]}) == 3
    finally:
        config.reset()


def test_design_document_example_with_sql(tmp_path):
    from datafusion_otel.bridge import sql_to_datafusion
    from datafusion_otel.compile_options import DataFusionCompileOptions
    from datafusion_otel.diagnostics import DiagnosticsCollector
    from datafusion_otel.runs import tracked_run

    sink = DiagnosticsCollector()
    with tracked_run(label="user_analytics", sink=sink) as run:
        ctx = _ctx()
        options = DataFusionCompileOptions(
            run_id=run.run_id,
            capture_plan_artifacts=True,
            explain_analyze=True,
            artifact_dir=tmp_path,
            plan_artifacts_hook=lambda payload: sink.record_artifact(
                "datafusion_plan_artifacts_v1", payload
            ),
        )
        df = sql_to_datafusion("SELECT email FROM users", ctx=ctx, options=options)
        result = df.to_arrow_table()
    artifacts = sink.artifacts_snapshot()
    assert result.num_rows == 2
    assert artifacts["datafusion_run_started_v1"][0]["run_id"] == run.run_id
    assert artifacts["datafusion_run_finished_v1"][0]["status"] == "completed"
    assert artifacts["datafusion_plan_artifacts_v1"][0]["run_id"] == run.run_id


def test_design_document_example_with_ibis(tmp_path):
    import ibis

    from datafusion_otel.bridge import ibis_to_datafusion as imported
    from datafusion_otel.diagnostics import DiagnosticsCollector
    from datafusion_otel.runs import tracked_run

    assert imported is ibis_to_datafusion
    users = ibis.table({"id": "int64", "email": "string"}, name="users")
    expr = users.filter(users.id > 10).select("email")
    backend = None
    sink = DiagnosticsCollector()
    with tracked_run(label="user_analytics", sink=sink) as run:
        ctx = _ctx()
        options = DataFusionCompileOptions(
            run_id=run.run_id,
            capture_plan_artifacts=True,
            explain_analyze=True,
            artifact_dir=tmp_path,
            plan_artifacts_hook=lambda payload: sink.record_artifact(
                "datafusion_plan_artifacts_v1", payload
            ),
        )
        df = ibis_to_datafusion(expr, backend=backend, ctx=ctx, options=options)
        result = df.to_arrow_table()
    assert result.column("email").to_pylist() == ["alice@example.com"]
    payload = sink.artifacts_snapshot()["datafusion_plan_artifacts_v1"][0]
    assert payload["ibis_sql"] and "users" in payload["ibis_sql"]
    assert payload["run_id"] == run.run_id
    assert "datafusion_run_finished_v1" in sink.artifacts_snapshot()


def test_ibis_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ibis(name, *args, **kwargs):
        if name == "ibis":
            raise ImportError("No module named 'ibis'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ibis)
    with pytest.raises(ImportError, match=r"datafusion-otel\[ibis\]"):
        ibis_to_datafusion(object(), ctx=SessionContext())


def test_dataframe_api_query_notes_missing_sql():
    ctx = _ctx()
    df = ctx.table("orders")
    art = collect_plan_artifacts(df, ctx=ctx)
    assert art.sql.startswith("--") and "DataFrame API" in art.sql
    assert art.logical_plan and art.plan_hash


def test_options_validate_eagerly():
    with pytest.raises(ValueError, match="unknown artifacts"):
        DataFusionCompileOptions(artifacts=frozenset({"nope"}))
    with pytest.raises(ValueError, match="sql_text"):
        DataFusionCompileOptions(sql_text="everything")  # type: ignore[arg-type]
