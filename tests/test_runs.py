"""Runs: root spans whose trace id is the run id, lifecycle, failures, nesting and context."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import uuid
import warnings

import pytest
from datafusion import SessionContext
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import datafusion_otel
from datafusion_otel.runs import (
    DataFusionRun,
    DataFusionRunWarning,
    current_run,
    finish_run,
    start_run,
    tracked_run,
)


def _user_metadata(row: dict) -> dict:
    """The row's metadata without ``datafusion_otel.exported``, which the package adds."""
    metadata = json.loads(row["metadata"])
    assert isinstance(metadata.pop("datafusion_otel.exported"), bool)
    return metadata


def _span_of(run: DataFusionRun, spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    matches = [s for s in spans if s.context.trace_id == int(run.run_id, 16) and s.parent is None]
    assert len(matches) == 1, [s.name for s in spans]
    return matches[0]


def _rows_of(sink: datafusion_otel.DiagnosticsCollector, run: DataFusionRun) -> list[dict]:
    rows = sink.events_snapshot().get("datafusion_runs_v1", [])
    return [row for row in rows if row["run_id"] == run.run_id]


class TestRunIdentity:
    """A run is a new root span and its id is that span's trace id."""

    def test_run_id_is_the_root_span_trace_id(self, configured, sink, ctx):
        with tracked_run(label="ids", sink=sink) as run:
            ctx.sql("SELECT sum(v) FROM t").to_arrow_table()
        span = _span_of(run, configured.exporter.get_finished_spans())
        assert run.run_id == f"{span.context.trace_id:032x}"
        assert span.context.trace_id == int(run.run_id, 16)
        assert uuid.UUID(hex=run.run_id).hex == run.run_id
        assert span.parent is None
        assert span.name == "ids"
        assert span.links == ()

    def test_root_span_links_to_the_active_span_and_is_not_its_child(self, configured, sink):
        tracer = configured.provider.get_tracer("app")
        with tracer.start_as_current_span("request") as outer:
            run = start_run(label="linked", sink=sink)
            finish_run(run)
        span = _span_of(run, configured.exporter.get_finished_spans())
        assert span.parent is None
        assert span.context.trace_id != outer.get_span_context().trace_id
        assert [link.context for link in span.links] == [outer.get_span_context()]

    def test_every_run_gets_a_distinct_id(self, configured):
        ids = set()
        for _ in range(20):
            with tracked_run(label="many") as run:
                pass
            ids.add(run.run_id)
        assert len(ids) == 20

    def test_payload_is_a_runs_row(self, configured):
        run = start_run(label="payload", metadata={"user": "admin"})
        running = run.payload()
        assert running["status"] == "running"
        assert running["end_time_unix_ms"] is None
        assert running["duration_ms"] is None
        finish_run(run, metadata={"rows": 3})
        row = run.payload()
        assert set(row) == set(datafusion_otel.DATAFUSION_RUNS_V1.names)
        assert row["status"] == "completed"
        assert row["duration_ms"] == row["end_time_unix_ms"] - row["start_time_unix_ms"] >= 0
        assert json.loads(row["metadata"]) == {
            "user": "admin",
            "rows": 3,
            "datafusion_otel.exported": True,
        }
        assert datafusion_otel.datafusion_runs_table([row]).num_rows == 1


class TestLifecycle:
    """start_run / finish_run / tracked_run record artifacts, rows and the span once each."""

    def test_tracked_run_records_artifacts_and_one_row(self, configured, sink, ctx):
        with tracked_run(label="pipeline", sink=sink, metadata={"owner": "etl"}) as run:
            assert current_run() is run
            table = ctx.sql("SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k").to_arrow_table()
        assert table.column("s").to_pylist() == [10, 50, 40]
        assert current_run() is None
        artifacts = sink.artifacts_snapshot()
        (started,) = artifacts["datafusion_run_started_v1"]
        (finished,) = artifacts["datafusion_run_finished_v1"]
        assert started["run_id"] == finished["run_id"] == run.run_id
        assert started["label"] == "pipeline"
        assert started["metadata"] == {"owner": "etl"}
        assert started["start_time_unix_ms"] == run.start_time_unix_ms
        assert finished["status"] == "completed"
        assert finished["end_time_unix_ms"] == run.end_time_unix_ms
        (row,) = sink.events_snapshot()["datafusion_runs_v1"]
        assert row["run_id"] == run.run_id
        assert row["status"] == "completed"
        assert row["label"] == "pipeline"
        assert _user_metadata(row) == {"owner": "etl"}
        span = _span_of(run, configured.exporter.get_finished_spans())
        assert span.status.status_code is StatusCode.OK

    def test_finish_run_merges_metadata_into_row_and_span(self, configured, sink):
        run = start_run(label="merge", sink=sink, metadata={"a": 1})
        finish_run(run, metadata={"b": [1, 2]})
        assert run.metadata == {"a": 1, "b": [1, 2]}
        (row,) = _rows_of(sink, run)
        assert _user_metadata(row) == {"a": 1, "b": [1, 2]}
        span = _span_of(run, configured.exporter.get_finished_spans())
        assert span.attributes["datafusion.run.metadata"] == row["metadata"]  # the same text

    def test_finish_run_with_other_sink_sends_finished_artifact_there(self, configured, sink):
        other = datafusion_otel.DiagnosticsCollector()
        run = start_run(label="other", sink=sink)
        finish_run(run, sink=other)
        assert "datafusion_run_finished_v1" not in sink.artifacts_snapshot()
        (finished,) = other.artifacts_snapshot()["datafusion_run_finished_v1"]
        assert finished["run_id"] == run.run_id

    def test_second_finish_warns_and_changes_nothing(self, configured, sink):
        run = start_run(label="twice", sink=sink)
        finish_run(run, status="failed", metadata={"reason": "first"})
        before = run.payload()
        with pytest.warns(DataFusionRunWarning, match="already failed"):
            again = finish_run(run, status="completed", metadata={"reason": "second"})
        assert again is run
        assert run.payload() == before
        assert len(sink.artifacts_snapshot()["datafusion_run_finished_v1"]) == 1
        assert len(_rows_of(sink, run)) == 1
        assert len(configured.exporter.get_finished_spans()) == 1
        with pytest.warns(DataFusionRunWarning):  # never raises, even with a bad status
            finish_run(run, status="nonsense")  # type: ignore[arg-type]

    def test_finish_inside_tracked_run_then_exit_does_not_finish_again(self, configured, sink):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with tracked_run(label="early", sink=sink) as run:
                finish_run(run, status="failed")
        assert run.status == "failed"
        assert len(_rows_of(sink, run)) == 1

    def test_finish_with_bad_status_raises_and_keeps_the_run_running(self, configured, sink):
        run = start_run(label="bad-status", sink=sink)
        with pytest.raises(ValueError, match="status must be one of"):
            finish_run(run, status="running")
        with pytest.raises(ValueError, match="'done'"):
            finish_run(run, status="done")  # type: ignore[arg-type]
        assert run.status == "running"
        assert current_run() is run
        finish_run(run)
        assert run.status == "completed"
        assert len(_rows_of(sink, run)) == 1

    def test_finish_with_unserializable_metadata_finishes_with_a_note(self, configured, sink):
        run = start_run(label="bad-finish-metadata", sink=sink)
        finish_run(run, metadata={"obj": object()})
        assert run.status == "completed"
        (row,) = _rows_of(sink, run)
        metadata = json.loads(row["metadata"])
        assert metadata["obj"] is None
        assert "object is not JSON serializable" in metadata["datafusion_otel.notes"][0]

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"label": 5}, TypeError, "label must be a str, got int"),
            ({"label": ""}, ValueError, "label must not be empty"),
            ({"label": "x", "metadata": [("a", 1)]}, TypeError, "metadata must be a mapping"),
            ({"label": "x", "metadata": {"obj": object()}}, ValueError, "not JSON serializable"),
        ],
    )
    def test_start_run_rejects_bad_arguments_clearly(self, configured, sink, kwargs, error, match):
        with pytest.raises(error, match=match):
            start_run(sink=sink, **kwargs)
        assert current_run() is None
        assert sink.artifacts_snapshot() == {}
        assert configured.exporter.get_finished_spans() == ()


