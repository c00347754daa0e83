"""DataFusionInstrumentor: lifecycle, options, errors, runs, SQL text, Ibis and capture."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datafusion import DataFrame, SessionContext
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

import datafusion_otel
from datafusion_otel import (
    DataFusionInstrumentor,
    DiagnosticsCollector,
    config,
    configure,
    tracked_run,
)
from datafusion_otel import attributes as attr
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.instrumentation import DataFusionInstrumentationWarning, _execution
from datafusion_otel.instrumentation._options import resolve_options
from datafusion_otel.instrumentation._wrappers import CONTEXT_METHODS, DATAFRAME_METHODS
from instrumentation_support import Traced, instrumented, make_context


@pytest.fixture
def traced() -> Iterator[Traced]:
    with instrumented() as t:
        yield t


class TestLifecycle:
    """instrument() patches, uninstrument() restores the original function objects."""

    def test_uninstrument_restores_the_original_functions(self) -> None:
        originals = {n: DataFrame.__dict__[n] for n in DATAFRAME_METHODS}
        originals.update({n: SessionContext.__dict__[n] for n in CONTEXT_METHODS})
        with instrumented():
            assert DataFrame.collect is not originals["collect"]
            assert SessionContext.sql is not originals["sql"]
        for name in DATAFRAME_METHODS:
            assert DataFrame.__dict__[name] is originals[name], name
        for name in CONTEXT_METHODS:
            assert SessionContext.__dict__[name] is originals[name], name

    def test_no_span_after_uninstrument(self) -> None:
        with instrumented() as t:
            pass
        make_context().sql("SELECT a FROM t").collect()
        assert t.spans() == []

    def test_instrument_twice_warns_and_changes_nothing(self, traced: Traced) -> None:
        patched = DataFrame.collect
        with pytest.warns(DataFusionInstrumentationWarning, match="already instrumented"):
            DataFusionInstrumentor().instrument(sql_text="raw")
        assert DataFrame.collect is patched
        assert DataFusionInstrumentor().options is not None
        assert DataFusionInstrumentor().options.sql_text == "sanitized"

    def test_exported_from_the_top_level_package(self) -> None:
        assert datafusion_otel.DataFusionInstrumentor is DataFusionInstrumentor
        assert "DataFusionInstrumentor" in datafusion_otel.__all__
        assert DataFusionInstrumentor().instrumentation_dependencies() == (
            "datafusion >= 55, < 56",
        )

    def test_entry_point_is_registered(self) -> None:
        from importlib.metadata import entry_points

        (point,) = entry_points(group="opentelemetry_instrumentor", name="datafusion")
        assert point.load() is DataFusionInstrumentor

    def test_suppressed_instrumentation_gives_no_span(self, traced: Traced) -> None:
        with suppress_instrumentation():
            make_context().sql("SELECT a FROM t").collect()
        assert traced.spans() == []


class TestOptions:
    """Options: argument > env var > default, validated eagerly."""

    def test_invalid_sql_text_is_rejected_and_nothing_is_patched(self) -> None:
        original = DataFrame.collect
        with pytest.raises(ValueError, match="sql_text"):
            DataFusionInstrumentor().instrument(sql_text="everything")  # type: ignore[arg-type]
        assert DataFrame.collect is original
        assert not DataFusionInstrumentor().is_instrumented_by_opentelemetry

    def test_env_vars(self) -> None:
        env = {
            "DATAFUSION_OTEL_SQL_TEXT": "raw",
            "DATAFUSION_OTEL_CAPTURE_PLAN_ARTIFACTS": "yes",
            "DATAFUSION_OTEL_AUTO_RUN": "0",
        }
        options = resolve_options(environ=env)
        assert (options.sql_text, options.capture_plan_artifacts, options.auto_run) == (
            "raw",
            True,
            False,
        )
        assert resolve_options(sql_text="off", environ=env).sql_text == "off"
        with pytest.raises(ValueError, match="DATAFUSION_OTEL_AUTO_RUN"):
            resolve_options(environ={"DATAFUSION_OTEL_AUTO_RUN": "maybe"})

    def test_options_are_frozen(self) -> None:
        options = resolve_options(environ={})
        with pytest.raises(AttributeError):
            options.auto_run = False  # type: ignore[misc]


class TestSqlText:
    """db.query.text follows the sql_text policy; literals never leak by default."""

    QUERY = "SELECT a FROM t WHERE b = 'alice@example.com' OR a = 424242"

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            ("sanitized", "SELECT a FROM t WHERE b = ? OR a = ?"),
            ("raw", QUERY),
            ("off", None),
        ],
    )
    def test_policy(self, policy: str, expected: str | None) -> None:
        with instrumented(sql_text=policy) as t:
            make_context().sql(self.QUERY).collect()
            span = t.only_execution()
        assert span.attributes.get(attr.DB_QUERY_TEXT) == expected
        if policy != "raw":
            assert "alice" not in repr(dict(span.attributes))
            assert "424242" not in repr(dict(span.attributes))

    def test_summary_is_at_most_255_characters(self, traced: Traced) -> None:
        ctx = SessionContext()
        names = [f"table_with_a_rather_long_name_{i:03d}" for i in range(12)]
        for name in names:
            ctx.from_pydict({"a": [1]}, name=name)
        traced.clear()
        ctx.sql("SELECT 1 AS x FROM " + ", ".join(names)).collect()
        span = traced.only_execution()
        assert len(span.name) <= 255
        assert span.name.startswith("SELECT table_with_a_rather_long_name_000")


class TestErrors:
    """A failing execution: span ERROR with error.type, the user's exception unchanged."""

    def test_execution_error(self, traced: Traced) -> None:
        df = make_context().sql("SELECT a / 0 AS boom FROM t")
        with pytest.raises(Exception, match="Divide by zero") as raised:
            df.collect()
        span = traced.only_execution()
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes[attr.ERROR_TYPE] == type(raised.value).__qualname__
        assert span.attributes[attr.RUN_STATUS] == "failed"
        (event,) = [e for e in span.events if e.name == "exception"]
        assert "Divide by zero" in str(event.attributes["exception.message"])

    def test_the_exception_is_the_same_object(self, traced: Traced) -> None:
        sentinel = RuntimeError("path cannot be rendered")

        class BadPath:
            def __str__(self) -> str:
                raise sentinel

            def __fspath__(self) -> str:
                raise sentinel

        df = make_context().sql("SELECT a FROM t")
        with pytest.raises(RuntimeError) as raised:
            df.write_csv(BadPath())  # type: ignore[arg-type]
        assert raised.value is sentinel
        span = traced.only_execution()
        assert span.attributes[attr.ERROR_TYPE] == "RuntimeError"

    def test_failed_ddl(self, traced: Traced) -> None:
        with pytest.raises(Exception, match=r"boom"):
            make_context().sql("CREATE TABLE c AS SELECT boom FROM t")
        span = traced.only_execution()
        assert span.status.status_code is StatusCode.ERROR
        assert span.name == "CREATE c t"

    def test_instrumentation_errors_never_reach_the_query(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_execution, "_logged_sites", set())  # earlier tests logged sites

        class BrokenProvider(TracerProvider):
            def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
                raise RuntimeError("tracer unavailable")

        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(tracer_provider=BrokenProvider())
        try:
            with caplog.at_level(logging.ERROR, logger="datafusion_otel.instrumentation"):
                ctx = make_context()
                first = ctx.sql("SELECT a FROM t ORDER BY a").to_pydict()
                second = ctx.sql("SELECT a FROM t ORDER BY a").to_pydict()
        finally:
            instrumentor.uninstrument()
        assert first == second == {"a": [1, 2, 3]}
        records = [r for r in caplog.records if r.name == "datafusion_otel.instrumentation"]
        assert len(records) == 1  # logged once, with context
        assert "error in starting an execution span" in records[0].getMessage()


