"""DiagnosticsSpanProcessor and sink delivery: rows exactly once, never failing or slowing runs."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import datafusion_otel
from datafusion_otel import DiagnosticsCollector, DiagnosticsSpanProcessor, tracked_run
from datafusion_otel._processing.delivery import dispatcher
from datafusion_otel._spans.payloads import add_payload_event

QUERY = "SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k"


class RaisingSink:
    """A sink whose every call fails."""

    def __init__(self) -> None:
        self.calls = 0

    def record_events(self, name, rows):
        self.calls += 1
        raise RuntimeError("sink is down")

    def record_artifact(self, name, payload):
        self.calls += 1
        raise RuntimeError("sink is down")


class InlineRaisingSink(RaisingSink):
    """A failing sink that claims to be non-blocking (called on the caller's thread)."""

    nonblocking = True


class SlowSink(DiagnosticsCollector):
    """A sink doing slow I/O (no ``nonblocking`` promise)."""

    nonblocking = False

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def record_events(self, name, rows):
        time.sleep(self.delay)
        super().record_events(name, rows)

    def record_artifact(self, name, payload):
        time.sleep(self.delay)
        super().record_artifact(name, payload)


class BlockedSink(DiagnosticsCollector):
    """A sink that blocks until released."""

    nonblocking = False

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def record_events(self, name, rows):
        self.release.wait(30)
        super().record_events(name, rows)

    def record_artifact(self, name, payload):
        self.release.wait(30)
        super().record_artifact(name, payload)


class TestFailingSinks:
    """A sink that raises never changes the query's result nor the run's outcome."""

    @pytest.mark.parametrize("sink_type", [RaisingSink, InlineRaisingSink])
    def test_query_result_unchanged_and_error_logged_once_and_counted(
        self, configured, ctx, caplog, sink_type
    ):
        expected = ctx.sql(QUERY).to_arrow_table()
        sink = sink_type()
        failed_before = dispatcher.stats().failed
        caplog.set_level(logging.ERROR, logger="datafusion_otel.delivery")
        runs = []
        for _ in range(3):
            with tracked_run(label="raising", sink=sink) as run:
                result = ctx.sql(QUERY).to_arrow_table()
            assert result.equals(expected)
            assert run.status == "completed"
            runs.append(run)
        assert datafusion_otel.force_flush(timeout=5) is False
        assert sink.calls == 9  # started, finished, runs row: three runs
        assert dispatcher.stats().failed - failed_before == 9
        spans = configured.exporter.get_finished_spans()
        assert {s.context.trace_id for s in spans} == {int(r.run_id, 16) for r in runs}
        assert all(s.status.status_code is StatusCode.OK for s in spans)
        records = [r for r in caplog.records if r.name == "datafusion_otel.delivery"]
        names = [
            "datafusion_run_started_v1",
            "datafusion_run_finished_v1",
            "datafusion_runs_v1",
        ]
        assert len(records) == len(names)  # once per sink and record name, not per failure
        for name in names:
            (record,) = [r for r in records if name in r.getMessage()]
            assert sink_type.__name__ in record.getMessage()
            assert "RuntimeError" in record.getMessage()  # type and frames, no message
        # the failure was reported by that flush; later clean deliveries flush clean
        assert datafusion_otel.force_flush(timeout=5) is True

    def test_failing_sink_does_not_affect_another_runs_sink(self, configured, ctx):
        good = DiagnosticsCollector()
        with tracked_run(label="bad", sink=RaisingSink()):
            ctx.sql(QUERY).to_arrow_table()
        with tracked_run(label="good", sink=good) as run:
            ctx.sql(QUERY).to_arrow_table()
        datafusion_otel.force_flush(timeout=5)
        (row,) = good.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id


class TestSlowSinks:
    """Slow sinks are called off the caller's thread; force_flush honours its timeout."""

    def test_run_does_not_wait_for_a_slow_sink(self, configured, ctx):
        sink = SlowSink(delay=0.5)
        entered = time.perf_counter()
        with tracked_run(label="slow", sink=sink) as run:
            inside = time.perf_counter()
            result = ctx.sql(QUERY).to_arrow_table()
            exiting = time.perf_counter()
        exited = time.perf_counter()
        assert inside - entered < 0.25
        assert exited - exiting < 0.25
        assert result.column("s").to_pylist() == [10, 50, 40]
        assert sink.events_snapshot() == {}  # nothing delivered yet: all of it is queued
        assert datafusion_otel.force_flush(timeout=5) is True
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id
        assert row["status"] == "completed"
        artifacts = sink.artifacts_snapshot()
        assert len(artifacts["datafusion_run_started_v1"]) == 1
        assert len(artifacts["datafusion_run_finished_v1"]) == 1

    def test_force_flush_gives_up_at_its_timeout(self, configured):
        sink = BlockedSink()
        try:
            with tracked_run(label="blocked", sink=sink) as run:
                pass
            started = time.perf_counter()
            assert datafusion_otel.force_flush(timeout=0.3) is False
            assert time.perf_counter() - started < 3.0  # gave up: the sink stays blocked
            assert dispatcher.stats().pending > 0
        finally:
            sink.release.set()
        assert datafusion_otel.force_flush(timeout=5) is True
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id

    def test_nonblocking_sink_is_always_called_inline_and_a_slow_one_is_warned(
        self, configured, caplog
    ):
        class SlowInline(SlowSink):
            nonblocking = True

        sink = SlowInline(delay=0.06)
        caplog.set_level(logging.WARNING, logger="datafusion_otel.delivery")
        runs = []
        for label in ("first", "second"):
            with tracked_run(label=label, sink=sink) as run:
                pass
            runs.append(run)
            # delivered on the caller's thread: the row is there when the block exits
            rows = sink.events_snapshot()["datafusion_runs_v1"]
            assert rows[-1]["run_id"] == run.run_id
        assert len(sink.events_snapshot()["datafusion_runs_v1"]) == 2
        warned = [r for r in caplog.records if "declares nonblocking" in r.getMessage()]
        assert len(warned) == 1


class TestExactlyOnce:
    """Each sink receives each row once, whichever way it was given."""

    def test_same_sink_for_configure_and_run(self, sdk, ctx):
        sink = DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=sdk.provider, sink=sink)
        with tracked_run(label="same", sink=sink) as run:
            ctx.sql(QUERY).to_arrow_table()
        datafusion_otel.force_flush(timeout=5)
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id
        artifacts = sink.artifacts_snapshot()
        assert len(artifacts["datafusion_run_started_v1"]) == 1
        assert len(artifacts["datafusion_run_finished_v1"]) == 1

    def test_separate_configure_and_run_sinks_each_get_the_row(self, sdk, ctx):
        everything, this_run = DiagnosticsCollector(), DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=sdk.provider, sink=everything)
        with tracked_run(label="separate", sink=this_run) as run:
            ctx.sql(QUERY).to_arrow_table()
        with tracked_run(label="no-run-sink") as other:
            ctx.sql(QUERY).to_arrow_table()
        datafusion_otel.force_flush(timeout=5)
        assert [r["run_id"] for r in this_run.events_snapshot()["datafusion_runs_v1"]] == [
            run.run_id
        ]
        assert [r["run_id"] for r in everything.events_snapshot()["datafusion_runs_v1"]] == [
            run.run_id,
            other.run_id,
        ]

    def test_processor_added_by_hand_with_the_run_sink(self, sdk, ctx):
        sink = DiagnosticsCollector()
        sdk.provider.add_span_processor(DiagnosticsSpanProcessor(sink))
        datafusion_otel.configure(tracer_provider=sdk.provider)
        with tracked_run(label="by-hand", sink=sink) as run:
            ctx.sql(QUERY).to_arrow_table()
        with tracked_run(label="by-hand-no-sink"):
            pass
        rows = sink.events_snapshot()["datafusion_runs_v1"]
        assert [r["label"] for r in rows] == ["by-hand", "by-hand-no-sink"]
        assert rows[0]["run_id"] == run.run_id

    def test_processor_rows_build_a_valid_table(self, configured, sink, ctx):
        for label in ("a", "b"):
            with tracked_run(label=label, sink=sink, metadata={"label": label}):
                ctx.sql(QUERY).to_arrow_table()
        table = datafusion_otel.datafusion_runs_table(sink.events_snapshot()["datafusion_runs_v1"])
        assert table.schema.equals(datafusion_otel.DATAFUSION_RUNS_V1)
        assert table.column("label").to_pylist() == ["a", "b"]