class TestFailedRuns:
    """An exception in tracked_run fails the run, marks the span and is re-raised unchanged."""

    @pytest.mark.parametrize(
        ("exc", "type_name"),
        [
            (ValueError("bad input 'alice' 42"), "ValueError"),
            (KeyboardInterrupt(), "KeyboardInterrupt"),
        ],
    )
    def test_exception_fails_the_run_and_is_reraised(self, configured, sink, ctx, exc, type_name):
        message = "bad input ? ?" if str(exc) else ""  # literals in messages are sanitized
        with (  # noqa: PT012 - the body must run a query and then raise
            pytest.raises(type(exc)) as raised,
            tracked_run(label="boom", sink=sink, metadata={"step": 1}) as run,
        ):
            ctx.sql("SELECT 1").to_arrow_table()
            raise exc
        assert raised.value is exc
        assert current_run() is None
        assert run.status == "failed"
        assert run.metadata == {"step": 1, "error_type": type_name, "error_message": message}
        (row,) = _rows_of(sink, run)
        assert row["status"] == "failed"
        assert json.loads(row["metadata"])["error_type"] == type_name
        assert json.loads(row["metadata"])["error_message"] == message
        (finished,) = sink.artifacts_snapshot()["datafusion_run_finished_v1"]
        assert finished["status"] == "failed"
        assert finished["metadata"]["error_type"] == type_name
        span = _span_of(run, configured.exporter.get_finished_spans())
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == type_name
        assert span.attributes["datafusion.run.status"] == "failed"
        events = [e for e in span.events if e.name == "exception"]
        assert len(events) == 1
        assert events[0].attributes["exception.type"] == type_name
        assert events[0].attributes["exception.message"] == message
        assert "alice" not in events[0].attributes["exception.stacktrace"]

    def test_raw_policy_keeps_error_messages(self, configured, sink, monkeypatch):
        monkeypatch.setenv("DATAFUSION_OTEL_SQL_TEXT", "raw")
        with pytest.raises(ValueError), tracked_run(label="raw", sink=sink) as run:
            raise ValueError("bad input 'alice' 42")
        assert run.metadata["error_message"] == "bad input 'alice' 42"
        span = _span_of(run, configured.exporter.get_finished_spans())
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.message"] == "bad input 'alice' 42"

    def test_datafusion_error_fails_the_run(self, configured, sink, ctx):
        with (
            pytest.raises(Exception, match="no_such_table") as raised,
            tracked_run(label="sql-error", sink=sink) as run,
        ):
            ctx.sql("SELECT * FROM no_such_table").to_arrow_table()
        assert run.status == "failed"
        assert run.metadata["error_type"] == type(raised.value).__qualname__
        # quoted names and values in error messages are replaced by ? under the default policy
        assert run.metadata["error_message"] == "Error during planning: table ? not found"
        (row,) = _rows_of(sink, run)
        assert row["status"] == "failed"


