"""Pure functions turning finished spans into diagnostics rows."""

from __future__ import annotations

import json
from collections.abc import Mapping

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id

from datafusion_otel import attributes as attr
from datafusion_otel._payloads import PayloadEvent

__all__ = ["event_rows", "is_run_root", "root_run_id", "run_row"]

_NS_PER_MS = 1_000_000
_AUTO_RUN_METADATA = json.dumps({"auto_run": True})


def root_run_id(span: ReadableSpan) -> str | None:
    """Return the run id if ``span`` is the root span of a run, else None."""
    if span.parent is not None:
        return None
    attributes = getattr(span, "_attributes", None)  # the SDK's own, not a proxy copy
    if attributes is None:
        attributes = span.attributes
    run_id = attributes.get(attr.RUN_ID) if attributes else None
    return None if run_id is None else str(run_id)


def is_run_root(span: ReadableSpan) -> bool:
    """Return True if ``span`` is the root span of a run."""
    return root_run_id(span) is not None


def run_row(span: ReadableSpan) -> dict[str, object]:
    """Return the DATAFUSION_RUNS_V1 row of a finished run root span."""
    attrs: Mapping[str, object] = span.attributes or {}
    start_ms = (span.start_time or 0) // _NS_PER_MS
    end_ms = span.end_time // _NS_PER_MS if span.end_time is not None else None
    metadata = attrs.get(attr.RUN_METADATA)
    if isinstance(metadata, str):
        metadata_json = metadata
    elif attr.DATAFUSION_METHOD in attrs:  # an auto run: one instrumented execution
        metadata_json = _AUTO_RUN_METADATA
    else:
        metadata_json = json.dumps({})
    exported = attrs.get(attr.RUN_EXPORTED)
    if isinstance(exported, bool):  # whether the run left the process (sampling, exporters)
        merged = json.loads(metadata_json)
        if isinstance(merged, dict):
            merged["exported"] = exported
            metadata_json = json.dumps(merged)
    return {
        "run_id": str(attrs.get(attr.RUN_ID) or format_trace_id(span.context.trace_id)),
        "label": str(attrs.get(attr.RUN_LABEL, span.name)),
        "start_time_unix_ms": start_ms,
        "end_time_unix_ms": end_ms,
        "status": str(attrs.get(attr.RUN_STATUS, "completed")),
        "duration_ms": end_ms - start_ms if end_ms is not None else None,
        "metadata": metadata_json,
    }


def event_rows(span: ReadableSpan) -> list[tuple[str, list[dict[str, object]]]]:
    """Return ``(table, rows)`` for every diagnostics payload event of ``span``.

    Rows get the span's run id (its trace id) and span id when they do not carry one.
    """
    out: list[tuple[str, list[dict[str, object]]]] = []
    run_id = format_trace_id(span.context.trace_id)
    span_id = format_span_id(span.context.span_id)
    for event in span.events:
        if not isinstance(event, PayloadEvent):
            continue
        for table, event_rows_ in event.tables():
            rows = []
            for row in event_rows_:
                full = dict(row)
                if full.get("run_id") is None:
                    full["run_id"] = run_id
                if "span_id" in full and full["span_id"] is None:
                    full["span_id"] = span_id
                rows.append(full)
            out.append((table, rows))
    return out
