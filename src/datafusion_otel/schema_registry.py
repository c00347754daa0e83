"""Arrow schemas of the diagnostics tables, and builders that coerce rows to them.

Tables (each schema carries its table name under the ``table_name`` metadata key):

* ``DATAFUSION_RUNS_V1`` (``datafusion_runs_v1``): one row per run, exactly the design
  document's columns.
* ``DATAFUSION_PLAN_ARTIFACTS_V1`` (``datafusion_plan_artifacts_v1``): one row per compiled
  query. The first 21 columns are the original system's, with its names and types. Columns
  added by datafusion-otel are all nullable:

  - ``span_id``: 16-hex id of the span that carried the artifacts event.
  - ``sql_text_policy``: ``sanitized``, ``raw`` or ``off``: how ``sql`` and plan texts were
    treated.
  - ``explain_analyze_schema_fingerprint``: sha256 of the EXPLAIN ANALYZE file's schema.
  - ``explain_analyze_source``: ``metrics`` (built from the executed plan's metrics, the
    query ran once) or ``explain_analyze`` (a real ``EXPLAIN ANALYZE`` of a query that was
    not otherwise run).
  - ``physical_graphviz``: DOT of the physical plan (built by walking the plan).
  - ``plan_executed``: whether ``physical_plan`` is the plan that was executed.
  - ``artifact_errors``: JSON object, artifact name -> error text, for every artifact that
    could not be captured.
  - ``capture_duration_ms``: time spent capturing artifacts.
  - ``plan_shape_hash``: sha256 of the physical plan's operator tree (definition v1,
    `datafusion_otel._capture.plan_shape`): per operator in pre-order its depth, name and the
    strategy details that do not depend on the data (join mode and type, aggregate mode,
    repartitioning kind, sort TopK / preserve_partitioning, scan file type), with no expression,
    literal, file path or partition count; round-robin repartitions are left out. It changes
    when DataFusion picks another join, order or strategy, not when the data or
    ``target_partitions`` change (at least 2: with 1 DataFusion drops the repartitions).
    Null when no physical plan was captured, and in older stores.
* ``DATAFUSION_OPERATOR_METRICS_V1`` (``datafusion_operator_metrics_v1``): one row per
  physical operator and partition, from the executed plan's metrics. Values DataFusion does
  not report are null, never 0. Columns added later (nullable, null in older stores):

  - ``pruning_row_groups_total`` / ``pruning_row_groups_matched``: a Parquet scan's row
    groups tested against its predicate's statistics and the ones kept, parsed from
    DataFusion's text metric ``row_groups_pruned_statistics`` ("10 total → 3 matched").
  - ``pruning_pages_total`` / ``pruning_pages_matched``: likewise for the page index
    (``page_index_pages_pruned``).
* ``DATAFUSION_CACHE_STATE_V1`` (``datafusion_cache_state_v1``): one row per DataFusion
  cache per run; the original columns plus ``run_id``.
* ``DATAFUSION_FINDINGS_V1`` (``datafusion_findings_v1``): one row per finding of
  `datafusion_otel.findings` (computed from the tables above; recorded when a run ends):

  - ``run_id``, ``span_id``, ``plan_hash``: the run and the query (execution span) found in.
  - ``operator_path`` / ``operator_name``: the operator (``"0.1"``...), null for a query.
  - ``partition``: the partition named by a ``partition_skew`` finding, else null.
  - ``kind``: ``slow_operator``, ``partition_skew``, ``spill``, ``row_explosion``,
    ``filter_drops_most``, ``poor_pruning`` or ``plan_changed_and_slower`` (computed from a
    store's history only, never recorded when a run ends).
  - ``severity``: ``info``, ``warning`` or ``critical``.
  - ``message``: one human sentence citing the figures.
  - ``measured_value`` / ``threshold``: the figure compared and the threshold it crossed.
  - ``evidence``: JSON object of every metric value the finding was computed from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from datafusion_otel import attributes as attr
from datafusion_otel._coerce import coerce_rows

__all__ = [
    "DATAFUSION_CACHE_STATE_V1",
    "DATAFUSION_FINDINGS_V1",
    "DATAFUSION_OPERATOR_METRICS_V1",
    "DATAFUSION_PLAN_ARTIFACTS_V1",
    "DATAFUSION_RUNS_V1",
    "SCHEMAS",
    "datafusion_cache_state_table",
    "datafusion_operator_metrics_table",
    "datafusion_plan_artifacts_table",
    "datafusion_runs_table",
    "schema_for",
    "table_for",
]


def _named(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={b"table_name": name.encode()})


DATAFUSION_RUNS_V1: pa.Schema = _named(
    attr.RUNS_TABLE,
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("start_time_unix_ms", pa.int64(), nullable=False),
        pa.field("end_time_unix_ms", pa.int64(), nullable=True),
        pa.field("status", pa.string(), nullable=False),
        pa.field("duration_ms", pa.int64(), nullable=True),
        pa.field("metadata", pa.string(), nullable=True),  # JSON string
    ],
)

DATAFUSION_PLAN_ARTIFACTS_V1: pa.Schema = _named(
    attr.PLAN_ARTIFACTS_TABLE,
    [
        pa.field("event_time_unix_ms", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=True),
        pa.field("plan_hash", pa.string(), nullable=True),
        pa.field("sql", pa.string(), nullable=False),
        pa.field("normalized_sql", pa.string(), nullable=True),
        pa.field("explain_rows_artifact_path", pa.string(), nullable=True),
        pa.field("explain_rows_artifact_format", pa.string(), nullable=True),
        pa.field("explain_rows_schema_fingerprint", pa.string(), nullable=True),
        pa.field("explain_analyze_artifact_path", pa.string(), nullable=True),
        pa.field("explain_analyze_artifact_format", pa.string(), nullable=True),
        pa.field("substrait_b64", pa.string(), nullable=True),
        pa.field("substrait_validation_status", pa.string(), nullable=True),
        pa.field("ibis_sql", pa.string(), nullable=True),
        pa.field("unparsed_sql", pa.string(), nullable=True),
        pa.field("unparse_error", pa.string(), nullable=True),
        pa.field("logical_plan", pa.string(), nullable=True),
        pa.field("optimized_plan", pa.string(), nullable=True),
        pa.field("physical_plan", pa.string(), nullable=True),
        pa.field("graphviz", pa.string(), nullable=True),
        pa.field("partition_count", pa.int64(), nullable=True),
        pa.field("join_operators", pa.list_(pa.string()), nullable=True),
        # datafusion-otel additions (all nullable, documented in the module docstring)
        pa.field("span_id", pa.string(), nullable=True),
        pa.field("sql_text_policy", pa.string(), nullable=True),
        pa.field("explain_analyze_schema_fingerprint", pa.string(), nullable=True),
        pa.field("explain_analyze_source", pa.string(), nullable=True),
        pa.field("physical_graphviz", pa.string(), nullable=True),
        pa.field("plan_executed", pa.bool_(), nullable=True),
        pa.field("artifact_errors", pa.string(), nullable=True),
        pa.field("capture_duration_ms", pa.float64(), nullable=True),
        pa.field("plan_shape_hash", pa.string(), nullable=True),
    ],
)

DATAFUSION_OPERATOR_METRICS_V1: pa.Schema = _named(
    attr.OPERATOR_METRICS_TABLE,
    [
        pa.field("event_time_unix_ms", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=True),
        pa.field("span_id", pa.string(), nullable=True),
        pa.field("plan_hash", pa.string(), nullable=True),
        pa.field("operator_path", pa.string(), nullable=False),
        pa.field("operator_name", pa.string(), nullable=False),
        pa.field("partition", pa.int64(), nullable=True),
        pa.field("output_rows", pa.int64(), nullable=True),
        pa.field("elapsed_compute_ns", pa.int64(), nullable=True),
        pa.field("spill_count", pa.int64(), nullable=True),
        pa.field("spilled_bytes", pa.int64(), nullable=True),
        pa.field("start_time_unix_ns", pa.int64(), nullable=True),
        pa.field("end_time_unix_ns", pa.int64(), nullable=True),
        pa.field("other_metrics", pa.map_(pa.string(), pa.int64()), nullable=True),
        pa.field("pruning_row_groups_total", pa.int64(), nullable=True),
        pa.field("pruning_row_groups_matched", pa.int64(), nullable=True),
        pa.field("pruning_pages_total", pa.int64(), nullable=True),
        pa.field("pruning_pages_matched", pa.int64(), nullable=True),
    ],
)

DATAFUSION_CACHE_STATE_V1: pa.Schema = _named(
    attr.CACHE_STATE_TABLE,
    [
        pa.field("cache_name", pa.string(), nullable=False),
        pa.field("event_time_unix_ms", pa.int64(), nullable=False),
        pa.field("entry_count", pa.int64(), nullable=True),
        pa.field("hit_count", pa.int64(), nullable=True),
        pa.field("miss_count", pa.int64(), nullable=True),
        pa.field("eviction_count", pa.int64(), nullable=True),
        pa.field("config_ttl", pa.string(), nullable=True),
        pa.field("config_limit", pa.string(), nullable=True),
        pa.field("run_id", pa.string(), nullable=True),
    ],
)

DATAFUSION_FINDINGS_V1: pa.Schema = _named(
    attr.FINDINGS_TABLE,
    [
        pa.field("run_id", pa.string(), nullable=True),
        pa.field("span_id", pa.string(), nullable=True),
        pa.field("plan_hash", pa.string(), nullable=True),
        pa.field("operator_path", pa.string(), nullable=True),
        pa.field("operator_name", pa.string(), nullable=True),
        pa.field("partition", pa.int64(), nullable=True),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("measured_value", pa.float64(), nullable=True),
        pa.field("threshold", pa.float64(), nullable=True),
        pa.field("evidence", pa.string(), nullable=True),  # JSON object
    ],
)

SCHEMAS: Mapping[str, pa.Schema] = {
    attr.RUNS_TABLE: DATAFUSION_RUNS_V1,
    attr.PLAN_ARTIFACTS_TABLE: DATAFUSION_PLAN_ARTIFACTS_V1,
    attr.OPERATOR_METRICS_TABLE: DATAFUSION_OPERATOR_METRICS_V1,
    attr.CACHE_STATE_TABLE: DATAFUSION_CACHE_STATE_V1,
    attr.FINDINGS_TABLE: DATAFUSION_FINDINGS_V1,
}
"""Every diagnostics schema, keyed by table name."""


def schema_for(name: str) -> pa.Schema:
    """Return the schema of the diagnostics table ``name``.

    Args:
        name: Table name, for example ``datafusion_runs_v1`` (the upper-case constant name,
            ``DATAFUSION_RUNS_V1``, is accepted too).

    Returns:
        The table's Arrow schema.

    Raises:
        KeyError: If no table has that name; the message lists the known names.
    """
    schema = SCHEMAS.get(name) or SCHEMAS.get(name.lower())
    if schema is None:
        raise KeyError(f"unknown diagnostics table {name!r}; known tables: {', '.join(SCHEMAS)}")
    return schema


def table_for(name: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build the diagnostics table ``name`` from ``rows``.

    Args:
        name: Table name (see `schema_for`).
        rows: Row mappings.

    Returns:
        A table with exactly the table's schema.

    Raises:
        KeyError: If ``name`` is not a known table.
        ValueError: Naming the row index and column of a row that cannot be coerced.
    """
    return coerce_rows(rows, schema_for(name))