class TestNestedRuns:
    """Nested tracked_run: two traces, the inner links to the outer, current_run follows."""

    def test_nested_runs_are_separate_traces(self, configured, sink):
        assert current_run() is None
        with tracked_run(label="outer", sink=sink) as outer:
            assert current_run() is outer
            with tracked_run(label="inner", sink=sink) as inner:
                assert current_run() is inner
            assert current_run() is outer
        assert current_run() is None
        spans = configured.exporter.get_finished_spans()
        outer_span, inner_span = _span_of(outer, spans), _span_of(inner, spans)
        assert outer.run_id != inner.run_id
        assert inner_span.parent is None
        assert [link.context for link in inner_span.links] == [outer_span.context]
        assert {row["run_id"] for row in sink.events_snapshot()["datafusion_runs_v1"]} == {
            outer.run_id,
            inner.run_id,
        }

    def test_inner_failure_leaves_outer_running(self, configured, sink):
        with tracked_run(label="outer", sink=sink) as outer:
            with pytest.raises(RuntimeError), tracked_run(label="inner", sink=sink) as inner:
                raise RuntimeError("inner only")
            assert current_run() is outer
            assert outer.status == "running"
        assert inner.status == "failed"
        assert outer.status == "completed"


class TestCurrentRunContext:
    """current_run follows contextvars: asyncio tasks, copied contexts, plain threads."""

    def test_concurrent_asyncio_tasks_each_see_their_own_run(self, configured, sink):
        async def task(label: str, started: asyncio.Event, other: asyncio.Event) -> tuple:
            with tracked_run(label=label, sink=sink) as run:
                started.set()
                await other.wait()  # both runs are open at the same time
                seen = current_run()
                await asyncio.sleep(0)
                return run, seen, current_run()

        async def main() -> list:
            a, b = asyncio.Event(), asyncio.Event()
            return await asyncio.gather(task("a", a, b), task("b", b, a))

        results = asyncio.run(main())
        for run, seen, seen_later in results:
            assert seen is run
            assert seen_later is run
        assert results[0][0].run_id != results[1][0].run_id
        assert current_run() is None

    def test_thread_sees_run_only_in_a_copied_context(self, configured):
        seen: dict[str, object] = {}

        def look(key: str) -> None:
            seen[key] = current_run()

        with tracked_run(label="threads") as run:
            copied = contextvars.copy_context()
            t1 = threading.Thread(target=copied.run, args=(look, "copied"))
            t2 = threading.Thread(target=look, args=("plain",))
            t1.start()
            t2.start()
            t1.join()
            t2.join()
        assert seen == {"copied": run, "plain": None}


