"""configure() and provider resolution: user provider, global SDK provider, zero-config fallback."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, DiagnosticsSpanProcessor, tracked_run
from datafusion_otel.config import reset, resolve_provider

QUERY = "SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k"


class TestConfigure:
    """configure() attaches the diagnostics processor to the user's SDK provider."""

    def test_run_spans_are_created_by_the_users_provider(self, sdk, ctx):
        sink = DiagnosticsCollector()
        telemetry = datafusion_otel.configure(tracer_provider=sdk.provider, sink=sink)
        assert telemetry.tracer_provider is sdk.provider
        assert isinstance(telemetry.processor, DiagnosticsSpanProcessor)
        assert telemetry.processor.sink is sink
        with tracked_run(label="user-provider", metadata={"n": 1}) as run:
            ctx.sql(QUERY).to_arrow_table()
        (span,) = sdk.exporter.get_finished_spans()
        assert span.context.trace_id == int(run.run_id, 16)
        assert span.attributes["datafusion.run.id"] == run.run_id
        assert span.attributes["datafusion.run.label"] == "user-provider"
        assert span.attributes["datafusion.run.status"] == "completed"
        assert json.loads(span.attributes["datafusion.run.metadata"]) == {
            "n": 1,
            "datafusion_otel.exported": True,
        }
        assert span.instrumentation_scope.name == "datafusion_otel"
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id
        assert telemetry.force_flush(timeout=5) is True
        assert telemetry.delivery_stats().pending == 0

    def test_configure_twice_with_the_same_provider_keeps_one_processor(self, sdk):
        first = datafusion_otel.configure(tracer_provider=sdk.provider)
        second = datafusion_otel.configure(tracer_provider=sdk.provider)
        assert second.processor is first.processor
        sink = DiagnosticsCollector()
        with tracked_run(label="once", sink=sink):
            pass
        assert len(sink.events_snapshot()["datafusion_runs_v1"]) == 1

    @pytest.mark.parametrize("bad", [object(), trace.NoOpTracerProvider(), "provider"])
    def test_rejects_a_provider_that_is_not_an_sdk_provider(self, bad):
        with pytest.raises(TypeError, match=r"opentelemetry\.sdk\.trace\.TracerProvider"):
            datafusion_otel.configure(tracer_provider=bad)
        assert resolve_provider() is not bad

    def test_reset_forgets_the_configured_provider(self, sdk):
        datafusion_otel.configure(tracer_provider=sdk.provider)
        assert resolve_provider() is sdk.provider
        reset()
        fallback = resolve_provider()
        assert fallback is not sdk.provider
        assert isinstance(fallback, TracerProvider)
        with tracked_run(label="after-reset"):
            pass
        assert sdk.exporter.get_finished_spans() == ()

    def test_telemetry_force_flush_reports_a_failed_sink(self, sdk):
        class Broken:
            def record_events(self, name, rows):
                raise OSError("disk full")

            def record_artifact(self, name, payload):
                raise OSError("disk full")

        telemetry = datafusion_otel.configure(tracer_provider=sdk.provider)
        with tracked_run(label="broken", sink=Broken()) as run:
            pass
        assert run.status == "completed"
        assert telemetry.force_flush(timeout=5) is False
        assert telemetry.delivery_stats().failed >= 3


class TestZeroConfig:
    """With no OpenTelemetry setup, runs work on a private provider that is never global."""

    def test_runs_work_without_any_configuration(self, run_python):
        result = run_python(
            """
            import json
            from datafusion import SessionContext
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from datafusion_otel import DiagnosticsCollector, tracked_run
            from datafusion_otel.config import resolve_provider

            ctx = SessionContext()
            ctx.from_pydict({"x": [1, 2, 3]}, name="t")
            sink = DiagnosticsCollector()
            with tracked_run(label="zero-config", sink=sink) as run:
                table = ctx.sql("SELECT sum(x) AS s FROM t").to_arrow_table()
            rows = sink.events_snapshot()["datafusion_runs_v1"]
            print(json.dumps({
                "sum": table.column("s").to_pylist(),
                "run_id": run.run_id,
                "trace_id": format(run.span.get_span_context().trace_id, "032x"),
                "rows": rows,
                "artifacts": sorted(sink.artifacts_snapshot()),
                "global": type(trace.get_tracer_provider()).__name__,
                "fallback_is_sdk": isinstance(resolve_provider(), TracerProvider),
            }))
            """
        )
        out = json.loads(result.stdout)
        assert out["sum"] == [6]
        assert out["run_id"] == out["trace_id"]
        assert [(r["run_id"], r["status"]) for r in out["rows"]] == [(out["run_id"], "completed")]
        assert out["artifacts"] == ["datafusion_run_finished_v1", "datafusion_run_started_v1"]
        assert out["global"] == "ProxyTracerProvider"
        assert out["fallback_is_sdk"] is True


class TestGlobalSdkProvider:
    """When the global provider is an SDK provider, run spans reach its exporters."""

    def test_run_spans_reach_the_global_providers_exporter(self, run_python):
        result = run_python(
            """
            import json
            from datafusion import SessionContext
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
            from datafusion_otel import DiagnosticsCollector, tracked_run

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)

            ctx = SessionContext()
            ctx.from_pydict({"x": [1, 2, 3]}, name="t")
            sink = DiagnosticsCollector()
            with trace.get_tracer("app").start_as_current_span("request") as request:
                with tracked_run(label="global", sink=sink) as run:
                    ctx.sql("SELECT sum(x) FROM t").to_arrow_table()
            spans = exporter.get_finished_spans()
            run_spans = [s for s in spans if s.name == "global"]
            print(json.dumps({
                "run_id": run.run_id,
                "span_trace_ids": [format(s.context.trace_id, "032x") for s in run_spans],
                "parents": [s.parent is None for s in run_spans],
                "links": [
                    [format(l.context.span_id, "016x") for l in s.links] for s in run_spans
                ],
                "request_span_id": format(request.get_span_context().span_id, "016x"),
                "rows": [r["run_id"] for r in sink.events_snapshot()["datafusion_runs_v1"]],
            }))
            """
        )
        out = json.loads(result.stdout)
        assert out["span_trace_ids"] == [out["run_id"]]
        assert out["parents"] == [True]
        assert out["links"] == [[out["request_span_id"]]]
        assert out["rows"] == [out["run_id"]]

    def test_configure_without_provider_uses_and_sets_the_global_one(self, run_python):
        result = run_python(
            """
            import json
            from opentelemetry import trace
            import datafusion_otel
            from datafusion_otel import DiagnosticsCollector, tracked_run

            sink = DiagnosticsCollector()
            telemetry = datafusion_otel.configure(sink=sink)
            with tracked_run(label="configured") as run:
                pass
            print(json.dumps({
                "global_is_ours": trace.get_tracer_provider() is telemetry.tracer_provider,
                "rows": [r["run_id"] for r in sink.events_snapshot()["datafusion_runs_v1"]],
                "run_id": run.run_id,
                "flushed": telemetry.shutdown(timeout=5),
            }))
            """
        )
        out = json.loads(result.stdout)
        assert out["global_is_ours"] is True
        assert out["rows"] == [out["run_id"]]
        assert out["flushed"] is True
