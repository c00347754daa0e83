"""Every run row is recorded whatever the application's sampler, span limits and metadata.

Real SDK providers (the global one where the scenario needs it), real DataFusion queries.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from datafusion import SessionContext
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode, format_trace_id

import datafusion_otel
from datafusion_otel import (
    DataFusionInstrumentor,
    DiagnosticsCollector,
    finish_run,
    start_run,
    tracked_run,
)
from datafusion_otel import attributes as attr
from datafusion_otel._processing import span_rows as _span_rows
from datafusion_otel._processing.run_metadata import AUTO_RUN, EXPORTED, MAX_VALUES, NOTES
from datafusion_otel._processing.span_rows import register_auto_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from otel_state import Handles, handles_fixture  # noqa: F401

RUNS = "datafusion_runs_v1"


def _rows(sink: DiagnosticsCollector) -> list[dict[str, object]]:
    datafusion_otel.force_flush(10)
    return sink.events_snapshot().get(RUNS, [])


def _row_of(sink: DiagnosticsCollector, run_id: str) -> dict[str, object]:
    rows = [r for r in _rows(sink) if r["run_id"] == run_id]
    assert len(rows) == 1, rows
    return rows[0]


def _ctx() -> SessionContext:
    ctx = SessionContext()
    ctx.from_pydict({"k": [1, 2, 3], "v": [10, 20, 30]}, name="t")
    return ctx


@pytest.fixture
def ratio_provider(handles: Handles) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A global SDK provider that samples a quarter of the traces, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.25)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield provider, exporter
    provider.shutdown()


class TestApplicationSampler:
    """A query before the first run never leaves the package a tracer with the app's sampler."""

    RUN_COUNT = 400

    def _many_runs(self, sink: DiagnosticsCollector) -> set[str]:
        ids = set()
        for index in range(self.RUN_COUNT):
            with tracked_run(label=f"run-{index}", sink=sink) as run:
                ids.add(run.run_id)
        return ids

    def test_bridge_query_first(self, ratio_provider: tuple[TracerProvider, object]) -> None:
        ctx = _ctx()
        options = DataFusionCompileOptions(capture_plan_artifacts=True)
        sql_to_datafusion("SELECT k FROM t", ctx=ctx, options=options).collect()
        sink = DiagnosticsCollector()
        ids = self._many_runs(sink)
        assert {r["run_id"] for r in _rows(sink)} == ids  # all 400, not the sampled quarter

    def test_instrumentor_query_first(self, ratio_provider: tuple[TracerProvider, object]) -> None:
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(auto_run=False, capture_plan_artifacts=True)
        sink = DiagnosticsCollector()
        ids = set()
        try:
            ctx = _ctx()
            ctx.sql("SELECT k FROM t").collect()
            for index in range(self.RUN_COUNT):
                with tracked_run(label=f"run-{index}", sink=sink) as run:
                    ctx.sql("SELECT k FROM t WHERE v > 10").collect()
                ids.add(run.run_id)
        finally:
            instrumentor.uninstrument()
        assert {r["run_id"] for r in _rows(sink)} == ids
        artifacts = sink.events_snapshot().get("datafusion_plan_artifacts_v1", [])
        assert {r["run_id"] for r in artifacts} == ids  # execution spans were recorded too

    def test_sampler_replaced_after_first_run(
        self, ratio_provider: tuple[TracerProvider, object]
    ) -> None:
        provider, _ = ratio_provider
        sink = DiagnosticsCollector()
        with tracked_run(label="first", sink=sink):
            pass
        provider.sampler = ParentBased(TraceIdRatioBased(0.25))  # the app changes its mind
        ids = self._many_runs(sink)
        assert ids <= {r["run_id"] for r in _rows(sink)}


