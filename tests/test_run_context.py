"""`run_context` / `attached_run`: the carrier, its validation, the no-provider warning, fork.

The fan-outs to spawned processes, a process pool and Dask are in test_run_context_procs.py and
test_run_context_dask.py.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
from datafusion import SessionContext
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import StatusCode

import datafusion_otel
from capture_support import artifact_events
from datafusion_otel import (
    DataFusionInstrumentor,
    DataFusionRunWarning,
    attached_run,
    run_context,
    tracked_run,
)
from datafusion_otel._processing import run_findings as _run_findings
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import DataFusionCompileOptions
from otel_state import handles_fixture  # noqa: F401
from run_context_support import configure_owner, worker_tables, write_data

run_context_module = importlib.import_module(
    "datafusion_otel.run_context"
)  # the name is the function

TESTS = Path(__file__).resolve().parent
RUN_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{RUN_ID}-b7ad6b7169203331-01"


def _carrier(**changes: object) -> dict[str, object]:
    carrier: dict[str, object] = {"traceparent": TRACEPARENT, "run_id": RUN_ID, "label": "r"}
    carrier.update(changes)
    return {k: v for k, v in carrier.items() if v is not None}


class TestCarrier:
    """What `run_context` returns, and that it survives JSON."""

    def test_carrier_holds_the_dispatching_span_the_run_and_baggage(self):
        owner = configure_owner()
        tracer = owner.provider.get_tracer("test")
        token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tracked_run(label="fanout") as run, tracer.start_as_current_span("dispatch") as d:
                carrier = run_context()
        finally:
            otel_context.detach(token)
        dispatch = d.get_span_context()
        assert carrier == {
            "traceparent": f"00-{run.run_id}-{dispatch.span_id:016x}-{dispatch.trace_flags:02x}",
            "baggage": "tenant=acme",
            "run_id": run.run_id,
            "label": "fanout",
        }
        assert json.loads(json.dumps(carrier)) == carrier

    def test_json_text_round_trip_attaches_the_same_run(self):
        owner = configure_owner()
        with tracked_run(label="fanout") as run:
            carrier = run_context()
            root = run.span.get_span_context()
        text = json.dumps(carrier)
        with attached_run(text) as attached:
            current = trace.get_current_span().get_span_context()
        assert attached.run_id == run.run_id and attached.label == "fanout"
        assert attached.parent.trace_id == root.trace_id
        assert attached.parent.span_id == root.span_id and attached.parent.is_remote
        assert current.trace_id == root.trace_id  # the block ran in the run's trace
        assert owner.sink.events_snapshot()["datafusion_runs_v1"][0]["run_id"] == run.run_id

    def test_tracestate_and_baggage_reach_the_worker(self):
        configure_owner()
        carrier = _carrier(tracestate="vendor=abc", baggage="tenant=acme")
        with attached_run(carrier, span=False) as attached:
            assert baggage.get_baggage("tenant") == "acme"
        assert attached.parent.trace_state.get("vendor") == "abc"
        assert baggage.get_baggage("tenant") is None  # detached after the block

    def test_span_of_another_trace_is_not_the_dispatcher(self):
        owner = configure_owner()
        tracer = owner.provider.get_tracer("test")
        with tracked_run(label="fanout") as run:
            with tracer.start_as_current_span("elsewhere", context=otel_context.Context()):
                carrier = run_context()
        root = run.span.get_span_context()
        assert (
            carrier["traceparent"] == f"00-{run.run_id}-{root.span_id:016x}-{root.trace_flags:02x}"
        )

    def test_outside_a_run_is_a_clear_error(self):
        with pytest.raises(RuntimeError, match="outside a run"):
            run_context()

    def test_finished_run_is_a_clear_error(self):
        with tracked_run(label="done") as run:
            pass
        with pytest.raises(RuntimeError, match="already completed"):
            run_context(run)


class TestBadCarriers:
    """`attached_run` says what is wrong with a carrier before anything is attached."""

    @pytest.mark.parametrize(
        ("carrier", "error", "message"),
        [
            (42, TypeError, "must be the dict returned by run_context"),
            ("{not json", ValueError, "not valid JSON"),
            ("[1, 2]", TypeError, "got list"),
            ({}, ValueError, "carrier has no 'traceparent'"),
            (_carrier(run_id=None), ValueError, "carrier has no 'run_id'"),
            (_carrier(label=None), ValueError, "carrier has no 'label'"),
            (_carrier(traceparent="00-xyz-01"), ValueError, "not a valid W3C traceparent"),
            (_carrier(traceparent=f"00-{'0' * 32}-b7ad6b7169203331-01"), ValueError, "traceparent"),
            (_carrier(run_id="f" * 32), ValueError, "altered or mixes two runs"),
            (_carrier(run_id=RUN_ID.upper()), ValueError, "32 lowercase hex"),
            (_carrier(label=""), ValueError, "label'] must not be empty"),
            (_carrier(label=7), TypeError, r"carrier\['label'\] must be a str"),
            (_carrier(baggage=["a"]), TypeError, r"carrier\['baggage'\] must be a str"),
        ],
    )
    def test_bad_carrier(self, carrier, error, message):
        before = otel_context.get_current()
        with pytest.raises(error, match=message), attached_run(carrier):
            pytest.fail("the block must not run")
        assert otel_context.get_current() == before

    def test_extra_keys_are_ignored(self):
        configure_owner()
        with attached_run(_carrier(future_field="x"), span=False) as attached:
            assert attached.run_id == RUN_ID


class TestNoProviderWarning:
    """A worker with no SDK provider is told once that its spans would go nowhere."""

    def test_warned_once(self, handles, monkeypatch):
        monkeypatch.setitem(run_context_module._warned, "no_provider", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                with attached_run(_carrier(), span=False):
                    pass
        ours = [w for w in caught if issubclass(w.category, DataFusionRunWarning)]
        assert len(ours) == 1
        assert "configure()" in str(ours[0].message)
        assert ours[0].filename == __file__  # points at the caller's with statement

    def test_not_warned_when_configured(self, handles, monkeypatch):
        monkeypatch.setitem(run_context_module._warned, "no_provider", False)
        handles.add(datafusion_otel.configure(set_global=False))
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataFusionRunWarning)
            with attached_run(_carrier(), span=False):
                pass


class TestSameProcess:
    """Attached on a thread of the owning process, the work goes to the run's own sink."""

    def test_thread_attached_to_the_run(self, tmp_path):
        owner = configure_owner()
        data = write_data(tmp_path)
        DataFusionInstrumentor().instrument(capture_plan_artifacts=True)
        try:
            with tracked_run(label="threads") as run:
                carrier = run_context()

                def work() -> None:
                    ctx = SessionContext()
                    ctx.register_parquet("t", data)
                    with attached_run(carrier):
                        ctx.sql("SELECT g, count(*) FROM t GROUP BY g").to_arrow_table()

                thread = threading.Thread(target=work)
                thread.start()
                thread.join(60)
        finally:
            DataFusionInstrumentor().uninstrument()
        datafusion_otel.force_flush(10)
        rows = owner.sink.events_snapshot()
        assert len(rows["datafusion_runs_v1"]) == 1
        (artifact,) = rows["datafusion_plan_artifacts_v1"]
        assert artifact["run_id"] == run.run_id
        root = run.span.get_span_context().span_id
        (execution,) = [
            s for s in owner.exporter.get_finished_spans() if s.name.startswith("SELECT")
        ]
        assert execution.parent is not None and execution.parent.span_id == root


