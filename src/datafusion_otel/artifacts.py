"""`DataFusionPlanArtifacts`: everything captured about one compiled query."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from datafusion_otel._coerce import json_dumps
from datafusion_otel.schema_registry import DATAFUSION_PLAN_ARTIFACTS_V1

__all__ = ["DataFusionPlanArtifacts"]


@dataclass
class DataFusionPlanArtifacts:
    """Plan artifacts of one query: every DATAFUSION_PLAN_ARTIFACTS_V1 column, plus extras.

    Text fields are already treated under the capture's ``sql_text`` policy. Each artifact
    that could not be captured is None and its reason is in ``artifact_errors`` (the
    original ``unparse_error`` column is kept as well).

    Attributes:
        operator_metrics: DATAFUSION_OPERATOR_METRICS_V1 rows of the executed plan.
        operator_nodes: Walked physical operators (for operator spans); not serialized.
    """

    event_time_unix_ms: int
    sql: str
    run_id: str | None = None
    plan_hash: str | None = None
    normalized_sql: str | None = None
    explain_rows_artifact_path: str | None = None
    explain_rows_artifact_format: str | None = None
    explain_rows_schema_fingerprint: str | None = None
    explain_analyze_artifact_path: str | None = None
    explain_analyze_artifact_format: str | None = None
    substrait_b64: str | None = None
    substrait_validation_status: str | None = None
    ibis_sql: str | None = None
    unparsed_sql: str | None = None
    unparse_error: str | None = None
    logical_plan: str | None = None
    optimized_plan: str | None = None
    physical_plan: str | None = None
    graphviz: str | None = None
    partition_count: int | None = None
    join_operators: list[str] | None = None
    span_id: str | None = None
    sql_text_policy: str | None = None
    explain_analyze_schema_fingerprint: str | None = None
    explain_analyze_source: str | None = None
    physical_graphviz: str | None = None
    plan_executed: bool | None = None
    plan_shape_hash: str | None = None
    artifact_errors: dict[str, str] = field(default_factory=dict)
    capture_duration_ms: float | None = None
    operator_metrics: list[dict[str, object]] = field(default_factory=list, repr=False)
    operator_nodes: list[Any] = field(default_factory=list, repr=False, compare=False)

    def structured_explain_payload(self) -> dict[str, object]:
        """Return the artifacts as a row for ``datafusion_plan_artifacts_table()``.

        Returns:
            One value per DATAFUSION_PLAN_ARTIFACTS_V1 column (``artifact_errors`` as JSON,
            null when there were none).
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        payload = {name: values.get(name) for name in DATAFUSION_PLAN_ARTIFACTS_V1.names}
        payload["artifact_errors"] = (
            json_dumps(self.artifact_errors) if self.artifact_errors else None
        )
        if self.join_operators is not None:
            payload["join_operators"] = list(self.join_operators)
        return payload
