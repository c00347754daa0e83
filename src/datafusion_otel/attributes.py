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

# --- work attached to a run from another process (`datafusion_otel.run_context`) ----------
ATTACHED_RUN_SPAN: Final = "datafusion.run.attached"
"""Span name of the span `attached_run` opens in a worker (a child of the dispatching span)."""
ATTACHED_RUN_LABEL: Final = "datafusion.run.attached.label"
"""Span attribute on that span: the label of the run it is attached to (never a run's root)."""
PROCESS_PID: Final = "process.pid"
"""Semantic-convention attribute: the id of the process that made the span."""

# --- standard OpenTelemetry error attributes ------------------------------------------------
ERROR_TYPE: Final = "error.type"
"""Semantic-convention attribute naming the class of error that ended an operation."""

# --- the capture span --------------------------------------------------------------------
CAPTURE_SPAN: Final = "datafusion.capture"
"""Name of the span that carries a query's plan-artifact events: a child of the span the query
ran under, made by the capture worker after the execution, from the moment the execution was
handed over to the moment its artifacts were attached."""
CAPTURE_SKIPPED: Final = "datafusion.capture.skipped"
"""On an execution span: why its artifacts were not captured (``"capture queue full"``)."""

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
FINDINGS_TABLE: Final = "datafusion_findings_v1"

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
"""On operator spans: compute time summed over partitions, ns (see below for its metric)."""
OPERATOR_DERIVED: Final = "datafusion.operator.derived_from_metrics"
"""True on operator spans: their times are DataFusion's measured start/end, not a live span."""
OPERATOR_PARENT_PATH: Final = "datafusion.operator.parent_path"
"""On operator spans: path of the plan operator this span is nested under (absent for the plan
root); its span is the parent unless that operator recorded no times, then the nearest timed
ancestor's span is."""
OPERATOR_SPILL_COUNT: Final = "datafusion.operator.spill_count"
"""On operator spans: spills, summed over partitions (absent when not recorded)."""
OPERATOR_SPILLED_BYTES: Final = "datafusion.operator.spilled_bytes"
"""On operator spans: bytes spilled, summed over partitions."""
OPERATOR_OUTPUT_BYTES: Final = "datafusion.operator.output_bytes"
"""On operator spans: bytes of the batches the operator produced, summed over partitions."""
OPERATOR_BYTES_SCANNED: Final = "datafusion.operator.bytes_scanned"
"""On scan operator spans: bytes read from files, summed over partitions."""
OPERATOR_ELAPSED_COMPUTE_METRIC: Final = "datafusion.operator.elapsed_compute_metric"
"""On operator spans: the metric `OPERATOR_ELAPSED_COMPUTE_NS` comes from: ``elapsed_compute``,
or ``time_elapsed_processing`` for file (Parquet) scans, whose ``elapsed_compute`` is 0 or only
the few microseconds outside the decoding."""
OPERATOR_PARTITIONS: Final = "datafusion.operator.partitions"
"""On operator spans: partitions of the operator that recorded a start and an end time."""
OPERATOR_SPANS_COUNT: Final = "datafusion.operator_spans.count"
"""On the span operator spans are made under (the execution span): operator spans made."""
OPERATOR_SPANS_UNTIMED: Final = "datafusion.operator_spans.untimed"
"""On the execution span: operators that recorded no start/end time (in-memory scans, operators
that never ran), which get no span."""
OPERATOR_SPANS_DROPPED: Final = "datafusion.operator_spans.dropped"
"""On the execution span: timed operators beyond ``max_operator_spans`` that got no span."""


