"""Every way a compiled query can run yields its artifacts row, under the right run, with no
literal leaking from error messages or LIMIT values; runs finished out of order unwind."""

from __future__ import annotations

import asyncio
import gc
import json

import pyarrow as pa
import pytest
from datafusion import SessionContext

import datafusion_otel
from capture_support import artifact_events, settle
from datafusion_otel import (
    DataFusionInstrumentor,
    DiagnosticsCollector,
    current_run,
    finish_run,
    start_run,
    tracked_run,
)
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions

SECRETS = ("alice@example.com", "424242")


def _users() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict(
        {"id": [1, 424242], "email": ["alice@example.com", "b@x.io"], "s": ["1", "x"]},
        name="users",
    )
    return ctx


def _leaks(sink: DiagnosticsCollector, spans) -> list[str]:
    texts = [
        json.dumps(sink.events_snapshot(), default=str),
        json.dumps(sink.artifacts_snapshot(), default=str),
    ]
    for span in spans:
        texts.append(span.to_json())
    return [s for s in SECRETS for t in texts if s in t]


class TestNoLiteralLeaks:
    def test_failing_query_error_text_is_sanitized_everywhere(self, configured):
        sink = DiagnosticsCollector()
        sql = "SELECT CAST('alice@example.com' AS INT) + id FROM users WHERE id = 424242"
        with pytest.raises(Exception, match="alice"), tracked_run(label="job", sink=sink):
            sql_to_datafusion(sql, ctx=_users()).to_arrow_table()
        assert sink.events_snapshot()["datafusion_runs_v1"][0]["status"] == "failed"
        assert not _leaks(sink, configured.exporter.get_finished_spans())

    def test_failing_auto_run_error_text_is_sanitized(self, configured):
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=configured.provider, sink=sink)
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(tracer_provider=configured.provider)
        try:
            with pytest.raises(Exception, match="Cast"):
                _users().sql("SELECT CAST(email AS INT) FROM users WHERE id = 424242").collect()
        finally:
            instrumentor.uninstrument()
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["status"] == "failed"
        assert not _leaks(sink, configured.exporter.get_finished_spans())

    def test_limit_and_offset_values_are_sanitized_in_plans(self, configured):
        sink = DiagnosticsCollector()
        with tracked_run(label="limit", sink=sink):
            sql_to_datafusion(
                "SELECT email FROM users ORDER BY id LIMIT 424242 OFFSET 1", ctx=_users()
            ).to_arrow_table()
        row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
        assert "fetch=?" in row["physical_plan"]
        assert not _leaks(sink, configured.exporter.get_finished_spans())

    def test_physical_plan_alone_still_sees_folded_literals(self, tmp_path):
        sink = DiagnosticsCollector()
        options = DataFusionCompileOptions(
            artifacts=frozenset({"physical_plan", "explain"}), artifact_dir=tmp_path
        )
        with tracked_run(label="folded", sink=sink):
            sql_to_datafusion(
                "SELECT email FROM users WHERE id = 424240 + 2", ctx=_users(), options=options
            ).to_arrow_table()
        row = sink.events_snapshot()["datafusion_plan_artifacts_v1"][0]
        assert "424242" not in row["physical_plan"]
        assert all(b"424242" not in p.read_bytes() for p in tmp_path.rglob("*.arrow"))


def _one_row(sink: DiagnosticsCollector) -> dict:
    (row,) = sink.events_snapshot()["datafusion_plan_artifacts_v1"]
    return row