class TestApplicationLimits:
    """The row is read from the run itself, never parsed back from cut span attributes."""

    def test_value_length_limit_cuts_only_the_export_preview(self) -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=2048))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        datafusion_otel.configure(tracer_provider=provider)
        sink = DiagnosticsCollector()
        long_message = "x" * 5000
        with (
            pytest.raises(RuntimeError),
            tracked_run(label="long", sink=sink, metadata={"note": "y" * 3000}) as run,
        ):
            raise RuntimeError(long_message)
        row = _row_of(sink, run.run_id)
        metadata = json.loads(str(row["metadata"]))
        assert row["status"] == "failed"
        assert metadata["note"] == "y" * 3000
        assert metadata["error_message"] == long_message
        (span,) = [s for s in exporter.get_finished_spans() if s.parent is None]
        assert len(str((span.attributes or {})["datafusion.run.metadata"])) == 2048

    @pytest.mark.parametrize("limit", ["2048", "40"])
    def test_env_value_length_limit(self, monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
        monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", limit)
        provider = TracerProvider()  # reads the limit from the environment, as apps do
        datafusion_otel.configure(tracer_provider=provider)
        sink = DiagnosticsCollector()
        with tracked_run(label="env-limit", sink=sink, metadata={"big": "z" * 4000}) as run:
            pass
        metadata = json.loads(str(_row_of(sink, run.run_id)["metadata"]))
        assert metadata["big"] == "z" * 4000

    def test_auto_run_with_cut_metadata_keeps_its_row(self) -> None:
        provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=40))
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=provider, sink=sink)
        instrumentor = DataFusionInstrumentor()
        instrumentor.instrument(auto_run=True)
        try:
            ctx = SessionContext()
            ctx.from_pydict({"s": ["abc", "1"]}, name="t")
            with pytest.raises(Exception, match="Cannot cast"):
                ctx.sql("SELECT CAST(s AS INT) AS x FROM t").collect()
        finally:
            instrumentor.uninstrument()
        (row,) = _rows(sink)
        assert row["status"] == "failed"
        metadata = json.loads(str(row["metadata"]))
        assert metadata[NOTES]
        assert metadata["error_type"] == "Exception"

    def test_attribute_count_limit_evicting_run_attributes(self) -> None:
        provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
        datafusion_otel.configure(tracer_provider=provider)
        sink = DiagnosticsCollector()
        with tracked_run(label="few-attributes", sink=sink, metadata={"a": 1}) as run:
            trace.get_current_span().set_attribute("app.extra", 1)
        row = _row_of(sink, run.run_id)
        assert row["label"] == "few-attributes"
        assert json.loads(str(row["metadata"]))["a"] == 1

    def test_registered_auto_run_root_survives_eviction_of_every_run_attribute(self) -> None:
        # what the instrumentation does for a failing auto run, with 2 attributes per span:
        # register the root when it starts, set the run attributes, then the error ones
        provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=provider, sink=sink)
        span = provider.get_tracer("app").start_span("SELECT t")
        register_auto_run(span)
        span.set_attributes({attr.RUN_ID: "x", attr.RUN_EXPORTED: True, attr.RUN_STATUS: "failed"})
        span.set_attributes({"error.type": "Exception", "app.extra": 1})  # evict all run ones
        span.set_status(Status(StatusCode.ERROR, "Exception: Cannot cast string ?"))
        span.end()
        run_id = format_trace_id(span.get_span_context().trace_id)
        del span  # the registration lives as long as the span object
        row = _row_of(sink, run_id)
        assert row["status"] == "failed"
        metadata = json.loads(str(row["metadata"]))
        assert metadata[AUTO_RUN] is True
        assert metadata["error_type"] == "Exception"
        assert metadata["error_message"] == "Cannot cast string ?"
        assert any("evicted" in note for note in metadata[NOTES])
        assert not _span_rows._auto_runs  # nothing left behind once the span is gone


