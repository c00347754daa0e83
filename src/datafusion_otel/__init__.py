"""datafusion-otel: every Apache DataFusion run observable with OpenTelemetry.

Quickstart:
    >>> from datafusion import SessionContext
    >>> from datafusion_otel import DiagnosticsCollector, tracked_run
    >>> sink = DiagnosticsCollector()
    >>> with tracked_run(label="example", sink=sink) as run:
    ...     table = SessionContext().sql("SELECT 1 AS x").to_arrow_table()
    >>> sink.events_snapshot()["datafusion_runs_v1"][0]["status"]
    'completed'
"""

from __future__ import annotations

from datafusion_otel._processing.delivery import DeliveryStats
from datafusion_otel._sanitize import errors as _errors
from datafusion_otel.cache_state import cache_state_rows, record_cache_state
from datafusion_otel.capture_stats import CaptureStats, capture_stats
from datafusion_otel.config import Telemetry, configure, force_flush
from datafusion_otel.diagnostics import DiagnosticsCollector, DiagnosticsSink
from datafusion_otel.instrumentation import DataFusionInstrumentor
from datafusion_otel.metrics import RunMetricsSpanProcessor, enable_run_metrics
from datafusion_otel.processor import DiagnosticsSpanProcessor
from datafusion_otel.rollups import summarize_runs
from datafusion_otel.run_context import attached_run, run_context
from datafusion_otel.runs import (
    DataFusionRun,
    DataFusionRunWarning,
    current_run,
    finish_run,
    start_run,
    tracked_run,
)
from datafusion_otel.schema_registry import (
    DATAFUSION_CACHE_STATE_V1,
    DATAFUSION_OPERATOR_METRICS_V1,
    DATAFUSION_PLAN_ARTIFACTS_V1,
    DATAFUSION_RUNS_V1,
    datafusion_cache_state_table,
    datafusion_operator_metrics_table,
    datafusion_plan_artifacts_table,
    datafusion_runs_table,
    schema_for,
)
from datafusion_otel.store import ParquetSink, RunStore

__version__ = "0.1.0"

__all__ = [
    "DATAFUSION_CACHE_STATE_V1",
    "DATAFUSION_OPERATOR_METRICS_V1",
    "DATAFUSION_PLAN_ARTIFACTS_V1",
    "DATAFUSION_RUNS_V1",
    "CaptureStats",
    "DataFusionInstrumentor",
    "DataFusionRun",
    "DataFusionRunWarning",
    "DeliveryStats",
    "DiagnosticsCollector",
    "DiagnosticsSink",
    "DiagnosticsSpanProcessor",
    "ParquetSink",
    "RunMetricsSpanProcessor",
    "RunStore",
    "Telemetry",
    "__version__",
    "attached_run",
    "cache_state_rows",
    "capture_stats",
    "configure",
    "current_run",
    "datafusion_cache_state_table",
    "datafusion_operator_metrics_table",
    "datafusion_plan_artifacts_table",
    "datafusion_runs_table",
    "enable_run_metrics",
    "finish_run",
    "force_flush",
    "record_cache_state",
    "run_context",
    "schema_for",
    "start_run",
    "summarize_runs",
    "tracked_run",
]

# Every package logger that exists now gets the sanitizing filter (later ones get it when texts
# are captured or errors recorded): no log record of the package carries a query's literal.
_errors.protect_package_loggers()