class TestRuns:
    """Where execution spans go: inside runs, under user spans, or as runs of their own."""

    def test_auto_run_reaches_the_diagnostics_tables(self) -> None:
        sink = DiagnosticsCollector()
        provider = TracerProvider()
        configure(tracer_provider=provider, sink=sink)
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument()  # no provider given: the provider of runs
        try:
            make_context().sql("SELECT a FROM t").collect()
        finally:
            instrumentor.uninstrument()
            config.reset()
        datafusion_otel.force_flush(5)
        (row,) = sink.events_snapshot()[attr.RUNS_TABLE]
        assert row["label"] == "SELECT t"
        assert row["status"] == "completed"
        assert len(row["run_id"]) == 32

    def test_auto_run_off(self) -> None:
        with instrumented(auto_run=False) as t:
            make_context().sql("SELECT a FROM t").collect()
            span = t.only_execution()
        assert span.parent is None
        assert attr.RUN_ID not in span.attributes

    def test_child_of_an_active_user_span(self, traced: Traced) -> None:
        tracer = traced.provider.get_tracer("app")
        with tracer.start_as_current_span("request") as parent:
            make_context().sql("SELECT a FROM t").collect()
        span = traced.only_execution()
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert attr.RUN_ID not in span.attributes

    def test_two_executions_in_a_run_share_its_trace(self, traced: Traced) -> None:
        ctx = make_context()
        with tracked_run(label="batch") as run:
            ctx.sql("SELECT a FROM t").collect()
            ctx.sql("SELECT b FROM t").count()
        spans = traced.executions()
        assert len(spans) == 2
        assert {trace.format_trace_id(s.context.trace_id) for s in spans} == {run.run_id}


