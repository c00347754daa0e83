"""Pure functions turning finished spans into diagnostics rows.

A run started with `datafusion_otel.start_run` carries its row in-process (`RunRecord`,
registered for the span's lifetime with `register_run`), so the row never depends on the
application's span limits: the span attributes (``datafusion.run.*``) are only what exporters
see, and may be cut by ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` or evicted by the attribute count
limit. Runs made by the auto-instrumentation carry attributes only, but their root span is
registered when it starts (`register_auto_run`, for as long as the span object lives), so it is
recognised as a run even when the app's attribute count limit evicted ``datafusion.run.id``;
a status attribute evicted is read from the span's status (ERROR: "failed"), and a metadata
attribute the limits cut or evicted is replaced by a note (plus the error type and message of
the span's status), never a lost row.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from datafusion_otel import attributes as attr
from datafusion_otel._processing import run_metadata as meta
from datafusion_otel._spans.payloads import PayloadEvent

__all__ = [
    "RunRecord",
    "event_rows",
    "forget_run",
    "is_run_root",
    "register_auto_run",
    "register_run",
    "root_run_id",
    "run_row",
]

_NS_PER_MS = 1_000_000
_AUTO_RUN_METADATA = meta.to_text({meta.AUTO_RUN: True})
_CUT_NOTE = "the datafusion.run.metadata attribute was cut by the span limits; metadata lost"
_EVICTED_NOTE = (
    "the datafusion.run.metadata attribute was evicted by the span limits; metadata rebuilt "
    "from the span's status"
)


@dataclass
class RunRecord:
    """The in-process truth about a run root span, read when it ends.

    Attributes:
        run_id: The run id (the span's trace id, 32 hex characters).
        label: The run's label.
        status: ``"running"``, ``"completed"`` or ``"failed"``.
        metadata_json: The row's metadata JSON text.
        seen: Set when a diagnostics processor turned the ended span into rows; if an
            application processor raised in ``span.end()`` before ours ran, the run's own
            code hands the span to the processor instead.
    """

    run_id: str
    label: str
    status: str
    metadata_json: str
    seen: bool = False


_records: dict[tuple[int, int], RunRecord] = {}
_records_lock = threading.Lock()


def _key(span: ReadableSpan) -> tuple[int, int] | None:
    context = span.context
    return None if context is None else (context.trace_id, context.span_id)


def register_run(span: object, record: RunRecord) -> None:
    """Keep ``record`` for the run root ``span`` until `forget_run` (after the span ended)."""
    key = _key(span)  # type: ignore[arg-type]
    if key is not None:
        with _records_lock:
            _records[key] = record


def forget_run(span: object) -> RunRecord | None:
    """Drop and return the record of ``span`` (call after ``span.end()``)."""
    key = _key(span)  # type: ignore[arg-type]
    if key is None:
        return None
    with _records_lock:
        return _records.pop(key, None)


_auto_runs: dict[tuple[int, int], weakref.ref[object]] = {}
"""Auto-run root spans by (trace id, span id), each entry living as long as its span object."""


def register_auto_run(span: object) -> None:
    """Mark ``span`` as the root span of an auto run (call when the span starts); never raises.

    The processor then records its run row even if the application's span limits evicted
    the ``datafusion.run.*`` attributes. The entry is dropped when the span object is garbage
    collected (the processor receives a copy of the span, keyed the same): nothing to forget.
    """
    try:
        key = _key(span)  # type: ignore[arg-type]
        if key is None:
            return
        # no lock: dict operations are atomic, and the callback may run inside any GC pass
        _auto_runs[key] = weakref.ref(span, lambda _ref: _auto_runs.pop(key, None))
    except Exception:  # not weakly referenceable: recognised by its attributes only
        return


def _is_auto_run(span: ReadableSpan) -> bool:
    if not _auto_runs:
        return False
    return _key(span) in _auto_runs


def _record(span: ReadableSpan) -> RunRecord | None:
    if not _records:
        return None
    key = _key(span)
    return None if key is None else _records.get(key)


def root_run_id(span: ReadableSpan) -> str | None:
    """Return the run id if ``span`` is the root span of a run, else None.

    A `RunRecord` read here is marked seen (the processor calls this for every span).
    """
    if span.parent is not None:
        return None
    record = _record(span)
    if record is not None:
        if span.end_time is not None:
            record.seen = True
        return record.run_id
    if _is_auto_run(span):
        return format_trace_id(span.context.trace_id)
    attributes = getattr(span, "_attributes", None)  # the SDK's own, not a proxy copy
    if attributes is None:
        attributes = span.attributes
    if not attributes or attr.RUN_ID not in attributes:
        return None
    return format_trace_id(span.context.trace_id)  # the run id is the trace id, never cut


def is_run_root(span: ReadableSpan) -> bool:
    """Return True if ``span`` is the root span of a run."""
    return root_run_id(span) is not None


def run_row(span: ReadableSpan) -> dict[str, object]:
    """Return the DATAFUSION_RUNS_V1 row of a finished run root span."""
    start_ms = (span.start_time or 0) // _NS_PER_MS
    end_ms = span.end_time // _NS_PER_MS if span.end_time is not None else None
    record = _record(span)
    if record is None:
        record = _record_from_attributes(span)
    return {
        "run_id": record.run_id,
        "label": record.label,
        "start_time_unix_ms": start_ms,
        "end_time_unix_ms": end_ms,
        "status": record.status,
        "duration_ms": end_ms - start_ms if end_ms is not None else None,
        "metadata": record.metadata_json,
    }


def _record_from_attributes(span: ReadableSpan) -> RunRecord:
    """The row of a run that carries attributes only (an auto run of the instrumentation)."""
    attrs: Mapping[str, object] = span.attributes or {}
    metadata = attrs.get(attr.RUN_METADATA)
    parsed: dict[str, object]
    if isinstance(metadata, str):
        try:
            loaded = json.loads(metadata)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            parsed = loaded
        else:  # cut by the application's span limits: keep what the short attributes say
            parsed = {meta.NOTES: [_CUT_NOTE]}
            error_type = attrs.get(attr.ERROR_TYPE)
            if isinstance(error_type, str):
                parsed[meta.ERROR_TYPE] = error_type
    elif attr.DATAFUSION_METHOD in attrs or _is_auto_run(span):  # one instrumented execution
        parsed = json.loads(_AUTO_RUN_METADATA)
    else:
        parsed = {}
    failed = span.status.status_code is StatusCode.ERROR
    status = attrs.get(attr.RUN_STATUS)
    if status is None:  # evicted by the attribute count limit: the span's status says it
        status = "failed" if failed else "completed"
    if failed and metadata is None and meta.AUTO_RUN in parsed:
        # an auto run's metadata attribute evicted: its status description is "Type: message"
        error_type, _, message = (span.status.description or "").partition(": ")
        parsed[meta.NOTES] = [_EVICTED_NOTE]
        parsed[meta.ERROR_TYPE] = str(attrs.get(attr.ERROR_TYPE, error_type)) or None
        parsed[meta.ERROR_MESSAGE] = message or None
    exported = attrs.get(attr.RUN_EXPORTED)
    if isinstance(exported, bool):  # whether the run left the process (sampling, exporters)
        parsed[meta.EXPORTED] = exported
    return RunRecord(
        run_id=format_trace_id(span.context.trace_id),
        label=str(attrs.get(attr.RUN_LABEL, span.name)),
        status=str(status),
        metadata_json=meta.snapshot_text(parsed),
    )


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