class TestEveryPathCaptures:
    @pytest.mark.parametrize(
        ("name", "call", "with_metrics"),
        [
            ("iter", lambda df, p: list(df), True),
            (
                "stream_partitioned",
                lambda df, p: [list(s) for s in df.execute_stream_partitioned()],
                True,
            ),
            ("pa_table", lambda df, p: pa.table(df), True),
            ("count", lambda df, p: df.count(), False),
            ("write_parquet", lambda df, p: df.write_parquet(str(p / "out.parquet")), False),
            ("collect_column", lambda df, p: df.collect_column("email"), False),
            ("tail", lambda df, p: df.tail(1).collect(), False),
        ],
    )
    def test_path_yields_one_row(self, tmp_path, name, call, with_metrics):
        sink = DiagnosticsCollector()
        with tracked_run(label=name, sink=sink) as run:
            call(sql_to_datafusion("SELECT email FROM users WHERE id > 0", ctx=_users()), tmp_path)
        row = _one_row(sink)
        assert row["run_id"] == run.run_id
        metrics = sink.events_snapshot().get("datafusion_operator_metrics_v1", [])
        assert bool(metrics) is with_metrics
        if not with_metrics:
            assert "does not keep the executed plan" in row["artifact_errors"]

    def test_async_iteration_yields_its_row(self):
        sink = DiagnosticsCollector()

        async def consume() -> None:
            with tracked_run(label="aiter", sink=sink):
                async for _ in sql_to_datafusion("SELECT email FROM users", ctx=_users()):
                    pass

        asyncio.run(consume())
        assert _one_row(sink)["plan_executed"] is True

    def test_failing_stream_yields_its_row(self):
        sink = DiagnosticsCollector()
        with pytest.raises(Exception, match="Cast"), tracked_run(label="s", sink=sink):
            for _ in sql_to_datafusion("SELECT CAST(s AS INT) FROM users", ctx=_users()):
                pass
        row = _one_row(sink)
        assert row["plan_executed"] is False
        assert "execution" in json.loads(row["artifact_errors"])

    def test_half_read_stream_captures_on_close_and_on_gc(self):
        for how in ("close", "gc"):
            sink = DiagnosticsCollector()
            with tracked_run(label=how, sink=sink):
                stream = sql_to_datafusion("SELECT email FROM users", ctx=_users()).execute_stream()
                if how == "close":
                    stream.close()
                else:
                    del stream
                    gc.collect()
            row = _one_row(sink)
            assert "partial" in row["artifact_errors"]


class TestRunCorrelation:
    def test_rows_belong_to_the_run_the_query_ran_in(self):
        sink_a, sink_b = DiagnosticsCollector(), DiagnosticsCollector()
        with tracked_run(label="A", sink=sink_a):
            df = sql_to_datafusion("SELECT email FROM users", ctx=_users())
        with tracked_run(label="B", sink=sink_b) as run_b:
            df.to_arrow_table()
        assert "datafusion_plan_artifacts_v1" not in sink_a.events_snapshot()
        assert _one_row(sink_b)["run_id"] == run_b.run_id

    def test_runs_finished_out_of_order_unwind(self, configured):
        a = start_run(label="A")
        b = start_run(label="B")
        finish_run(a)
        assert current_run() is b
        finish_run(b)
        assert current_run() is None
        from opentelemetry import trace

        assert not trace.get_current_span().get_span_context().is_valid
        with tracked_run(label="C") as c:
            pass
        spans = {s.name: s for s in configured.exporter.get_finished_spans()}
        assert not spans["C"].links
        assert c.status == "completed"


class TestSampledAutoRuns:
    def test_dropped_auto_run_keeps_its_attributes_and_says_not_exported(self, sdk):
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=None, sink=sink, sampler=0.0, set_global=False)
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument()
        try:
            _users().sql("SELECT email FROM users").collect()
        finally:
            instrumentor.uninstrument()
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        metadata = json.loads(row["metadata"])
        assert metadata == {"datafusion_otel.auto_run": True, "datafusion_otel.exported": False}
        assert row["label"] == "SELECT users"