class TestIbis:
    """SQL compiled by Ibis is traced like any SQL."""

    def test_ibis_compiled_sql(self, traced: Traced) -> None:
        import ibis

        table = ibis.table({"a": "int64", "b": "string"}, name="t")
        expr = table.filter(table.a > 1).select("a", "b")
        sql = ibis.to_sql(expr, dialect="datafusion")
        result = make_context().sql(str(sql)).to_arrow_table()
        assert result.num_rows == 2
        span = traced.only_execution()
        assert span.name == "SELECT t"
        assert span.attributes[attr.DB_COLLECTION_NAME] == "t"
        assert span.attributes[attr.DB_RESPONSE_RETURNED_ROWS] == 2
        assert "1" not in span.attributes[attr.DB_QUERY_TEXT].replace("t1", "")


class TestCapture:
    """capture_plan_artifacts hands each executed DataFrame to the capture worker."""

    @pytest.fixture
    def bridge(self, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []

        def schedule_execution_artifacts(
            df: DataFrame,
            *,
            ctx: Any,
            span: Any,
            sql: Any,
            options: Any,
            executed: bool,
            duration_ms: float | None,
        ) -> None:
            # what the query's thread hands over: the executed plan (a reference)
            metrics = df.execution_plan().collect_metrics() if executed else []
            calls.append(
                {"executed": executed, "sql": sql, "span": span, "ctx": ctx, "metrics": metrics}
            )
            assert duration_ms is not None and duration_ms >= 0

        monkeypatch.setattr(
            _execution, "schedule_execution_artifacts", schedule_execution_artifacts
        )
        return calls

    @pytest.mark.parametrize(
        "call",
        [
            lambda df, _: df.collect(),
            lambda df, _: df.count(),
            lambda df, _: list(df.execute_stream()),
            lambda df, _: __import__("pyarrow").table(df),
        ],
        ids=["collect", "count", "execute_stream", "arrow_c_stream"],
    )
    def test_executed_plans_reach_the_bridge_with_metrics(
        self, bridge: list[dict[str, Any]], call: Any, tmp_path: Path
    ) -> None:
        with instrumented(capture_plan_artifacts=True) as t:
            ctx = make_context()
            df = ctx.sql("SELECT a FROM t WHERE a > 1")
            call(df, tmp_path)
            span = t.only_execution()
        (captured,) = bridge
        assert captured["executed"] is True
        assert captured["sql"] == "SELECT a FROM t WHERE a > 1"
        assert captured["ctx"] is ctx
        assert captured["span"].get_span_context().span_id == span.context.span_id
        assert any(m.output_rows for _, m in captured["metrics"])

    def test_count_result_is_unchanged_by_rerouting(self, bridge: list[dict[str, Any]]) -> None:
        with instrumented(capture_plan_artifacts=True):
            assert make_context().sql("SELECT a FROM t WHERE a > 1").count() == 2

    def test_paths_that_lose_the_plan_say_so(
        self, bridge: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        with instrumented(capture_plan_artifacts=True) as t:
            make_context().sql("SELECT a FROM t").write_parquet(tmp_path / "x.parquet")
            t.only_execution()
        assert [c["executed"] for c in bridge] == [False]

    def test_real_bridge_rows_reach_the_sink_once(self) -> None:
        sink = DiagnosticsCollector()
        with instrumented(capture_plan_artifacts=True) as t:
            datafusion_otel.configure(sink=sink, tracer_provider=t.provider)
            ctx = make_context()
            ctx.sql("SELECT a FROM t WHERE a > 1").collect()  # auto run
            compiled = sql_to_datafusion("SELECT a FROM t WHERE a > 2", ctx=ctx)
            with tracked_run(label="compiled"):
                compiled.to_arrow_table()  # captures itself: instrumentation must not
            t.provider.force_flush()
        rows = sink.events_snapshot()["datafusion_plan_artifacts_v1"]
        assert sorted(r["sql"] for r in rows) == [
            "SELECT a FROM t WHERE a > ?",
            "SELECT a FROM t WHERE a > ?",
        ]
        assert len({r["run_id"] for r in rows}) == 2
        assert sink.events_snapshot()["datafusion_operator_metrics_v1"]