def datafusion_runs_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a DATAFUSION_RUNS_V1 table.

    Coercion: missing nullable columns become null, a dict ``metadata`` becomes a JSON
    string, datetimes become unix milliseconds, numpy scalars become Python values.

    Args:
        rows: Row mappings, for example `DataFusionRun.payload` results.

    Returns:
        A table with schema `DATAFUSION_RUNS_V1`.

    Raises:
        ValueError: Naming the row index and column of a missing required value or of a
            value that cannot be converted.
    """
    return coerce_rows(rows, DATAFUSION_RUNS_V1)


def datafusion_plan_artifacts_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a DATAFUSION_PLAN_ARTIFACTS_V1 table.

    Coercion as in `datafusion_runs_table`; in addition ``bytes`` in a string column (for
    example ``substrait_b64``) become base64 text.

    Args:
        rows: Row mappings, for example ``structured_explain_payload()`` results.

    Returns:
        A table with schema `DATAFUSION_PLAN_ARTIFACTS_V1`.

    Raises:
        ValueError: Naming the row index and column of a row that cannot be coerced.
    """
    return coerce_rows(rows, DATAFUSION_PLAN_ARTIFACTS_V1)


def datafusion_operator_metrics_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a DATAFUSION_OPERATOR_METRICS_V1 table.

    Args:
        rows: Row mappings.

    Returns:
        A table with schema `DATAFUSION_OPERATOR_METRICS_V1`.

    Raises:
        ValueError: Naming the row index and column of a row that cannot be coerced.
    """
    return coerce_rows(rows, DATAFUSION_OPERATOR_METRICS_V1)


def datafusion_cache_state_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a DATAFUSION_CACHE_STATE_V1 table.

    Args:
        rows: Row mappings.

    Returns:
        A table with schema `DATAFUSION_CACHE_STATE_V1`.

    Raises:
        ValueError: Naming the row index and column of a row that cannot be coerced.
    """
    return coerce_rows(rows, DATAFUSION_CACHE_STATE_V1)