class TestWorkerSpan:
    """The span `attached_run` opens where no execution span would carry the run's work."""

    def test_run_bound_query_on_another_thread_lands_under_it(self, ctx):
        owner = configure_owner()
        options = DataFusionCompileOptions(run_id=RUN_ID)
        answers: list[object] = []

        def elsewhere() -> None:  # a plain thread: the attached context is not current here
            frame = sql_to_datafusion(
                "SELECT k, sum(v) FROM t GROUP BY k", ctx=ctx, options=options
            )
            answers.append(frame.to_pydict())

        with attached_run(_carrier()) as attached:
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join(60)
        assert answers and attached.span is not None
        datafusion_otel.force_flush(10)
        rows = owner.sink.events_snapshot()
        (artifact,) = rows["datafusion_plan_artifacts_v1"]
        assert artifact["run_id"] == RUN_ID
        assert "datafusion_runs_v1" not in rows  # not a run here: no run row
        (own,) = [s for s in owner.exporter.get_finished_spans() if s.parent and s.parent.is_remote]
        assert own.name == "datafusion.run.attached"
        assert own.context.trace_id == int(RUN_ID, 16)
        assert own.parent.span_id == int(TRACEPARENT.split("-")[2], 16)
        assert artifact_events(owner.exporter.get_finished_spans(), own)

    def test_failure_in_the_block_is_recorded_and_raised(self):
        owner = configure_owner()
        before = otel_context.get_current()
        with pytest.raises(KeyError), attached_run(_carrier(), span=True):
            raise KeyError("secret-value")
        assert otel_context.get_current() == before
        (own,) = owner.exporter.get_finished_spans()
        assert own.status.status_code is StatusCode.ERROR
        assert [e.name for e in own.events] == ["exception"]

    def test_no_span_of_its_own_under_the_instrumentor(self):
        owner = configure_owner()
        DataFusionInstrumentor().instrument()
        try:
            with attached_run(_carrier()) as attached:
                SessionContext().sql("SELECT 1 AS x").to_pydict()
        finally:
            DataFusionInstrumentor().uninstrument()
        assert attached.span is None
        datafusion_otel.force_flush(10)
        spans = owner.exporter.get_finished_spans()
        assert {s.attributes["datafusion.method"] for s in spans} == {
            "SessionContext.sql",  # planning
            "DataFrame.to_pydict",  # execution
        }
        for span in spans:  # children of the dispatching span itself
            assert span.parent is not None and span.parent.is_remote
            assert span.context.trace_id == int(RUN_ID, 16)


