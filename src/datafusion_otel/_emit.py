"""Attach captured artifacts to a span: preview event, operator metrics, operator spans."""

from __future__ import annotations

import hashlib
import logging
import threading

from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

from datafusion_otel import _plan_walk
from datafusion_otel import attributes as attr
from datafusion_otel._coerce import json_dumps
from datafusion_otel._payloads import add_payload_event
from datafusion_otel.artifacts import DataFusionPlanArtifacts
from datafusion_otel.compile_options import DataFusionCompileOptions

__all__ = ["emit_artifacts", "hook_error_count", "preview"]

_LOG = logging.getLogger("datafusion_otel.emit")
_TEXT_COLUMNS = (
    "sql", "normalized_sql", "ibis_sql", "unparsed_sql", "logical_plan", "optimized_plan",
    "physical_plan", "graphviz", "physical_graphviz", "substrait_b64",
)  # fmt: skip
_SCALAR_COLUMNS = (
    "run_id", "plan_hash", "partition_count", "substrait_validation_status", "unparse_error",
    "explain_rows_artifact_path", "explain_rows_artifact_format",
    "explain_rows_schema_fingerprint", "explain_analyze_artifact_path",
    "explain_analyze_artifact_format", "explain_analyze_schema_fingerprint",
    "explain_analyze_source", "sql_text_policy", "plan_executed", "capture_duration_ms",
)  # fmt: skip
_hook_errors = {"count": 0}
_hook_lock = threading.Lock()


def _warn_dropped(*, ended: bool) -> None:
    key = "dropped_ended" if ended else "dropped_no_span"
    with _hook_lock:
        _hook_errors["dropped"] = _hook_errors.get("dropped", 0) + 1
        _hook_errors[key] = _hook_errors.get(key, 0) + 1
        first = _hook_errors[key] == 1
    if not first:
        return
    if ended:
        _LOG.warning(
            "plan artifacts of a query dropped: the span it ran under (its run) had already "
            "ended, for example a stream read after its tracked_run block (counted in "
            "datafusion_otel._emit.dropped_count())"
        )
    else:
        _LOG.warning(
            "plan artifacts of a query run outside any run or span have nowhere to go: run it "
            "inside tracked_run(), enable DataFusionInstrumentor, or set plan_artifacts_hook "
            "(counted in datafusion_otel._emit.dropped_count())"
        )


def dropped_count() -> int:
    """Return how many captures had no span and no hook to go to."""
    return _hook_errors.get("dropped", 0)


def hook_error_count() -> int:
    """Return how many times a ``plan_artifacts_hook`` raised."""
    return _hook_errors["count"]


def preview(value: str, limit: int) -> tuple[str, str, int, bool]:
    """Return ``(preview, sha256 hex, size in bytes, truncated)`` of ``value``.

    The preview is at most ``limit`` UTF-8 bytes and never splits a character.
    """
    data = value.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= limit:
        return value, digest, len(data), False
    return data[:limit].decode("utf-8", errors="ignore"), digest, len(data), True


def _event_attributes(art: DataFusionPlanArtifacts, limit: int) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {}
    for column in _TEXT_COLUMNS:
        value = getattr(art, column)
        if value is None:
            continue
        key = attr.ARTIFACT_PREFIX + column
        text, digest, size, truncated = preview(str(value), limit)
        attrs[key] = text
        attrs[key + attr.ARTIFACT_SHA256_SUFFIX] = digest
        attrs[key + attr.ARTIFACT_SIZE_SUFFIX] = size
        attrs[key + attr.ARTIFACT_TRUNCATED_SUFFIX] = truncated
    for column in _SCALAR_COLUMNS:
        value = getattr(art, column)
        if value is None:
            continue
        if isinstance(value, str):
            value = preview(value, limit)[0]
        attrs[attr.ARTIFACT_PREFIX + column] = value
    if art.join_operators is not None:
        attrs[attr.ARTIFACT_PREFIX + "join_operators"] = list(art.join_operators)
    if art.artifact_errors:
        attrs[attr.ARTIFACT_ERRORS] = preview(json_dumps(art.artifact_errors), limit)[0]
    return attrs


