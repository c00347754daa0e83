"""Names used on the wire: span names, span attribute keys, event names and table names.

Every string that datafusion-otel writes into a span, an event or a diagnostics table name
lives here, so that producers (runs, bridge, instrumentation) and consumers (the span
processor, sinks, the CLI) agree on one spelling.
"""

from __future__ import annotations

from typing import Final

# --- run root spans -------------------------------------------------------------------------
RUN_ID: Final = "datafusion.run.id"
"""Span attribute on a run's root span: the run id (32 lowercase hex, equal to the trace id)."""
RUN_LABEL: Final = "datafusion.run.label"
"""Span attribute on a run's root span: the run's human-readable label."""
RUN_STATUS: Final = "datafusion.run.status"
"""Span attribute on a run's root span: ``running``, ``completed`` or ``failed``."""
RUN_METADATA: Final = "datafusion.run.metadata"
"""Span attribute on a run's root span: the run metadata as a JSON object string."""
RUN_EXPORTED: Final = "datafusion.run.exported"
"""Span attribute on a run's root span: whether the sampler selected the run for export."""

# --- standard OpenTelemetry error attributes ------------------------------------------------
ERROR_TYPE: Final = "error.type"
"""Semantic-convention attribute naming the class of error that ended an operation."""

# --- span events ----------------------------------------------------------------------------
PLAN_ARTIFACTS_EVENT: Final = "datafusion.plan_artifacts"
"""Span event carrying one query's plan artifacts (one DATAFUSION_PLAN_ARTIFACTS_V1 row)."""
OPERATOR_METRICS_EVENT: Final = "datafusion.operator_metrics"
"""Span event carrying one query's per-operator runtime metrics."""
CACHE_STATE_EVENT: Final = "datafusion.cache_state"
"""Span event carrying the cache configuration and scan cache metrics of a query."""
PAYLOAD_REF: Final = "datafusion.payload.ref"
"""Event attribute: key of the full, untruncated payload held in-process for the span processor."""

# --- diagnostics table names (the ``name`` given to ``DiagnosticsSink.record_events``) --------
RUNS_TABLE: Final = "datafusion_runs_v1"
PLAN_ARTIFACTS_TABLE: Final = "datafusion_plan_artifacts_v1"
OPERATOR_METRICS_TABLE: Final = "datafusion_operator_metrics_v1"
CACHE_STATE_TABLE: Final = "datafusion_cache_state_v1"

# --- artifact names (the ``name`` given to ``DiagnosticsSink.record_artifact``) ---------------
RUN_STARTED_ARTIFACT: Final = "datafusion_run_started_v1"
RUN_FINISHED_ARTIFACT: Final = "datafusion_run_finished_v1"

# --- instrumentation scope ------------------------------------------------------------------
TRACER_NAME: Final = "datafusion_otel"
"""Instrumentation scope name of every tracer and meter this package creates."""

# --- execution spans (auto-instrumentation; OpenTelemetry database semantic conventions) -----
DB_SYSTEM_NAME: Final = "db.system.name"
"""Semantic-convention attribute naming the database system; always `DB_SYSTEM_VALUE`."""
DB_SYSTEM_VALUE: Final = "datafusion"
"""Value of `DB_SYSTEM_NAME` (not a registered value: a lowercase custom one)."""
DB_QUERY_TEXT: Final = "db.query.text"
"""The query text: literals replaced by ``?`` unless the user opted in to raw text."""
DB_QUERY_SUMMARY: Final = "db.query.summary"
"""Low-cardinality summary, ``"{operation} {table}..."`` (<= 255 chars); also the span name."""
DB_OPERATION_NAME: Final = "db.operation.name"
"""The statement's operation, for example ``SELECT`` or ``CREATE``."""
DB_COLLECTION_NAME: Final = "db.collection.name"
"""The table a query touches, set only when it touches exactly one."""
DB_RESPONSE_RETURNED_ROWS: Final = "db.response.returned_rows"
"""Rows returned to the caller, where the execution method makes them known."""
DATAFUSION_METHOD: Final = "datafusion.method"
"""The instrumented method that executed, for example ``DataFrame.collect``."""
DATAFUSION_PARTITION_COUNT: Final = "datafusion.partition_count"
"""Output partitions of the executed physical plan, where known without re-planning."""
DATAFUSION_PLAN_HASH: Final = "datafusion.plan_hash"
"""Stable fingerprint of the optimized plan (set by the plan-artifact bridge when capturing)."""
DATAFUSION_SESSION_ID: Final = "datafusion.session_id"
"""``SessionContext.session_id()`` of the context that planned the query, when known."""
DATAFUSION_STREAM_EXHAUSTED: Final = "datafusion.stream.exhausted"
"""On stream executions: True if the stream was read to the end, False if abandoned early."""
