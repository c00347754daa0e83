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

# --- plan artifact event attributes ---------------------------------------------------------
ARTIFACT_PREFIX: Final = "datafusion.artifact."
"""Prefix of plan-artifact preview attributes: ``datafusion.artifact.<column>``."""
ARTIFACT_SHA256_SUFFIX: Final = ".sha256"
"""Suffix of the attribute holding the sha256 (hex) of the full artifact text."""
ARTIFACT_SIZE_SUFFIX: Final = ".size"
"""Suffix of the attribute holding the full artifact size in UTF-8 bytes."""
ARTIFACT_TRUNCATED_SUFFIX: Final = ".truncated"
"""Suffix of the attribute telling whether the preview was cut at the inline limit."""
ARTIFACT_ERRORS: Final = "datafusion.artifact.errors"
"""Event attribute: JSON object, artifact name -> why it could not be captured."""
OPERATOR_COUNT: Final = "datafusion.operator.count"
"""Event attribute on ``datafusion.operator_metrics``: number of operator rows."""

# --- operator spans (derived from DataFusion's measured metrics) ----------------------------
OPERATOR_NAME: Final = "datafusion.operator.name"
OPERATOR_PATH: Final = "datafusion.operator.path"
OPERATOR_OUTPUT_ROWS: Final = "datafusion.operator.output_rows"
OPERATOR_ELAPSED_COMPUTE_NS: Final = "datafusion.operator.elapsed_compute_ns"
OPERATOR_DERIVED: Final = "datafusion.operator.derived_from_metrics"
"""True on operator spans: their times are DataFusion's measured start/end, not a live span."""

# --- query-level attributes -----------------------------------------------------------------
DATAFUSION_PLAN_HASH: Final = "datafusion.plan_hash"
DATAFUSION_PARTITION_COUNT: Final = "datafusion.partition_count"