def _operator_spans(span: trace.Span, art: DataFusionPlanArtifacts, tracer: trace.Tracer) -> None:
    """One child span per operator, nested like the plan, timed by DataFusion's metrics.

    An operator without measured times takes its parent's; spans are marked with
    ``datafusion.operator.derived_from_metrics``.
    """
    totals = _plan_walk.operator_totals(art.operator_metrics)
    made: dict[str, tuple[trace.Span, int, int]] = {}
    for node in art.operator_nodes:
        acc = totals.get(node.path, {})
        parent_path = node.path.rsplit(".", 1)[0] if "." in node.path else None
        parent = made.get(parent_path) if parent_path else None
        start, end = acc.get("start"), acc.get("end")
        if (start is None or end is None) and parent is not None:
            start, end = parent[1], parent[2]
        if start is None or end is None:
            continue
        attrs: dict[str, AttributeValue] = {
            attr.OPERATOR_NAME: node.name,
            attr.OPERATOR_PATH: node.path,
            attr.OPERATOR_DERIVED: True,
        }
        if acc.get("output_rows") is not None:
            attrs[attr.OPERATOR_OUTPUT_ROWS] = int(acc["output_rows"] or 0)
        if acc.get("elapsed_compute_ns") is not None:
            attrs[attr.OPERATOR_ELAPSED_COMPUTE_NS] = int(acc["elapsed_compute_ns"] or 0)
        child = tracer.start_span(
            node.name,
            context=trace.set_span_in_context(parent[0] if parent else span),
            start_time=int(start),
            attributes=attrs,
        )
        made[node.path] = (child, int(start), int(end))
    for child, _start, end_ns in reversed(list(made.values())):
        child.end(end_time=end_ns)


def emit_artifacts(
    art: DataFusionPlanArtifacts,
    options: DataFusionCompileOptions,
    span: trace.Span | None = None,
    tracer: trace.Tracer | None = None,
) -> None:
    """Attach ``art`` to ``span`` (default: the current span) and call the options' hook.

    Never raises: a failing step is logged and the others go on.
    """
    span = span if span is not None else trace.get_current_span()
    context = span.get_span_context()
    if context.is_valid:
        if art.run_id is None:
            art.run_id = format_trace_id(context.trace_id)
        art.span_id = format_span_id(context.span_id)
        for row in art.operator_metrics:
            row["run_id"] = row.get("run_id") or art.run_id
            row["span_id"] = art.span_id
            row["plan_hash"] = row.get("plan_hash") or art.plan_hash
    payload = art.structured_explain_payload()
    try:
        if span.is_recording():
            if art.plan_hash is not None:
                span.set_attribute(attr.DATAFUSION_PLAN_HASH, art.plan_hash)
            if art.partition_count is not None:
                span.set_attribute(attr.DATAFUSION_PARTITION_COUNT, art.partition_count)
            add_payload_event(
                span,
                attr.PLAN_ARTIFACTS_EVENT,
                _event_attributes(art, options.inline_limit_bytes),
                table=attr.PLAN_ARTIFACTS_TABLE,
                rows=[payload],
            )
            if art.operator_metrics and options.wants("operator_metrics"):
                add_payload_event(
                    span,
                    attr.OPERATOR_METRICS_EVENT,
                    {attr.OPERATOR_COUNT: len(art.operator_metrics)},
                    table=attr.OPERATOR_METRICS_TABLE,
                    rows=art.operator_metrics,
                )
            if tracer is not None and art.operator_nodes and options.wants("operator_spans"):
                _operator_spans(span, art, tracer)
    except Exception:  # never break the query for its telemetry
        _LOG.exception("could not attach plan artifacts to span")
    hook = options.plan_artifacts_hook
    if hook is None and (not context.is_valid or not span.is_recording()):
        _warn_dropped(ended=context.is_valid)
    if hook is not None:
        try:
            hook(payload)
        except Exception:
            with _hook_lock:
                _hook_errors["count"] += 1
            _LOG.exception("plan_artifacts_hook raised; the query goes on")