class TestConcurrency:
    """Many threads running tracked queries keep every row under its own run."""

    THREADS = 8
    RUNS_PER_THREAD = 50

    def test_runs_from_many_threads_do_not_mix(self, configured, sink):
        runs: list[DataFusionRun] = []
        results: dict[str, int] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(self.THREADS)

        def worker(n: int) -> None:
            try:
                ctx = SessionContext()
                ctx.from_pydict({"x": [n, n, n]}, name="t")
                barrier.wait()
                for i in range(self.RUNS_PER_THREAD):
                    with tracked_run(label=f"w{n}", sink=sink, metadata={"i": i}) as run:
                        total = ctx.sql(f"SELECT sum(x) + {i} AS s FROM t").to_pydict()["s"][0]
                        assert current_run() is run
                    with lock:
                        runs.append(run)
                        results[run.run_id] = total
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(self.THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        total_runs = self.THREADS * self.RUNS_PER_THREAD
        assert len({run.run_id for run in runs}) == total_runs
        rows = sink.events_snapshot()["datafusion_runs_v1"]
        assert len(rows) == total_runs
        by_id = {run.run_id: run for run in runs}
        assert {row["run_id"] for row in rows} == set(by_id)
        for row in rows:
            run = by_id[row["run_id"]]
            assert row["label"] == run.label
            assert _user_metadata(row) == run.metadata
            assert row["start_time_unix_ms"] == run.start_time_unix_ms
        artifacts = sink.artifacts_snapshot()
        for name in ("datafusion_run_started_v1", "datafusion_run_finished_v1"):
            assert len(artifacts[name]) == total_runs
            assert {a["run_id"] for a in artifacts[name]} == set(by_id)
        for run in runs:
            n = int(run.label[1:])
            assert results[run.run_id] == 3 * n + run.metadata["i"]
