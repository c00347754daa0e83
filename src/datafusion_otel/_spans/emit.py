"""Attach captured artifacts to a span: preview event, operator metrics, operator spans.

With an explicit ``DataFusionCompileOptions.run_id`` the artifacts go under that run whatever
the executing thread's context: onto the span they were handed if it belongs to the run, else
onto the run's root span (found by id among live runs). Once the run has ended they go to the
hook only, and are counted (`run_ended_count`, warned once).
"""

from __future__ import annotations

import hashlib
import logging
import threading

from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

from datafusion_otel import attributes as attr
from datafusion_otel._coerce import json_dumps
from datafusion_otel._spans import routing as _routing
from datafusion_otel._spans.operator_spans import emit_operator_spans
from datafusion_otel._spans.payloads import add_payload_event
from datafusion_otel.artifacts import DataFusionPlanArtifacts
from datafusion_otel.compile_options import DataFusionCompileOptions

__all__ = [
    "dropped_count",
    "emit_artifacts",
    "hook_error_count",
    "note_nowhere",
    "preview",
    "run_ended_count",
    "target_span",
]

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
    "plan_shape_hash",
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
            "datafusion_otel.capture_stats().dropped)"
        )
    else:
        _LOG.warning(
            "plan artifacts of a query run outside any run or span have nowhere to go: run it "
            "inside tracked_run(), enable DataFusionInstrumentor, or set plan_artifacts_hook "
            "(counted in datafusion_otel.capture_stats().dropped)"
        )


def _count_run_ended(run_id: str, *, hook: bool) -> None:
    with _hook_lock:
        _hook_errors["run_ended"] = _hook_errors.get("run_ended", 0) + 1
        if not hook:
            _hook_errors["dropped"] = _hook_errors.get("dropped", 0) + 1
        first = _hook_errors["run_ended"] == 1
    if first:
        _LOG.warning(
            "plan artifacts of a query compiled with run_id=%s arrived after that run ended "
            "(or it is not a run of this process): they go to plan_artifacts_hook only, if "
            "set (counted in datafusion_otel.capture_stats().run_ended)",
            run_id,
        )


def note_nowhere(run_id: str | None) -> None:
    """Count a capture that has nowhere to go and no hook (not computed at all).

    Args:
        run_id: The run it named (``options.run_id``), which has ended; None when it ran
            outside any run or span.
    """
    if run_id is not None:
        _count_run_ended(run_id, hook=False)
    else:
        _warn_dropped(ended=False)


def run_ended_count() -> int:
    """Return how many captures named a run (``run_id``) that was no longer live."""
    return _hook_errors.get("run_ended", 0)


def target_span(span: trace.Span, run_id: str | None) -> trace.Span | None:
    """Return the span artifacts of a query executed under ``span`` go to; None if run ended.

    Without an explicit ``run_id``: ``span`` itself. With one, the explicit run wins over the
    executing context: ``span`` if it is a span of that run (ended or not), else the run's
    root span while the run is live, else None.
    """
    if run_id is None:
        return span
    context = span.get_span_context()
    if context.is_valid and format_trace_id(context.trace_id) == run_id:
        return span
    return _routing.live_root(run_id)


def resolve_target(span: trace.Span, run_id: str | None) -> tuple[trace.Span | None, bool]:
    """Return ``(target, run_gone)``: where the artifacts of a query run under ``span`` go.

    The target is `target_span`; ``run_gone`` is True when ``run_id`` names a run that is no
    longer live (the artifacts then reach the hook only, counted).
    """
    target = target_span(span, run_id)
    return target, run_id is not None and target is None


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


def emit_artifacts(
    art: DataFusionPlanArtifacts,
    options: DataFusionCompileOptions,
    span: trace.Span | None = None,
    tracer: trace.Tracer | None = None,
    *,
    queued_ns: int | None = None,
    run_gone: bool | None = None,
) -> None:
    """Attach ``art`` under ``span`` (default: the current span) and call the options' hook.

    The events go on a ``datafusion.capture`` span, a child of ``span`` made now (``span`` has
    usually ended: capture runs after the execution, on the capture worker), from
    ``queued_ns`` (when the execution was handed over) to now; the operator spans nest under
    ``span`` as the plan does. Rows keep ``span``'s span id (the span the query ran under).

    Args:
        art: The artifacts.
        options: Their options (hook, limits, ``run_id``).
        span: The span the query ran under.
        tracer: Tracer of ``span``'s provider (default: the package's global tracer).
        queued_ns: When the execution ended (start of the capture span; default now).
        run_gone: Already resolved routing (`resolve_target`); None resolves it here from
            ``options.run_id``.

    Never raises: a failing step is logged and the others go on.
    """
    span = span if span is not None else trace.get_current_span()
    if run_gone is None:
        target, run_gone = resolve_target(span, options.run_id)
        span = target if target is not None else trace.INVALID_SPAN
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
    recorded = False
    try:
        if context.is_valid:
            recorded = _attach(art, options, span, tracer, queued_ns, payload)
    except Exception:  # never break the query for its telemetry
        _LOG.exception("could not attach plan artifacts to span")
    hook = options.plan_artifacts_hook
    if run_gone and options.run_id is not None:
        _count_run_ended(options.run_id, hook=hook is not None)
    elif hook is None and not recorded:
        _warn_dropped(ended=context.is_valid)
    if hook is not None:
        try:
            hook(payload)
        except Exception:
            with _hook_lock:
                _hook_errors["count"] += 1
            _LOG.exception("plan_artifacts_hook raised; the query goes on")


def _attach(
    art: DataFusionPlanArtifacts,
    options: DataFusionCompileOptions,
    span: trace.Span,
    tracer: trace.Tracer | None,
    queued_ns: int | None,
    payload: dict[str, object],
) -> bool:
    """Make the capture span under ``span`` with the events; True if it records."""
    tracer = tracer or trace.get_tracer(attr.TRACER_NAME)
    attributes: dict[str, AttributeValue] = {}
    if art.plan_hash is not None:
        attributes[attr.DATAFUSION_PLAN_HASH] = art.plan_hash
    if art.plan_shape_hash is not None:
        attributes[attr.DATAFUSION_PLAN_SHAPE_HASH] = art.plan_shape_hash
    if art.partition_count is not None:
        attributes[attr.DATAFUSION_PARTITION_COUNT] = art.partition_count
    capture = tracer.start_span(
        attr.CAPTURE_SPAN,
        context=trace.set_span_in_context(span),
        kind=trace.SpanKind.INTERNAL,
        attributes=attributes,
        start_time=queued_ns,
    )
    try:
        if not capture.is_recording():
            return False
        add_payload_event(
            capture,
            attr.PLAN_ARTIFACTS_EVENT,
            _event_attributes(art, options.inline_limit_bytes),
            table=attr.PLAN_ARTIFACTS_TABLE,
            rows=[payload],
        )
        if art.operator_metrics and options.wants("operator_metrics"):
            add_payload_event(
                capture,
                attr.OPERATOR_METRICS_EVENT,
                {attr.OPERATOR_COUNT: len(art.operator_metrics)},
                table=attr.OPERATOR_METRICS_TABLE,
                rows=art.operator_metrics,
            )
        if art.operator_nodes and options.wants("operator_spans"):
            emit_operator_spans(
                span,
                art.operator_nodes,
                art.operator_metrics,
                tracer,
                limit=options.max_operator_spans,
                counts_on=capture,
            )
        return True
    finally:
        capture.end()