class TestPayloadEvents:
    """datafusion.plan_artifacts span events of a run become plan-artifact rows of that run."""

    @staticmethod
    def _row(sql: str) -> dict[str, object]:
        return {
            "event_time_unix_ms": int(time.time() * 1000),
            "run_id": None,
            "span_id": None,
            "sql": sql,
            "physical_plan": "x" * 10_000,
            "partition_count": 1,
            "join_operators": [],
        }

    def test_event_on_a_child_span_becomes_a_row_of_the_run(self, configured, ctx):
        everything, this_run = DiagnosticsCollector(), DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=configured.provider, sink=everything)
        tracer = configured.provider.get_tracer("test")
        row = self._row(QUERY)
        with (
            tracked_run(label="artifacts", sink=this_run) as run,
            tracer.start_as_current_span("query") as span,
        ):
            ctx.sql(QUERY).to_arrow_table()
            attached = add_payload_event(
                span,
                "datafusion.plan_artifacts",
                {"datafusion.sql.preview": QUERY[:20], "datafusion.partition_count": 1},
                table="datafusion_plan_artifacts_v1",
                rows=[row],
            )
            span_id = f"{span.get_span_context().span_id:016x}"
        assert attached is True
        for sink in (everything, this_run):
            (got,) = sink.events_snapshot()["datafusion_plan_artifacts_v1"]
            assert got == {**row, "run_id": run.run_id, "span_id": span_id}
            table = datafusion_otel.datafusion_plan_artifacts_table([got])
            assert table.column("run_id").to_pylist() == [run.run_id]
        exported = {s.name: s for s in configured.exporter.get_finished_spans()}
        (event,) = exported["query"].events
        assert event.name == "datafusion.plan_artifacts"
        assert dict(event.attributes) == {
            "datafusion.sql.preview": QUERY[:20],
            "datafusion.partition_count": 1,
        }

    def test_event_on_the_root_span_with_zero_config(self, ctx):
        sink = DiagnosticsCollector()
        with tracked_run(label="root-event", sink=sink) as run:
            ctx.sql(QUERY).to_arrow_table()
            add_payload_event(
                run.span,
                "datafusion.plan_artifacts",
                {"datafusion.sql.preview": "SELECT"},
                table="datafusion_plan_artifacts_v1",
                rows=[self._row("SELECT 1"), self._row("SELECT 2")],
            )
        rows = sink.events_snapshot()["datafusion_plan_artifacts_v1"]
        assert [r["sql"] for r in rows] == ["SELECT 1", "SELECT 2"]
        assert {r["run_id"] for r in rows} == {run.run_id}
        (run_row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert run_row["run_id"] == run.run_id


class TestProcessorRobustness:
    """on_end never raises into the program, whatever span it is given."""

    @pytest.mark.parametrize(
        "span",
        [
            object(),
            None,
            ReadableSpan(name="attrs-only", attributes={"datafusion.run.id": 7}),
        ],
        ids=["object", "none", "attrs-only"],
    )
    def test_on_end_never_raises(self, span, caplog):
        sink = DiagnosticsCollector()
        processor = DiagnosticsSpanProcessor(sink)
        caplog.set_level(logging.ERROR, logger="datafusion_otel.processor")
        processor.on_end(span)
        processor.on_end(span)
        assert sink.events_snapshot() == {}
        assert len([r for r in caplog.records if r.name == "datafusion_otel.processor"]) == 1
        assert processor.force_flush(5_000) is False  # the lost span is reported once
        assert processor.force_flush(5_000) is True

    def test_a_span_with_nothing_to_record_is_not_an_error(self, caplog):
        sink = DiagnosticsCollector()
        processor = DiagnosticsSpanProcessor(sink)
        processor.on_end(ReadableSpan(name="no-context"))
        assert sink.events_snapshot() == {}
        assert not [r for r in caplog.records if r.name == "datafusion_otel.processor"]
        assert processor.force_flush(5_000) is True

    def test_processor_keeps_working_after_a_bad_span(self, sdk, ctx):
        sink = DiagnosticsCollector()
        telemetry = datafusion_otel.configure(tracer_provider=sdk.provider, sink=sink)
        telemetry.processor.on_end(object())  # type: ignore[arg-type]
        with tracked_run(label="after") as run:
            ctx.sql(QUERY).to_arrow_table()
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id


class TestRoutingEdges:
    """A run's sink keeps receiving its rows in the less common orders of events."""

    def test_child_span_ending_after_its_run_reaches_the_run_sink(self, configured, sink):
        tracer = configured.provider.get_tracer("test")
        with tracked_run(label="outlives", sink=sink) as run:
            late = tracer.start_span("stream")
        row = {"event_time_unix_ms": 1, "sql": "SELECT 1", "span_id": None}
        add_payload_event(
            late,
            "datafusion.plan_artifacts",
            {"x": 1},
            table="datafusion_plan_artifacts_v1",
            rows=[row],
        )
        late.end()  # after the run's root span
        (artifact_row,) = sink.events_snapshot()["datafusion_plan_artifacts_v1"]
        assert artifact_row["run_id"] == run.run_id

    def test_configure_again_replaces_the_package_sink(self, sdk):
        first, second = DiagnosticsCollector(), DiagnosticsCollector()
        datafusion_otel.configure(tracer_provider=sdk.provider, sink=first)
        datafusion_otel.configure(tracer_provider=sdk.provider, sink=second)
        with tracked_run(label="after-reconfigure"):
            pass
        assert "datafusion_runs_v1" not in first.events_snapshot()
        assert len(second.events_snapshot()["datafusion_runs_v1"]) == 1


class TestFlushMarks:
    """A loss is reported to every flushing caller, whichever flushes first."""

    def test_each_caller_hears_about_a_failure(self, configured, sink):
        failing = RaisingSink()
        processor = DiagnosticsSpanProcessor(failing)
        configured.provider.add_span_processor(processor)
        with tracked_run(label="lost"):
            pass
        # the provider flushes first (it flushes the processor), and is told ...
        assert configured.provider.force_flush() is False
        # ... which does not hide the failure from the package-level flush
        assert datafusion_otel.force_flush(5) is False
        assert datafusion_otel.force_flush(5) is True
        assert processor.force_flush(5_000) is True  # the processor's caller was told already