class TestSecondReview:
    """Regressions found in review: graphviz edges, finalization, threads, instrumentation."""

    def test_sanitizing_keeps_graphviz_edges(self):
        import re

        from datafusion_otel.compile_options import ALL_ARTIFACTS

        sink = DiagnosticsCollector()
        with tracked_run(label="dot", sink=sink):
            sql_to_datafusion(
                "SELECT email FROM users WHERE id = 424242 LIMIT 5",
                ctx=_users(),
                options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS - {"explain"}),
            ).to_arrow_table()
        dot = _one_row(sink)["graphviz"]
        assert re.search(r"\n\s+\d+ -> \d+ \[", dot)
        assert "-> ?" not in dot
        assert "424242" not in dot

    def test_stream_collected_at_exit_logs_nothing(self):
        import subprocess
        import sys
        import textwrap

        script = textwrap.dedent(
            """
            from datafusion import SessionContext
            from datafusion_otel import tracked_run
            from datafusion_otel.bridge import sql_to_datafusion
            ctx = SessionContext()
            ctx.from_pydict({"a": [1, 2, 3]}, name="t")
            with tracked_run(label="exit"):
                s = sql_to_datafusion("SELECT a FROM t", ctx=ctx).execute_stream()
                next(iter(s))
            raise SystemExit(0)  # s is still referenced: collected during shutdown
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0
        assert "capture failed" not in done.stderr
        assert "Traceback" not in done.stderr

    def test_run_finished_in_another_thread_stops_being_current(self, configured):
        import threading

        from opentelemetry import trace

        run = start_run(label="A")
        worker = threading.Thread(target=finish_run, args=(run,))
        worker.start()
        worker.join()
        assert current_run() is None  # settles this context
        assert not trace.get_current_span().get_span_context().is_valid
        with tracked_run(label="B"):
            pass
        spans = {s.name: s for s in configured.exporter.get_finished_spans()}
        assert not spans["B"].links

    def test_instrumented_stream_of_a_compiled_query_spans_the_read(self, configured):
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=configured.provider, sink=sink)
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(tracer_provider=configured.provider)
        try:
            stream = sql_to_datafusion("SELECT email FROM users", ctx=_users()).execute_stream()
            assert not configured.exporter.get_finished_spans()  # still reading
            rows = sum(b.to_pyarrow().num_rows for b in stream)
        finally:
            instrumentor.uninstrument()
        (span,) = configured.exporter.get_finished_spans()  # ended when the stream did
        assert rows == 2
        assert span.attributes["db.response.returned_rows"] == 2
        settle()
        spans = configured.exporter.get_finished_spans()
        assert [e.name for e in artifact_events(spans, span)] == ["datafusion.plan_artifacts"]
        datafusion_otel.force_flush()
        assert _one_row(sink)["span_id"] == format(span.context.span_id, "016x")

    def test_instrumented_auto_run_gets_compiled_query_artifacts(self, configured):
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=configured.provider, sink=sink)
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(tracer_provider=configured.provider)
        try:
            sql_to_datafusion("SELECT email FROM users", ctx=_users()).collect()
        finally:
            instrumentor.uninstrument()
        datafusion_otel.force_flush()
        (run_row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert _one_row(sink)["run_id"] == run_row["run_id"]

    def test_stream_read_after_its_run_still_reaches_the_run(self, caplog):
        """Read after its run ended, a stream's artifacts still land: on a capture span of
        the run's (ended) root, in the run's sink; nothing is dropped."""
        from datafusion_otel._spans.emit import dropped_count

        before = dropped_count()
        sink = DiagnosticsCollector()
        with tracked_run(label="early", sink=sink) as run:
            stream = sql_to_datafusion("SELECT email FROM users", ctx=_users()).execute_stream()
        list(stream)
        datafusion_otel.force_flush()
        assert dropped_count() == before
        assert _one_row(sink)["run_id"] == run.run_id

    def test_stacktraces_keep_their_line_numbers(self, configured):
        with pytest.raises(KeyError), tracked_run(label="py-bug"):
            {}["alice@example.com"]
        (span,) = configured.exporter.get_finished_spans()
        (event,) = [e for e in span.events if e.name == "exception"]
        stack = event.attributes["exception.stacktrace"]
        assert ", line " in stack and ", line ?" not in stack
        assert "alice@example.com" not in stack

    def test_write_parquet_with_options_captures(self, tmp_path):
        from datafusion import ParquetWriterOptions

        sink = DiagnosticsCollector()
        with tracked_run(label="w", sink=sink):
            sql_to_datafusion("SELECT email FROM users", ctx=_users()).write_parquet_with_options(
                str(tmp_path / "o.parquet"), ParquetWriterOptions()
            )
        assert "write_parquet_with_options" in _one_row(sink)["artifact_errors"]


class TestThirdReview:
    def test_own_notes_are_readable_and_files_carry_the_run_id(self, tmp_path):
        from datafusion_otel.compile_options import ALL_ARTIFACTS

        sink = DiagnosticsCollector()
        with tracked_run(label="notes", sink=sink) as run:
            sql_to_datafusion(
                "SELECT email FROM users WHERE id = 424242",
                ctx=_users(),
                options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS, artifact_dir=tmp_path),
            ).to_arrow_table()
        row = _one_row(sink)
        note = json.loads(row["artifact_errors"])["substrait"]
        assert "use sql_text=raw to keep them" in note
        assert row["explain_rows_artifact_path"].split("/")[-1].startswith(run.run_id)
