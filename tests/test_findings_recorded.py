"""Findings recorded as rows by the span processor when a real DataFusion run ends: the same
rows `find` computes from the store, in ``datafusion_findings_v1/`` and the ``findings`` table,
read by the ``findings`` command; off with ``findings=False``; bounded memory; failures logged
once (type only) and never raised."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

import datafusion_otel
from capture_support import settle
from datafusion_otel import DiagnosticsCollector, DiagnosticsSpanProcessor, config
from datafusion_otel import attributes as attr
from datafusion_otel._processing import run_findings as _run_findings
from datafusion_otel._processing.run_findings import FindingsRecorder
from datafusion_otel.cli import main
from datafusion_otel.findings import find, run_findings
from datafusion_otel.store import RunStore
from findings_support import capture, context, register_data
from instrumentation_support import instrumented
from otel_state import Handles, handles_fixture  # noqa: F401


def _key(rows: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return sorted(
        (
            r["kind"],
            r["severity"],
            r["span_id"],
            r["operator_path"],
            r["partition"],
            r["measured_value"],
            r["evidence"],
        )
        for r in rows
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("store")
    ids = {name: capture(path, data, name) for name in ("skew", "spill", "clean")}
    return path, ids


class TestRecordedInTheStore:
    def test_recorded_rows_are_the_computed_findings(
        self, store: tuple[Path, dict[str, str]]
    ) -> None:
        path, ids = store
        opened = RunStore(path)
        assert list((path / attr.FINDINGS_TABLE).rglob("*.parquet"))
        for name in ("skew", "spill"):
            recorded = opened.stored_findings(ids[name])
            assert recorded, name
            assert _key(recorded) == _key(run_findings(opened, ids[name]))
        kinds = {r["kind"] for r in opened.stored_findings(ids["spill"])}
        assert "spill" in kinds
        assert opened.stored_findings(ids["clean"]) == []
        in_sql = opened.sql(
            f"SELECT count(*) AS n FROM findings WHERE run_id = '{ids['skew']}'"
        ).to_pylist()[0]["n"]
        assert in_sql == len(opened.stored_findings(ids["skew"]))

    def test_command_reads_recorded_rows_else_computes(
        self,
        store: tuple[Path, dict[str, str]],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path, ids = store
        assert main(["findings", ids["skew"], "--store", str(path), "--json"]) == 0
        recorded = json.loads(capsys.readouterr().out)
        assert _key(recorded) == _key(RunStore(path).stored_findings(ids["skew"]))
        assert main(["findings", ids["skew"], "--store", str(path)]) == 0
        assert "recorded when the run ended" in capsys.readouterr().out
        older = tmp_path / "older"
        shutil.copytree(path, older)
        shutil.rmtree(older / attr.FINDINGS_TABLE)  # a store written before findings rows
        assert main(["findings", ids["skew"], "--store", str(older), "--json"]) == 0
        computed = json.loads(capsys.readouterr().out)
        assert _key(computed) == _key(recorded)
        assert main(["findings", ids["skew"], "--store", str(older)]) == 0
        assert "computed from the stored metrics" in capsys.readouterr().out


def _findings_of(collector: DiagnosticsCollector) -> list[dict[str, Any]]:
    return collector.events_snapshot().get(attr.FINDINGS_TABLE, [])


class TestProcessorOption:
    def test_collector_receives_findings_and_option_off_records_none(
        self, sdk: Any, data: Path
    ) -> None:
        off = DiagnosticsCollector()
        sdk.provider.add_span_processor(DiagnosticsSpanProcessor(off, findings=False))
        datafusion_otel.configure(tracer_provider=sdk.provider)
        on = DiagnosticsCollector()
        capture(on, data, "skew")
        datafusion_otel.force_flush(timeout=10)
        events = on.events_snapshot()
        recorded = _findings_of(on)
        assert recorded
        computed = find(events[attr.OPERATOR_METRICS_TABLE], events[attr.PLAN_ARTIFACTS_TABLE])
        assert _key(recorded) == _key(computed)
        assert off.events_snapshot()[attr.OPERATOR_METRICS_TABLE]
        assert _findings_of(off) == []

    def test_run_over_the_row_cap_gets_none_and_is_counted(
        self, sdk: Any, data: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_run_findings, "MAX_ROWS_PER_RUN", 5)
        capped = DiagnosticsCollector()
        processor = DiagnosticsSpanProcessor(capped)
        sdk.provider.add_span_processor(processor)
        datafusion_otel.configure(tracer_provider=sdk.provider)
        capture(DiagnosticsCollector(), data, "skew")
        datafusion_otel.force_flush(timeout=10)
        assert len(capped.events_snapshot()[attr.OPERATOR_METRICS_TABLE]) > 5
        assert capped.events_snapshot()[attr.RUNS_TABLE]
        assert _findings_of(capped) == []
        assert processor.findings_skipped_runs == 1

    def test_failure_is_logged_once_by_type_and_the_run_keeps_its_rows(
        self, data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(*_args: object, **_kwargs: object) -> list[dict[str, Any]]:
            raise ValueError("secret literal 4242")

        monkeypatch.setattr(_run_findings, "find", broken)
        sink = DiagnosticsCollector()
        with caplog.at_level(logging.ERROR, logger="datafusion_otel.processor"):
            first = capture(sink, data, "skew")
            second = capture(sink, data, "clean")
            datafusion_otel.force_flush(timeout=10)
        runs = [r["run_id"] for r in sink.events_snapshot()[attr.RUNS_TABLE]]
        assert runs == [first, second]
        assert _findings_of(sink) == []
        messages = [r.getMessage() for r in caplog.records if "findings" in r.getMessage()]
        assert len(messages) == 1
        assert "ValueError" in messages[0] and "4242" not in messages[0]


def test_recorder_keeps_a_bounded_number_of_runs(data: Path) -> None:
    sink = DiagnosticsCollector()
    first, second = capture(sink, data, "skew"), capture(sink, data, "spill")
    datafusion_otel.force_flush(timeout=10)
    events = sink.events_snapshot()

    def tables(run_id: str) -> list[tuple[str, list[dict[str, object]]]]:
        return [
            (name, [r for r in events[name] if r["run_id"] == run_id])
            for name in (attr.OPERATOR_METRICS_TABLE, attr.PLAN_ARTIFACTS_TABLE)
        ]

    recorder = FindingsRecorder(max_pending_runs=1)
    recorder.add(first, tables(first))
    recorder.add(second, tables(second))  # the oldest run is dropped
    assert recorder.finish(first) is None
    assert recorder.skipped_runs == 1
    second_rows = tables(second)
    assert _key(recorder.finish(second) or []) == _key(find(second_rows[0][1], second_rows[1][1]))
    assert not recorder


def test_rows_of_a_trace_whose_root_is_not_a_run_are_released(data: Path) -> None:
    """Instrumented executions under the application's own root span: no run root ever ends
    for their rows, which the processor drops when that application root ends."""
    with instrumented(capture_plan_artifacts=True) as traced:
        sink = DiagnosticsCollector()
        processor = config.processor_for(traced.provider)
        processor.replace_sink(sink)
        ctx = context()
        register_data(ctx, data)
        tracer = traced.provider.get_tracer("app")
        with tracer.start_as_current_span("app-root"):
            ctx.sql("SELECT k, v FROM ordered WHERE v = 17").to_arrow_table()
            traced.spans()  # the execution span has ended
            settle()  # and its capture landed
            assert processor._findings  # held while the application's root is open
        datafusion_otel.force_flush(timeout=10)
        assert sink.events_snapshot()[attr.OPERATOR_METRICS_TABLE]
        assert not processor._findings  # released when it ended
        assert _findings_of(sink) == []  # no run: no recorded findings


def test_the_processor_of_another_provider_holds_no_rows_of_the_run(
    handles: Handles, data: Path
) -> None:
    """The instrumentor on its own provider P, the run on the global SDK provider: P's package
    processor delivers P's rows to the run's sink but never sees the run's root, so it holds
    none of them; the run then has no recorded findings, and ``findings`` computes them."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from datafusion_otel import DataFusionInstrumentor, tracked_run

    mine, runs = TracerProvider(), TracerProvider()
    trace.set_tracer_provider(runs)
    DataFusionInstrumentor().instrument(tracer_provider=mine, capture_plan_artifacts=True)
    try:
        sink = DiagnosticsCollector()
        ctx = context()
        register_data(ctx, data)
        with tracked_run(label="cross", sink=sink):
            ctx.sql("SELECT k, v FROM ordered WHERE v = 17").to_arrow_table()
        datafusion_otel.force_flush(timeout=10)
    finally:
        DataFusionInstrumentor().uninstrument()
    assert sink.events_snapshot()[attr.OPERATOR_METRICS_TABLE]
    assert not config.processor_for(mine)._findings
    assert _findings_of(sink) == []
