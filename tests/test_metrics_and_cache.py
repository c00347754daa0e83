"""Run-level OpenTelemetry metrics, and per-run cache state rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from datafusion import SessionContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from datafusion_otel import DiagnosticsCollector, configure, tpch, tracked_run
from datafusion_otel import attributes as attr
from datafusion_otel._spans.payloads import add_payload_event
from datafusion_otel.cache_state import cache_state_rows, record_cache_state, scan_cache_metrics
from datafusion_otel.metrics import enable_run_metrics, operator_totals
from operator_metrics_helper import operator_metric_rows


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], object]]]:
    out: dict[str, list[tuple[dict[str, object], object]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out[metric.name] = [
                    (dict(p.attributes or {}), p.value if hasattr(p, "value") else p)
                    for p in metric.data.data_points
                ]
    return out


class TestRunMetrics:
    """Finished runs become duration, count, failure, rows, bytes and spill metrics."""

    def test_metrics_of_real_runs(self, tpch_dir: Path) -> None:
        reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        configure(tracer_provider=tracer_provider, sink=DiagnosticsCollector())
        enable_run_metrics(meter_provider=MeterProvider([reader]), tracer_provider=tracer_provider)
        ctx = SessionContext()
        tpch.register_tables(ctx, tpch_dir)
        expected_rows = expected_bytes = 0
        for _ in range(3):
            with tracked_run(label="q3") as run:
                df = ctx.sql(tpch.query_statements(3)[0])
                df.to_arrow_table()
                rows = operator_metric_rows(df)
                assert run.span is not None
                add_payload_event(
                    run.span, attr.OPERATOR_METRICS_EVENT, {},
                    table=attr.OPERATOR_METRICS_TABLE, rows=rows,
                )  # fmt: skip
            totals = operator_totals(rows)
            expected_rows += totals.output_rows or 0
            expected_bytes += totals.bytes_scanned or 0
        with pytest.raises(ValueError, match="nope"), tracked_run(label="q3"):
            ctx.sql("SELECT nope").to_arrow_table()

        points = _points(reader)
        durations = {p[0][attr.METRIC_ATTR_STATUS]: p[1] for p in points[attr.METRIC_RUN_DURATION]}
        assert durations["completed"].count == 3  # type: ignore[attr-defined]
        assert durations["failed"].count == 1  # type: ignore[attr-defined]
        runs = {p[0][attr.METRIC_ATTR_STATUS]: p[1] for p in points[attr.METRIC_RUNS]}
        assert runs == {"completed": 3, "failed": 1}
        assert points[attr.METRIC_RUN_FAILURES] == [
            ({attr.METRIC_ATTR_LABEL: "q3", attr.ERROR_TYPE: "ValueError"}, 1)
        ]
        assert expected_rows == 30  # q3 ends in LIMIT 10
        assert points[attr.METRIC_OUTPUT_ROWS] == [({attr.METRIC_ATTR_LABEL: "q3"}, 30)]
        assert expected_bytes > 0
        assert points[attr.METRIC_BYTES_SCANNED] == [
            ({attr.METRIC_ATTR_LABEL: "q3"}, expected_bytes)
        ]
        assert points[attr.METRIC_SPILLS] == [({attr.METRIC_ATTR_LABEL: "q3"}, 0)]


class TestCacheState:
    """Cache rows carry the configured limits and ttl; counters stay null."""

    def test_rows_follow_the_session_configuration(self) -> None:
        ctx = SessionContext()
        ctx.sql("SET datafusion.runtime.metadata_cache_limit = '10M'").collect()
        ctx.sql("SET datafusion.runtime.list_files_cache_ttl = '1m'").collect()
        rows = {r["cache_name"]: r for r in cache_state_rows(ctx, "ab" * 16)}
        assert set(rows) == {"metadata_cache", "list_files_cache", "file_statistics_cache"}
        assert rows["metadata_cache"]["config_limit"] == "10M"
        assert rows["list_files_cache"]["config_ttl"] is not None
        assert rows["file_statistics_cache"]["config_limit"] == "20M"
        for row in rows.values():
            for counter in ("entry_count", "hit_count", "miss_count", "eviction_count"):
                assert row[counter] is None

    def test_recorded_rows_reach_the_run_sink_once(self) -> None:
        sink = DiagnosticsCollector()
        ctx = SessionContext()
        with tracked_run(label="cached", sink=sink) as run:
            record_cache_state(ctx)
        rows = sink.events_snapshot()[attr.CACHE_STATE_TABLE]
        assert len(rows) == len(attr.CACHE_SETTINGS)
        assert {r["run_id"] for r in rows} == {run.run_id}

    def test_without_a_run_rows_go_to_the_given_sink(self) -> None:
        sink = DiagnosticsCollector()
        rows = record_cache_state(SessionContext(), sink=sink)
        assert sink.events_snapshot()[attr.CACHE_STATE_TABLE] == rows
        assert rows[0]["run_id"] is None

    def test_scan_cache_metrics_come_from_scan_operators(self, tpch_dir: Path) -> None:
        ctx = SessionContext()
        tpch.register_tables(ctx, tpch_dir)
        df = ctx.sql("SELECT count(*) FROM lineitem WHERE l_quantity > 40")
        df.to_arrow_table()
        totals = scan_cache_metrics(operator_metric_rows(df))
        assert totals["files_opened"] >= 1
        assert totals["bytes_scanned"] > 0
        assert "metadata_load_time" in totals