def test_worker_holds_no_rows_for_findings_of_runs_it_never_ends(ctx, monkeypatch):
    """A worker's processor never sees an attached run's root: it keeps none of its rows."""
    monkeypatch.setattr(_run_findings, "MAX_PENDING_RUNS", 2)
    owner = configure_owner()
    processor = datafusion_otel.config.processor_for(owner.provider)
    for index in range(4):
        run_id = f"{index + 1:032x}"
        carrier = _carrier(run_id=run_id, traceparent=f"00-{run_id}-b7ad6b7169203331-01")
        with attached_run(carrier, span=True):
            sql_to_datafusion("SELECT k, sum(v) FROM t GROUP BY k", ctx=ctx).to_pydict()
    datafusion_otel.force_flush(10)
    rows = owner.sink.events_snapshot()["datafusion_plan_artifacts_v1"]
    assert [r["run_id"] for r in rows] == [f"{i + 1:032x}" for i in range(4)]
    assert processor.findings_skipped_runs == 0  # none held, so none pushed out


def test_fork_start_method(tmp_path):
    """Workers forked from the owning process: one trace, their rows theirs, one run row.

    The owner's sink is also the run's sink and holds rows when the workers are forked: a
    forked worker must neither write them again nor send its own rows there.
    """
    data = write_data(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, str(TESTS / "run_context_fork_app.py"), str(tmp_path / "out"), data],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    run_id = report["run_id"]
    assert report["exitcodes"] == [0, 0]
    assert report["owner_flushed"] is True
    for index, result in enumerate(report["results"]):
        assert result["flushed"] is True
        assert {s["trace_id"] for s in result["spans"]} == {run_id}
        executions = [s for s in result["spans"] if (s["method"] or "").startswith("DataFrame.")]
        assert len(executions) == 2
        for span in executions:
            assert span["parent_span_id"] == report["dispatchers"][str(index)]
        assert not [s for s in result["spans"] if s["parent_span_id"] is None]
    workers_rows = worker_tables(r["store"] for r in report["results"])
    assert workers_rows["runs"] == []
    assert len(workers_rows["plan_artifacts"]) == 4
    assert {r["run_id"] for r in workers_rows["plan_artifacts"]} == {run_id}
    owner = worker_tables([report["owner_store"]])
    (run_row,) = owner["runs"]
    assert run_row["run_id"] == run_id and run_row["status"] == "completed"
    (own_artifact,) = owner["plan_artifacts"]  # the owner's own query only
    assert own_artifact["run_id"] == run_id
    store = datafusion_otel.RunStore(report["owner_store"])
    started = store.sql("SELECT run_id FROM artifacts WHERE artifact = 'datafusion_run_started_v1'")
    assert started.column("run_id").to_pylist() == [run_id]  # not written again by a worker