class _RaisingProcessor(SpanProcessor):
    """An application processor whose on_end raises (the SDK does not catch it)."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("application processor failed")


class TestApplicationProcessors:
    """An application processor raising before ours costs no run row and no exception."""

    def test_raising_processor_first(self) -> None:
        provider = TracerProvider()
        provider.add_span_processor(_RaisingProcessor())
        datafusion_otel.configure(tracer_provider=provider)
        sink = DiagnosticsCollector()
        with tracked_run(label="after-a-raising-processor", sink=sink, metadata={"a": 1}) as run:
            _ctx().sql("SELECT 1").collect()
        assert run.status == "completed"
        row = _row_of(sink, run.run_id)
        assert json.loads(str(row["metadata"]))["a"] == 1


class TestMetadataSnapshot:
    """Metadata is snapshotted and coerced when the run ends; a bad value becomes a note."""

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            (Decimal(1), "Decimal is not JSON serializable"),
            (float("nan"), "nan is not valid JSON"),
            (float("inf"), "inf is not valid JSON"),
        ],
    )
    def test_bad_value_added_during_the_run_is_a_note(
        self, configured: object, value: object, why: str
    ) -> None:
        sink = DiagnosticsCollector()
        with tracked_run(label="bad-value", sink=sink, metadata={"ok": 1}) as run:
            run.metadata["x"] = value
        assert run.status == "completed"
        row = _row_of(sink, run.run_id)
        metadata = json.loads(str(row["metadata"]))  # valid JSON: no NaN, no Infinity
        assert metadata["ok"] == 1
        assert metadata["x"] is None
        assert any("['x']" in note and why in note for note in metadata[NOTES])
        assert row["metadata"] == run.payload()["metadata"]

    def test_deep_nesting_is_a_note_not_a_recursion_error(self, configured: object) -> None:
        sink = DiagnosticsCollector()
        deep: list[object] = []
        cursor = deep
        for _ in range(5000):
            cursor.append([])
            cursor = cursor[0]  # type: ignore[assignment]
        with tracked_run(label="deep", sink=sink) as run:
            run.metadata["deep"] = deep
        metadata = json.loads(str(_row_of(sink, run.run_id)["metadata"]))
        assert any("nested deeper" in note for note in metadata[NOTES])

    def test_self_reference_and_shared_objects_end(
        self, run_python: Callable[..., subprocess.CompletedProcess[str]]
    ) -> None:
        # in a subprocess: the old snapshot never ended (2**64 paths) and could not be stopped
        result = run_python(
            """
            import json
            import datafusion_otel
            from datafusion_otel import DiagnosticsCollector, tracked_run

            sink = DiagnosticsCollector()
            with tracked_run(label="cycle", sink=sink) as run:
                m = run.metadata
                m["a"] = m
                m["b"] = m
            shared = [1]
            for _ in range(60):  # 2**60 paths, 61 objects
                shared = [shared, shared]
            with tracked_run(label="shared", sink=sink, metadata={"ok": 1}) as run2:
                run2.metadata["shared"] = shared
            datafusion_otel.force_flush(10)
            rows = sink.events_snapshot()["datafusion_runs_v1"]
            print(json.dumps([[r["status"], r["metadata"]] for r in rows]))
            """,
            timeout=120,
        )
        (cycle_status, cycle_text), (shared_status, shared_text) = json.loads(result.stdout)
        assert (cycle_status, shared_status) == ("completed", "completed")
        cycle = json.loads(cycle_text)
        assert cycle["a"] is None and cycle["b"] is None
        assert sum("a cycle" in note for note in cycle[NOTES]) == 2
        shared = json.loads(shared_text)
        assert shared["ok"] == 1
        assert len(shared_text) < 200_000  # at most MAX_VALUES values were kept
        (note,) = [n for n in shared[NOTES] if "truncated" in n]
        assert f"{MAX_VALUES} values" in note

    def test_body_error_is_reraised_unchanged_with_a_bad_value(self, configured: object) -> None:
        sink = DiagnosticsCollector()
        with (  # noqa: PT012 - the body must change the metadata and then raise
            pytest.raises(KeyError),
            tracked_run(label="keyerror", sink=sink) as run,
        ):
            run.metadata["x"] = Decimal("1.5")
            raise KeyError("missing")
        assert run.status == "failed"
        row = _row_of(sink, run.run_id)
        assert row["status"] == "failed"
        assert json.loads(str(row["metadata"]))["error_type"] == "KeyError"

    def test_list_mutated_after_the_run_changes_nothing_recorded(
        self, configured: object, tmp_path: object
    ) -> None:
        sink = DiagnosticsCollector()
        items: list[object] = [1]
        with tracked_run(label="mutated", sink=sink, metadata={"items": items}) as run:
            pass
        items.append(Decimal(2))
        items.append(object())
        row = _row_of(sink, run.run_id)
        assert json.loads(str(row["metadata"]))["items"] == [1]
        finished = sink.artifacts_snapshot()["datafusion_run_finished_v1"][0]
        assert finished["metadata"]["items"] == [1]
        started = sink.artifacts_snapshot()["datafusion_run_started_v1"][0]
        assert started["metadata"]["items"] == [1]

    def test_big_int_is_kept(self, configured: object) -> None:
        sink = DiagnosticsCollector()
        with tracked_run(label="big", sink=sink, metadata={"n": 2**70}) as run:
            pass
        assert json.loads(str(_row_of(sink, run.run_id)["metadata"]))["n"] == 2**70

    def test_finish_run_with_bad_metadata_finishes(self, configured: object) -> None:
        sink = DiagnosticsCollector()
        run = start_run(label="finish-bad", sink=sink)
        finish_run(run, metadata={"obj": object()})
        assert run.status == "completed"
        metadata = json.loads(str(_row_of(sink, run.run_id)["metadata"]))
        assert metadata["obj"] is None
        assert EXPORTED in metadata

    def test_sink_that_is_not_a_sink_is_rejected_at_start(self, configured: object) -> None:
        with pytest.raises(TypeError, match="sink must be a DiagnosticsSink"):
            start_run(label="bad-sink", sink=object())  # type: ignore[arg-type]
        assert datafusion_otel.current_run() is None


class TestReservedKeys:
    """The package's keys live under ``datafusion_otel.``; the user's keys are the user's."""

    def test_user_keys_named_like_ours_survive(self, configured: object) -> None:
        sink = DiagnosticsCollector()
        user = {"exported": "yes", "auto_run": 7, "error_type": "mine", "error_message": "m"}
        with (
            pytest.raises(ValueError),
            tracked_run(label="reserved", sink=sink, metadata=user) as run,
        ):
            raise ValueError("boom")
        row = _row_of(sink, run.run_id)
        metadata = json.loads(str(row["metadata"]))
        for key, value in user.items():
            assert metadata[key] == value
        assert metadata["datafusion_otel.error_type"] == "ValueError"
        assert metadata["datafusion_otel.error_message"] == "boom"
        assert isinstance(metadata[EXPORTED], bool)
        assert row["metadata"] == run.payload()["metadata"]