# --- embedded run store (datafusion_otel.store) ---------------------------------------------
HOME_ENV: Final = "DATAFUSION_OTEL_HOME"
"""Environment variable naming the run store folder (default ``./.datafusion-otel``)."""
DEFAULT_HOME: Final = ".datafusion-otel"
"""Default run store folder, relative to the working directory."""
ARTIFACTS_FOLDER: Final = "artifacts"
"""Store folder holding one ``artifact=<name>`` sub-folder per artifact name."""
ARTIFACT_PARTITION: Final = "artifact"
"""Hive partition key of the artifact folders (``artifacts/artifact=<name>/``)."""
TRACE_URL_ENV: Final = "DATAFUSION_OTEL_TRACE_URL"
"""Environment variable: a link template with ``{run_id}`` that ``show`` and ``runs`` print."""

# --- run-level metrics (datafusion_otel.metrics) --------------------------------------------
METRIC_RUN_DURATION: Final = "datafusion.run.duration"
"""Histogram, milliseconds: duration of each finished run (attributes: label, status)."""
METRIC_RUNS: Final = "datafusion.runs"
"""Counter: finished runs (attributes: label, status)."""
METRIC_RUN_FAILURES: Final = "datafusion.run.failures"
"""Counter: failed runs (attributes: label, error.type when known)."""
METRIC_OUTPUT_ROWS: Final = "datafusion.run.output_rows"
"""Counter: rows produced by the root operators of a run's queries."""
METRIC_BYTES_SCANNED: Final = "datafusion.run.bytes_scanned"
"""Counter, bytes: sum of the scan operators' ``bytes_scanned`` metric."""
METRIC_SPILLS: Final = "datafusion.run.spill_count"
"""Counter: spills reported by a run's operators."""
METRIC_ATTR_LABEL: Final = "datafusion.run.label"
"""Metric attribute: the run's label (same key as the span attribute)."""
METRIC_ATTR_STATUS: Final = "datafusion.run.status"
"""Metric attribute: the run's final status (same key as the span attribute)."""

# --- caches (datafusion_otel.cache_state) ---------------------------------------------------
CACHE_SETTINGS: Final = {
    "metadata_cache": ("datafusion.runtime.metadata_cache_limit", None),
    "list_files_cache": (
        "datafusion.runtime.list_files_cache_limit",
        "datafusion.runtime.list_files_cache_ttl",
    ),
    "file_statistics_cache": ("datafusion.runtime.file_statistics_cache_limit", None),
}
"""DataFusion caches: cache name -> (limit setting, ttl setting or None)."""
SCAN_CACHE_METRICS: Final = (
    "files_opened",
    "files_processed",
    "metadata_load_time",
    "bytes_scanned",
    "files_ranges_pruned_statistics",
    "row_groups_pruned_statistics",
    "row_groups_pruned_bloom_filter",
    "page_index_rows_pruned",
    "pushdown_rows_pruned",
    "predicate_cache_records",
    "predicate_cache_inner_records",
)
"""Scan operator metrics (in ``other_metrics`` of operator-metrics rows) that relate to caching."""
CACHE_EVENT_ATTR_PREFIX: Final = "datafusion.cache."
"""Prefix of ``datafusion.cache_state`` event attributes: ``<prefix><cache>.limit`` / ``.ttl``."""

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
"""``plan_hash`` (definition v2: the literal-free unoptimized logical plan), on the capture span."""
DATAFUSION_PLAN_SHAPE_HASH: Final = "datafusion.plan_shape_hash"
"""Fingerprint of the executed physical plan's strategy (``plan_shape_hash``, definition v1)."""
DATAFUSION_SESSION_ID: Final = "datafusion.session_id"
"""``SessionContext.session_id()`` of the context that planned the query, when known."""
DATAFUSION_STREAM_EXHAUSTED: Final = "datafusion.stream.exhausted"
"""On stream executions: True if the stream was read to the end, False if abandoned early."""
DATAFUSION_PHASE: Final = "datafusion.phase"
"""Set on a span that times one phase of a query rather than its execution (`PHASE_PLAN`)."""
PHASE_PLAN: Final = "plan"
"""`DATAFUSION_PHASE` of the span of ``SessionContext.sql`` parsing and planning a query."""
PLAN_SPAN_PREFIX: Final = "plan "
"""The name of a planning span is this prefix and the query's ``db.query.summary``."""
